"""Weight initializers (chapter §6), as one table of variance-scaling rules.

A weight of shape `(n[l], n[l-1])` has fan_in = n[l-1] and fan_out = n[l]; a Conv1D kernel of shape
`(c_out, c_in, k)` has fan_in = c_in k and fan_out = c_out k.

| name           | distribution                                  |
|----------------|-----------------------------------------------|
| zeros          | 0 (the symmetry problem of §6.1)              |
| constant       | value                                         |
| normal         | N(0, std^2); std = 1 is the naive init of §6.2 |
| uniform        | U(-limit, limit)                              |
| xavier_normal  | N(0, 2 / (fan_in + fan_out))                  |
| xavier_uniform | U(-a, a), a = sqrt(6 / (fan_in + fan_out))    |
| he_normal      | N(0, 2 / fan_in)                              |
| he_uniform     | U(-a, a), a = sqrt(6 / fan_in)                |
| lecun_normal   | N(0, 1 / fan_in)                              |

All randomness comes from the caller's `numpy.random.Generator` (see `nnresearch.backend`).
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np

from nnresearch import backend

INITIALIZERS = (
    "zeros", "constant", "normal", "uniform",
    "xavier_normal", "xavier_uniform", "he_normal", "he_uniform", "lecun_normal",
)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight `(n_out, n_in, *kernel)`; a bias `(n, 1)` counts fan_in = 1."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def initialize(
    name: str,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    xp: types.ModuleType,
    dtype: Any,
    *,
    std: float = 1.0,
    limit: float = 0.05,
    value: float = 0.0,
) -> Any:
    """A new `xp` array of `shape` and `dtype` drawn by the initializer called `name`."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; valid initializers: {', '.join(INITIALIZERS)}")
    fan_in, fan_out = fans(shape)
    if name == "zeros":
        return xp.zeros(shape, dtype=dtype)
    if name == "constant":
        return xp.full(shape, value, dtype=dtype)
    normal_std = {
        "normal": std,
        "xavier_normal": math.sqrt(2.0 / (fan_in + fan_out)),
        "he_normal": math.sqrt(2.0 / fan_in),
        "lecun_normal": math.sqrt(1.0 / fan_in),
    }
    if name in normal_std:
        return backend.normal(rng, shape, normal_std[name], xp, dtype)
    uniform_limit = {
        "uniform": limit,
        "xavier_uniform": math.sqrt(6.0 / (fan_in + fan_out)),
        "he_uniform": math.sqrt(6.0 / fan_in),
    }
    return backend.uniform(rng, shape, uniform_limit[name], xp, dtype)
