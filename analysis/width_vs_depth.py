"""Study 4 (§10): depth is more efficient than width. At (roughly) equal parameter counts, a deep
narrow ReLU net fits the composed tent map T^k (2^k linear pieces, k = 4 by default) better than one
wide layer; on a smooth target (sine) width is enough.

Left: final validation loss (MSE) against the number of hidden layers, one line per target (mean
and 95% band over seeds). Middle: linear pieces of each learned function, counted on a fine grid of
x over the training inputs (the network rebuilt from its final parameters); the dotted line is the
sawtooth's 2^k. Right: the learned sawtooth functions of seed 0 against the target.
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main
from nnresearch.data import load_dataset, tent_power

GRID = 20_001
DEFAULT_COMPOSITIONS = 4  # data=sawtooth's own default (data.compositions null)


def learned_function(study: Study, run) -> tuple[np.ndarray, np.ndarray]:
    """(x, f(x)) on a fine grid over the run's training inputs, x in the data's own (raw) units."""
    raw = load_dataset(run["params.data.name"], seed=int(run["params.data.seed"]), standardize=False).X_train[0]
    x = np.linspace(raw.min(), raw.max(), GRID)
    network = study.network(run["run_id"])
    y = network.forward(((x - raw.mean()) / raw.std())[None, :])[0]  # float64 grid: no float32 slope noise
    return x, np.asarray(y, dtype=np.float64)


def linear_pieces(x: np.ndarray, y: np.ndarray, rtol: float = 1e-2) -> int:
    """1 + the number of kinks: runs of grid cells where the slope changes by more than rtol * max |slope|
    (1%: kinks too small to see, e.g. of units with near-zero outgoing weights, are not counted)."""
    slope = np.diff(y) / np.diff(x)
    kink = np.abs(np.diff(slope)) > rtol * max(np.abs(slope).max(), 1e-12)
    return 1 + int(np.sum(kink[1:] & ~kink[:-1]) + kink[0])


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs.copy()
    runs["layers"] = runs["params.model.widths"].map(lambda widths: len(json.loads(widths)))
    curves = {run["run_id"]: learned_function(study, run) for _, run in runs.iterrows()}
    runs["pieces"] = runs["run_id"].map(lambda run_id: linear_pieces(*curves[run_id]))

    figure, (loss_ax, pieces_ax, fit_ax) = plt.subplots(1, 3, figsize=(16, 4.5))
    for target, rows in runs.groupby("params.data.name"):
        plot_band(loss_ax, mean_band(rows, ["layers"], "metrics.val/loss"), "layers", target)
        plot_band(pieces_ax, mean_band(rows, ["layers"], "pieces"), "layers", target)
    sawtooth = runs[runs["params.data.name"] == "sawtooth"]
    k = DEFAULT_COMPOSITIONS if sawtooth.empty or str(sawtooth["params.data.compositions"].iloc[0]) == "None" \
        else int(sawtooth["params.data.compositions"].iloc[0])
    pieces_ax.axhline(2**k, color="gray", linestyle=":", label=f"sawtooth T^{k}: {2**k} pieces")
    loss_ax.set(yscale="log", xlabel="hidden layers (equal parameter budget ~241-253)", ylabel="final validation MSE",
                title="fit at equal parameter count")
    pieces_ax.set(xlabel="hidden layers", ylabel="linear pieces of f (kinks > 1% of max slope)", title="pieces used by the learned function")
    seed0 = sawtooth[sawtooth["params.trainer.seed"] == sawtooth["params.trainer.seed"].min()]
    x = curves[seed0["run_id"].iloc[0]][0] if len(seed0) else np.linspace(0, 1, 2)
    fit_ax.plot(x, tent_power(x, k), color="black", linewidth=3, alpha=0.3, label=f"target T^{k}")
    for _, run in seed0.sort_values("layers").iterrows():
        fit_ax.plot(*curves[run["run_id"]], label=f"{run['params.model.widths']} ({run['pieces']} pieces)")
    fit_ax.set(xlabel="x", ylabel="f(x)", title="learned sawtooth (seed 0)")
    for ax in (loss_ax, pieces_ax, fit_ax):
        ax.legend(fontsize=8)
    for ax in (loss_ax, pieces_ax):
        ax.set_xticks(sorted(runs["layers"].unique()))
    figure.tight_layout()

    table = runs.groupby(["params.data.name", "layers"]).agg(loss=("metrics.val/loss", "mean"), pieces=("pieces", "mean"),
                                                             params=("params.model.parameters", "first"))
    band = mean_band(runs, ["params.data.name", "layers"], "metrics.val/loss").set_index(["params.data.name", "layers"])
    saw = table.loc["sawtooth"]
    shallow, deepest = saw.index.min(), saw.index.max()
    best = sawtooth.groupby("layers")["metrics.val/loss"].min()
    held = bool(shallow < deepest and band.loc[("sawtooth", deepest), "hi"] < band.loc[("sawtooth", shallow), "lo"])
    evidence = "; ".join(f"{target} " + ", ".join(f"{layers} layer(s) ({int(row.params)} params): val MSE {row.loss:.4f}, "
                                                   f"{row.pieces:.0f} pieces" for layers, row in rows.droplevel(0).iterrows())
                         for target, rows in table.groupby(level=0))
    evidence += (f"; sawtooth best seed: {best.loc[shallow]:.4f} ({shallow} layer) vs {best.loc[deepest]:.4f} ({deepest} layers), "
                 f"predicting the mean scores {1 / 12:.4f}")
    claim = "at equal parameter count the deepest net fits the sawtooth better than one wide layer (beyond the seed band)"
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("width_vs_depth", analyse)

if __name__ == "__main__":
    from_shell(main)
