"""Activations g and g' (chapter §5): derivatives by central differences, kinks, overflow, dtypes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import erf

from nnresearch.backend import to_numpy
from nnresearch.nn.activations import ACTIVATIONS, get_activation

NAMES = sorted(ACTIVATIONS)


def points(xp, dtype="float64"):
    """z in [-3.95, 3.95] as a (3, 20) batch, every point more than 0.05 away from the kink at 0."""
    z = np.linspace(-3.95, 3.95, 60)  # symmetric with an even count: no point at 0
    assert np.min(np.abs(z)) > 0.05
    return xp.asarray(z.reshape(3, 20), dtype=getattr(xp, dtype))


@pytest.mark.parametrize("alpha", [0.01, 0.2])
@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_central_differences(xp, name, alpha):
    g = get_activation(name, alpha)
    Z = points(xp)
    h = 1e-6
    numeric = (to_numpy(g.forward(Z + h)) - to_numpy(g.forward(Z - h))) / (2 * h)
    analytic = to_numpy(g.derivative(Z, g.forward(Z)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-8)


def test_derivative_at_the_kink(xp):
    zero = xp.zeros((1, 3), dtype=xp.float64)
    relu = get_activation("relu")
    leaky = get_activation("leaky_relu", alpha=0.2)
    np.testing.assert_array_equal(to_numpy(relu.derivative(zero, relu.forward(zero))), 0.0)
    np.testing.assert_array_equal(to_numpy(leaky.derivative(zero, leaky.forward(zero))), 0.2)
    # just either side of the kink
    z = xp.asarray([[-1e-9, 1e-9]], dtype=xp.float64)
    np.testing.assert_array_equal(to_numpy(relu.derivative(z, relu.forward(z))), [[0.0, 1.0]])
    np.testing.assert_array_equal(to_numpy(leaky.derivative(z, leaky.forward(z))), [[0.2, 1.0]])


def test_relu_and_leaky_relu_values(xp):
    z = xp.asarray([[-2.0, -0.5, 0.0, 3.0]], dtype=xp.float64)
    np.testing.assert_array_equal(to_numpy(get_activation("relu").forward(z)), [[0.0, 0.0, 0.0, 3.0]])
    np.testing.assert_allclose(to_numpy(get_activation("leaky_relu", 0.1).forward(z)), [[-0.2, -0.05, 0.0, 3.0]])


def test_leaky_relu_s_slope_defaults_to_the_config_s(xp):
    """Called without alpha, as the README's core example may, leaky_relu (and its functions in `ACTIVATIONS`)
    has `model.alpha`'s default slope."""
    from nnresearch.config import ModelConfig

    leaky, z = get_activation("leaky_relu"), xp.asarray([[-2.0, 3.0]], dtype=xp.float64)
    slope = ModelConfig().alpha
    np.testing.assert_allclose(to_numpy(leaky.forward(z)), [[-2.0 * slope, 3.0]])
    np.testing.assert_allclose(to_numpy(leaky.derivative(z, leaky.forward(z))), [[slope, 1.0]])
    forward, derivative = ACTIVATIONS["leaky_relu"]  # the functions themselves, called without alpha
    np.testing.assert_allclose(to_numpy(forward(z)), [[-2.0 * slope, 3.0]])
    np.testing.assert_allclose(to_numpy(derivative(z, forward(z))), [[slope, 1.0]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_stable_for_huge_inputs(xp, dtype):
    z = xp.asarray([[-1e4, -1000.0, -100.0, 0.0, 100.0, 1000.0, 1e4]], dtype=getattr(xp, dtype))
    sigmoid = get_activation("sigmoid")
    # e^-|z| underflowing to 0 is the correct result, so only overflow / invalid / divide raise
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        A = sigmoid.forward(z)
        dA = sigmoid.derivative(z, A)
    a = to_numpy(A)
    assert not np.isnan(a).any()
    assert a[0, 0] == 0.0 and a[0, -1] == 1.0  # the exact limits
    assert a[0, 3] == 0.5
    assert np.all(np.diff(a[0]) >= 0)
    np.testing.assert_array_equal(to_numpy(dA)[0, [0, -1]], [0.0, 0.0])


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_saturated_derivatives_keep_their_float32_precision(xp, name):
    """Where float32 rounds sigma(z) or tanh(z) to 1 (z > ~16.6, |z| > ~9), sigma (1 - sigma) and
    1 - tanh^2 of A would be 0; the derivatives are the true values there, the same at z and -z."""
    z = np.array([[-20.0, -15.0, -12.0, -9.5, 9.5, 12.0, 15.0, 20.0]])
    e = np.exp(-np.abs(z))
    true = {"sigmoid": e / (1.0 + e) ** 2, "tanh": 1.0 / np.cosh(z) ** 2}[name]
    g = get_activation(name)
    Z = xp.asarray(z, dtype=xp.float32)
    derivative = to_numpy(g.derivative(Z, g.forward(Z)))
    assert derivative.dtype == np.float32
    np.testing.assert_allclose(derivative, true, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_keeps_its_relative_precision_in_the_negative_tail(xp, dtype):
    """sigma(-z) = e^-z / (1 + e^-z) is tiny but representable: 1 - sigma(z) would round it to 0 once
    sigma(z) rounds to 1 (float32: z > ~17, float64: z > ~37)."""
    z = np.array([[-20.0, -30.0, -50.0, -80.0]])
    true = np.exp(z) / (1.0 + np.exp(z))
    A = to_numpy(get_activation("sigmoid").forward(xp.asarray(z, dtype=getattr(xp, dtype))))
    np.testing.assert_allclose(A, true, rtol=1e-6)


def test_sigmoid_matches_textbook_formula_for_moderate_inputs(xp):
    z = points(xp)
    np.testing.assert_allclose(to_numpy(get_activation("sigmoid").forward(z)),
                               1.0 / (1.0 + np.exp(-to_numpy(z))), rtol=1e-14)


def test_gelu_matches_erf_reference(xp):
    Z = points(xp)
    z = to_numpy(Z)
    reference = 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))
    # atol: for z < 0, 1 + erf cancels, so each ulp (~1.1e-16 near -1) that an erf differs from SciPy's
    # (CuPy's does) moves 0.5 z (1 + erf) by up to 0.5 |z| 1.1e-16 < 2.2e-16 here; rtol alone can't allow that.
    np.testing.assert_allclose(to_numpy(get_activation("gelu").forward(Z)), reference, rtol=1e-14, atol=1e-15)


def test_gelu_tanh_is_close_to_gelu(xp):
    Z = xp.asarray(np.linspace(-8.0, 8.0, 4001).reshape(1, -1), dtype=xp.float64)
    difference = to_numpy(get_activation("gelu_tanh").forward(Z)) - to_numpy(get_activation("gelu").forward(Z))
    assert np.max(np.abs(difference)) < 1e-3
    assert np.max(np.abs(difference)) > 0  # it is an approximation, not the same function


def test_tanh_and_linear_values(xp):
    Z = points(xp)
    np.testing.assert_allclose(to_numpy(get_activation("tanh").forward(Z)), np.tanh(to_numpy(Z)), rtol=1e-14)
    np.testing.assert_array_equal(to_numpy(get_activation("linear").forward(Z)), to_numpy(Z))


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="swish") as info:
        get_activation("swish")
    for name in ACTIVATIONS:
        assert name in str(info.value)


@pytest.mark.parametrize("alpha", [-0.1, 1.0])
def test_leaky_relu_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        get_activation("leaky_relu", alpha)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_dtype_is_kept(xp, name, dtype):
    g = get_activation(name, 0.1)
    Z = points(xp, dtype)
    A = g.forward(Z)
    dA = g.derivative(Z, A)
    assert A.dtype == Z.dtype and dA.dtype == Z.dtype
    assert A.shape == Z.shape and dA.shape == Z.shape
