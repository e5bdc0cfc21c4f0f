"""Synthetic 2-D and tabular classification sets, drawn from a caller-owned generator.

Each function returns `Samples` with `X` of shape `(m, n_features)` (one example per row);
`splits.py` turns them into the column-stacked `Dataset`.
"""

from __future__ import annotations

import numpy as np

from .dataset import Samples
from .seeding import int_seed

_XOR_CENTERS = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])


def xor(rng: np.random.Generator, *, n_samples: int = 1000, noise: float = 0.3) -> Samples:
    """Four Gaussian clusters at (+-1, +-1) with std `noise`; label = (x1 > 0) XOR (x2 > 0).

    X: `(m, 2)`, y: `(m,)` 0/1. Clusters get `m // 4` examples each (the first `m % 4` one more).
    """
    cluster = np.arange(n_samples) % 4
    centers = _XOR_CENTERS[cluster]
    X = centers + noise * rng.standard_normal((n_samples, 2))
    y = ((centers[:, 0] > 0) != (centers[:, 1] > 0)).astype(np.int64)
    return Samples(X, y, "binary")


def moons(rng: np.random.Generator, *, n_samples: int = 1000, noise: float = 0.2) -> Samples:
    """scikit-learn's two interleaving half circles. X: `(m, 2)`, y: `(m,)` 0/1."""
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=n_samples, noise=noise, random_state=int_seed(rng))
    return Samples(X, y, "binary")


def circles(rng: np.random.Generator, *, n_samples: int = 1000, noise: float = 0.1) -> Samples:
    """scikit-learn's two concentric circles (inner radius 0.5). X: `(m, 2)`, y: `(m,)` 0/1."""
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=n_samples, noise=noise, factor=0.5, random_state=int_seed(rng))
    return Samples(X, y, "binary")


def spirals(
    rng: np.random.Generator, *, n_samples: int = 900, noise: float = 0.2, n_classes: int = 3
) -> Samples:
    """`n_classes` interleaved spiral arms, one class each (the CS231n toy set).

    Arm j at radius r in [0, 1) sits at angle 2*pi*(j / C + r) plus N(0, noise^2) radians.
    X: `(m, 2)`, y: `(m,)` ints in `[0, C)`, classes balanced to within one example.
    """
    y = np.arange(n_samples) % n_classes
    r = rng.uniform(0.0, 1.0, n_samples)
    theta = 2 * np.pi * (y / n_classes + r) + noise * rng.standard_normal(n_samples)
    X = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    return Samples(X, y, "multiclass")


def blobs(
    rng: np.random.Generator, *, n_samples: int = 1000, noise: float = 1.0, n_classes: int = 3
) -> Samples:
    """`n_classes` isotropic Gaussian blobs (std `noise`) with centres drawn in [-10, 10]^2.

    X: `(m, 2)`, y: `(m,)` ints in `[0, C)`.
    """
    from sklearn.datasets import make_blobs

    X, y = make_blobs(
        n_samples=n_samples, centers=n_classes, n_features=2, cluster_std=noise,
        random_state=int_seed(rng),
    )
    return Samples(X, y, "multiclass")


def multilabel(rng: np.random.Generator, *, n_samples: int = 1000, n_classes: int = 5) -> Samples:
    """scikit-learn's multilabel bag-of-words model: 20 count features, ~2 labels per example.

    X: `(m, 20)`, y: `(m, C)` 0/1 (an example may carry no label).
    """
    from sklearn.datasets import make_multilabel_classification

    X, Y = make_multilabel_classification(
        n_samples=n_samples, n_features=20, n_classes=n_classes, n_labels=2,
        random_state=int_seed(rng),
    )
    return Samples(X.astype(np.float64), Y, "multilabel")
