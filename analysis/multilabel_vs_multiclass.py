"""Study 10 (§3.1): a sigmoid per output is the right head for multi-label data (independent
classes), a softmax over the outputs for multi-class data (mutually exclusive classes).

Left: validation accuracy of both heads on both data sets (mean and 95% band over seeds): per label
at threshold 0.5 for multi-label, scored here against the real multi-hot labels (each net rebuilt
from its final parameters), argmax for multi-class. Right: the logged validation accuracy against
epochs. For the softmax head on multi-label data the harness trains on (and scores against) the
targets divided by their label count, so its logged curve counts a label of a 3+-label example as a
negative; the left panel does not.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main
from nnresearch.data import load_dataset

HEADS = ("sigmoid_bce", "softmax_ce")


def val_accuracy(study: Study, run) -> float:
    """Per-label accuracy at 0.5 against the multi-hot labels (multi-label), argmax accuracy otherwise."""
    data = study.dataset(run["run_id"])
    network = study.network(run["run_id"])
    A = np.asarray(network.forward(data.X_val))
    if data.task == "multilabel":
        return float(np.mean((A >= 0.5) == (data.Y_val >= 0.5)))
    return float(np.mean(A.argmax(axis=0) == data.Y_val.argmax(axis=0)))


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs.copy()
    runs["acc"] = runs.apply(lambda run: val_accuracy(study, run), axis=1)
    history = study.histories(["val/acc"], ["data.name", "model.head"])

    figure, (bars, curves) = plt.subplots(1, 2, figsize=(13, 4.5))
    stats = mean_band(runs, ["params.data.name", "params.model.head"], "acc", fraction=True).set_index(["params.data.name", "params.model.head"])
    datasets = [name for name in ("multilabel", "digits") if name in stats.index.get_level_values(0)]
    for offset, head in zip((-0.2, 0.2), HEADS):
        rows = stats.xs(head, level=1).reindex(datasets)
        error = np.nan_to_num([rows["mean"] - rows["lo"], rows["hi"] - rows["mean"]])
        bars.bar(np.arange(len(datasets)) + offset, rows["mean"], width=0.4, yerr=error, capsize=4, label=head)
    bars.set_xticks(range(len(datasets)), [f"{name}\n({'per-label' if name == 'multilabel' else 'argmax'} accuracy)"
                                           for name in datasets])
    no_label = 1.0 - float(load_dataset("multilabel", seed=int(runs["params.data.seed"].iloc[0])).Y_val.mean())
    if "multilabel" in datasets:
        at = datasets.index("multilabel")
        bars.hlines(no_label, at - 0.4, at + 0.4, colors="gray", linestyles=":", label="predict no label")
    bars.set(ylabel="validation accuracy", ylim=(0.5, 1.0), title="head against task")
    bars.legend()
    for (name, head), rows in history.groupby(["params.data.name", "params.model.head"]):
        plot_band(curves, mean_band(rows, ["step"], "value", fraction=True), "step", f"{name}, {head}",
                  linestyle="-" if head == "sigmoid_bce" else "--", markersize=2)
    curves.set(xlabel="epoch", ylabel="logged val/acc", title="logged validation accuracy (softmax on multilabel: see docstring)")
    curves.legend(fontsize=8)
    figure.tight_layout()

    def band(name: str, head: str) -> str:
        row = stats.loc[(name, head)]
        return f"{head} {row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"

    held = all((name, head) in stats.index for name in ("multilabel", "digits") for head in HEADS)
    if held:
        sig, soft = stats.loc["multilabel"], stats.loc["digits"]
        held = bool(sig.loc["sigmoid_bce", "mean"] > sig.loc["softmax_ce", "hi"]  # beyond softmax's band
                    and soft.loc["softmax_ce", "mean"] >= min(soft.loc["sigmoid_bce", "lo"], soft.loc["sigmoid_bce", "mean"]))
    logged = runs[(runs["params.data.name"] == "multilabel") & (runs["params.model.head"] == "softmax_ce")]["metrics.val/acc"]
    complete = [name for name in datasets if all((name, head) in stats.index for head in HEADS)]
    evidence = "; ".join(f"{name}: " + ", ".join(band(name, head) for head in HEADS) for name in complete)
    evidence += (f"; predicting no label scores {no_label:.3f} per label; softmax on multilabel as logged by the "
                 f"harness (against label-count-normalized targets): {logged.mean():.3f}")
    claim = "sigmoid heads win on multi-label data, softmax is at least as good (within the seed band) on multi-class"
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("multilabel_vs_multiclass", analyse)

if __name__ == "__main__":
    from_shell(main)
