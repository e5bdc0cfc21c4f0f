"""Study 10 (§3.1): a sigmoid per output is the right head for multi-label data, a softmax over the
outputs for multi-class data.

§3.1's table: "Multi-label | Sigmoid per output neuron | Classes are independent (multiple can be
true)"; "Multi-class | Softmax over all outputs | Classes are mutually exclusive".

The same one-hidden-layer MLP with either head, 5 seeds, on a multi-label set (data=multilabel: 5
labels, 0-5 per example; the softmax head trains on the multi-hot targets divided by their count) and
on a multi-class one (digits). Every score is computed here on the validation split from each run's
final network (`Study.network`), against the real targets:

- example-based F1 with each head's outputs read the same way, every output >= 0.5 a predicted label:
  F1_i = 2 |P_i & Y_i| / (|P_i| + |Y_i|) per example (1 when both are empty), averaged. A softmax can
  put at most one output above 0.5, independent sigmoids any number; on multi-label data the sigmoids
  must win it, on multi-class data the softmax. References on the multi-label split: predicting no
  label, and a perfect predictor allowed at most one label per example (the best any one-label
  reading can do); exact-match (subset) accuracy is reported beside it, not decided on: about half
  of the validation examples carry at most one label, where a softmax can match exactly.
- threshold-free, so that no reading of the outputs decides: on multi-label data the per-label ROC
  AUC (macro mean over labels), where the sigmoids must be above the softmax too; on multi-class data
  argmax accuracy and the negative log-likelihood of the true class (the sigmoid outputs divided by
  their sum), where the softmax must be no worse than the sigmoids (its mean within or beyond the
  sigmoid's band). Bands: 95% t-intervals over seeds; "above" means the bands do not overlap.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from analysis.common import Study, Verdict, from_shell, mean_band, study_main

HEADS = ("sigmoid_bce", "softmax_ce")
DATASETS = ("multilabel", "digits")
THRESHOLD = 0.5


def example_f1(P: np.ndarray, Y: np.ndarray) -> float:
    """Mean over examples of 2 |P & Y| / (|P| + |Y|), 1 where both are empty. P, Y: `(C, m)` booleans."""
    overlap, size = (P & Y).sum(axis=0), P.sum(axis=0) + Y.sum(axis=0)
    return float(np.mean(np.where(size == 0, 1.0, 2.0 * overlap / np.maximum(size, 1))))


def scores(A: np.ndarray, Y: np.ndarray, task: str) -> dict[str, float]:
    """The validation scores of one net's outputs A `(C, m)` against its targets Y `(C, m)` (multi-hot or one-hot)."""
    P, T = A >= THRESHOLD, Y >= 0.5
    out = {"f1": example_f1(P, T), "exact": float(np.mean((P == T).all(axis=0)))}
    if task == "multilabel":
        out["auc"] = float(roc_auc_score(T.T, A.T, average="macro"))
    else:
        y = T.argmax(axis=0)
        p = A / A.sum(axis=0, keepdims=True)  # a softmax's already sums to 1
        out["acc"] = float(np.mean(A.argmax(axis=0) == y))
        out["nll"] = float(-np.mean(np.log(np.maximum(p[y, np.arange(y.size)], np.finfo(np.float64).tiny))))
    return out


def references(Y: np.ndarray) -> dict[str, float]:
    """Example F1 and exact match of predicting no label, and of a perfect predictor allowed at most one label."""
    T = Y >= 0.5
    labels = T.sum(axis=0)
    return {"none_f1": float(np.mean(labels == 0)), "none_exact": float(np.mean(labels == 0)),
            "one_f1": float(np.mean(np.where(labels == 0, 1.0, 2.0 / (1.0 + np.maximum(labels, 1))))),
            "one_exact": float(np.mean(labels <= 1))}


