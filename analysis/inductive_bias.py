"""Study 12 (§11.3): inductive bias and data efficiency, a 1-D CNN against an MLP on MNIST-1D.

The chapter's table: the MLP has "None (fully connected)" as inductive bias and "Low" data
efficiency, it "needs much data to discover structure"; the CNN has "Locality + translation
equivariance" and "High [data efficiency] for spatial data"; and "with enough data, learned
structure can substitute for inductive bias".

Every model trains on n = 30 .. 2400 examples (nested subsets of one train split; the same val
split for all) for the same ~1000 updates, on the signals as they are ("ordered") and with one fixed
permutation of their 40 positions ("permuted"). acc(model, order, n, s) is the final val accuracy of
seed s (the seed draws the initial weights and the batch order; every run shares data.seed's
examples). Differences are taken per seed, seeds being independent repeats, and every band is the
95% t-band over seeds (`mean_band`) of such a per-seed difference:

    advantage(order, n, s) = acc(cnn1d, order, n, s) - acc(mlp, order, n, s)

1. data efficiency: the ordered advantage is larger at a small training set than at the largest:
   at some n <= n_max / 4 (`SMALL_FRACTION`), advantage(ordered, n) - advantage(ordered, n_max) has
   its band above 0. The CNN's lead shrinks once the MLP has the data to learn the structure itself.
2. the advantage is the inductive bias: (a) on ordered signals the CNN beats the MLP beyond the band
   at some n (there is an advantage to remove); (b) permuted, at no n is the CNN better than the MLP
   beyond the band (advantage(permuted, n) has its band's low end <= 0); (c) the MLP, whose inputs a
   permutation only relabels, is indifferent: acc(mlp, permuted) - acc(mlp, ordered), averaged over
   the sizes per seed, has a band that holds 0 (one test over all sizes, not one per size).
Held iff both hold (each is reported apart). Beyond the rule, not decided: the fewest examples with
which the CNN's ordered mean reaches the MLP's at n_max.

Left: val accuracy against training-set size (log x), per model and input order (mean and band).
Right: the per-seed differences against size: the CNN's advantage ordered and permuted, and the
MLP's change under the permutation (mean and band).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from analysis.common import (
    SEED_PARAM,
    Study,
    Verdict,
    from_shell,
    mean_band,
    part_word,
    plot_band,
    study_main,
)

MODELS = ("mlp", "cnn1d")
ORDERS = ("ordered", "permuted")
SMALL_FRACTION = 0.25  # "small" training sets: at most this fraction of the largest
CHANCE = 0.1  # 10 classes
CLAIM = ("the CNN's advantage over the MLP on ordered MNIST-1D is larger at a small training set than at the largest "
         "(data efficiency); permuting the positions removes it (the permuted CNN no better than the MLP at any size), "
         "the MLP indifferent to the permutation")


def accuracies(study: Study) -> pd.DataFrame:
    """One row per run: `size` (training examples), `model`, `order`, `seed` and `acc` (final val accuracy)."""
    runs = study.runs
    permuted = runs["params.data.permute_features"].astype(str) == "True"
    return pd.DataFrame({"size": runs["params.dataset.sizes.train"].astype(int), "model": runs["params.model.name"],
                         "order": permuted.map({False: ORDERS[0], True: ORDERS[1]}), "seed": runs[SEED_PARAM],
                         "acc": runs["metrics.val/acc"].astype(float)})


def differences(acc: pd.DataFrame) -> pd.DataFrame:
    """Per (size, seed): the CNN's advantage ordered and permuted, and the MLP's permuted - ordered shift."""
    wide = acc.pivot_table(index=["size", "seed"], columns=["model", "order"], values="acc")
    return pd.DataFrame({order: wide[("cnn1d", order)] - wide[("mlp", order)] for order in ORDERS}
                        | {"mlp shift": wide[("mlp", ORDERS[1])] - wide[("mlp", ORDERS[0])]}).reset_index()


def band(frame: pd.DataFrame, column: str, by: list[str]) -> pd.DataFrame:
    """`mean_band` of `column` per `by`, indexed by `by`."""
    return mean_band(frame, by, column).set_index(by)


def interval(row: pd.Series) -> str:
    return f"{row['mean']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}]"


def data_efficiency(diff: pd.DataFrame, largest: int) -> tuple[bool, str]:
    """Part 1: advantage(ordered, n) - advantage(ordered, largest) per seed, its band above 0 at some small n."""
    at_largest = diff[diff["size"] == largest].set_index("seed")["ordered"]
    small = diff[diff["size"] <= SMALL_FRACTION * largest].assign(
        drop=lambda rows: rows["ordered"] - rows["seed"].map(at_largest))
    drops = band(small, "drop", ["size"])
    held = bool((drops["lo"] > 0).any())
    text = (f"1. data efficiency: {part_word(held)}: CNN - MLP ordered at a small n (<= {SMALL_FRACTION:g} "
            f"x {largest}) minus at n={largest}: " + ", ".join(f"n={n} {interval(row)}" for n, row in drops.iterrows())
            + " (held if one band is above 0)")
    return held, text


def permutation(diff: pd.DataFrame) -> tuple[bool, str]:
    """Part 2: an ordered advantage beyond the band at some size, none permuted, the MLP's shift band holding 0."""
    ordered, permuted = band(diff, ORDERS[0], ["size"]), band(diff, ORDERS[1], ["size"])
    shift = band(diff.groupby("seed", as_index=False)["mlp shift"].mean().assign(all="all"), "mlp shift", ["all"]).iloc[0]
    has_advantage = bool((ordered["lo"] > 0).any())
    removed = bool((permuted["lo"] <= 0).all())
    indifferent = bool(shift["lo"] <= 0 <= shift["hi"])
    text = (f"2. permutation: {part_word(has_advantage and removed and indifferent)}: CNN - MLP ordered "
            + ", ".join(f"n={n} {interval(row)}" for n, row in ordered.iterrows())
            + f" (beyond the band somewhere: {'yes' if has_advantage else 'no'}); permuted "
            + ", ".join(f"n={n} {interval(row)}" for n, row in permuted.iterrows())
            + f" (CNN better beyond the band nowhere: {'yes' if removed else 'no'}); MLP permuted - ordered, mean over "
            f"sizes {interval(shift)} (holds 0: {'yes' if indifferent else 'no'})")
    return has_advantage and removed and indifferent, text


