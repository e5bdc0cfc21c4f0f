"""Study 12 (§11.3): a CNN's inductive bias (locality, translation equivariance) helps only when the
data has that structure. On MNIST-1D the CNN beats the MLP; after one fixed permutation of the input
positions it loses (most of) its advantage, while the MLP, for which a permutation only relabels its
inputs, is unchanged within the seed band.

Left: validation accuracy against epochs, per model and input order (mean and 95% band over seeds).
Right: final validation accuracy per model, ordered against permuted inputs (mean and band).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main

MODELS = ("mlp", "cnn1d")
ORDERS = {False: "ordered", True: "permuted"}


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs.copy()
    runs["order"] = runs["params.data.permute_features"].map(lambda value: ORDERS[str(value) == "True"])
    history = study.histories(["val/acc"], ["model.name", "data.permute_features"])
    history["order"] = history["params.data.permute_features"].map(lambda value: ORDERS[str(value) == "True"])

    figure, (curves, bars) = plt.subplots(1, 2, figsize=(13, 4.5))
    for (model, order), rows in history.groupby(["params.model.name", "order"]):
        plot_band(curves, mean_band(rows, ["step"], "value", fraction=True), "step", f"{model}, {order}", markersize=2,
                  color="C0" if model == "mlp" else "C1", linestyle="-" if order == "ordered" else "--")
    curves.set(xlabel="epoch", ylabel="validation accuracy", title="MNIST-1D: learning curves")
    curves.legend()
    stats = mean_band(runs, ["params.model.name", "order"], "metrics.val/acc", fraction=True).set_index(["params.model.name", "order"])
    for offset, order in zip((-0.2, 0.2), ORDERS.values()):
        rows = stats.xs(order, level=1).reindex(MODELS)
        error = np.nan_to_num([rows["mean"] - rows["lo"], rows["hi"] - rows["mean"]])
        bars.bar(np.arange(len(MODELS)) + offset, rows["mean"], width=0.4, yerr=error, capsize=4, label=f"{order} inputs")
    bars.axhline(0.1, color="gray", linestyle=":", label="chance")
    bars.set_xticks(range(len(MODELS)), MODELS)
    bars.set(ylabel="final validation accuracy", title="input order against architecture")
    bars.legend()
    figure.tight_layout()

    if not all((model, order) in stats.index for model in MODELS for order in ORDERS.values()):
        return figure, Verdict(study.name, "CNN advantage needs ordered inputs", False, "missing model/order combinations")
    acc = stats["mean"]
    gain_ordered = acc[("cnn1d", "ordered")] - acc[("mlp", "ordered")]
    gain_permuted = acc[("cnn1d", "permuted")] - acc[("mlp", "permuted")]
    mlp_ordered = stats.loc[("mlp", "ordered")]
    mlp_shift = acc[("mlp", "permuted")] - acc[("mlp", "ordered")]
    held = bool(stats.loc[("cnn1d", "ordered"), "lo"] > mlp_ordered["hi"]   # CNN better beyond both bands
                and gain_permuted < 0.5 * gain_ordered                        # loses most of its advantage
                and mlp_ordered["lo"] <= acc[("mlp", "permuted")] <= mlp_ordered["hi"])  # MLP unchanged
    evidence = (", ".join(f"{model} {order} {row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"
                          for (model, order), row in stats.iterrows())
                + f"; CNN - MLP: ordered {gain_ordered:+.3f}, permuted {gain_permuted:+.3f}; MLP permuted - ordered "
                f"{mlp_shift:+.3f} (n={int(mlp_ordered['count'])} seeds)")
    claim = "the CNN beats the MLP on ordered inputs, loses most of that on permuted ones, the MLP is unchanged"
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("inductive_bias", analyse)

if __name__ == "__main__":
    from_shell(main)
