"""Study 5 (§5.2): "When z < 0 for a neuron across all training examples, its gradient is permanently 0
-> neuron never updates. Caused by large negative bias or large learning rate. **Fix:** Leaky ReLU, He
initialization."

A ReLU unit is dead when z <= 0 on the whole training split (the network rebuilt from its final
parameters): its g'(z) = 0 there, so by delta = (W^T delta_next) * g'(z) it receives no gradient. That
a dead ReLU unit gets no gradient is the definition, not a finding; what is tested is what the chapter
says causes it and fixes it, each beyond the 95% seed band (Student t over seeds):

1. negative bias: at the smallest lr, ReLU's dead fraction with initial bias -1 above bias 0's band,
   at both inits;
2. large lr: at bias 0, ReLU's dead fraction at the largest lr above the smallest lr's band, at both
   inits (whether it rises through the middle lr too is reported, not required: the chapter says
   "large", not "monotone");
3. Leaky ReLU fixes it: at bias -1, in every (init, lr) cell where ReLU's val accuracy falls below its
   bias-0 band (dying cost it accuracy), the Leaky ReLU net of the same seed (same initial weights)
   ends with a higher val accuracy, the band of the per-seed difference above 0. A Leaky unit with
   z <= 0 everywhere still gets alpha times the gradient, so it is not dead and is never counted as
   dead here: whether it recovers shows only in what the net learns;
4. He init fixes it: ReLU's dead fraction with He init below Xavier's band at both causes (bias -1 at
   the smallest lr, and bias 0 at the largest lr).

Held only if all four hold. Runs that diverged have no final parameters: they are left out of the
dead fractions and keep their logged val accuracy.

Left: ReLU's dead fraction against the learning rate, one line per init and bias. Right: final val
accuracy, ReLU (solid) and Leaky ReLU (dashed). Mean and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import (
    Study,
    Verdict,
    from_shell,
    mean_band,
    part_word,
    plot_band,
    study_main,
)

ACT, INIT, BIAS, LR, SEED = ("params.model.activation", "params.model.init", "params.model.bias_value",
                             "params.optim.lr", "params.trainer.seed")
ACC = "metrics.val/acc"
HE, XAVIER = "he_normal", "xavier_normal"


def dead_fraction(study: Study, run) -> float:
    """Fraction of hidden units with z <= 0 on every training example, from the run's final parameters."""
    data = study.dataset(run["run_id"])
    network = study.network(run["run_id"])
    network.forward(data.X_train.astype(network.params()["W1"].dtype))
    return float(np.concatenate([np.all(unit.Z_act <= 0, axis=1) for unit in network.units[:-1]]).mean())