def fewest_matching(stats: pd.DataFrame, largest: int) -> str:
    """The smallest n at which the CNN's ordered mean reaches the MLP's at `largest` (not decided)."""
    target = stats.loc[("mlp", ORDERS[0], largest), "mean"]
    cnn = stats.loc[("cnn1d", ORDERS[0])]["mean"]
    reached = cnn[cnn >= target]
    if reached.empty:
        return f"the CNN never reaches the MLP's {target:.3f} at n={largest}"
    n = int(reached.index.min())
    fewer = f", {largest / n:.0f}x fewer examples (on the sizes run)" if n < largest else ""
    return f"the CNN reaches the MLP's {target:.3f} at n={largest} with n={n} ({cnn[n]:.3f}){fewer}"


def plot(acc: pd.DataFrame, diff: pd.DataFrame) -> plt.Figure:
    figure, (curves, gaps) = plt.subplots(1, 2, figsize=(13, 4.8))
    for (model, order), rows in acc.groupby(["model", "order"]):
        plot_band(curves, mean_band(rows, ["size"], "acc", fraction=True), "size", f"{model}, {order}",
                  color="C0" if model == "mlp" else "C1", linestyle="-" if order == ORDERS[0] else "--")
    curves.axhline(CHANCE, color="gray", linestyle=":", label="chance")
    curves.set(xscale="log", xlabel="training examples (~1000 updates each)", ylabel="final validation accuracy",
               title="MNIST-1D: accuracy against training-set size")
    curves.legend()
    for column, label, style in ((ORDERS[0], "CNN - MLP, ordered", {"color": "C3"}),
                                 (ORDERS[1], "CNN - MLP, permuted", {"color": "C3", "linestyle": "--"}),
                                 ("mlp shift", "MLP permuted - MLP ordered", {"color": "C0", "linestyle": ":"})):
        plot_band(gaps, mean_band(diff, ["size"], column), "size", label, **style)
    gaps.axhline(0, color="gray", linewidth=0.8)
    gaps.set(xscale="log", xlabel="training examples", ylabel="val accuracy difference (per seed)",
             title="the CNN's advantage, and the permutation")
    gaps.legend()
    figure.tight_layout()
    return figure


def analyse(study: Study) -> tuple[plt.Figure, Verdict]:
    acc = accuracies(study)
    diff = differences(acc)
    figure = plot(acc, diff)
    combinations = acc.groupby(["model", "order"])["size"].unique()
    sizes = sorted(acc["size"].unique())
    if len(combinations) < len(MODELS) * len(ORDERS) or diff[list(ORDERS)].isna().all().any() or len(sizes) < 2:
        return figure, Verdict(study.name, CLAIM, None, "inconclusive: the runs lack a model, an input order or a "
                               f"second training-set size (sizes {sizes}, model/order {list(combinations.index)})")
    largest = sizes[-1]
    efficient, efficiency_text = data_efficiency(diff, largest)
    removed, permutation_text = permutation(diff)
    stats = mean_band(acc, ["model", "order", "size"], "acc", fraction=True).set_index(["model", "order", "size"])
    levels = "; ".join(f"{model} {order} " + ", ".join(f"{row['mean']:.3f}" for _, row in rows.iterrows())
                       for (model, order), rows in stats.groupby(level=[0, 1]))
    evidence = (f"{efficiency_text}. {permutation_text}. Val acc at n = {', '.join(map(str, sizes))} "
                f"({int(stats['count'].min())} seeds): {levels}. Not decided: {fewest_matching(stats, largest)}")
    return figure, Verdict(study.name, CLAIM, efficient and removed, evidence)


main = study_main("inductive_bias", analyse)

if __name__ == "__main__":
    from_shell(main)
