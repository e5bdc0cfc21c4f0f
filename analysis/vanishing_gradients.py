"""Study 1 (§5.3, §8.3): sigmoid gradients vanish with depth, ReLU's do not.

The chapter: "With L layers using sigmoid: gradient magnitude ∝ (0.25)^L → exponential decay. ReLU
preserves gradient magnitude (= 1) for active neurons, enabling training of very deep networks."
(§5.3); "Vanishing: If ||W|| is small or g' saturates (sigmoid) → ||δ[l]|| → 0 exponentially with
depth → early layers learn nothing", fixed by "ReLU activations, He init" (§8.3). Each activation
runs with the init §6.2 pairs it with (conf/act_init/: Xavier for sigmoid and tanh, He for ReLU).

Per run, at initialization: r(L) = ||dJ/dW[1]|| / ||dJ/dW[L+1]||, the share of the output layer's
gradient that reaches layer 1 through L hidden layers. Per activation and seed, the slope s of
log10 r(L) against L (least squares over the swept depths) is how much each added layer multiplies
the gradient reaching layer 1 (10^s); §5.3 predicts s ≈ log10(0.25) = -0.60 for sigmoid, s ≈ 0 for ReLU.
Held: the seed band (95% t-interval) of sigmoid's s lies below half that rate (-0.30 per layer),
and ReLU's within ±0.10 per layer (a factor within 0.79-1.26 per layer).

Left: ||dJ/dW[l]|| at initialization against layer l for the deepest nets. Middle: r(L) against
depth L, with 0.25^L. Right: final validation accuracy against depth. All with the mean (geometric
on log axes) and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main

ACTIVATIONS = ("sigmoid", "tanh", "relu")
SIGMOID_RATE = np.log10(0.25)  # §5.3: each sigmoid layer scales the gradient by at most sigma' <= 0.25
VANISHING = SIGMOID_RATE / 2  # sigmoid's band must lie below this slope (half the chapter's rate)
PRESERVED = 0.10  # ReLU's band must lie within +-this slope (log10 per layer)
KEYS = ["model.activation", "model.depth", "trainer.seed"]


def gradients_at_init(study: Study) -> pd.DataFrame:
    """||dJ/dW[l]|| at step 0, one row per run and layer l (column `layer`), with the runs' KEYS params."""
    deepest = int(study.runs["params.model.depth"].max())
    history = study.histories([f"grad_norm/layer{l}" for l in range(1, deepest + 2)], KEYS)
    at_init = history[history["step"] == 0].copy()
    at_init["layer"] = at_init["metric"].str.removeprefix("grad_norm/layer").astype(int)
    return at_init


def reach(at_init: pd.DataFrame) -> pd.DataFrame:
    """Per run: activation, depth L, seed, log10 r(L) and r(L) = ||dJ/dW[1]|| / ||dJ/dW[L+1]||."""
    per_run = at_init.pivot_table(index=["run_id", *(f"params.{k}" for k in KEYS)], columns="layer", values="value")
    depth = per_run.index.get_level_values("params.model.depth").astype(int)
    output = per_run.to_numpy()[np.arange(len(per_run)), per_run.columns.get_indexer(depth + 1)]
    ratio = per_run[1].to_numpy() / output
    return per_run.index.to_frame(index=False).assign(ratio=ratio, log_ratio=np.log10(ratio))