def decide(bands: dict[str, pd.DataFrame]) -> tuple[bool, list[str]]:
    """The four parts of the rule, each with its outcome. `bands[score]`: mean_band rows indexed by (data, head)."""
    def above(score: str, data: str, winner: str, loser: str) -> bool:
        return bool(bands[score].loc[(data, winner), "lo"] > bands[score].loc[(data, loser), "hi"])

    acc, nll = bands["acc"], bands["nll"]
    parts = {
        "multilabel F1: sigmoid above softmax": above("f1", "multilabel", *HEADS),
        "multilabel AUC: sigmoid above softmax": above("auc", "multilabel", *HEADS),
        "digits F1: softmax above sigmoid": above("f1", "digits", *reversed(HEADS)),
        "digits: softmax no worse in accuracy and NLL": bool(
            acc.loc[("digits", "softmax_ce"), "mean"] >= acc.loc[("digits", "sigmoid_bce"), "lo"]
            and nll.loc[("digits", "softmax_ce"), "mean"] <= nll.loc[("digits", "sigmoid_bce"), "hi"]),
    }
    return all(parts.values()), [f"{part}: {'yes' if ok else 'no'}" for part, ok in parts.items()]


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    rows, refs = [], None
    for run_id in study.runs["run_id"]:
        data = study.dataset(run_id)
        A = np.asarray(study.network(run_id).forward(data.X_val), dtype=np.float64)
        rows.append(scores(A, data.Y_val, data.task))
        if data.task == "multilabel":
            refs = references(data.Y_val)
    runs = pd.concat([study.runs, pd.DataFrame(rows, index=study.runs.index)], axis=1)
    keys = ["params.data.name", "params.model.head"]
    bands = {score: mean_band(runs.dropna(subset=[score]), keys, score, fraction=score != "nll").set_index(keys)
             for score in ("f1", "exact", "auc", "acc", "nll") if score in runs}
    datasets = [name for name in DATASETS if name in set(runs["params.data.name"])]

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [(axes[0], "f1", datasets, "example F1 (outputs >= 0.5 are labels)"),
              (axes[1], "auc", ["multilabel"], "per-label ROC AUC (macro)"),
              (axes[2], "nll", ["digits"], "NLL of the true class")]
    for ax, score, names, label in panels:
        names = [name for name in names if score in bands and name in bands[score].index.get_level_values(0)]
        for offset, head in zip((-0.2, 0.2), HEADS):
            band = bands[score].reindex([(name, head) for name in names]) if names else None
            if band is not None:
                error = np.nan_to_num([band["mean"] - band["lo"], band["hi"] - band["mean"]])
                ax.bar(np.arange(len(names)) + offset, band["mean"], width=0.4, yerr=error, capsize=4, label=head)
        ax.set_xticks(range(len(names)), names)
        ax.set(ylabel=f"validation {label}", title=label)
    if refs is not None and "multilabel" in datasets:
        at = datasets.index("multilabel")
        axes[0].hlines(refs["one_f1"], at - 0.4, at + 0.4, colors="black", linestyles="--", label="perfect, at most one label")
        axes[0].hlines(refs["none_f1"], at - 0.4, at + 0.4, colors="gray", linestyles=":", label="predict no label")
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(0.5, 1)  # 0.5: a score that ranks at random
    for ax in axes:
        ax.legend(fontsize=8)
    figure.tight_layout()

    complete = all((name, head) in bands["f1"].index for name in DATASETS for head in HEADS)
    held, parts = decide(bands) if complete else (None, ["a data set or head has no run: nothing to compare"])

    def band(score: str, name: str, head: str) -> str:
        if (name, head) not in bands.get(score, pd.DataFrame()).index:
            return f"{head} -"
        row = bands[score].loc[(name, head)]
        return f"{head} {row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"

    def both(score: str, name: str) -> str:
        return ", ".join(band(score, name, head) for head in HEADS)

    evidence = (f"multilabel: example F1 {both('f1', 'multilabel')}; per-label AUC {both('auc', 'multilabel')}; "
                f"exact match {both('exact', 'multilabel')}; digits: example F1 {both('f1', 'digits')}; "
                f"argmax accuracy {both('acc', 'digits')}; NLL {both('nll', 'digits')}")
    if refs is not None:
        evidence += (f"; multilabel references: predicting no label F1 {refs['none_f1']:.3f} (exact {refs['none_exact']:.3f}), "
                     f"a perfect predictor of at most one label F1 {refs['one_f1']:.3f} (exact {refs['one_exact']:.3f})")
    evidence += "; " + "; ".join(parts)
    claim = ("each head wins where §3.1 prescribes it: on multi-label data the sigmoids beat the softmax (example F1 and "
             "per-label AUC), on multi-class data the softmax beats the sigmoids (example F1) and is no worse in "
             "accuracy or NLL, beyond 5-seed bands")
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("multilabel_vs_multiclass", analyse)

if __name__ == "__main__":
    from_shell(main)
