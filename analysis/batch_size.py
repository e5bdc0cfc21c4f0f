"""Study 3 (§7.2): the smaller the batch, the noisier the gradient estimate; mini-batch noise regularizes.

The chapter's table: SGD (batch 1) has a "high variance" gradient estimate ("noisy updates"),
mini-batch GD (32-512) "moderate variance", full-batch GD (m) the "exact" one ("converges smoothly
but can overfit"); and "mini-batch introduces noise that acts as implicit regularization".

Two tests, reported apart; the study holds only if both do (`Verdict.held` is their conjunction, so
analysis.report counts a study with one part not held as not held):

1. noise. E_B ||g_B - g||^2 / ||g||^2 (`nnresearch.probes.gradient_noise`, N_BATCHES batches drawn
   without replacement) for every mini-batch size B < m, measured at *shared* weights: each seed's
   initialization (built from the seed alone, so shared by all its runs) and the final weights of
   each of its runs. At each weight point every B sees the same g and ||g||^2, so how far a run
   trained does not enter. Held if at every weight point noise(B) / noise(B') for consecutive batch
   sizes B < B' exceeds 1 beyond its seed band (geometric mean and 95% band over seeds of the paired
   ratio: the level itself varies between seeds with ||g||^2), and the fitted exponent k of
   noise ~ f(B)^k stays within EXPONENT_TOL of 1, where f(B) = (m - B) / (B (m - 1)) is the exact
   expectation for sampling without replacement (1/B with a finite-population correction; the
   tolerance allows for the Monte Carlo error of N_BATCHES batches). Full batch has noise 0 by
   definition (g_B = g) and is not a measurement.
2. regularization. Every batch size trains the same number of updates (~3000, conf/batch/) at the
   same lr, so no run has simply taken fewer steps. The final network is evaluated on its whole
   training and validation splits. Held if every mini-batch size (32-512) ends with a smaller
   val - train loss gap than full batch beyond both seed bands, and a mean val loss no higher than
   full batch's (a smaller gap that comes with a worse val loss is underfitting, not regularization).

Top: training loss (running mean over each epoch's batches) and validation loss against updates.
Bottom left: gradient noise against batch size at shared weights, with f(B) scaled to batch 1.
Bottom right: final val - train loss gap and val loss against batch size. Mean and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import (
    SEED_PARAM,
    Study,
    Verdict,
    from_shell,
    mean_band,
    part_word,
    plot_band,
    study_main,
)
from nnresearch.probes import gradient_noise
from nnresearch.train import batch_starts, evaluate

N_BATCHES = 128  # batches per noise estimate
EXPONENT_TOL = 0.15  # |k - 1| allowed for noise ~ f(B)^k
INIT = "init"


def final_fit(study: Study, run_id: str) -> dict[str, float]:
    """Loss and accuracy of the run's final network on its whole training and validation splits (eval mode).

    The logged train/* metrics are running averages over an epoch's batches, taken before each step;
    this evaluates every run the same way.
    """
    data = study.dataset(run_id)
    network = study.network(run_id)
    dtype = network.params()["W1"].dtype
    out = {}
    for split, X, Y in (("train", data.X_train, data.Y_train), ("val", data.X_val, data.Y_val)):
        out |= {f"{split}_{k}": v for k, v in evaluate(network, X.astype(dtype), Y.astype(dtype)).items()}
    return out


def finite_population(batch: np.ndarray | int, m: int) -> np.ndarray:
    """f(B) = (m - B) / (B (m - 1)): E||g_B - g||^2 / (per-example variance) for B of m drawn without replacement."""
    batch = np.asarray(batch, dtype=float)
    return (m - batch) / (batch * (m - 1))


def shared_noise(study: Study, runs: pd.DataFrame, sizes: list[int]) -> pd.DataFrame:
    """Gradient noise of every batch size in `sizes` at each seed's shared weight points.

    One row per (seed, point, batch): point is INIT (the seed's initial weights, which all its runs
    share) or "after batch b" (the final weights of the seed's run with batch b). Each point's
    probes draw from one generator seeded by (seed, point), so the numbers are reproducible.
    """
    rows = []
    for seed, group in runs.groupby(SEED_PARAM):
        first = group["run_id"].iloc[0]
        data = study.dataset(first)
        points = [(INIT, study.network(first, "init"))]
        points += [(f"after {name}", study.network(run_id)) for run_id, name in zip(group["run_id"], group["name"])]
        for index, (point, network) in enumerate(points):
            dtype = network.params()["W1"].dtype
            X, Y = data.X_train.astype(dtype), data.Y_train.astype(dtype)
            rng = np.random.default_rng([int(seed), index])
            for batch in sizes:
                noise = gradient_noise(network, X, Y, batch, rng, n_batches=N_BATCHES)
                rows.append({"seed": seed, "point": point, "batch": batch, "noise": noise})
    return pd.DataFrame(rows)


def exponents(noise: pd.DataFrame, m: int) -> pd.DataFrame:
    """Per (seed, point), k of the least-squares fit log noise = k log f(B) + c over the batch sizes."""
    def fit(rows: pd.DataFrame) -> float:
        return float(np.polyfit(np.log(finite_population(rows["batch"].to_numpy(), m)), np.log(rows["noise"]), 1)[0])
    return noise.groupby(["seed", "point"]).apply(fit, include_groups=False).rename("exponent").reset_index()


def falls(noise: pd.DataFrame) -> pd.DataFrame:
    """Per (point, batch B -> the next larger B'), noise(B) / noise(B') at the same weights: geometric mean
    and 95% band over seeds (paired: the level of the noise varies between seeds, the ratio much less)."""
    wide = noise.pivot_table(index=["seed", "point"], columns="batch", values="noise")
    sizes = list(wide.columns)
    steps = pd.concat([(wide[a] / wide[b]).rename("ratio").reset_index().assign(pair=f"{a}/{b}")
                       for a, b in zip(sizes, sizes[1:])])
    return mean_band(steps, ["point", "pair"], "ratio", log=True)


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    diverged = runs["tags.diverged"].eq("true") if "tags.diverged" in runs else runs["run_id"].isna()
    runs = runs[~diverged].copy()  # a diverged run has no final parameters to evaluate
    m = int(runs["params.dataset.sizes.train"].iloc[0])
    size = {str(b): (m if str(b) == "None" else min(int(float(b)), m)) for b in runs["params.trainer.batch_size"].unique()}
    runs["batch"] = runs["params.trainer.batch_size"].astype(str).map(size)
    name = {b: ("full batch" if b == m else f"batch {b}") for b in runs["batch"].unique()}
    runs["name"] = runs["batch"].map(name)
    sizes = sorted(b for b in name if b < m)

    history = study.histories(["train/loss", "val/loss"], ["trainer.seed"])
    history["batch"] = history["run_id"].map(runs.set_index("run_id")["batch"])
    history = history.dropna(subset=["batch"])
    history["updates"] = history["step"] * history["batch"].map(lambda b: len(batch_starts(m, int(b))))
    noise = shared_noise(study, runs, sizes)
    fits = exponents(noise, m)
    fit = runs.join(pd.DataFrame([final_fit(study, run_id) for run_id in runs["run_id"]], index=runs.index))
    fit["loss_gap"] = fit["val_loss"] - fit["train_loss"]

    figure, ((train_ax, val_ax), (noise_ax, gap_ax)) = plt.subplots(2, 2, figsize=(12, 8))
    for batch in sorted(name):
        for ax, metric in ((train_ax, "train/loss"), (val_ax, "val/loss")):
            rows = history[(history["batch"] == batch) & (history["metric"] == metric) & (history["step"] > 0)]
            plot_band(ax, mean_band(rows, ["updates"], "value"), "updates", name[batch], marker=None)
    train_ax.set(xscale="log", yscale="log", xlabel="updates (SGD steps)", ylabel="training loss (running mean over the epoch)",
                 title="training loss against updates (same number for all)")
    val_ax.set(xscale="log", xlabel="updates (SGD steps)", ylabel="validation loss", title="validation loss against updates")
    train_ax.legend(), val_ax.legend()
    by_point = {point: mean_band(rows, ["batch"], "noise", log=True) for point, rows in noise.groupby("point")}
    order = [INIT, *(f"after {name[b]}" for b in sorted(name))]
    for index, (point, band) in enumerate(sorted(by_point.items(), key=lambda item: order.index(item[0]))):
        plot_band(noise_ax, band, "batch", f"at {point}" if point == INIT else f"at the weights {point}",
                  color=f"C{index}", linestyle="-" if point == INIT else ":")
    init_band = by_point[INIT].set_index("batch")["mean"]
    grid = np.array(sizes)
    noise_ax.plot(grid, init_band[sizes[0]] * finite_population(grid, m) / finite_population(sizes[0], m), color="black",
                  linewidth=0.8, label="f(B) = (m - B) / (B (m - 1)), scaled to init")
    noise_ax.set(xscale="log", yscale="log", xlabel=f"batch size (full batch = {m}: noise 0 by definition)",
                 ylabel="E||g_B - g||^2 / ||g||^2", title="gradient noise at shared weights")
    noise_ax.legend(fontsize=7)
    for column, label in (("loss_gap", "val loss - train loss"), ("val_loss", "val loss")):
        plot_band(gap_ax, mean_band(fit, ["batch"], column), "batch", label)
    gap_ax.set(xscale="log", xlabel=f"batch size (full batch = {m})", ylabel="loss (whole splits)",
               title="final network, equal updates")
    gap_ax.legend()
    figure.tight_layout()

    steps = falls(noise)
    falling = bool((steps["lo"] > 1).all())
    k = mean_band(fits.assign(group=fits["point"].eq(INIT).map({True: INIT, False: "trained"})), ["group"], "exponent")
    k = k.set_index("group")
    scaling = bool((abs(k["mean"] - 1) <= EXPONENT_TOL).all())
    noise_held = falling and scaling
    per_batch = {column: mean_band(fit, ["batch"], column).set_index("batch") for column in ("loss_gap", "val_loss", "train_loss")}
    gap, val = per_batch["loss_gap"], per_batch["val_loss"]
    minibatch = [b for b in sizes if b > 1]
    regularized = m in gap.index and bool(all(gap.loc[b, "hi"] < gap.loc[m, "lo"] and val.loc[b, "mean"] <= val.loc[m, "mean"]
                                              for b in minibatch))

    init = by_point[INIT].set_index("batch")
    at_init = steps[steps["point"] == INIT].set_index("pair")
    ratios = ", ".join(f"{a}/{b} {at_init.loc[f'{a}/{b}', 'mean']:.3g} [{at_init.loc[f'{a}/{b}', 'lo']:.3g}, "
                       f"{at_init.loc[f'{a}/{b}', 'hi']:.3g}] (f predicts {finite_population(a, m) / finite_population(b, m):.3g})"
                       for a, b in zip(sizes, sizes[1:]))
    lowest = steps.loc[steps["lo"].idxmin()]
    noise_text = (f"noise at shared weights (n={int(init['count'].min())} seeds): "
                  f"{part_word(noise_held)}: at init " + ", ".join(
                      f"batch {b} {init.loc[b, 'mean']:.3g} [{init.loc[b, 'lo']:.3g}, {init.loc[b, 'hi']:.3g}]" for b in sizes)
                  + f"; noise(B) / noise(next B) at init {ratios}; above 1 beyond the seed band at all {len(by_point)} weight "
                  f"points: {'yes' if falling else 'no'} (lowest band {lowest['pair']} {lowest['point']}: "
                  f"[{lowest['lo']:.3g}, {lowest['hi']:.3g}]); exponent k of noise ~ f(B)^k: " + ", ".join(
                      f"{group} {row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]" for group, row in k.iterrows())
                  + f" (held within {EXPONENT_TOL} of 1: {'yes' if scaling else 'no'})")
    reg_text = (f"regularization at equal updates: {part_word(regularized)}: " + ", ".join(
        f"{name[b]} gap {gap.loc[b, 'mean']:+.3f} [{gap.loc[b, 'lo']:+.3f}, {gap.loc[b, 'hi']:+.3f}] val loss "
        f"{val.loc[b, 'mean']:.3f} train loss {per_batch['train_loss'].loc[b, 'mean']:.3f}" for b in sorted(gap.index)))
    evidence = f"{noise_text}. {reg_text}; {int(diverged.sum())} diverged run(s) left out"
    claim = ("gradient noise falls with batch size as ~1/B (finite-population f(B)) at shared weights, and mini-batch "
             "noise regularizes: a smaller val - train loss gap than full batch at equal updates, val loss no worse")
    return figure, Verdict(study.name, claim, noise_held and regularized, evidence)


main = study_main("batch_size", analyse)

if __name__ == "__main__":
    from_shell(main)
