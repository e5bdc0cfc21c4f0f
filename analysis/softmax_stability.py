"""Study 8 (§3.1): the naive softmax overflows once a logit passes exp's float32 limit; the max-shifted
softmax is the same function and never does.

What §3.1 ("Numerical stability — Log-Sum-Exp trick") claims, in full:
    "Naive Softmax overflows for large z_i. Stable implementation:
     a_i = e^(z_i - max_j z_j) / sum_{j=1}^{C} e^(z_j - max_j z_j)
     This is mathematically equivalent (constant cancels) but avoids `inf` in `exp`."
It gives no stable form of the loss (its cross-entropy is L = -sum_k y_k log a_k, with dL/dz = a - y),
so the verdict tests the softmax A itself, run by run (per-seed counts, no means):
  - naive: A[L], and with it the gradient delta[L] = A - Y, is non-finite at initialization in every run
    whose largest initial logit on the training inputs exceeds EXP_OVERFLOW = log(float32 max) = 88.72
    (e^z = inf, inf / inf = NaN), and in no run whose every logit (training and validation inputs) is
    below it. The overflow is the run's own record: tags diverged=true, diverged_quantity=A[L] at step 0
    (`Network.first_non_finite`). A naive run that stopped on an infinite loss with A finite (its
    loss is -log a_y: a true class's a_y underflowed to 0) did not overflow. The same holds after
    training, in the harness's test evaluation (step epochs x batches): a naive run that finished its
    epochs overflows there exactly when a test logit of its final weights exceeds 88.72 (digits' test
    split has standardized pixels up to ~260, so trained weights reach it from std 0.5 up).
  - shifted: no run's A[L] is ever non-finite, and its columns sum to 1 within SUM_TOLERANCE on the
    training and validation inputs at initialization and after training.
  - equivalent: at the smallest init std (logits far below the overflow) the heads train alike: per
    seed, |final val loss naive - shifted| <= GAP_TOLERANCE (a diverged run counts as NaN: not alike).
A sweep without naive runs on both sides of 88.72 decides nothing (inconclusive).
Beyond the chapter, reported but not decided on: the shift does not stop underflow, so -log of the
shifted softmax's true-class probability is inf where that probability is 0 in float32, while the
log-sum-exp form -log a_y = logsumexp(z) - z_y, the loss the softmax_ce head trains on, stays finite.

Left: per run, whether A[L] was non-finite at step 0 against its largest initial logit (circles), and
in the test evaluation against the largest test logit of its final weights (triangles); the dotted line
is 88.72. Middle: per run, the training examples whose true-class probability under the shifted softmax
is 0 at initialization (their log is -inf). Right: final validation accuracy of the runs that finished
training, mean and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main
from nnresearch.nn.losses import log_softmax, softmax

EXP_OVERFLOW = float(np.log(np.finfo(np.float32).max))  # 88.72: e^z is inf in float32 beyond it
SUM_TOLERANCE = 1e-5  # |sum_k a_k - 1| a float32 softmax of 10 classes stays within
GAP_TOLERANCE = 1e-3  # |val loss naive - shifted| of one seed at the smallest std
NAIVE, SHIFTED = "naive_softmax_ce", "softmax_ce"
HEADS = {NAIVE: "naive softmax", SHIFTED: "shifted softmax"}
OVERFLOW_QUANTITY = "A[L]"  # diverged_quantity of a run whose head output turned NaN/inf


def logits(params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Z = W1 X + b1, `(classes, m)`, in the parameters' dtype (float32) as the run computed it."""
    return params["W1"] @ X.astype(params["W1"].dtype) + params["b1"]


def sum_error(params: dict[str, np.ndarray], inputs: list[np.ndarray]) -> float:
    """max over columns of |sum_k a_k - 1| for the shifted softmax of W1 X + b1 (inf if A is not finite)."""
    A = [softmax(logits(params, X)) for X in inputs]
    return max(float(np.abs(a.sum(axis=0) - 1.0).max()) if np.isfinite(a).all() else np.inf for a in A)


def _has_final(study: Study, run_id: str) -> bool:
    """Whether the run logged `params/final.npz`: it finished training (a run that diverged only in the
    test evaluation, after its last epoch, did)."""
    return any(item.path == "params/final.npz" for item in MlflowClient(study.uri).list_artifacts(run_id, "params"))


