"""Shared fixtures. Keep this small: one fixture per idea, helpers live in the test files."""

from __future__ import annotations

import numpy as np
import pytest

from nnresearch.backend import gpu_available


@pytest.fixture(params=["numpy", "array_api_strict", "cupy"])
def xp(request):
    """The array namespace under test.

    `array_api_strict` makes any NumPy-only call in the core fail; `cupy` skips itself unless
    CuPy imports and sees a CUDA device.
    """
    if request.param == "numpy":
        return np
    if request.param == "cupy":
        if not gpu_available():
            pytest.skip("CuPy with a CUDA device is not available")
        import array_api_compat.cupy

        return array_api_compat.cupy
    return pytest.importorskip("array_api_strict")
