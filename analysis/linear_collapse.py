"""Study 6 (§11.4): without non-linearity a deep net is one affine map W_eff x + b_eff, so a deep linear
net is no better than logistic regression on concentric circles; one ReLU hidden layer is.

Left: final validation accuracy against depth for linear and ReLU hidden layers (depth 0 is logistic
regression, the same model for both). Right: max |z[L](x) - (W_eff x + b_eff)| over the training and
validation inputs, with W_eff = W[L] ... W[1] and b_eff folded in from each run's final parameters:
float32 round-off for linear nets, O(1) for ReLU nets (which do not collapse). Mean and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main


def collapse(params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """W_eff = W[L] ... W[1] and b_eff = W[L] (... (W[2] b[1] + b[2]) ...) + b[L], in float64."""
    W_eff, b_eff = np.eye(params["W1"].shape[1]), np.zeros((params["W1"].shape[1], 1))
    for l in range(1, sum(name.startswith("W") for name in params) + 1):
        W, b = params[f"W{l}"].astype(np.float64), params[f"b{l}"].astype(np.float64)
        W_eff, b_eff = W @ W_eff, W @ b_eff + b
    return W_eff, b_eff


def residual(study: Study, run_id: str, X: np.ndarray) -> float:
    """max |logits of the trained network - (W_eff x + b_eff)| over the columns of X."""
    network = study.network(run_id)
    network.forward(X.astype(network.params()["W1"].dtype))
    W_eff, b_eff = collapse(study.final_params(run_id))
    return float(np.max(np.abs(np.asarray(network.Z_L, dtype=np.float64) - (W_eff @ X + b_eff))))


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    diverged = runs["tags.diverged"].eq("true") if "tags.diverged" in runs else runs["run_id"].isna()
    runs = runs[~diverged].copy()  # a diverged run has no final parameters
    data = study.dataset(runs["run_id"].iloc[0])  # one data set for every run
    X = np.concatenate([data.X_train, data.X_val], axis=1)
    runs["residual"] = [residual(study, run_id, X) for run_id in runs["run_id"]]
    runs["kind"] = np.where(runs["params.model.depth"] == 0, "logistic", runs["params.model.activation"])
    runs = runs[~((runs["kind"] == "logistic") & (runs["params.model.activation"] != "linear"))]  # depth 0 ran twice

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    logistic = runs[runs["kind"] == "logistic"]
    for activation in ("linear", "relu"):
        rows = runs[(runs["kind"] == activation) | (runs["kind"] == "logistic")]
        plot_band(left, mean_band(rows, ["params.model.depth"], "metrics.val/acc", fraction=True), "params.model.depth",
                  f"{activation} hidden layers")
        plot_band(right, mean_band(rows[rows["kind"] == activation], ["params.model.depth"], "residual"), "params.model.depth",
                  f"{activation} hidden layers")
    left.axhline(logistic["metrics.val/acc"].mean(), color="grey", linestyle=":", label="logistic regression (depth 0)")
    left.set(xlabel="hidden layers", ylabel="final validation accuracy", title=f"{data.name}: accuracy against depth")
    right.set(yscale="log", xlabel="hidden layers", ylabel="max |z[L](x) - (W_eff x + b_eff)|",
              title="does the net equal one affine map? (float32)")
    left.legend(), right.legend()
    figure.tight_layout()

    accuracy = runs.groupby(["kind", "params.model.depth"])["metrics.val/acc"].mean()
    base, linear, relu = accuracy.loc["logistic"].iloc[0], accuracy.loc["linear"], accuracy.loc["relu"]
    worst = float(runs.loc[runs["kind"] != "relu", "residual"].max())
    best_linear = max(base, linear.max())
    held = bool((linear <= base + 0.1).all() and relu.loc[1] >= best_linear + 0.2 and worst < 1e-4)
    evidence = (f"val acc: logistic {base:.3f}; linear " + ", ".join(f"depth {k:g} {v:.3f}" for k, v in linear.items())
                + "; relu " + ", ".join(f"depth {k:g} {v:.3f}" for k, v in relu.items())
                + f"; linear nets match W_eff x + b_eff to max abs {worst:.1e} "
                + f"(relu nets miss by {runs.loc[runs['kind'] == 'relu', 'residual'].min():.2g} or more); "
                + f"{int(diverged.sum())} diverged run(s) left out")
    claim = ("deep linear nets equal W_eff x + b_eff (to 1e-4) and do no better than logistic regression (+0.1); "
             "one relu hidden layer beats every linear model (+0.2)")
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("linear_collapse", analyse)

if __name__ == "__main__":
    from_shell(main)
