"""Study 7 (§2.2): with a sigmoid output, BCE's error signal a - y stays large where the output is
confidently wrong, MSE's 2 (a - y) sigma'(z) vanishes there, so BCE learns faster early on.

Left: ||dJ/dW|| of the output layer at initialization (epoch 0) and on the last batch of each of the
first EARLY epochs (geometric mean and 95% band over seeds, taken on log10).
Middle: validation accuracy against epochs. Right: epochs until validation accuracy first reaches
TARGET (runs that never do are drawn at epochs + 1). Colour = initial weight std, solid = BCE,
dashed = MSE; otherwise mean and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main

TARGET = 0.9
EARLY = 5  # epochs of the gradient panel
HEADS = {"sigmoid_bce": ("BCE", "-"), "sigmoid_mse": ("MSE", "--")}


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    epochs = int(runs["params.trainer.epochs"].max())
    history = study.histories(["grad_norm/layer1", "val/acc"], ["model.head", "model.init_std"])
    stds = sorted(runs["params.model.init_std"].unique())
    accuracy = history[history["metric"] == "val/acc"]
    reached = accuracy[accuracy["value"] >= TARGET].groupby("run_id")["step"].min()
    runs = runs.assign(epochs_to_target=runs["run_id"].map(reached).fillna(epochs + 1))

    figure, (grad_ax, acc_ax, speed_ax) = plt.subplots(1, 3, figsize=(16, 4.5))
    for (head, std), rows in history.groupby(["params.model.head", "params.model.init_std"]):
        name, style = HEADS[head]
        color = f"C{stds.index(std)}"
        gradient = rows[(rows["metric"] == "grad_norm/layer1") & (rows["step"] <= EARLY)]
        plot_band(grad_ax, mean_band(gradient, ["step"], "value", log=True), "step", f"{name}, std {std:g}",
                  color=color, linestyle=style)
        band = mean_band(rows[rows["metric"] == "val/acc"], ["step"], "value", fraction=True)
        plot_band(acc_ax, band, "step", f"{name}, std {std:g}", color=color, linestyle=style, markersize=3)
    for head, (name, style) in HEADS.items():
        band = mean_band(runs[runs["params.model.head"] == head], ["params.model.init_std"], "epochs_to_target")
        plot_band(speed_ax, band, "params.model.init_std", name, linestyle=style)
    grad_ax.set(yscale="log", xlabel="epoch (0 = initialization)", ylabel="||dJ/dW|| of the output layer",
                title=f"output-layer gradient, first {EARLY} epochs")
    acc_ax.axhline(TARGET, color="grey", linewidth=0.8)
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="accuracy against epochs")
    speed_ax.set(xscale="log", xlabel="initial weight std", ylabel=f"epochs to val acc >= {TARGET}",
                 title=f"speed (never reached = {epochs + 1})")
    grad_ax.legend(fontsize=7, ncol=2), acc_ax.legend(fontsize=7, ncol=2), speed_ax.legend()
    figure.tight_layout()

    at_init = history[(history["metric"] == "grad_norm/layer1") & (history["step"] == 0)]
    gradient = at_init.groupby(["params.model.init_std", "params.model.head"])["value"].mean().unstack()
    speed = runs.groupby(["params.model.init_std", "params.model.head"])["epochs_to_target"].mean().unstack()
    ratio = gradient["sigmoid_bce"] / gradient["sigmoid_mse"]
    held = bool((ratio > 1).all() and (speed["sigmoid_bce"] <= speed["sigmoid_mse"]).all()
                and speed.loc[stds[-1], "sigmoid_bce"] < speed.loc[stds[-1], "sigmoid_mse"])
    never = runs[runs["epochs_to_target"] > epochs].groupby("params.model.head").size()
    evidence = "; ".join(
        f"std {std:g}: gradient at init BCE/MSE = {ratio[std]:.3g}, epochs to {TARGET}: BCE {speed.loc[std, 'sigmoid_bce']:.1f}, "
        f"MSE {speed.loc[std, 'sigmoid_mse']:.1f}" for std in stds)
    evidence += f" (runs never reaching {TARGET} in {epochs} epochs, counted as {epochs + 1}: " \
                + (", ".join(f"{HEADS[h][0]} {n}" for h, n in never.items()) or "none") + ")"
    claim = f"BCE's gradient at initialization is larger and it reaches val acc {TARGET} in fewer epochs than MSE"
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("bce_vs_mse", analyse)

if __name__ == "__main__":
    from_shell(main)