def slopes(frame: pd.DataFrame) -> pd.DataFrame:
    """Per activation and seed: the least-squares slope of log10 r(L) against depth L."""
    def slope(rows: pd.DataFrame) -> float:
        return float(np.polyfit(rows["params.model.depth"].astype(float), rows["log_ratio"], 1)[0])

    groups = frame.groupby(["params.model.activation", "params.trainer.seed"])[["params.model.depth", "log_ratio"]]
    return groups.apply(slope).rename("slope").reset_index()


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    deepest = int(runs["params.model.depth"].max())
    depths = sorted(runs["params.model.depth"].astype(int).unique())
    at_init = gradients_at_init(study)
    ratios = reach(at_init)
    deep = at_init[at_init["params.model.depth"] == deepest]

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4))
    accuracy = {}
    for activation in ACTIVATIONS:
        rows = deep[deep["params.model.activation"] == activation]
        if rows.empty:
            continue
        plot_band(left, mean_band(rows, ["layer"], "value", log=True), "layer", activation)
        mine = ratios[ratios["params.model.activation"] == activation]
        plot_band(middle, mean_band(mine, ["params.model.depth"], "ratio", log=True), "params.model.depth", activation)
        accuracy[activation] = mean_band(runs[runs["params.model.activation"] == activation], ["params.model.depth"],
                                         "metrics.val/acc", fraction=True)
        plot_band(right, accuracy[activation], "params.model.depth", activation)
    middle.plot(depths, [0.25 ** d for d in depths], "k--", label="0.25^L (§5.3)")
    left.set(yscale="log", xlabel="layer l", ylabel="||dJ/dW[l]|| at initialization", title=f"depth {deepest}: gradient by layer")
    middle.set(yscale="log", xlabel="hidden layers L", ylabel="||dJ/dW[1]|| / ||dJ/dW[L+1]|| at initialization",
               title="gradient reaching layer 1 against depth")
    right.set(xscale="log", xlabel="hidden layers", ylabel="final validation accuracy", title="accuracy against depth")
    for ax in (left, middle, right):
        ax.legend()
    figure.tight_layout()

    if len(depths) < 2:
        return figure, Verdict(study.name, CLAIM, None, f"one depth ({deepest}) has no slope against depth")
    band = mean_band(slopes(ratios), ["params.model.activation"], "slope").set_index("params.model.activation")
    held = ({"sigmoid", "relu"} <= set(band.index) and band.loc["sigmoid", "hi"] < VANISHING
            and -PRESERVED < band.loc["relu", "lo"] and band.loc["relu", "hi"] < PRESERVED)
    deep_ratio = ratios[ratios["params.model.depth"] == deepest].groupby("params.model.activation")["log_ratio"].mean()
    by_depth = "/".join(map(str, depths))
    evidence = [
        "slope of log10(layer-1 / output-layer gradient at init) per hidden layer added: " + ", ".join(
            f"{a} {band.loc[a, 'mean']:+.3f} [{band.loc[a, 'lo']:+.3f}, {band.loc[a, 'hi']:+.3f}]"
            for a in ACTIVATIONS if a in band.index)
        + f" (§5.3: sigmoid log10 0.25 = {SIGMOID_RATE:+.3f}; held if sigmoid's band < {VANISHING:+.3f}, "
          f"relu's within +-{PRESERVED:.2f})",
        f"at depth {deepest} the ratio is " + ", ".join(f"{a} {10 ** deep_ratio[a]:.2g}" for a in ACTIVATIONS
                                                      if a in deep_ratio)
        + f" (0.25^{deepest} = {0.25 ** deepest:.2g})",
        f"final val acc at depth {by_depth}: " + ", ".join(
            f"{a} {'/'.join(f'{m:.2f}' for m in rows.sort_values('params.model.depth')['mean'])}"
            for a, rows in accuracy.items()),
    ]
    if "relu" in accuracy:
        relu = accuracy["relu"].sort_values("params.model.depth")
        best = relu.loc[relu["mean"].idxmax()]
        if relu["mean"].iloc[-1] < best["lo"]:
            evidence.append(f"relu's accuracy is not kept with depth: {best['mean']:.2f} at depth "
                            f"{int(best['params.model.depth'])}, {relu['mean'].iloc[-1]:.2f} at depth {deepest} "
                            f"(below depth {int(best['params.model.depth'])}'s seed band), though its gradient reaches layer 1")
    return figure, Verdict(study.name, CLAIM, bool(held), "; ".join(evidence))


CLAIM = ("at initialization the gradient reaching layer 1 shrinks exponentially with depth for sigmoid "
         "(~0.25 per layer), not for ReLU with He init")

main = study_main("vanishing_gradients", analyse)

if __name__ == "__main__":
    from_shell(main)
