"""Weight initializers (chapter §6): the variance-scaling formulas, determinism, dtypes, fans."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnresearch.backend import to_numpy
from nnresearch.nn.initializers import INITIALIZERS, fans, initialize

SHAPE = (400, 600)  # W of a layer n[l-1] = 600 -> n[l] = 400: fan_in 600, fan_out 400
FAN_IN, FAN_OUT = 600, 400

NORMAL_STD = {
    "normal": 0.7,  # the `std` option below
    "xavier_normal": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "he_normal": math.sqrt(2 / FAN_IN),
    "lecun_normal": math.sqrt(1 / FAN_IN),
}
UNIFORM_LIMIT = {
    "uniform": 0.3,  # the `limit` option below
    "xavier_uniform": math.sqrt(6 / (FAN_IN + FAN_OUT)),
    "he_uniform": math.sqrt(6 / FAN_IN),
}


def draw(name, xp, dtype="float64", seed=0, shape=SHAPE):
    return initialize(name, shape, np.random.default_rng(seed), xp, getattr(xp, dtype), std=0.7, limit=0.3, value=0.25)


def test_every_initializer_has_a_formula_here():
    assert set(INITIALIZERS) == set(NORMAL_STD) | set(UNIFORM_LIMIT) | {"zeros", "constant"}


@pytest.mark.parametrize("name", sorted(NORMAL_STD))
def test_normal_initializers_have_the_formula_std(xp, name):
    w = to_numpy(draw(name, xp))
    assert w.shape == SHAPE
    assert abs(w.mean()) < 0.02 * NORMAL_STD[name]
    assert w.std() == pytest.approx(NORMAL_STD[name], rel=0.02)
    assert np.abs(w).max() > 3 * NORMAL_STD[name]  # Gaussian tails, not a uniform


@pytest.mark.parametrize("name", sorted(UNIFORM_LIMIT))
def test_uniform_initializers_have_the_formula_limit(xp, name):
    w = to_numpy(draw(name, xp))
    limit = UNIFORM_LIMIT[name]
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit
    assert w.std() == pytest.approx(limit / math.sqrt(3), rel=0.02)


def test_zeros_and_constant_are_exact(xp):
    np.testing.assert_array_equal(to_numpy(draw("zeros", xp, shape=(3, 4))), np.zeros((3, 4)))
    np.testing.assert_array_equal(to_numpy(draw("constant", xp, shape=(3, 1))), np.full((3, 1), 0.25))


@pytest.mark.parametrize("name", INITIALIZERS)
def test_same_seed_gives_identical_bits(xp, name):
    a, b = to_numpy(draw(name, xp, seed=7, shape=(5, 6))), to_numpy(draw(name, xp, seed=7, shape=(5, 6)))
    assert a.tobytes() == b.tobytes()
    if name not in ("zeros", "constant"):
        assert not np.array_equal(a, to_numpy(draw(name, xp, seed=8, shape=(5, 6))))


@pytest.mark.parametrize("name", INITIALIZERS)
def test_same_seed_gives_the_same_numbers_on_every_backend(xp, name):
    np.testing.assert_array_equal(to_numpy(draw(name, xp, "float32", shape=(4, 3))),
                                  draw(name, np, "float32", shape=(4, 3)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", INITIALIZERS)
def test_dtype_is_kept(xp, name, dtype):
    w = draw(name, xp, dtype, shape=(3, 2))
    assert w.dtype == getattr(xp, dtype)
    assert tuple(w.shape) == (3, 2)


def test_fans():
    assert fans((4, 6)) == (6, 4)  # dense W (n[l], n[l-1])
    assert fans((4, 1)) == (1, 4)  # a bias
    assert fans((8, 3, 5)) == (15, 40)  # Conv1D (c_out, c_in, k)
    assert fans((8, 3, 5, 2)) == (30, 80)  # Conv2D (c_out, c_in, kh, kw)


def test_conv_kernel_uses_receptive_field_fans(xp):
    shape = (256, 32, 3)  # fan_in = 96, fan_out = 768
    w = to_numpy(initialize("he_normal", shape, np.random.default_rng(0), xp, xp.float64))
    assert w.shape == shape
    assert w.std() == pytest.approx(math.sqrt(2 / 96), rel=0.03)
    w = to_numpy(initialize("xavier_uniform", shape, np.random.default_rng(0), xp, xp.float64))
    assert np.abs(w).max() <= math.sqrt(6 / (96 + 768))
    assert np.abs(w).max() > 0.99 * math.sqrt(6 / (96 + 768))


def test_unknown_initializer_lists_valid_names():
    with pytest.raises(ValueError, match="orthogonal") as info:
        initialize("orthogonal", (2, 2), np.random.default_rng(0), np, np.float64)
    for name in INITIALIZERS:
        assert name in str(info.value)
