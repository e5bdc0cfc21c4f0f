"""Turning one `numpy.random.Generator` into the integer seeds scikit-learn and mnist1d take."""

from __future__ import annotations

import numpy as np


def int_seed(rng: np.random.Generator) -> int:
    """A seed in `[0, 2**31 - 1)` drawn from `rng` (valid for sklearn and `np.random.seed`)."""
    return int(rng.integers(0, 2**31 - 1))
