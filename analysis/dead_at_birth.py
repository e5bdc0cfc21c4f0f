"""Study 5b (§5.2): a deep, narrow ReLU net is often dead at birth: some hidden layer has z <= 0 for all
its units on every training example, the output is constant, and no gradient ever flows below it.

Left: fraction of seeds dead at initialization (step 0, exact: full-batch probe) and still dead after
training, against depth, one line per width. Right: final validation accuracy against depth (chance
is 0.5 on balanced moons). Mean and 95% band over seeds.
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

    fractions = runs.groupby(keys)["born_dead"].mean()
    deeper = all(group.iloc[-1] > group.iloc[0] for _, group in fractions.groupby(level=0))
    dead = runs[runs["born_dead"] == 1.0]
    never_trained = bool((dead["still_dead"] == 1.0).all())
    narrow = int(runs["params.model.width"].min())
    held = bool(deeper and fractions.loc[(narrow, deepest)] >= 0.5 and never_trained and not dead.empty)
    evidence = ("born dead: " + ", ".join(f"width {w:g} depth {d:g}: {f:.0%}" for (w, d), f in fractions.items())
                + f" ({runs.groupby(keys).size().min()} seeds each); {len(dead)} born-dead runs, "
                + f"{int((dead['still_dead'] == 1.0).sum())} still dead after training, their mean val acc "
                + f"{dead['metrics.val/acc'].mean():.3f} "
                + f"(alive runs {runs[runs['born_dead'] == 0.0]['metrics.val/acc'].mean():.3f})")
    claim = "deep narrow ReLU nets are often dead at birth (more so with depth) and then never train"
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("dead_at_birth", analyse)

if __name__ == "__main__":
    from_shell(main)