def per_run(study: Study) -> pd.DataFrame:
    """The runs with, from their initial parameters: the largest logit on the training inputs (`top_train`)
    and on all inputs (`top`), the training examples whose shifted true-class probability is 0 in float32
    (`underflowed`) and whose log-sum-exp loss is not finite (`lse_nonfinite`); from their final
    parameters, if any (`trained`): the largest logit on the test inputs (`top_test`), which the harness
    evaluates after the last epoch; from their tags: `overflow` (A[L] non-finite), `stopped_on_loss`
    (a non-finite loss with A finite) and the `step`; for shifted runs, `sum_error` at init and at the end."""
    runs = study.runs.copy()
    data = study.dataset(runs["run_id"].iloc[0])  # one data set for every run
    true = np.argmax(data.Y_train, axis=0)
    columns = np.arange(true.size)
    tag = {name: runs.get(f"tags.{name}", pd.Series(index=runs.index, dtype=object))
           for name in ("diverged", "diverged_quantity", "diverged_at_step")}
    diverged = tag["diverged"].eq("true")
    runs["overflow"] = diverged & tag["diverged_quantity"].eq(OVERFLOW_QUANTITY)
    runs["stopped_on_loss"] = diverged & ~runs["overflow"]
    runs["step"] = pd.to_numeric(tag["diverged_at_step"], errors="coerce")
    rows = []
    for run_id, head in zip(runs["run_id"], runs["params.model.head"]):
        init = study.final_params(run_id, "init")
        final = study.final_params(run_id) if _has_final(study, run_id) else None
        Z = logits(init, data.X_train)
        with np.errstate(divide="ignore"):
            log_shifted = np.log(softmax(Z)[true, columns])
        row = {"top_train": float(Z.max()), "top": max(float(Z.max()), float(logits(init, data.X_val).max())),
               "underflowed": int(np.isneginf(log_shifted).sum()),
               "lse_nonfinite": int((~np.isfinite(log_softmax(Z)[true, columns])).sum()), "trained": final is not None,
               "top_test": np.nan if final is None else float(logits(final, data.X_test).max()), "sum_error": np.nan}
        if head == SHIFTED:
            row["sum_error"] = max([sum_error(init, [data.X_train, data.X_val])]
                                   + ([] if final is None else [sum_error(final, [data.X_train, data.X_val, data.X_test])]))
        rows.append(row)
    runs = pd.concat([runs, pd.DataFrame(rows, index=runs.index)], axis=1)
    runs["val_loss"] = runs["metrics.val/loss"].where(runs["trained"])  # a run stopped earlier logged no final epoch
    runs["val_acc"] = runs["metrics.val/acc"].where(runs["trained"])
    return runs


def side(runs: pd.DataFrame) -> pd.Series:
    """Where a run's initial logits lie: "above" (a training logit > 88.72: the first evaluation, on the
    training set, must overflow), "below" (every logit <= 88.72), or "val only" (only a validation logit above)."""
    return pd.Series(np.select([runs["top_train"] > EXP_OVERFLOW, runs["top"] <= EXP_OVERFLOW], ["above", "below"],
                               "val only"), index=runs.index)


def _range(values: pd.Series) -> str:
    return f"{values.min():.3g}-{values.max():.3g}" if len(values) else "none"


