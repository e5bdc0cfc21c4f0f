"""Study 2 (§6.1, §6.2): naive N(0,1) weights blow up (ReLU) or saturate (tanh) the activations with
depth, Xavier (tanh) and He (ReLU) keep their std stable, Xavier with ReLU does not; all-zero weights
keep every unit of a layer identical.

The chapter: "If all weights initialized to the same value (e.g., 0), all neurons in a layer compute
identical gradients → they learn identical features forever" (§6.1); "Naive random init (e.g.,
N(0,1)) causes variance of activations to explode or vanish with depth. Proper initialization keeps
variance stable across layers", from Var(z) = n[l-1] σ² Var(a[l-1]), with Xavier σ² = 2 / (n[l-1] + n[l])
"best for Sigmoid, Tanh" and He σ² = 2 / n[l-1] "best for ReLU": "He init accounts for the fact that
ReLU zeros out ~50% of activations, effectively halving the variance contribution" (§6.2).

So with square hidden layers (n[l-1] = n[l] = n) Xavier's σ² = 1 / n is half He's, and each ReLU
layer halves Var(a): the std of A[l] shrinks by 1/sqrt(2) = 0.707 per layer, where He keeps it (1).
The random inits start with zero biases (conf/init_arm/), so the std is the weights' doing alone.
Per run of the deepest nets, the std gain per layer is 10^s, s the least-squares slope of
log10 std(A[l]) against l = 1..L at initialization. Held, for every seed: He+relu's and Xavier+tanh's
gain within 2^(±1/4) = 0.84-1.19 (halfway, on a log scale, between 1 and 0.707), Xavier+relu's below
0.84; N(0,1)+relu's std grows >100x from layer 1 to L, N(0,1)+tanh saturates >30% of its units,
Xavier+tanh <5%; zero-init nets end with a layer's units identical (unit_spread < 1e-5) although
their hidden weights moved (they start with biases 0.1: with zero biases no hidden weight moves).

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
STABLE = (("xavier_normal", "tanh"), ("he_normal", "relu"))  # §6.2's pairing of init and activation
UNSTABLE = (("xavier_normal", "relu"),)  # Xavier's variance is half He's: each ReLU layer halves Var(a)
GAIN_LIMIT = 2 ** 0.25  # halfway (log scale) between He's predicted std gain 1 and Xavier+relu's 1/sqrt(2)
EXPLODED, SATURATED, UNSATURATED = 100.0, 0.3, 0.05  # N(0,1)+relu growth, tanh saturated fractions
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

    def per_seed(frame, init, activation, how):  # one value per run (seed) of the deepest nets, from its layer table
        return how(init_rows(frame, init, activation).pivot_table(index="run_id", columns="layer", values="value"))

    def growth(table):  # std of the last hidden layer over that of the first
        return table[deepest] / table[1]

    def gain(table):  # 10^slope of log10 std against the layer: the factor each layer multiplies the std by
        return 10 ** np.polyfit(np.asarray(table.columns, float), np.log10(table.to_numpy().T), 1)[0]

    saturated = _layer(at_init, "saturated/layer")
    saturation = {init: per_seed(saturated, init, "tanh", lambda t: t.mean(axis=1)) for init in ("normal", "xavier_normal")}
    gains = {pair: per_seed(act_std, *pair, gain) for pair in STABLE + UNSTABLE}
    relu_growth = per_seed(act_std, "normal", "relu", growth)
    zeros = final[final["params.model.init"] == "zeros"]  # every depth: only hidden layers (the output has one unit)
    zero_spread = float(_layer(zeros, "unit_spread/layer")["value"].abs().max())
    moved = _layer(zeros, "weight_norm/layer").groupby("run_id")["value"].max()  # per run: its most-moved layer
    flagged = runs["tags.diverged"].eq("true") if "tags.diverged" in runs else runs["run_id"].isna()
    diverged = runs[flagged & (runs["params.model.depth"] == deepest)]
    held = (np.min(relu_growth) > EXPLODED and np.min(saturation["normal"]) > SATURATED
            and np.max(saturation["xavier_normal"]) < UNSATURATED
            and all(np.all((1 / GAIN_LIMIT < gains[p]) & (gains[p] < GAIN_LIMIT)) for p in STABLE)
            and all(np.max(gains[p]) < 1 / GAIN_LIMIT for p in UNSTABLE)
            and zero_spread < 1e-5 and moved.min() > 0)

    def span(values, fmt):  # min-max over seeds
        return f"{np.min(values):{fmt}}-{np.max(values):{fmt}}"

    evidence = (f"depth {deepest} at init ({len(relu_growth)} seeds, ranges over seeds): std gain per layer "
                + ", ".join(f"{LABEL[i]}+{a} {span(gains[i, a], '.3f')}" for i, a in STABLE + UNSTABLE)
                + f" (stable: within {1 / GAIN_LIMIT:.3f}-{GAIN_LIMIT:.3f}, i.e. 2^(+-1/4); Xavier+relu must lose "
                f"more, §6.2 predicts 1/sqrt(2) = 0.707); last / first layer std: N(0,1)+relu x{span(relu_growth, '.3g')}, "
                + ", ".join(f"{LABEL[i]}+{a} x{span(per_seed(act_std, i, a, growth), '.3g')}" for i, a in STABLE + UNSTABLE)
                + f"; tanh units saturated: N(0,1) {span(saturation['normal'], '.0%')}, "
                f"Xavier {span(saturation['xavier_normal'], '.0%')}; "
                f"zeros after training: max hidden unit_spread {zero_spread:.1e} "
                f"though each run's hidden weights moved (most-moved layer's norm {span(moved, '.2g')}); "
                f"{len(diverged)} deepest run(s) diverged ({', '.join(sorted(set(diverged['run_name']))) or 'none'})")
    claim = (f"N(0,1) explodes (relu, >{EXPLODED:g}x) / saturates (tanh, >{SATURATED:.0%}) with depth; Xavier+tanh and "
             "He+relu keep the activation std per layer within 2^(+-1/4), Xavier+relu loses more (the half ReLU "
             "zeros, which He accounts for); zero init keeps a layer's units identical (every seed)")
    return figure, Verdict(study.name, claim, bool(held), evidence)


main = study_main("initialization", analyse)

if __name__ == "__main__":
    from_shell(main)
