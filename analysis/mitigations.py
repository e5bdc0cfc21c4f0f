"""Study 9 (§8.3, the mitigations table): ReLU with He init, residual connections and BatchNorm
rescue a net whose gradients vanish; gradient clipping, careful (He) init and weight decay rescue one
whose gradients explode.

Left: final validation accuracy of each variant (mean and 95% band over seeds; a run that diverged
to NaN counts at chance, and the number of diverged runs is written at its foot). The ReLU net with He
init (relu_he) is the same runs in both cases. Right: the error signal ||delta[l]|| (RMS over
examples) at initialization against the layer l (mean and band). The verdict compares every
mitigation with the baseline of its own case: it must be better beyond both seed bands (its band's
lower end above the baseline band's upper end), with no more diverged runs.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.common import Study, Verdict, from_shell, mean_band, plot_band, study_main

CASES = {"vanishing": ("baseline", "residual", "batchnorm", "relu_he"),
         "exploding": ("baseline", "clip_norm", "relu_he", "weight_decay")}
SHARED = "relu_he"  # one set of runs, compared with both baselines


def variant(run: pd.Series) -> str:
    """Which conf/mitigation/ variant a run is, read from its logged config."""
    if run["params.model.name"] == "residual_mlp":
        return "residual"
    if str(run["params.model.batchnorm"]) == "True":
        return "batchnorm"
    if str(run["params.optim.clip_norm"]) != "None":
        return "clip_norm"
    if float(run["params.optim.weight_decay"]) > 0:
        return "weight_decay"
    if run["params.model.init"] == "he_normal":
        return SHARED
    return "baseline"


def with_cases(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with its `variant` and `case` (vanishing: the tanh nets; exploding: the ReLU ones), the
    shared variant's runs once in each case."""
    runs = runs.assign(variant=runs.apply(variant, axis=1))
    shared = runs["variant"] == SHARED
    own = runs[~shared].assign(case=np.where(runs.loc[~shared, "params.model.activation"] == "relu", "exploding", "vanishing"))
    return pd.concat([own, *(runs[shared].assign(case=case) for case in CASES)], ignore_index=True)


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    runs = with_cases(study.runs)
    runs["diverged"] = runs.get("tags.diverged", pd.Series(index=runs.index, dtype=object)).eq("true")
    chance = 1.0 / np.maximum(2.0, runs["params.dataset.n_outputs"].astype(float))  # one sigmoid output: 2 classes
    runs["acc"] = np.where(runs["diverged"], chance, runs["metrics.val/acc"])
    depth = int(runs["params.model.depth"].max())
    history = study.histories([f"delta_norm/layer{l}" for l in range(1, depth + 2)], [])
    at_init = history[history["step"] == 0].merge(runs[["run_id", "case", "variant"]], on="run_id")
    at_init["layer"] = at_init["metric"].str.removeprefix("delta_norm/layer").astype(int)
    # clipping and weight decay act on the updates: at init the exploding variants are the same net
    at_init = at_init[(at_init["case"] == "vanishing") | (at_init["variant"] == "baseline")]

    figure, (bars, grads) = plt.subplots(1, 2, figsize=(14, 4.8))
    stats = mean_band(runs, ["case", "variant"], "acc", fraction=True).set_index(["case", "variant"])
    diverged = runs.groupby(["case", "variant"])["diverged"].agg(["sum", "count"])
    labels, positions, position = [], [], 0.0
    for case, variants in CASES.items():
        for name in variants:
            if (case, name) not in stats.index:
                continue
            row = stats.loc[(case, name)]
            error = np.array([[row["mean"] - row["lo"]], [row["hi"] - row["mean"]]])
            bars.bar(position, row["mean"], yerr=np.nan_to_num(error), capsize=4, color="C0" if case == "vanishing" else "C3",
                     alpha=0.5 if name == "baseline" else 0.9)
            bars.text(position, 0.02, f"{int(diverged.loc[(case, name), 'sum'])}/{int(diverged.loc[(case, name), 'count'])}\ndiverged",
                      ha="center", fontsize=7)
            labels.append(f"{case}\n{name}")
            positions.append(position)
            position += 1
        position += 0.5  # a gap between the two cases
    bars.set_xticks(positions, labels, fontsize=8)
    bars.axhline(chance.iloc[0], color="gray", linestyle=":", label="chance")
    bars.set(ylabel="final validation accuracy (diverged = chance)", ylim=(0, 1.05), title="each mitigation against its baseline")
    bars.legend(loc="upper left")
    for (case, name), rows in at_init.groupby(["case", "variant"]):
        label = ("exploding: baseline, clip_norm, weight_decay (same init)" if case == "exploding"
                 else f"both cases: {name}" if name == SHARED else f"{case}: {name}")
        plot_band(grads, mean_band(rows, ["layer"], "value"), "layer", label,
                  linestyle="-" if case == "vanishing" else "--", markersize=3)
    grads.set(yscale="log", xlabel="layer l", ylabel="RMS ||delta[l]|| at initialization", title="error signal by layer at init")
    grads.legend(fontsize=7, ncol=2)
    figure.tight_layout()

    verdicts, held, failed = [], True, []
    for case, (baseline, *fixes) in CASES.items():
        if (case, baseline) not in stats.index:
            held = False
            continue
        base = stats.loc[(case, baseline)]
        base_div = int(diverged.loc[(case, baseline), "sum"])
        parts = [f"{baseline} {base['mean']:.3f} [{base['lo']:.3f}, {base['hi']:.3f}] ({base_div} diverged)"]
        for fix in fixes:
            if (case, fix) not in stats.index:
                held = False
                continue
            row, fix_div = stats.loc[(case, fix)], int(diverged.loc[(case, fix), "sum"])
            if not (row["lo"] > base["hi"] and fix_div <= base_div):  # better beyond both seed bands
                held = False
                failed.append(f"{fix} ({case})")
            parts.append(f"{fix} {row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}] ({fix_div} diverged)")
        signal = at_init[(at_init["case"] == case) & (at_init["variant"] == baseline)].pivot_table(
            index="run_id", columns="layer", values="value")
        ratio = float(np.median(signal.iloc[:, 0] / signal.iloc[:, -1])) if not signal.empty else np.nan
        verdicts.append(f"{case} (n={int(stats.loc[(case, baseline), 'count'])} seeds, baseline delta[1]/delta[L] at init "
                        f"{ratio:.2g}): " + ", ".join(parts))
    claim = "each mitigation raises final val accuracy over its baseline (beyond both seed bands) without more divergences"
    if failed:
        verdicts.append(f"not better than its baseline: {', '.join(failed)}")
    return figure, Verdict(study.name, claim, held, "; ".join(verdicts))


main = study_main("mitigations", analyse)

if __name__ == "__main__":
    from_shell(main)
