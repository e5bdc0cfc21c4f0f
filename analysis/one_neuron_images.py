"""Study 11 (§2.3): logistic regression is a single neuron; on 64x64x3 images it learns a weight
vector w in R^12288 that classifies held-out images above chance (and fits the 240 training images
far better than it generalises). Softmax regression on digits is the multi-class counterpart.

Left: train and validation accuracy against epochs for both data sets (mean and 95% band over
seeds; epoch 0 is the zero initialization, later train accuracy is the running mean over the epoch's
batches). Middle and right: the final w of the images64 model (seed 0) reshaped to 64x64x3, as an
RGB image (0.5 = zero weight) and as the sum over the colour channels (red: evidence for "disc",
blue: for "square").
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main

SHAPE = (64, 64, 3)  # images64 flattens row, column, channel


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    history = study.histories(["train/acc", "val/acc"], ["data.name"])
    figure, (curves, rgb, summed) = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.6, 1, 1]})
    for (name, metric), rows in history.groupby(["params.data.name", "metric"]):
        plot_band(curves, mean_band(rows, ["step"], "value", fraction=True), "step", f"{name} {metric.split('/')[0]}",
                  linestyle="-" if metric == "val/acc" else "--", markersize=2, color="C0" if name == "images64" else "C1")
    curves.set(xlabel="epoch", ylabel="accuracy", title="one neuron (images64) / one softmax layer (digits)")
    curves.legend(fontsize=8)

    images = runs[runs["params.data.name"] == "images64"].sort_values("params.trainer.seed")
    if not images.empty:
        w = study.final_params(images["run_id"].iloc[0])["W1"].reshape(SHAPE)
        scale = np.abs(w).max() or 1.0
        rgb.imshow(0.5 + 0.5 * w / scale)
        channel_sum = w.sum(axis=2)
        limit = np.abs(channel_sum).max() or 1.0
        shown = summed.imshow(channel_sum, cmap="coolwarm", vmin=-limit, vmax=limit)
        figure.colorbar(shown, ax=summed, fraction=0.046)
    rgb.set(title="w reshaped to 64x64x3 (RGB)", xticks=[], yticks=[])
    summed.set(title="w summed over channels", xticks=[], yticks=[])
    figure.tight_layout()

    held, parts = True, []
    for name, rows in runs.groupby("params.data.name"):
        chance = 1.0 / max(2, int(rows["params.dataset.n_outputs"].iloc[0]))
        val = mean_band(rows.assign(all=0), ["all"], "metrics.val/acc", fraction=True).iloc[0]
        gap = float((rows["metrics.train/acc"] - rows["metrics.val/acc"]).mean())
        lower = val["lo"] if np.isfinite(val["lo"]) else val["mean"]
        held &= bool(lower > chance)
        parts.append(f"{name} ({int(rows['params.dataset.n_features'].iloc[0])} features): val acc {val['mean']:.3f} "
                     f"[{val['lo']:.3f}, {val['hi']:.3f}] vs chance {chance:.2f}, train acc "
                     f"{rows['metrics.train/acc'].mean():.3f}, train - val gap {gap:+.3f}")
    claim = "a single neuron (softmax layer) classifies held-out images above chance"
    return figure, Verdict(study.name, claim, held and len(parts) > 0, "; ".join(parts))


main = study_main("one_neuron_images", analyse)

if __name__ == "__main__":
    from_shell(main)
