"""From `Samples` (rows) to a `Dataset` (columns): split, standardise, encode targets, hash.

Splits are seeded and stratified for binary / multiclass targets; standardisation statistics come
from the train split only and are applied to all three. `train_subset` then keeps fewer training
examples (nested, stratified subsets), val and test unchanged.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset, Samples, content_hash
from .seeding import int_seed

STRATIFIED_TASKS = ("binary", "multiclass")
MIN_STD = 1e-12  # features whose train std is below this are only centred, not scaled


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise unless both fractions lie in (0, 1) and leave a train split (sum < 1)."""
    for arg, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{arg} must be a float, got {type(value).__name__}")
        if not 0 < value < 1:
            raise ValueError(f"{arg}={value}; expected a fraction strictly between 0 and 1")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction={val_fraction} + test_fraction={test_fraction} = "
            f"{val_fraction + test_fraction}; expected a sum < 1 so a train split remains"
        )


MIN_PER_CLASS = 3  # a stratified split puts at least one example of every class in each of its 3 splits


def split_counts(m: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Examples per split of `m`: `round(fraction * m)` for val and test, the rest for train."""
    n_val, n_test = round(val_fraction * m), round(test_fraction * m)
    return {"train": m - n_val - n_test, "val": n_val, "test": n_test}


def least_per_split(classes: int) -> dict[str, int]:
    """The fewest examples each split needs when stratified by `classes` (1 when not stratified):
    one per class in val and test, `max(classes, 2)` in train (two to standardise)."""
    return {"train": max(classes, 2), "val": classes, "test": classes}


def splits_fit(m: int, classes: int, val_fraction: float, test_fraction: float) -> bool:
    """Whether `split_counts` of `m` give each split its `least_per_split(classes)`."""
    sizes, needed = split_counts(m, val_fraction, test_fraction), least_per_split(classes)
    return all(sizes[split] >= needed[split] for split in sizes)


def _split_sizes(samples: Samples, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Examples per split, checked to be large enough for stratification and a train std."""
    m = len(samples.y)
    sizes = split_counts(m, val_fraction, test_fraction)
    stratified = samples.task in STRATIFIED_TASKS
    classes = len(np.unique(samples.y)) if stratified else 1
    if not splits_fit(m, classes, val_fraction, test_fraction):
        raise ValueError(
            f"n_samples={m} gives splits {sizes}; expected at least {least_per_split(classes)} "
            "(one example per class in each split, two to standardise train): "
            "raise n_samples or the fractions"
        )
    if stratified and np.bincount(samples.y).min() < MIN_PER_CLASS:
        raise ValueError(
            f"n_samples={m} leaves a class with fewer than {MIN_PER_CLASS} examples (counts "
            f"{np.bincount(samples.y).tolist()}); expected {MIN_PER_CLASS}+ to stratify 3 splits"
        )
    return sizes


def check_train_size(name: str, size: int, available: int, classes: int) -> None:
    """Raise unless `size` training examples can be kept of the `available` ones: at least
    `least_per_split(classes)["train"]` (one per class, two to standardise), at most all of them."""
    least = least_per_split(classes)["train"]
    if not least <= size <= available:
        raise ValueError(
            f"train_size={size} for {name!r} is out of range; expected {least} <= train_size <= {available} (at least one "
            f"example per class and two, at most the whole train split): raise n_samples for a larger one"
        )


def nested_order(m: int, labels: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A random order of `m` examples whose every prefix is stratified by `labels` `(m,)` (None: not).

    Example i, the r-th (0-based) of its class's n_c in a random permutation, gets the key
    (r + 1/2) / n_c, and the order sorts by key: the first k hold k n_c / m of class c, within
    one. Taking its first k for every k gives nested subsets: a larger one holds every smaller one.
    """
    order = rng.permutation(m)
    if labels is None:
        return order
    shuffled = labels[order]
    key = np.empty(len(order))
    for c in np.unique(shuffled):
        members = np.flatnonzero(shuffled == c)
        key[members] = (np.arange(len(members)) + 0.5) / len(members)
    return order[np.argsort(key, kind="stable")]


def _labels(task: str, Y: np.ndarray) -> np.ndarray | None:
    """The class of each column of encoded targets `Y` (one-hot `(C, m)` or a 0/1 row `(1, m)`);
    None for the tasks whose splits are not stratified."""
    if task == "multiclass":
        return Y.argmax(axis=0)
    return Y[0] if task == "binary" else None


def train_subset(data: Dataset, size: int, rng: np.random.Generator) -> Dataset:
    """`data` with its first `size` examples of `nested_order` as the train split; val and test, and
    the standardisation already applied (the whole train split's statistics), are unchanged.

    X_train: `(n_features, size)`, Y_train: `(n_outputs, size)`; nested in `size` for one `rng` seed.
    """
    y = _labels(data.task, data.Y_train)
    m = data.sizes["train"]
    check_train_size(data.name, size, m, len(np.unique(y)) if y is not None else 1)
    kept = np.sort(nested_order(m, y, rng)[:size])
    X_train, Y_train = (_columns(a[:, kept]) for a in (data.X_train, data.Y_train))
    arrays = (X_train, Y_train, data.X_val, data.Y_val, data.X_test, data.Y_test)
    return Dataset(data.name, data.task, *arrays, content_hash=content_hash(*arrays))


def _encode(y: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    """Targets as columns: `(1, m)` for binary / regression, one-hot or multi-hot `(C, m)`."""
    if task == "multiclass":
        return np.eye(n_classes)[y].T
    if task == "multilabel":
        return y.T.astype(np.float64)
    return y[None, :].astype(np.float64)


def _columns(a: np.ndarray) -> np.ndarray:
    """A read-only, C-contiguous float64 copy."""
    out = np.array(a, dtype=np.float64, order="C")
    out.setflags(write=False)
    return out


def build_dataset(
    name: str, samples: Samples, rng: np.random.Generator, *, val_fraction: float,
    test_fraction: float, standardize: bool,
) -> Dataset:
    """Split `samples` into train/val/test with `rng`, standardise X on train, encode targets.

    Returns X_* of shape `(n_features, m_split)` and Y_* of shape `(n_outputs, m_split)`.
    """
    sizes = _split_sizes(samples, val_fraction, test_fraction)
    stratified = samples.task in STRATIFIED_TASKS
    X, y = samples.X, samples.y
    from sklearn.model_selection import train_test_split

    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=sizes["test"], stratify=y if stratified else None,
        random_state=int_seed(rng),
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=sizes["val"], stratify=y_rest if stratified else None,
        random_state=int_seed(rng),
    )
    if standardize:
        mean = X_train.mean(axis=0)
        std = X_train.std(axis=0)
        std = np.where(std < MIN_STD, 1.0, std)
        X_train, X_val, X_test = ((a - mean) / std for a in (X_train, X_val, X_test))
    n_classes = int(y.max()) + 1 if samples.task == "multiclass" else 0
    arrays = [
        _columns(part)
        for X_part, y_part in ((X_train, y_train), (X_val, y_val), (X_test, y_test))
        for part in (X_part.T, _encode(y_part, samples.task, n_classes))
    ]
    return Dataset(name, samples.task, *arrays, content_hash=content_hash(*arrays))
