"""1-D regression targets y = f(x) + N(0, noise^2), x drawn uniformly at random.

Each function returns `Samples` with `X` of shape `(m, 1)` and `y` of shape `(m,)`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .dataset import Samples


def tent_power(x: np.ndarray, compositions: int) -> np.ndarray:
    """T^k(x) for the tent map T(x) = 2 min(x, 1 - x) on [0, 1], k = `compositions`.

    T^k has 2^k linear pieces of slope +-2^k, breaking at multiples of 2^-k (Telgarsky 2016):
    a depth-k ReLU net computes it exactly, a shallow one needs exponentially many units.
    """
    for _ in range(compositions):
        x = 2 * np.minimum(x, 1 - x)
    return x


def _sample(
    rng: np.random.Generator, f: Callable[[np.ndarray], np.ndarray], n_samples: int,
    noise: float, low: float,
) -> Samples:
    x = rng.uniform(low, 1.0, n_samples)
    y = f(x) + noise * rng.standard_normal(n_samples)
    return Samples(x[:, None], y, "regression")


def sine(rng: np.random.Generator, *, n_samples: int = 1000, noise: float = 0.0) -> Samples:
    """y = sin(2 pi x), x in [-1, 1]: two periods."""
    return _sample(rng, lambda x: np.sin(2 * np.pi * x), n_samples, noise, low=-1.0)


def step(rng: np.random.Generator, *, n_samples: int = 1000, noise: float = 0.0) -> Samples:
    """y = 1 if x >= 0 else 0, x in [-1, 1]: one discontinuity."""
    return _sample(rng, lambda x: (x >= 0).astype(np.float64), n_samples, noise, low=-1.0)


def absolute(rng: np.random.Generator, *, n_samples: int = 1000, noise: float = 0.0) -> Samples:
    """y = |x|, x in [-1, 1]: one kink (two ReLUs represent it exactly)."""
    return _sample(rng, np.abs, n_samples, noise, low=-1.0)


def sawtooth(
    rng: np.random.Generator, *, n_samples: int = 1000, noise: float = 0.0, compositions: int = 4
) -> Samples:
    """y = T^k(x) (see `tent_power`), x in [0, 1], k = `compositions`: 2^k linear pieces."""
    if isinstance(compositions, bool) or not isinstance(compositions, (int, np.integer)):
        raise TypeError(f"compositions must be an int, got {type(compositions).__name__}")
    if compositions < 1:
        raise ValueError(f"compositions={compositions}; expected an int >= 1 (2^k linear pieces)")
    return _sample(rng, lambda x: tent_power(x, compositions), n_samples, noise, low=0.0)
