"""Study 13 (§11.1): a network is a hierarchy of feature extractors, simple primitives in its first
layer, semantic concepts in its deepest. Two nets of four hidden layers on MNIST-1D, an MLP (64 ReLU
units a layer) and a 1-D CNN (16 ReLU channels a layer), `deep_net=mlp4,cnn4`, 5 seeds each.

"Semantic" is read as the class, made linearly readable: a linear probe (multinomial logistic
regression, scikit-learn, C=1 on standardized activations) is fitted to each hidden layer's
activations A[l] on the training split and scored on the validation split; layer 0 is the raw
signal. The same probes on the same networks at initialization (`params/init.npz`) tell what the
architecture alone gives. "Simple primitives" is read, for the MLP, as first-layer weights that are
smooth along the signal: the correlation between neighbouring positions of each row of W1 (one row
per unit, 40 positions), ~0 for i.i.d. random weights.

Rule, fixed before the full profile ran; bands are 95% t-intervals over seeds. Held if, for both nets,
  (a) trained, the deepest hidden layer's probe accuracy band lies above the first hidden layer's;
  (b) the deepest hidden layer's band trained lies above its band at initialization;
  (c) the rise is learned: the band of (deepest - first)_trained - (deepest - first)_init, per seed,
      lies above 0 (a rise the untrained architecture has as well does not count);
and (d) the MLP's first-layer neighbour correlation band trained lies above its band at init.

Top: probe accuracy against layer, trained and at init (mean and band over seeds), per net; the
dotted line is the probe on the raw signal (layer 0), the thin one chance (0.1). Bottom: the MLP's
W1 rows (seed 0) as an image, units down, positions across (each row scaled to its own largest
|weight|, red > 0 > blue), at init and trained (trained rows sorted by where their largest |weight|
lies), and the neighbour correlation at init and trained (mean and band), with the signals' own as
a dotted line.
"""

from __future__ import annotations

import warnings
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import Study, Verdict, from_shell, mean_band, study_main

PROBE_C = 1.0  # inverse L2 strength of the probe (scikit-learn's default), on standardized activations
PROBE_MAX_ITER = 2000
WHICH = {"init": "at init", "final": "trained"}
NETS = {"mlp": "MLP, 4 hidden layers of 64", "cnn1d": "1-D CNN, 4 conv layers of 16 channels"}


def neighbour_correlation(rows: np.ndarray) -> float:
    """Mean over rows of the correlation between the values at neighbouring positions (i, i+1) of a row."""
    left, right = rows[:, :-1], rows[:, 1:]
    left, right = left - left.mean(axis=1, keepdims=True), right - right.mean(axis=1, keepdims=True)
    norms = np.sqrt((left**2).sum(axis=1) * (right**2).sum(axis=1))
    return float(np.mean((left * right).sum(axis=1) / np.where(norms > 0, norms, np.inf)))


def hidden_activations(network, X: np.ndarray) -> list[np.ndarray]:
    """A[l] of every hidden layer (the numbered layers `Network.units` but the output layer) for the
    columns of X, as (m, features) float64 arrays: a conv layer's (channels, positions) flattened."""
    dtype = network.params()["W1"].dtype
    network.forward(np.ascontiguousarray(X, dtype=dtype), train=False)
    m = X.shape[-1]
    return [np.asarray(unit.A, dtype=np.float64).reshape(-1, m).T for unit in network.units[:-1]]