def _figure(runs: pd.DataFrame) -> plt.Figure:
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.5))
    for position, (head, name) in enumerate(HEADS.items()):
        rows = runs[runs["params.model.head"] == head]
        y = position + 0.06 * (rows["params.trainer.seed"].astype(float) - 2)
        at_init, at_test = rows["overflow"] & (rows["step"] == 0), rows["overflow"] & rows["trained"]
        for x, mask, label, style in (
                ("top", at_init, "step 0: A[L] NaN", dict(color="C3", marker="o")),
                ("top", ~at_init & ~(rows["stopped_on_loss"] & (rows["step"] == 0)), "step 0: A[L] finite",
                 dict(color="C2", marker="o")),
                ("top", rows["stopped_on_loss"] & (rows["step"] == 0), "step 0: A[L] finite, -log a_y = inf",
                 dict(color="C1", marker="x")),
                ("top_test", at_test, "test, final weights: A[L] NaN", dict(color="C3", marker="^")),
                ("top_test", rows["trained"] & ~at_test, "test, final weights: A[L] finite", dict(color="C2", marker="^"))):
            if mask.any():
                left.scatter(rows.loc[mask, x], y[mask] + (0.3 if x == "top_test" else 0), label=f"{name}, {label}",
                             s=18, **style)
    left.axvline(EXP_OVERFLOW, color="grey", linestyle=":", label=f"e^z overflows (float32, z > {EXP_OVERFLOW:.1f})")
    left.set(xscale="log", yticks=range(len(HEADS)), yticklabels=list(HEADS.values()), ylim=(-0.4, len(HEADS) - 0.3),
             xlabel="largest logit of the evaluated inputs (one point per seed)", title="§3.1: does the softmax overflow?")
    left.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    shifted = runs[runs["params.model.head"] == SHIFTED]
    middle.scatter(shifted["top"], shifted["underflowed"] + 1, color="C0")
    middle.axvline(EXP_OVERFLOW, color="grey", linestyle=":")
    middle.set(xscale="log", yscale="log", xlabel="largest logit at initialization",
               ylabel="1 + training examples with a_y = 0", title="beyond §3.1: shifted a_y underflows, log a_y = -inf")
    for head, name in HEADS.items():
        trained = runs[(runs["params.model.head"] == head) & runs["trained"]]
        if not trained.empty:
            plot_band(right, mean_band(trained, ["params.model.init_std"], "val_acc", fraction=True),
                      "params.model.init_std", name)
    right.set(xscale="log", xlabel="initial weight std", ylabel="final validation accuracy",
              title="runs that finished training")
    right.legend()
    figure.tight_layout()
    return figure


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = per_run(study)
    figure = _figure(runs)

    naive = runs[runs["params.model.head"] == NAIVE].assign(side=lambda frame: side(frame))
    shifted = runs[runs["params.model.head"] == SHIFTED]
    at_init = naive["overflow"] & (naive["step"] == 0)
    above, below, val_only = (naive[naive["side"] == where] for where in ("above", "below", "val only"))
    trained = naive[naive["trained"]]
    test_above, test_below = trained[trained["top_test"] > EXP_OVERFLOW], trained[trained["top_test"] <= EXP_OVERFLOW]
    unchecked = naive["overflow"] & (naive["step"] > 0) & ~naive["trained"]  # overflowed mid-training: no weights kept
    smallest = runs["params.model.init_std"].min()
    pair = runs[runs["params.model.init_std"] == smallest].pivot_table(
        index="params.trainer.seed", columns="params.model.head", values="val_loss", dropna=False)
    gaps = (pair.get(NAIVE, np.nan) - pair.get(SHIFTED, np.nan)).abs()
    gap = float(gaps.max()) if len(gaps) and gaps.notna().all() else np.nan
    error = float(shifted["sum_error"].max())

    held = (None if above.empty or below.empty or shifted.empty else
            bool(at_init[above.index].all() and not at_init[below.index].any()
                 and test_above["overflow"].all() and not test_below["overflow"].any()
                 and not shifted["overflow"].any() and error <= SUM_TOLERANCE and gap <= GAP_TOLERANCE))
    per_std = ", ".join(f"{std:g} {int(at_init[rows.index].sum())}/{len(rows)} ({_range(rows['top'])})"
                        for std, rows in naive.groupby("params.model.init_std"))
    parts = [f"naive softmax, A[L] non-finite at step 0: {int(at_init[above.index].sum())}/{len(above)} runs with a "
             f"training logit above {EXP_OVERFLOW:.2f} (largest initial logits {_range(above['top_train'])}), "
             f"{int(at_init[below.index].sum())}/{len(below)} runs with every logit below ({_range(below['top'])})",
             f"per init std, overflowed/runs (largest logits): {per_std}"]
    if not val_only.empty:
        parts.append(f"{len(val_only)} naive run(s) with only a validation logit above left out "
                     f"({int(at_init[val_only.index].sum())} overflowed at step 0)")
    parts.append(f"in the test evaluation after training (final weights): A[L] non-finite in "
                 f"{int(test_above['overflow'].sum())}/{len(test_above)} naive runs with a test logit above "
                 f"({_range(test_above['top_test'])}), {int(test_below['overflow'].sum())}/{len(test_below)} with every "
                 f"test logit below ({_range(test_below['top_test'])})")
    if unchecked.any():
        parts.append(f"{int(unchecked.sum())} naive run(s) overflowed during training, where no weights were kept to check")
    parts += [f"shifted softmax: A[L] non-finite in {int(shifted['overflow'].sum())}/{len(shifted)} runs, columns "
              f"sum to 1 within {error:.1e} at init and after training",
              f"std {smallest:g}: |final val loss naive - shifted| up to {gap:.1e} over {len(gaps)} seeds",
              f"beyond the chapter: at init the shifted softmax's true-class a_y is 0 in float32 (log a_y = -inf) for "
              f"some training example in {int((shifted['underflowed'] > 0).sum())}/{len(shifted)} runs (std "
              f"{', '.join(f'{s:g}' for s in sorted(shifted.loc[shifted['underflowed'] > 0, 'params.model.init_std'].unique())) or 'none'}), "
              f"the log-sum-exp loss is non-finite in {int((shifted['lse_nonfinite'] > 0).sum())}; "
              f"{int(naive['stopped_on_loss'].sum())} naive run(s) stopped on that -log a_y = inf with A[L] finite"]
    claim = ("the naive softmax's A (and A - Y) turns NaN exactly when a logit passes e^z's float32 overflow (88.7); "
             "the max-shifted softmax never does, sums to 1 and trains like the naive one below it")
    return figure, Verdict(study.name, claim, held, "; ".join(parts))


main = study_main("softmax_stability", analyse)

if __name__ == "__main__":
    from_shell(main)
