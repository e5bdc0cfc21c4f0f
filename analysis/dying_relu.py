"""Study 5 (§5.2): ReLU units die (z <= 0 for every training example, so zero gradient, so no update)
more often with a large negative initial bias and a large learning rate; Leaky ReLU fixes it.

From each run's parameters (mean and 95% band over seeds), against the learning rate, one line per
activation and initial bias. Left: dead units after training, i.e. z <= 0 on the whole training split
(the network rebuilt from its final parameters). Right: frozen units, whose incoming weights and bias
are bit-identical at the start and at the end: they never received any gradient. Diverged runs have
no final parameters and are counted apart.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main


def dead_and_frozen(study: Study, run) -> dict[str, float]:
    """Fractions of hidden units that are dead on the training split, and that never moved."""
    data = study.dataset(run["run_id"])
    network = study.network(run["run_id"])
    network.forward(data.X_train.astype(network.params()["W1"].dtype))
    hidden = network.units[:-1]
    dead = np.concatenate([np.all(unit.Z_act <= 0, axis=1) for unit in hidden])
    init, final = study.final_params(run["run_id"], "init"), study.final_params(run["run_id"], "final")
    frozen = np.concatenate([np.all(init[f"W{l}"] == final[f"W{l}"], axis=1) & (init[f"b{l}"] == final[f"b{l}"])[:, 0]
                             for l in range(1, len(hidden) + 1)])
    return {"dead": float(dead.mean()), "frozen": float(frozen.mean())}


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    diverged = runs["tags.diverged"].eq("true") if "tags.diverged" in runs else runs["run_id"].isna()
    fine = runs[~diverged].reset_index(drop=True)
    fine = fine.join(fine.apply(lambda run: dead_and_frozen(study, run), axis=1, result_type="expand"))
    keys = ["params.model.activation", "params.model.bias_value"]

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, column, title in zip(axes, ("dead", "frozen"), ("dead: z <= 0 on every training example",
                                                            "frozen: weights never changed")):
        for (activation, bias), rows in fine.groupby(keys):
            plot_band(ax, mean_band(rows, ["params.optim.lr"], column, fraction=True), "params.optim.lr", f"{activation}, bias {bias:g}",
                      linestyle="-" if activation == "relu" else "--")
        ax.set(xscale="log", xlabel="learning rate", ylabel=f"fraction of hidden units {column}", title=title)
        ax.set_ylim(-0.03, 1.03)
        ax.legend()
    figure.tight_layout()

    mean = fine.groupby([*keys, "params.optim.lr"])[["dead", "frozen"]].mean()
    relu, leaky = mean.loc["relu"], mean.loc["leaky_relu"]
    by_bias = relu["dead"].groupby(level=0).mean()
    by_lr = relu.loc[0.0, "dead"].sort_index()  # zero bias: the learning rate's own effect, at the lrs relu survived
    held = bool(by_bias.loc[by_bias.index.min()] > by_bias.loc[0.0] and by_lr.iloc[-1] > by_lr.iloc[0]
                and relu["frozen"].max() > 0 and leaky["frozen"].max() == 0)
    evidence = (f"relu dead fraction (mean over lr): bias 0 {by_bias.loc[0.0]:.2f}, bias {by_bias.index.min():g} "
                f"{by_bias.loc[by_bias.index.min()]:.2f}; relu with bias 0 by lr: "
                + ", ".join(f"lr {lr:g} {dead:.2f}" for lr, dead in by_lr.items())
                + f"; frozen units: relu up to {relu['frozen'].max():.2f}, leaky_relu max {leaky['frozen'].max():.2f} "
                f"(leaky_relu's z <= 0 fraction up to {leaky['dead'].max():.2f}, but such units still get alpha-scaled "
                f"gradients); {int(diverged.sum())} of {len(runs)} runs diverged")
    claim = "relu dead units grow with a negative bias and with the lr; leaky_relu units never stop updating"
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("dying_relu", analyse)

if __name__ == "__main__":
    from_shell(main)
