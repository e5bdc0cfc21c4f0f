"""Study 1 (§5.3, §8.3): sigmoid gradients vanish with depth, ReLU's do not.

Left: ||dJ/dW[l]|| at initialization against layer l for the deepest nets (mean and 95% band over
seeds). Right: final validation accuracy against depth. The verdict compares, at the largest
depth, how much of the last layer's gradient reaches layer 1 for sigmoid and for ReLU.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main

ACTIVATIONS = ("sigmoid", "tanh", "relu")


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    deepest = int(runs["params.model.depth"].max())
    deep_ids = runs.loc[runs["params.model.depth"] == deepest, "run_id"]
    metrics = [f"grad_norm/layer{l}" for l in range(1, deepest + 2)]
    history = study.histories(metrics, ["model.activation", "trainer.seed"])
    at_init = history[(history["step"] == 0) & history["run_id"].isin(deep_ids)].copy()
    at_init["layer"] = at_init["metric"].str.removeprefix("grad_norm/layer").astype(int)

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    reach = {}
    for activation in ACTIVATIONS:
        rows = at_init[at_init["params.model.activation"] == activation]
        if rows.empty:
            continue
        plot_band(left, mean_band(rows, ["layer"], "value", log=True), "layer", activation)
        per_run = rows.pivot_table(index="run_id", columns="layer", values="value")
        reach[activation] = float(np.median(per_run[1] / per_run[deepest + 1]))
        accuracy = mean_band(runs[runs["params.model.activation"] == activation], ["params.model.depth"], "metrics.val/acc", fraction=True)
        plot_band(right, accuracy, "params.model.depth", activation)
    left.set(yscale="log", xlabel="layer l", ylabel="||dJ/dW[l]|| at initialization", title=f"depth {deepest}: gradient by layer")
    right.set(xscale="log", xlabel="hidden layers", ylabel="final validation accuracy", title="accuracy against depth")
    left.legend(), right.legend()

    held = {"sigmoid", "relu"} <= reach.keys() and reach["sigmoid"] < 0.01 * reach["relu"]
    evidence = ", ".join(f"{a}: layer-1 / output-layer gradient {r:.2e}" for a, r in reach.items())
    return figure, Verdict(study.name, "with depth, sigmoid gradients vanish (far below ReLU's) at initialization",
                           bool(held), f"depth {deepest}: {evidence}")


main = study_main("vanishing_gradients", analyse)

if __name__ == "__main__":
    from_shell(main)