def bands(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """`mean_band` indexed by `by`."""
    return mean_band(frame.dropna(subset=[value]), by, value).set_index(by)


def show(row: pd.Series, digits: int = 2) -> str:
    return f"{row['mean']:.{digits}f} [{row['lo']:.{digits}f}, {row['hi']:.{digits}f}]"


def above(high: pd.Series, low: pd.Series) -> bool:
    """`high`'s band lies entirely above `low`'s."""
    return bool(high["lo"] > low["hi"])


def leaky_gain(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (init, bias, lr): mean and band over seeds of val acc(leaky_relu) - val acc(relu), same seed."""
    wide = runs.pivot_table(index=[INIT, BIAS, LR, SEED], columns=ACT, values=ACC).dropna()
    return bands((wide["leaky_relu"] - wide["relu"]).rename("gain").reset_index(), [INIT, BIAS, LR], "gain")


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs.copy()
    diverged = runs["tags.diverged"].eq("true") if "tags.diverged" in runs else pd.Series(False, index=runs.index)
    relu = runs[runs[ACT].eq("relu") & ~diverged].copy()
    relu["dead"] = relu.apply(lambda run: dead_fraction(study, run), axis=1)
    biases, lrs = (sorted(runs[key].unique()) for key in (BIAS, LR))
    inits = sorted({*runs[INIT], HE, XAVIER})
    cells = pd.MultiIndex.from_product([inits, biases, lrs], names=[INIT, BIAS, LR])  # a cell no run finished in: NaN
    dead, gain = bands(relu, [INIT, BIAS, LR], "dead").reindex(cells), leaky_gain(runs).reindex(cells)
    acc = bands(runs, [ACT, INIT, BIAS, LR], ACC).reindex(
        pd.MultiIndex.from_product([["relu", "leaky_relu"], inits, biases, lrs], names=[ACT, INIT, BIAS, LR])).sort_index()
    low, high, neg = lrs[0], lrs[-1], float(runs[BIAS].min())

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, (init, bias) in enumerate((i, b) for i in inits for b in biases):
        color = f"C{index}"
        plot_band(left, dead.loc[(init, bias)].reset_index(), LR, f"{init}, bias {bias:g}", color=color)
        for activation, style in (("relu", "-"), ("leaky_relu", "--")):
            plot_band(right, acc.loc[(activation, init, bias)].reset_index(), LR, f"{activation}, {init}, bias {bias:g}",
                      color=color, linestyle=style)
    left.set(xscale="log", xlabel="learning rate", ylabel="fraction of ReLU hidden units dead",
             title="ReLU: z <= 0 on every training example")
    left.set_ylim(-0.03, 1.03)
    right.axhline(0.5, color="grey", linewidth=0.8)
    right.set(xscale="log", xlabel="learning rate", ylabel="final validation accuracy", title="ReLU (solid) vs Leaky ReLU (dashed)")
    left.legend(fontsize=8), right.legend(fontsize=7)
    figure.tight_layout()

    bias_kills = all(above(dead.loc[(i, neg, low)], dead.loc[(i, 0.0, low)]) for i in inits)
    lr_kills = all(above(dead.loc[(i, 0.0, high)], dead.loc[(i, 0.0, low)]) for i in inits)
    monotone = {i: bool(np.all(np.diff(dead.loc[(i, 0.0)].sort_index()["mean"].to_numpy()) > 0)) for i in inits}
    hurt = [(i, lr) for i in inits for lr in lrs if acc.loc[("relu", i, neg, lr), "hi"] < acc.loc[("relu", i, 0.0, lr), "lo"]]
    fixed = {cell: bool(gain.loc[(cell[0], neg, cell[1]), "lo"] > 0) for cell in hurt}
    leaky_fixes = bool(hurt) and all(fixed.values())
    he_cells = [(neg, low), (0.0, high)]
    he_fixes = all(dead.loc[(HE, *cell), "hi"] < dead.loc[(XAVIER, *cell), "lo"] for cell in he_cells)

    evidence = (
        "ReLU dead fraction, mean [95% band] over seeds: "
        + "; ".join(f"{i} bias {b:g}: " + ", ".join(f"lr {lr:g} {show(dead.loc[(i, b, lr)])}" for lr in lrs)
                    for i in inits for b in (0.0, neg))
        + f". (1) bias {neg:g} kills more at lr {low:g}: {part_word(bias_kills)}"
        + f". (2) lr {high:g} kills more than lr {low:g} at bias 0: {part_word(lr_kills)} (rising through every lr: "
        + ", ".join(f"{i} {'yes' if m else 'no'}" for i, m in monotone.items())
        + f"). (3) Leaky ReLU (alpha {float(runs['params.model.alpha'].iloc[0]):g}) fixes it, leaky - relu val acc, same seed, "
        + f"at bias {neg:g} where relu lost accuracy to bias 0: "
        + (", ".join(f"{i} lr {lr:g}: relu {show(acc.loc[('relu', i, neg, lr)], 3)}, leaky {show(acc.loc[('leaky_relu', i, neg, lr)], 3)}, "
                     f"gain {show(gain.loc[(i, neg, lr)], 3)}" for i, lr in hurt) or "no such cell")
        + f": {part_word(leaky_fixes)} ({sum(fixed.values())} of {len(fixed)} cells; elsewhere at bias {neg:g}: "
        + (", ".join(f"{i} lr {lr:g} gain {show(gain.loc[(i, neg, lr)], 3)}" for i in inits for lr in lrs if (i, lr) not in hurt)
           or "none")
        + f"). (4) He init has fewer dead ReLU units than Xavier at both causes: {part_word(he_fixes)} ("
        + ", ".join(f"bias {b:g} lr {lr:g}: He {show(dead.loc[(HE, b, lr)])}, Xavier {show(dead.loc[(XAVIER, b, lr)])}"
                    for b, lr in he_cells) + ")"
        + f". {int(diverged.sum())} of {len(runs)} runs diverged")
    claim = ("ReLU units die from a negative bias and from a large lr; Leaky ReLU recovers the accuracy dying costs; "
             "He init has fewer dead units than Xavier")
    return figure, Verdict(study.name, claim, bias_kills and lr_kills and leaky_fixes and he_fixes, evidence)


main = study_main("dying_relu", analyse)

if __name__ == "__main__":
    from_shell(main)
