"""Study 2 (§6.1, §6.2): naive N(0,1) weights blow up (ReLU) or saturate (tanh) the activations with
depth, Xavier / He keep their std O(1); all-zero weights keep every unit of a layer identical.

Top: std of A[l] at initialization against layer l for the deepest nets, tanh (left) and ReLU
(right), one line per init (zeros has std 0 and is left off the log axis). Bottom left: training
loss of the deepest nets against epochs. Both with the geometric mean and 95% band over seeds (taken
on log10). Bottom right: unit_spread of the hidden layers after training (0 = all units of the layer
have the same incoming weights), mean and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main

INITS = ("zeros", "normal", "xavier_normal", "he_normal")
LABEL = {"zeros": "zeros", "normal": "N(0,1)", "xavier_normal": "Xavier", "he_normal": "He"}
MATCHED = {"tanh": "xavier_normal", "relu": "he_normal"}  # the chapter's pairing of init and activation
KEYS = ["model.init", "model.activation", "model.depth", "trainer.seed"]


def _layer(frame, prefix):
    frame = frame[frame["metric"].str.startswith(prefix)].copy()
    frame["layer"] = frame["metric"].str.removeprefix(prefix).astype(int)
    return frame


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    deepest = int(runs["params.model.depth"].max())
    hidden = range(1, deepest + 1)
    metrics = [f"{m}/layer{l}" for m in ("act_std", "unit_spread", "weight_norm") for l in hidden]
    metrics += [f"saturated/layer{l}" for l in hidden if "tanh" in set(runs["params.model.activation"])]
    everything = study.histories([*metrics, "train/loss"], KEYS)
    final = everything[everything["step"] == everything.groupby("run_id")["step"].transform("max")]
    history = everything[everything["params.model.depth"] == deepest]
    at_init, last = history[history["step"] == 0], final[final["params.model.depth"] == deepest]

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    act_std = _layer(at_init, "act_std/layer")
    for ax, activation in zip(axes[0], ("tanh", "relu")):
        for init in INITS[1:]:
            rows = act_std[(act_std["params.model.activation"] == activation) & (act_std["params.model.init"] == init)]
            if not rows.empty:
                plot_band(ax, mean_band(rows, ["layer"], "value", log=True), "layer", LABEL[init])
        ax.set(yscale="log", xlabel="hidden layer l", ylabel="std of A[l] at initialization",
               title=f"{activation}, depth {deepest}: activation std by layer")
        ax.legend()
    loss = history[history["metric"] == "train/loss"]
    for (activation, init), rows in loss.groupby(["params.model.activation", "params.model.init"]):
        plot_band(axes[1, 0], mean_band(rows, ["step"], "value", log=True), "step", f"{activation} {LABEL[init]}",
                  linestyle="-" if activation == "relu" else "--", markersize=3)
    axes[1, 0].set(yscale="log", xlabel="epoch", ylabel="training loss",
                   title=f"depth {deepest}: loss (a curve that stops = diverged)")
    axes[1, 0].legend(fontsize=8, ncol=2)
    spread = _layer(last, "unit_spread/layer")
    per_run = spread.groupby(["run_id", "params.model.init", "params.model.activation"])["value"].mean().reset_index()
    bars = mean_band(per_run, ["params.model.init", "params.model.activation"], "value")
    labels = [f"{LABEL[i]}\n{a}" for i, a in zip(bars["params.model.init"], bars["params.model.activation"])]
    axes[1, 1].bar(labels, bars["mean"], yerr=[bars["mean"] - bars["lo"], bars["hi"] - bars["mean"]], capsize=3)
    axes[1, 1].set(ylabel="unit_spread, mean over hidden layers", title=f"depth {deepest}: after training (0 = identical units)")
    axes[1, 1].tick_params(axis="x", labelsize=8)
    figure.tight_layout()

    def init_rows(frame, init, activation):
        return frame[(frame["params.model.init"] == init) & (frame["params.model.activation"] == activation)]

    def growth(init, activation):  # std of the last hidden layer over that of the first, median over seeds
        table = init_rows(act_std, init, activation).pivot_table(index="run_id", columns="layer", values="value")
        return float(np.median(table[deepest] / table[1]))

    saturated = _layer(at_init, "saturated/layer")
    saturation = {init: float(init_rows(saturated, init, "tanh")["value"].mean()) for init in ("normal", "xavier_normal")}
    layer_means = act_std.groupby(["params.model.init", "params.model.activation", "layer"])["value"].mean()
    drift = {a: float(layer_means[i, a].max() / layer_means[i, a].min()) for a, i in MATCHED.items()}
    zeros = final[final["params.model.init"] == "zeros"]  # every depth: only hidden layers (the output has one unit)
    zero_spread = float(_layer(zeros, "unit_spread/layer")["value"].abs().max())
    zeros_moved = float(_layer(zeros, "weight_norm/layer")["value"].max())
    relu_growth = growth("normal", "relu")
    flagged = runs["tags.diverged"].eq("true") if "tags.diverged" in runs else runs["run_id"].isna()
    diverged = runs[flagged & (runs["params.model.depth"] == deepest)]
    held = (relu_growth > 100 and saturation["normal"] > 0.3 and saturation["xavier_normal"] < 0.05
            and max(drift.values()) < 3 and zero_spread < 1e-5 and zeros_moved > 0)
    evidence = (f"depth {deepest} at init: N(0,1)+relu std grows x{relu_growth:.3g} from layer 1 to {deepest} "
                f"(He+relu x{growth('he_normal', 'relu'):.3g}, Xavier+relu x{growth('xavier_normal', 'relu'):.3g}); "
                f"tanh units saturated: N(0,1) {saturation['normal']:.0%}, Xavier {saturation['xavier_normal']:.0%}; "
                f"largest / smallest layer std: Xavier+tanh {drift['tanh']:.2f}, He+relu {drift['relu']:.2f}; "
                f"zeros after training: max hidden unit_spread {zero_spread:.1e} "
                f"though hidden weights grew to norm {zeros_moved:.2g}; "
                f"{len(diverged)} deepest run(s) diverged ({', '.join(sorted(set(diverged['run_name']))) or 'none'})")
    claim = ("N(0,1) explodes (relu, >100x) / saturates (tanh, >30%) with depth, Xavier/He keep the std "
             "within 3x across layers, zero init keeps a layer's units identical")
    return figure, Verdict(study.name, claim, bool(held), evidence)


main = study_main("initialization", analyse)

if __name__ == "__main__":
    from_shell(main)
