"""Real data sets that ship with a package or are generated locally: nothing is downloaded.

Each function returns `Samples` with `X` of shape `(m, n_features)` (one example per row).
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np

from .dataset import Samples
from .seeding import int_seed

MNIST1D_CLASSES = 10


def _subsample(
    X: np.ndarray, y: np.ndarray, n_samples: int | None, rng: np.random.Generator, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """A stratified random subset of `n_samples` rows (all rows when None)."""
    if n_samples is None or n_samples == len(y):
        return X, y
    n_classes = len(np.unique(y))
    if not n_classes <= n_samples <= len(y):
        raise ValueError(
            f"n_samples={n_samples} for {name!r}; expected between {n_classes} (one per class) "
            f"and {len(y)} (the whole set)"
        )
    from sklearn.model_selection import train_test_split

    X, _, y, _ = train_test_split(
        X, y, train_size=n_samples, stratify=y, random_state=int_seed(rng)
    )
    return X, y


def digits(
    rng: np.random.Generator, *, n_samples: int | None = None, n_classes: int = 10
) -> Samples:
    """scikit-learn's 8x8 handwritten digits (1,797 images), digits `0 .. n_classes - 1`.

    X: `(m, 64)` pixel intensities in [0, 16], y: `(m,)` ints in `[0, C)`.
    `n_samples` (default: all) draws a stratified subset.
    """
    if n_classes > 10:
        raise ValueError(f"n_classes={n_classes} for 'digits'; expected at most 10")
    from sklearn.datasets import load_digits

    X, y = load_digits(n_class=n_classes, return_X_y=True)
    X, y = _subsample(X.astype(np.float64), y, n_samples, rng, "digits")
    return Samples(X, y, "multiclass")


def breast_cancer(rng: np.random.Generator, *, n_samples: int | None = None) -> Samples:
    """scikit-learn's Wisconsin breast-cancer table (569 tumours): 1 = benign, 0 = malignant.

    X: `(m, 30)`, y: `(m,)` 0/1. `n_samples` (default: all) draws a stratified subset.
    """
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X, y = _subsample(X, y, n_samples, rng, "breast_cancer")
    return Samples(X, y, "binary")


def mnist1d(rng: np.random.Generator, *, n_samples: int = 4000) -> Samples:
    """MNIST-1D (Greydanus 2020) generated locally by `mnist1d.data.make_dataset`.

    X: `(m, 40)` signals, y: `(m,)` ints in `[0, 10)`. Only `make_dataset` is called, never
    `get_dataset` (which downloads / pickles). It seeds NumPy's and Python's *global* RNGs, so
    their states are saved and restored around the call. Its own scalar centring/scaling over all
    examples is kept; the per-feature standardisation on train is applied on top by `splits.py`.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # heavy import (matplotlib, scipy)

    n_generated = -(-n_samples // MNIST1D_CLASSES) * MNIST1D_CLASSES  # make_dataset wants k * 10
    args = SimpleNamespace(**get_dataset_args(as_dict=True))
    args.num_samples, args.seed = n_generated, int_seed(rng)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    X = np.concatenate([raw["x"], raw["x_test"]])[:n_samples]
    y = np.concatenate([raw["y"], raw["y_test"]])[:n_samples]
    return Samples(X.astype(np.float64), y, "multiclass")
