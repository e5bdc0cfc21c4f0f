"""Study 4 (§10): universal approximation, and depth more efficient than width.

The chapter (§10): "A feedforward network with a single hidden layer of sufficient width and a
non-linear activation can approximate any continuous function on a compact subset of R^n to
arbitrary precision", which "guarantees expressiveness *in theory* — does not say anything about
learnability (optimization)", and "Depth is more efficient than width: Deep networks can represent
functions that require exponentially more neurons if implemented shallow (depth-separation theorems)."

Measured on the sawtooth T^k (2^k linear pieces; one hidden ReLU layer needs 2^k - 1 units to
represent it, a net of k layers x 2 units suffices) for k = 2, 3, 4, and on sine as the smooth
control. Every net trains with the same budget; what gradient descent finds is what is measured.
Decision, with MSE target `TARGET_MSE` (0.01: 12% of Var T^k = 1/12, 2% of Var sin = 1/2):
  1. universal approximation: some one-hidden-layer width reaches the target on sine (seed mean);
  2. width grows exponentially: for each seed, the smallest shallow width reaching the target at k
     (log2 w_k(seed)) is fitted against k; the slope's 95% band over seeds must lie above
     `MIN_SLOPE` (representation alone gives log2(2^k - 1): slope ~1.1 over k = 2..4). A width
     never reached is censored: it counts as twice the widest, a lower bound. The least-squares
     slope weighs w_k by k - mean(k), so it is a lower bound too when every censored k is at or
     above the mean k (then only "beyond" decides), an upper bound when every one is at or below
     it (then only "not beyond" decides), and no bound when they lie on both sides (undecided);
  3. depth stays cheap: the one fixed deep net (4 x 8, 241 parameters, which represents T^1..T^4
     exactly) reaches the target at every k in its best seed (its seed mean is reported beside).
Held iff all three hold: an optimizer that misses the deep solution, or shallow nets needing no
more units as k grows, make it "not held".

Left: final val MSE against the shallow width, one band per target; the deep net's seed mean as a
dashed line of the same colour. Middle: log2 of the shallow width needed against k (each seed and
the mean), with the representation bound log2(2^k - 1). Right: the learned T^4 of seed 0.
"""

from __future__ import annotations

import json
from dataclasses import replace

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
from nnresearch.data import tent_power
from nnresearch.experiment import load_data

GRID = 20_001
TARGET_MSE = 0.01  # the fit counted as "reached" (Var T^k = 1/12 for every k, Var sin(2 pi x) = 1/2)
MIN_SLOPE = 0.5  # d log2(width needed) / dk the band must exceed: >= 2^0.5 x more units per composition


def learned_function(study: Study, run) -> tuple[np.ndarray, np.ndarray]:
    """(x, f(x)) on a fine grid over the run's training inputs, x in the data's own (raw) units."""
    cfg = study.config(run["run_id"])
    raw = load_data(replace(cfg, data=replace(cfg.data, standardize=False))).X_train[0]
    x = np.linspace(raw.min(), raw.max(), GRID)
    y = study.network(run["run_id"]).forward(((x - raw.mean()) / raw.std())[None, :])[0]
    return x, np.asarray(y, dtype=np.float64)


def width_needed(shallow: pd.DataFrame, target: float) -> tuple[pd.Series, pd.Series]:
    """Per (k, seed): the smallest one-layer width whose val MSE <= target, 2 x the widest where none
    does; and whether none does (censored: that width is a lower bound)."""
    reached = shallow[shallow["metrics.val/loss"] <= target]
    needed = reached.groupby(["k", "params.trainer.seed"])["width"].min()
    index = pd.MultiIndex.from_frame(shallow[["k", "params.trainer.seed"]].drop_duplicates())
    needed = needed.reindex(index).sort_index()
    return needed.fillna(2 * shallow["width"].max()), needed.isna()


def slope_bound(censored: pd.Series) -> str | None:
    """What the least-squares slope of log2 width against k is to the true one, given which widths are
    censored (true width larger): it weighs w_k by k - mean(k), so "exact" when every censored k has
    weight 0 (or none is censored), "lower" when every weight is >= 0 (raising them raises the slope),
    "upper" when every one is <= 0, and None when they lie on both sides."""
    ks = censored.index.get_level_values("k")
    weights = ks[censored.to_numpy()] - ks.unique().to_numpy().mean()
    if (weights == 0).all():
        return "exact"
    return "lower" if (weights >= 0).all() else "upper" if (weights <= 0).all() else None


