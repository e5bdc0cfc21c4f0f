"""Study 3 (§7.2): the smaller the batch, the noisier the gradient; mini-batch noise is said to
regularize (a smaller generalization gap than full-batch gradient descent).

Top: training loss against epochs and against wall-clock seconds, one line per batch size.
Bottom left: gradient noise E||g_B - g||^2 / ||g||^2 (median over the epochs of a run) against batch
size; full batch (plotted at the training-set size) has none. Bottom right: generalization gap of the
final network, evaluated on the whole training and validation splits. Mean and 95% band over seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main
from nnresearch.train import evaluate


def final_fit(study: Study, run) -> dict[str, float]:
    """Loss and accuracy of the run's final network on its whole training and validation splits (eval mode).

    The logged train/* metrics are running averages over an epoch's batches, taken before each step,
    which flatters no one equally across batch sizes; this evaluates every run the same way.
    """
    data = study.dataset(run["run_id"])
    network = study.network(run["run_id"])
    dtype = network.params()["W1"].dtype
    out = {}
    for split, X, Y in (("train", data.X_train, data.Y_train), ("val", data.X_val, data.Y_val)):
        out |= {f"{split}_{k}": v for k, v in evaluate(network, X.astype(dtype), Y.astype(dtype)).items()}
    return out


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = study.runs
    diverged = runs["tags.diverged"].eq("true") if "tags.diverged" in runs else runs["run_id"].isna()
    runs = runs[~diverged].copy()  # a diverged run has no final parameters to evaluate
    m = int(runs["params.dataset.sizes.train"].iloc[0])
    size = {str(b): (m if str(b) == "None" else min(int(float(b)), m)) for b in runs["params.trainer.batch_size"].unique()}
    runs["batch"] = runs["params.trainer.batch_size"].astype(str).map(size)
    history = study.histories(["train/loss", "time_s", "grad_noise"], ["trainer.seed"])
    history["batch"] = history["run_id"].map(runs.set_index("run_id")["batch"])
    name = {b: ("full batch" if b == m else f"batch {b}") for b in runs["batch"].unique()}

    figure, ((by_epoch, by_time), (noise_ax, gap_ax)) = plt.subplots(2, 2, figsize=(12, 8))
    loss = history[history["metric"] == "train/loss"]
    clock = history[history["metric"] == "time_s"].set_index(["run_id", "step"])["value"]
    for batch in sorted(name):
        rows = loss[loss["batch"] == batch]
        band = mean_band(rows, ["step"], "value")
        plot_band(by_epoch, band, "step", name[batch], markersize=3)
        seconds = rows[rows["step"] > 0].assign(seconds=lambda f: clock.reindex(list(zip(f["run_id"], f["step"]))).to_numpy())
        band = mean_band(seconds, ["step"], "value").merge(seconds.groupby("step")["seconds"].mean().reset_index(), on="step")
        plot_band(by_time, band, "seconds", name[batch], markersize=3)
    by_epoch.set(yscale="log", xlabel="epoch", ylabel="training loss (running mean over the epoch)", title="loss against epochs")
    by_time.set(xscale="log", yscale="log", xlabel="wall-clock seconds since the first step", ylabel="training loss",
                title="loss against wall-clock time")
    by_epoch.legend(), by_time.legend()

    noise = history[(history["metric"] == "grad_noise") & (history["step"] > 0)]
    runs = runs.merge(noise.groupby("run_id")["value"].median().rename("noise").reset_index(), on="run_id")
    runs = runs.join(runs.apply(lambda run: final_fit(study, run), axis=1, result_type="expand"))
    runs["acc_gap"] = runs["train_acc"] - runs["val_acc"]
    runs["loss_gap"] = runs["val_loss"] - runs["train_loss"]
    noise_band = mean_band(runs, ["batch"], "noise")
    plot_band(noise_ax, noise_band, "batch", "median over epochs")
    noise_ax.set_yscale("symlog", linthresh=1e-3)
    noise_ax.set(xscale="log", xlabel=f"batch size (full batch = {m})",
                 ylabel="E||g_B - g||^2 / ||g||^2", title="gradient noise against batch size")
    noise_ax.set_ylim(bottom=0)
    for column, label in (("acc_gap", "train acc - val acc"), ("loss_gap", "val loss - train loss")):
        plot_band(gap_ax, mean_band(runs, ["batch"], column), "batch", label)
    gap_ax.axhline(0, color="grey", linewidth=0.8)
    gap_ax.set(xscale="log", xlabel=f"batch size (full batch = {m})", ylabel="generalization gap",
               title="gap of the final network (whole splits)")
    gap_ax.legend()
    figure.tight_layout()

    means = runs.groupby("batch")[["noise", "acc_gap", "loss_gap", "train_loss", "val_acc"]].mean().sort_index()
    falling = bool(np.all(np.diff(means["noise"].to_numpy()) < 0))
    minibatch = means.drop(index=[1, m], errors="ignore")
    regularized = bool((minibatch["loss_gap"] < means.loc[m, "loss_gap"]).all()) if m in means.index else False
    table = "; ".join(f"{name[b]}: noise {r.noise:.3g}, train loss {r.train_loss:.3f}, val acc {r.val_acc:.3f}, "
                      f"gap acc {r.acc_gap:+.3f} loss {r.loss_gap:+.3f}" for b, r in means.iterrows())
    evidence = (f"{table}. Regularization claim (every mini-batch has a smaller val-train loss gap than full batch): "
                f"{'held' if regularized else 'NOT held'} here, at equal lr and epochs; {int(diverged.sum())} diverged run(s) left out")
    return figure, Verdict(study.name, "gradient noise falls as the batch grows (full batch = 0)", falling, evidence)


main = study_main("batch_size", analyse)

if __name__ == "__main__":
    from_shell(main)
