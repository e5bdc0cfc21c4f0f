"""Study 13 (§11.1): a network learns its own features. The first-layer weights of an MLP trained on
digits, drawn as 8x8 images (one per hidden unit), go from i.i.d. noise at initialization to
spatially structured filters: neighbouring pixels get correlated weights.

Left three panels: the rows of W1 as 8x8 images (seed 0; each image scaled to its own largest
|weight|, red > 0 > blue) at initialization and after training, without and with weight decay.
Right: the mean correlation between the weights of neighbouring pixels (horizontal and vertical
pairs, per unit, then averaged over units), at init and trained (mean and 95% band over seeds); the
dotted line is the same number for the standardized training images themselves.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, study_main
from nnresearch.data import load_dataset

SIDE = 8


def neighbour_correlation(rows: np.ndarray) -> float:
    """Mean over rows (units) of the correlation between the values of horizontally or vertically adjacent pixels."""
    images = rows.reshape(len(rows), SIDE, SIDE)
    left = np.concatenate([images[:, :, :-1].reshape(len(rows), -1), images[:, :-1, :].reshape(len(rows), -1)], axis=1)
    right = np.concatenate([images[:, :, 1:].reshape(len(rows), -1), images[:, 1:, :].reshape(len(rows), -1)], axis=1)
    left, right = left - left.mean(axis=1, keepdims=True), right - right.mean(axis=1, keepdims=True)
    norms = np.sqrt((left**2).sum(axis=1) * (right**2).sum(axis=1))
    return float(np.mean((left * right).sum(axis=1) / np.where(norms > 0, norms, np.inf)))


def mosaic(rows: np.ndarray, columns: int = 8) -> np.ndarray:
    """The rows as 8x8 tiles, each scaled to [-1, 1], on a grid with one blank (NaN) pixel between tiles."""
    count = len(rows)
    grid = np.full((-(-count // columns) * (SIDE + 1), columns * (SIDE + 1)), np.nan)
    for index, row in enumerate(rows):
        r, c = divmod(index, columns)
        grid[r * (SIDE + 1):r * (SIDE + 1) + SIDE, c * (SIDE + 1):c * (SIDE + 1) + SIDE] = \
            row.reshape(SIDE, SIDE) / (np.abs(row).max() or 1.0)
    return grid


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    weights = {(run_id, which): study.final_params(run_id, which)["W1"] for run_id in runs["run_id"] for which in ("init", "final")}
    scores = runs.loc[runs.index.repeat(2), ["run_id", "params.optim.weight_decay", "params.trainer.seed"]].reset_index(drop=True)
    scores["which"] = ["init", "final"] * len(runs)
    scores["corr"] = [neighbour_correlation(weights[(run_id, which)]) for run_id, which in zip(scores["run_id"], scores["which"])]
    images = load_dataset("digits", seed=int(runs["params.data.seed"].iloc[0])).X_train.T
    image_corr = neighbour_correlation(images)

    decays = sorted(runs["params.optim.weight_decay"].unique())
    seed0 = runs[runs["params.trainer.seed"] == runs["params.trainer.seed"].min()].set_index("params.optim.weight_decay")["run_id"]
    shown = [("at initialization", weights[(seed0.iloc[0], "init")])]
    shown += [(f"trained, weight decay {decay:g}", weights[(seed0.loc[decay], "final")]) for decay in decays if decay in seed0]
    figure, axes = plt.subplots(1, len(shown) + 1, figsize=(5 * len(shown) + 4.5, 4.2),
                                gridspec_kw={"width_ratios": [1] * len(shown) + [0.8]})
    for ax, (title, W) in zip(axes, shown):
        ax.imshow(mosaic(W), cmap="coolwarm", vmin=-1, vmax=1)
        ax.set(title=f"W1 rows {title}\nneighbour corr {neighbour_correlation(W):.2f}", xticks=[], yticks=[])
    stats = mean_band(scores, ["params.optim.weight_decay", "which"], "corr").set_index(["params.optim.weight_decay", "which"])
    bars = axes[-1]
    for offset, which in zip((-0.2, 0.2), ("init", "final")):
        rows = stats.xs(which, level=1).reindex(decays)
        error = np.nan_to_num([rows["mean"] - rows["lo"], rows["hi"] - rows["mean"]])
        bars.bar(np.arange(len(decays)) + offset, rows["mean"], width=0.4, yerr=error, capsize=4,
                 label="at init" if which == "init" else "trained")
    bars.axhline(image_corr, color="gray", linestyle=":", label="the images themselves")
    bars.axhline(0, color="black", linewidth=0.5)
    bars.set_xticks(range(len(decays)), [f"weight decay {decay:g}" for decay in decays])
    bars.set(ylabel="neighbouring-pixel correlation of W1 rows", title="spatial structure of first-layer weights",
             ylim=(min(-0.1, float(stats["lo"].min()) - 0.02), 1.4 * image_corr))
    bars.legend(fontsize=8, loc="upper left")
    figure.tight_layout()

    plain = min(decays)
    held = bool(stats.loc[(plain, "final"), "lo"] > stats.loc[(plain, "init"), "hi"])
    accuracy = runs.groupby("params.optim.weight_decay")["metrics.val/acc"].mean()
    evidence = "; ".join(f"weight decay {decay:g}: init {stats.loc[(decay, 'init'), 'mean']:.3f} "
                         f"[{stats.loc[(decay, 'init'), 'lo']:.3f}, {stats.loc[(decay, 'init'), 'hi']:.3f}] -> trained "
                         f"{stats.loc[(decay, 'final'), 'mean']:.3f} [{stats.loc[(decay, 'final'), 'lo']:.3f}, "
                         f"{stats.loc[(decay, 'final'), 'hi']:.3f}] (val acc {accuracy.loc[decay]:.3f})" for decay in decays)
    evidence += f"; the standardized images themselves: {image_corr:.3f} (n={int(stats['count'].min())} seeds)"
    claim = "first-layer weights become spatially structured (neighbouring-pixel correlation rises from ~0)"
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("representation", analyse)

if __name__ == "__main__":
    from_shell(main)