def slope_band(needed: pd.Series) -> tuple[float, float, float]:
    """Mean and 95% t-band over seeds (`mean_band`: n - 1 degrees of freedom) of the least-squares slope
    of log2(width needed) against k; a single seed's band is unbounded."""
    slopes = pd.DataFrame({"slope": [np.polyfit(rows.index.get_level_values("k"), np.log2(rows.to_numpy()), 1)[0]
                                     for _, rows in needed.groupby(level="params.trainer.seed")], "all": 0})
    band = mean_band(slopes, ["all"], "slope").iloc[0]
    if len(slopes) < 2:
        return float(band["mean"]), -np.inf, np.inf
    return float(band["mean"]), float(band["lo"]), float(band["hi"])


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs.copy()
    widths = runs["params.model.widths"].map(json.loads)
    runs["deep"] = widths.map(len) > 1
    runs["width"] = widths.map(lambda w: w[0])
    runs["k"] = pd.to_numeric(runs["params.data.compositions"], errors="coerce")
    runs["target"] = np.where(runs["params.data.name"] == "sine", "sine",
                              "sawtooth T^" + runs["k"].fillna(0).astype(int).astype(str))
    saw = runs[runs["params.data.name"] == "sawtooth"]
    shallow, deep = saw[~saw["deep"]], saw[saw["deep"]]
    ks = sorted(saw["k"].unique())

    # 1. universal approximation on sine
    sine = mean_band(runs[(runs["target"] == "sine") & ~runs["deep"]], ["width"], "metrics.val/loss", log=True)
    fits_sine = sine[sine["mean"] <= TARGET_MSE]
    ua = not fits_sine.empty
    # 2. width needed on the sawtooth
    needed, censored = width_needed(shallow, TARGET_MSE)
    slope, slope_lo, slope_hi = slope_band(needed)
    bound = slope_bound(censored)
    beyond = slope_lo > MIN_SLOPE
    grows = {"exact": beyond, "lower": True if beyond else None, "upper": None if beyond else False, None: None}[bound]
    # 3. the fixed deep net
    deep_best = deep.groupby("k")["metrics.val/loss"].min()
    deep_mean = deep.groupby("k")["metrics.val/loss"].mean()
    deep_ok = bool(len(deep_best) == len(ks) and (deep_best <= TARGET_MSE).all())
    deep_params = int(deep["params.model.parameters"].iloc[0]) if len(deep) else 0

    figure, (loss_ax, need_ax, fit_ax) = plt.subplots(1, 3, figsize=(16, 4.5))
    for target, rows in runs.groupby("target"):
        band = mean_band(rows[~rows["deep"]], ["width"], "metrics.val/loss", log=True)
        plot_band(loss_ax, band, "width", target)
        if rows["deep"].any():
            loss_ax.axhline(rows.loc[rows["deep"], "metrics.val/loss"].mean(), linestyle="--",
                            color=loss_ax.lines[-1].get_color(), linewidth=1)
    loss_ax.axhline(TARGET_MSE, color="black", linestyle=":", label=f"target MSE {TARGET_MSE}")
    loss_ax.set(xscale="log", yscale="log", xlabel="one hidden layer: width (dashed: deep 4x8 net, mean)",
                ylabel="final val MSE", title="shallow width vs fit (same budget)")
    loss_ax.set_xscale("log", base=2)
    for seed, rows in needed.groupby(level="params.trainer.seed"):
        need_ax.plot(rows.index.get_level_values("k"), np.log2(rows), marker="o", alpha=0.4, label=f"seed {seed}")
    mean_need = np.log2(needed).groupby(level="k").mean()
    need_ax.plot(mean_need.index, mean_need, color="black", marker="s", label=f"mean (slope {slope:.2f})")
    need_ax.plot(ks, np.log2(2.0 ** np.array(ks) - 1), color="gray", linestyle=":", label="log2(2^k - 1): exact")
    need_ax.set(xlabel="compositions k (2^k pieces)", ylabel="log2 shallow width reaching target",
                title=f"shallow width needed (the deep net: {deep_params} params at every k)", xticks=ks)
    k_max = max(ks) if ks else 1
    seed0 = saw[(saw["k"] == k_max) & (saw["params.trainer.seed"] == saw["params.trainer.seed"].min())]
    x = np.linspace(0, 1, GRID)
    fit_ax.plot(x, tent_power(x, int(k_max)), color="black", linewidth=3, alpha=0.3, label=f"target T^{int(k_max)}")
    for _, run in seed0.sort_values(["deep", "width"]).iterrows():
        fit_ax.plot(*learned_function(study, run), linewidth=1, label=run["params.model.widths"])
    fit_ax.set(xlabel="x", ylabel="f(x)", title=f"learned T^{int(k_max)} (seed 0)")
    for ax in (loss_ax, need_ax, fit_ax):
        ax.legend(fontsize=7)
    figure.tight_layout()

    parts = (ua, grows, deep_ok)
    held = False if False in parts else None if None in parts else True
    sine_best = f"width {int(fits_sine['width'].min())} (MSE {fits_sine.sort_values('width')['mean'].iloc[0]:.2g})" \
        if ua else f"none of widths {sorted(sine['width'].astype(int))} (best MSE {sine['mean'].min():.2g})"
    needed_text = ", ".join(f"k={int(k)}: {'/'.join(str(int(w)) for w in rows)}"
                            for k, rows in needed.groupby(level="k"))
    evidence = (f"target val MSE {TARGET_MSE}; 1. one layer fits sine: {'yes' if ua else 'NO'}, {sine_best}; "
                f"2. shallow width needed per seed ({needed_text}; {int(2 * shallow['width'].max()) if len(shallow) else 0} = "
                f"never reached, a lower bound), slope of log2 width vs k {slope:.2f} [{slope_lo:.2f}, {slope_hi:.2f}] "
                + f"{'>' if beyond else 'NOT >'} {MIN_SLOPE}" + ("" if bound == "exact" else
                  f" (the widths never reached make it {dict(lower='a lower', upper='an upper').get(bound, 'no')} bound: "
                  f"{part_word(grows)})")
                + f"; 3. deep {deep_params}-param net best seed / mean MSE: "
                + ", ".join(f"k={int(k)}: {deep_best[k]:.2g} / {deep_mean[k]:.2g}" for k in deep_best.index)
                + f" -> {'reaches' if deep_ok else 'does NOT reach'} the target at every k")
    claim = ("one wide layer fits a smooth target, but on T^k the shallow width needed grows ~2^k while one fixed "
             "deep net reaches the same MSE at every k")
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("width_vs_depth", analyse)

if __name__ == "__main__":
    from_shell(main)
