"""Study 6 (§5, §11.4): without non-linearity a deep net is one affine map, so a deep linear net does no
better than logistic regression; one non-linear hidden layer does better than every linear model.

§5: "Non-linearity is mandatory — without it, a deep network collapses to a single affine
transformation regardless of depth." §11.4: "a[L] = W[L] W[L-1] ... W[1] x = W_eff x. The
composition collapses to a single linear map. Adding even one non-linear layer makes the function
class qualitatively richer (non-convex decision boundaries)."

Two data sets: concentric circles, where every linear model sits at chance by symmetry (no line
separates a ring from its centre), and two moons, where logistic regression does well (~0.88) but
not perfectly, so "a deep linear net does no better" is tested where the linear model does something.
The decision, per data set, with 95% t-bands over seeds of the final validation accuracy:
the band of one ReLU hidden layer lies above the band of every linear model (logistic regression,
depth 0, and linear nets of every depth), and no linear net's band lies above logistic regression's.

The collapse itself, z[L](x) = W_eff x + b_eff with W_eff = W[L] ... W[1], is an algebraic identity:
it is recomputed from each linear net's final parameters as a sanity check of the harness (its
float32 round-off is reported), not as a finding, and does not enter the decision.

Left: final validation accuracy against depth per data set (depth 0 is logistic regression, the same
model for both activations). Right: max |z[L](x) - (W_eff x + b_eff)| over the training and
validation inputs: float32 round-off for linear nets, O(1) for ReLU nets. Mean and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main

DATASETS = ("circles", "moons")
IDENTITY_TOLERANCE = 1e-4  # float32 round-off of a product of up to 9 matrices on inputs of order 1


def collapse(params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """W_eff = W[L] ... W[1] and b_eff = W[L] (... (W[2] b[1] + b[2]) ...) + b[L], in float64."""
    W_eff, b_eff = np.eye(params["W1"].shape[1]), np.zeros((params["W1"].shape[1], 1))
    for l in range(1, sum(name.startswith("W") for name in params) + 1):
        W, b = params[f"W{l}"].astype(np.float64), params[f"b{l}"].astype(np.float64)
        W_eff, b_eff = W @ W_eff, W @ b_eff + b
    return W_eff, b_eff


def residual(study: Study, run_id: str) -> float:
    """max |logits of the trained network - (W_eff x + b_eff)| over the run's training and validation inputs."""
    data = study.dataset(run_id)
    X = np.concatenate([data.X_train, data.X_val], axis=1)
    network = study.network(run_id)
    network.forward(X.astype(network.params()["W1"].dtype))
    W_eff, b_eff = collapse(study.final_params(run_id))
    return float(np.max(np.abs(np.asarray(network.Z_L, dtype=np.float64) - (W_eff @ X + b_eff))))


def decide(bands: pd.DataFrame) -> tuple[bool, str]:
    """Per data set: relu depth 1's band above every linear model's, and no linear net's band above logistic's.

    `bands`: mean_band rows indexed by (data, kind, depth), kind "logistic" (depth 0), "linear" or "relu".
    """
    held, parts = True, []
    for name in bands.index.get_level_values(0).unique():
        rows = bands.loc[name]
        logistic, linear = rows.loc[("logistic", 0)], rows.loc["linear"]
        linear_models = pd.concat([rows.loc[["logistic"]].droplevel(0), linear])
        relu = rows.loc["relu"]
        richer = bool(relu.loc[1, "lo"] > linear_models["hi"].max())
        no_better = bool((linear["lo"] <= logistic["hi"]).all())
        held &= richer and no_better

        def band(row: pd.Series) -> str:
            return f"{row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"

        parts.append(f"{name}: logistic {band(logistic)}; linear " + ", ".join(f"depth {d:g} {band(r)}" for d, r in linear.iterrows())
                     + "; relu " + ", ".join(f"depth {d:g} {band(r)}" for d, r in relu.iterrows())
                     + f" (relu depth 1 above every linear model: {'yes' if richer else 'no'}; "
                     + f"a linear net above logistic: {'no' if no_better else 'yes'})")
    return held, "; ".join(parts)


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    diverged = runs["tags.diverged"].eq("true") if "tags.diverged" in runs else runs["run_id"].isna()
    runs = runs[~diverged].copy()  # a diverged run has no final parameters
    runs["kind"] = np.where(runs["params.model.depth"] == 0, "logistic", runs["params.model.activation"])
    runs = runs[~((runs["kind"] == "logistic") & (runs["params.model.activation"] != "linear"))]  # depth 0 ran twice
    runs["residual"] = [residual(study, run_id) for run_id in runs["run_id"]]
    datasets = [name for name in DATASETS if name in set(runs["params.data.name"])]

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, style in zip(datasets, ("-", "--")):
        for activation in ("linear", "relu"):
            rows = runs[(runs["params.data.name"] == name) & runs["kind"].isin([activation, "logistic"])]
            plot_band(left, mean_band(rows, ["params.model.depth"], "metrics.val/acc", fraction=True), "params.model.depth",
                      f"{name}, {activation} hidden layers", linestyle=style)
            plot_band(right, mean_band(rows[rows["kind"] == activation], ["params.model.depth"], "residual", log=True),
                      "params.model.depth", f"{name}, {activation} hidden layers", linestyle=style)
    left.axhline(0.5, color="grey", linestyle=":", label="chance")
    left.set(xlabel="hidden layers (0: logistic regression)", ylabel="final validation accuracy", title="accuracy against depth")
    right.set(yscale="log", xlabel="hidden layers", ylabel="max |z[L](x) - (W_eff x + b_eff)|",
              title="sanity check: a linear net is W_eff x + b_eff (float32)")
    left.legend(fontsize=8), right.legend(fontsize=8)
    figure.tight_layout()

    bands = mean_band(runs, ["params.data.name", "kind", "params.model.depth"], "metrics.val/acc", fraction=True)
    held, evidence = decide(bands.set_index(["params.data.name", "kind", "params.model.depth"]).sort_index())
    linear_residual = float(runs.loc[runs["kind"] != "relu", "residual"].max())
    relu_residual = runs.loc[runs["kind"] == "relu", "residual"]
    identity = "holds" if linear_residual < IDENTITY_TOLERANCE else "FAILS (a harness defect)"
    evidence += (f"; circles: every linear model is at chance by symmetry; sanity check, an algebraic identity and not a "
                 f"finding: linear nets equal W_eff x + b_eff to max abs {linear_residual:.1e} ({identity} at "
                 f"{IDENTITY_TOLERANCE:.0e})" + (f", relu nets miss it by {relu_residual.min():.2g} or more" if len(relu_residual) else "")
                 + f"; {int(diverged.sum())} diverged run(s) left out")
    claim = ("on circles and on moons one relu hidden layer beats every linear model (logistic regression and linear nets "
             "of depth 1 and 8) beyond the seed bands, and no deep linear net beats logistic regression beyond them")
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("linear_collapse", analyse)

if __name__ == "__main__":
    from_shell(main)
