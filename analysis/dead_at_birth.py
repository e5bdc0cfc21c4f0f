"""Study 5b (§5.2, at its extreme): a deep, narrow ReLU net is often dead at birth, the more so the deeper.

§5.2: "When z < 0 for a neuron across all training examples, its gradient is permanently 0 -> neuron
never updates. Caused by large negative bias or large learning rate. **Fix:** Leaky ReLU, He
initialization." Dead at birth: some hidden layer has z <= 0 for all its units on every training
example at initialization (step 0, exact: full-batch probe).

The verdict rests on the empirical part, per width, the fraction of seeds born dead (a 0/1 per seed,
mean and 95% t-band over seeds): at the deepest depth its band lies above the shallowest depth's
(more with depth), and at the narrowest width and deepest depth it is at least one half (often).
That a born-dead net never trains is mechanical, not a finding: everything above a fully dead layer
sees a constant, and delta = (W^T delta_next) * g'(z) is 0 in and below it, so no weight below it
moves and the output stays constant; the count of born-dead runs still dead after training is
reported as a check of the probe and the harness. Every run uses He init, the chapter's fix: the
evidence says how often He-initialized nets this narrow are dead at birth all the same.

Left: fraction of seeds dead at initialization and still dead after training, against depth, one
line per width. Right: final validation accuracy against depth (chance is 0.5 on balanced moons).
Mean and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    deepest = int(runs["params.model.depth"].max())
    history = study.histories([f"dead/layer{l}" for l in range(1, deepest + 1)], [])
    history = history[history["metric"].isin([f"dead/layer{l}" for l in range(1, deepest + 1)])]
    whole_layer = history.groupby(["run_id", "step"])["value"].max().eq(1.0).rename("dead").reset_index()
    born = whole_layer[whole_layer["step"] == 0].set_index("run_id")["dead"]
    last = whole_layer.sort_values("step").groupby("run_id").last()["dead"]
    runs = runs.assign(born_dead=runs["run_id"].map(born).astype(float), still_dead=runs["run_id"].map(last).astype(float))
    keys = ["params.model.width", "params.model.depth"]

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, (width, rows) in enumerate(runs.groupby("params.model.width")):
        color = f"C{index}"
        plot_band(left, mean_band(rows, ["params.model.depth"], "born_dead", fraction=True), "params.model.depth", f"width {width:g}: at birth",
                  color=color)
        plot_band(left, mean_band(rows, ["params.model.depth"], "still_dead", fraction=True), "params.model.depth",
                  f"width {width:g}: after training", color=color, linestyle=":", markerfacecolor="white")
        plot_band(right, mean_band(rows, ["params.model.depth"], "metrics.val/acc", fraction=True), "params.model.depth", f"width {width:g}",
                  color=color)
    left.set(xlabel="hidden layers", ylabel="fraction of seeds with a fully dead layer", title="ReLU nets dead at birth")
    left.set_ylim(-0.05, 1.05)
    right.axhline(0.5, color="grey", linewidth=0.8, label="chance")
    right.set(xlabel="hidden layers", ylabel="final validation accuracy", title="accuracy after training")
    left.legend(fontsize=8), right.legend()
    figure.tight_layout()

    born = mean_band(runs, keys, "born_dead", fraction=True).set_index(keys)
    deeper = {width: bool(rows.iloc[-1]["lo"] > rows.iloc[0]["hi"]) for width, rows in born.groupby(level=0)}
    narrow = runs["params.model.width"].min()
    often = bool(born.loc[(narrow, deepest), "mean"] >= 0.5)
    dead = runs[runs["born_dead"] == 1.0]
    init = runs["params.model.init"].iloc[0]
    evidence = ("born dead, fraction of seeds [95% band]: "
                + ", ".join(f"width {w:g} depth {d:g}: {row['mean']:.0%} [{row['lo']:.0%}, {row['hi']:.0%}]"
                            for (w, d), row in born.iterrows())
                + f" ({runs.groupby(keys).size().min()} seeds each, init {init}); more at depth {deepest} than at depth "
                + f"{int(runs['params.model.depth'].min())} beyond the band: "
                + ", ".join(f"width {w:g} {'yes' if ok else 'no'}" for w, ok in deeper.items())
                + f"; often (>= 50%) at width {narrow:g} depth {deepest}: {'yes' if often else 'no'}"
                + (f"; so {init} init, the chapter's fix, does not prevent dead-at-birth in nets this narrow and deep "
                   f"({born.loc[(narrow, deepest), 'mean']:.0%} of seeds at width {narrow:g} depth {deepest})"
                   if born.loc[(narrow, deepest), "mean"] > 0 else f"; with {init} init no seed was born dead at width {narrow:g} depth {deepest}")
                + f". Mechanical check (not a finding): {len(dead)} born-dead runs, {int((dead['still_dead'] == 1.0).sum())} "
                + f"still dead after training, their mean val acc {dead['metrics.val/acc'].mean():.3f} "
                + f"(alive runs {runs[runs['born_dead'] == 0.0]['metrics.val/acc'].mean():.3f})")
    claim = "deep narrow ReLU nets are often dead at birth, more so with depth (with He init)"
    held = bool(all(deeper.values()) and often)
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("dead_at_birth", analyse)

if __name__ == "__main__":
    from_shell(main)