def probe_accuracy(train: np.ndarray, y_train: np.ndarray, val: np.ndarray, y_val: np.ndarray) -> float:
    """Validation accuracy of a linear probe fitted on (train, y_train), one example per row."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(train)
    # One BLAS thread: L-BFGS on a (2400, 640) problem is many small products, which a thread pool slows
    # down: on 2 cores with other work running, 13 s against 3 s for one trained CNN's four probes, and
    # 655 s against 48 s for the full profile's analysis.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("error", ConvergenceWarning)  # an unconverged probe is a bug here, not a number
        probe = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER).fit(scaler.transform(train), y_train)
    return float(probe.score(scaler.transform(val), y_val))


def labels(Y: np.ndarray) -> np.ndarray:
    return np.argmax(Y, axis=0)


def probe_profile(network, data) -> list[float]:
    """Probe accuracy (train -> val) at hidden layers 1..L of `network` on `data`."""
    train, val = hidden_activations(network, data.X_train), hidden_activations(network, data.X_val)
    return [probe_accuracy(a, labels(data.Y_train), b, labels(data.Y_val)) for a, b in zip(train, val)]


def raw_probe(data) -> float:
    """Probe accuracy on the raw (standardized) signal: layer 0."""
    return probe_accuracy(data.X_train.T, labels(data.Y_train), data.X_val.T, labels(data.Y_val))


def probe_table(study: Study, runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float], dict[str, Any]]:
    """One row per (run, which, layer) with the probe's val accuracy; the raw-signal probe and the data set,
    per data config (each data set is built once)."""
    datasets: dict[str, Any] = {}
    raw: dict[str, float] = {}
    rows = []
    for run in runs.itertuples():
        key = str(study.config(run.run_id).data)
        if key not in datasets:
            datasets[key] = study.dataset(run.run_id)
            raw[key] = raw_probe(datasets[key])
        for which in WHICH:
            profile = probe_profile(study.network(run.run_id, which), datasets[key])
            rows += [{"run_id": run.run_id, "net": run.net, "seed": run.seed, "which": which, "layer": layer,
                      "acc": acc} for layer, acc in enumerate(profile, start=1)]
    return pd.DataFrame(rows), raw, datasets


def sort_by_peak(rows: np.ndarray) -> np.ndarray:
    return rows[np.argsort(np.argmax(np.abs(rows), axis=1), kind="stable")]


def scaled(rows: np.ndarray) -> np.ndarray:
    peak = np.abs(rows).max(axis=1, keepdims=True)
    return rows / np.where(peak > 0, peak, 1.0)


def band_text(row: pd.Series) -> str:
    return f"{row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"


def per_layer(stats: pd.DataFrame, net: str, which: str) -> str:
    """The mean probe accuracy at hidden layers 1, 2, ... of `net`, as 0.65/0.74/..."""
    return "/".join(f"{mean:.2f}" for mean in stats.xs((net, which), level=["net", "which"]).sort_index()["mean"])


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    diverged = runs["tags.diverged"].eq("true") if "tags.diverged" in runs else pd.Series(False, index=runs.index)
    runs = runs.loc[~diverged].assign(net=lambda r: r["params.model.name"], seed=lambda r: r["params.trainer.seed"])
    probes, raw, datasets = probe_table(study, runs)
    raw_acc = float(np.mean(list(raw.values())))
    nets = [net for net in NETS if net in set(runs["net"])] + sorted(set(runs["net"]) - set(NETS))
    stats = mean_band(probes, ["net", "which", "layer"], "acc", fraction=True).set_index(["net", "which", "layer"])
    deepest = probes.groupby("net")["layer"].max()
    wide = probes.pivot_table(index=["net", "seed"], columns=["which", "layer"], values="acc")
    rises = pd.DataFrame([{"net": net, "seed": seed,
                           "rise_final": wide.loc[(net, seed), ("final", deepest[net])] - wide.loc[(net, seed), ("final", 1)],
                           "rise_init": wide.loc[(net, seed), ("init", deepest[net])] - wide.loc[(net, seed), ("init", 1)]}
                          for net, seed in wide.index])
    rises["learned"] = rises["rise_final"] - rises["rise_init"]
    learned = mean_band(rises, ["net"], "learned").set_index("net")

    mlp_runs = runs[runs["net"] == "mlp"]
    weights = {(run_id, which): study.final_params(run_id, which)["W1"]
               for run_id in mlp_runs["run_id"] for which in WHICH}
    smooth = pd.DataFrame([{"seed": seed, "which": which, "corr": neighbour_correlation(weights[(run_id, which)])}
                           for run_id, seed in zip(mlp_runs["run_id"], mlp_runs["seed"]) for which in WHICH])
    smooth_stats = (mean_band(smooth, ["which"], "corr").set_index("which") if not smooth.empty
                    else pd.DataFrame(columns=["mean", "lo", "hi", "count"]))
    signal_corr = (neighbour_correlation(datasets[str(study.config(mlp_runs["run_id"].iloc[0]).data)].X_train.T)
                   if not mlp_runs.empty else float("nan"))

    figure = plt.figure(figsize=(15, 9))
    grid = figure.add_gridspec(2, 6, height_ratios=[1.1, 1])
    for index, net in enumerate(nets):
        ax = figure.add_subplot(grid[0, 3 * index:3 * index + 3])
        for which, color in (("final", "tab:blue"), ("init", "tab:gray")):
            rows = stats.xs((net, which), level=["net", "which"]).sort_index()
            layers = np.r_[0, rows.index.to_numpy()]
            ax.plot(layers, np.r_[raw_acc, rows["mean"]], marker="o", color=color, label=WHICH[which])
            ax.fill_between(layers, np.r_[raw_acc, rows["lo"]], np.r_[raw_acc, rows["hi"]], color=color, alpha=0.2)
        ax.axhline(raw_acc, color="black", linestyle=":", linewidth=1, label=f"raw signal {raw_acc:.2f}")
        ax.axhline(0.1, color="black", linewidth=0.5, label="chance 0.1")
        ax.set(xlabel="hidden layer (0 = raw input)", ylabel="linear probe val accuracy", ylim=(0, 1),
               xticks=range(int(deepest[net]) + 1), title=f"{NETS.get(net, net)}: class readable per layer")
        ax.legend(fontsize=8, loc="upper left")

    if not mlp_runs.empty:
        shown = mlp_runs.sort_values("seed").iloc[0]
        for column, (which, rows) in enumerate((("init", weights[(shown["run_id"], "init")]),
                                                 ("final", sort_by_peak(weights[(shown["run_id"], "final")])))):
            ax = figure.add_subplot(grid[1, 2 * column:2 * column + 2])
            ax.imshow(scaled(rows), cmap="coolwarm", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
            ax.set(title=f"MLP W1 rows {WHICH[which]} (seed {int(shown['seed'])}"
                         f"{', sorted by peak' if which == 'final' else ''})\n"
                         f"neighbour corr {neighbour_correlation(rows):.2f}",
                   xlabel="position in the signal", ylabel="hidden unit", yticks=[])
        bars = figure.add_subplot(grid[1, 4:])
        for x, which in enumerate(WHICH):
            row = smooth_stats.loc[which]
            bars.bar(x, row["mean"], width=0.6, yerr=[[row["mean"] - row["lo"]], [row["hi"] - row["mean"]]],
                     capsize=4, color="tab:gray" if which == "init" else "tab:blue")
        bars.axhline(signal_corr, color="black", linestyle=":", label=f"the signals themselves {signal_corr:.2f}")
        bars.axhline(0, color="black", linewidth=0.5)
        bars.set_xticks(range(len(WHICH)), list(WHICH.values()))
        bars.set(ylabel="neighbouring-position correlation of W1 rows", title="MLP first layer: smooth along the signal?")
        bars.legend(fontsize=8, loc="upper left")
    figure.tight_layout()

    checks, parts = [], []
    for net in nets:
        last = int(deepest[net])
        first_final, last_final = stats.loc[(net, "final", 1)], stats.loc[(net, "final", last)]
        last_init = stats.loc[(net, "init", last)]
        rise = learned.loc[net]
        a = bool(last_final["lo"] > first_final["hi"])
        b = bool(last_final["lo"] > last_init["hi"])
        c = bool(rise["lo"] > 0)
        checks += [a, b, c]
        parts.append(f"{net}: trained layer 1 {band_text(first_final)} -> layer {last} {band_text(last_final)} "
                     f"(deeper: {'yes' if a else 'no'}); at init layer {last} {band_text(last_init)} "
                     f"(above init: {'yes' if b else 'no'}); learned rise (trained - init) {rise['mean']:+.3f} "
                     f"[{rise['lo']:+.3f}, {rise['hi']:+.3f}] (learned: {'yes' if c else 'no'}); "
                     f"per layer trained {per_layer(stats, net, 'final')}, at init {per_layer(stats, net, 'init')}")
    if "mlp" in nets:
        d = bool(smooth_stats.loc["final", "lo"] > smooth_stats.loc["init", "hi"])
        checks.append(d)
        parts.append(f"MLP W1 neighbour correlation at init {band_text(smooth_stats.loc['init'])} -> trained "
                     f"{band_text(smooth_stats.loc['final'])} (smooth: {'yes' if d else 'no'}; the signals "
                     f"themselves {signal_corr:.3f})")
    accuracy = runs.groupby("net")["metrics.val/acc"].mean()
    evidence = "; ".join(parts) + (f"; raw-signal probe {raw_acc:.3f}; net val acc "
                                   + ", ".join(f"{net} {accuracy.loc[net]:.3f}" for net in nets)
                                   + f" (n={int(stats['count'].min())} seeds; probe: logistic regression C={PROBE_C:g} "
                                   "on standardized activations, train -> val)")
    if diverged.any():
        evidence += f"; {int(diverged.sum())} diverged run(s) left out"
    held = bool(checks) and all(checks) and set(NETS) <= set(nets)
    claim = ("a hierarchy of features: the class is more linearly readable at the deepest hidden layer than at the "
             "first, and more than at init, by a rise training made (MLP and 1-D CNN, MNIST-1D); the MLP's first-layer "
             "weights become smooth along the signal")
    return figure, Verdict(study.name, claim, held, evidence)


main = study_main("representation", analyse)

if __name__ == "__main__":
    from_shell(main)
