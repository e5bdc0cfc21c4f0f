"""Output heads (chapter §3, §9): stable BCE and softmax, the fused delta, the batch mean, accuracy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from nnresearch.backend import to_numpy
from nnresearch.nn.losses import HEADS, get_head, label_distribution, log_softmax, naive_softmax, on_label_sets, softmax, threshold_accuracy

HEAD_NAMES = sorted(HEADS)


def targets(head: str, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """A valid Y `(n, m)` for the head: one-hot, multi-hot, probabilities or real values."""
    if head.startswith(("softmax", "naive_softmax")):
        return np.eye(n)[:, rng.integers(0, n, size=m)]
    if head == "sigmoid_bce":
        return rng.integers(0, 2, size=(n, m)).astype(float)
    if head == "sigmoid_mse":
        return rng.uniform(0, 1, size=(n, m))
    return rng.normal(size=(n, m))


def cost(head, Z):
    return lambda Y: head.cost(Z, head.activate(Z), Y)


# --- binary cross-entropy -----------------------------------------------------------------------


def test_bce_from_logits_equals_the_naive_formula(xp):
    rng = np.random.default_rng(0)
    z = rng.uniform(-5, 5, size=(2, 7))
    y = rng.integers(0, 2, size=(2, 7)).astype(float)
    a = 1.0 / (1.0 + np.exp(-z))
    naive = -np.sum(y * np.log(a) + (1 - y) * np.log(1 - a)) / 7
    head = get_head("sigmoid_bce")
    Z, Y = xp.asarray(z), xp.asarray(y)
    np.testing.assert_allclose(float(head.cost(Z, head.activate(Z), Y)), naive, rtol=1e-12)


def test_bce_is_finite_and_right_for_huge_logits(xp):
    # per example: y=1,z=1e4 -> 0;  y=0,z=1e4 -> 1e4;  y=1,z=-1e4 -> 1e4;  y=0,z=-1e4 -> 0
    head = get_head("sigmoid_bce")
    Z = xp.asarray([[1e4, 1e4, -1e4, -1e4]], dtype=xp.float64)
    Y = xp.asarray([[1.0, 0.0, 1.0, 0.0]], dtype=xp.float64)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        J = float(head.cost(Z, head.activate(Z), Y))
    assert np.isfinite(J)
    assert J == pytest.approx(2e4 / 4, rel=1e-12)
    Z1, Y1 = Z[:, :1], Y[:, :1]
    assert float(head.cost(Z1, head.activate(Z1), Y1)) == 0.0


@pytest.mark.parametrize("dtype, z", [("float32", 20.0), ("float64", 40.0)])
def test_bce_keeps_every_digit_of_a_confident_right_answer(xp, dtype, z):
    # L = log(1 + e^-z) for y = 1 (and z -> -z for y = 0): e^-z is below the dtype's epsilon, so
    # log(1 + e^-z) would round to 0 where log1p(e^-z) = e^-z to full relative precision.
    head = get_head("sigmoid_bce")
    Z = xp.asarray([[z, -z]], dtype=getattr(xp, dtype))
    Y = xp.asarray([[1.0, 0.0]], dtype=getattr(xp, dtype))
    J = float(head.cost(Z, head.activate(Z), Y))
    assert J == pytest.approx(math.exp(-z), rel=1e-5, abs=0)


# --- softmax ----------------------------------------------------------------------------------------


def test_softmax_columns_sum_to_one_and_equal_naive_for_small_logits(xp):
    z = np.random.default_rng(1).normal(size=(4, 6)) * 3
    A = softmax(xp.asarray(z))
    np.testing.assert_allclose(to_numpy(xp.sum(A, axis=0)), 1.0, rtol=1e-14)
    np.testing.assert_allclose(to_numpy(A), to_numpy(naive_softmax(xp.asarray(z))), rtol=1e-13)
    np.testing.assert_allclose(to_numpy(A), np.exp(z) / np.exp(z).sum(axis=0), rtol=1e-13)


def test_naive_softmax_overflows_where_stable_softmax_does_not(xp):
    Z = xp.asarray([[1000.0, 0.0], [999.0, 1.0], [0.0, 2.0]], dtype=xp.float64)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        naive = to_numpy(naive_softmax(Z))
    assert not np.all(np.isfinite(naive[:, 0]))  # e^1000 = inf, inf / inf = NaN
    stable = to_numpy(softmax(Z))
    assert np.all(np.isfinite(stable))
    e = np.exp(-1.0)
    np.testing.assert_allclose(stable[:, 0], [1 / (1 + e), e / (1 + e), 0.0], atol=1e-300)
    np.testing.assert_allclose(stable[:, 1], np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum())


def test_cross_entropy_is_finite_for_huge_logits_only_when_stable(xp):
    Z = xp.asarray([[1000.0], [999.0], [0.0]], dtype=xp.float64)
    Y = xp.asarray([[0.0], [1.0], [0.0]], dtype=xp.float64)
    stable, naive = get_head("softmax_ce"), get_head("naive_softmax_ce")
    # -log a_2 = -(999 - logsumexp) = log(1 + e)
    assert float(stable.cost(Z, stable.activate(Z), Y)) == pytest.approx(np.log1p(np.e), rel=1e-12)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        assert not np.isfinite(float(naive.cost(Z, naive.activate(Z), Y)))


def test_naive_cross_entropy_has_no_zero_log_zero_artefact(xp):
    """Logits below exp's float32 overflow, a wrong class's a_k underflows to 0: the naive loss is
    -log a_y (finite, equal to the log-sum-exp loss), not 0 * log 0 = NaN."""
    Z = xp.asarray([[80.0, 0.0], [-80.0, 1.0], [0.0, 2.0]], dtype=xp.float32)
    Y = xp.asarray([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=xp.float32)
    stable, naive = get_head("softmax_ce"), get_head("naive_softmax_ce")
    A = naive.activate(Z)
    assert float(A[1, 0]) == 0.0  # e^-160 underflows in float32
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        J = float(naive.cost(Z, A, Y))
    assert J == pytest.approx(float(stable.cost(Z, stable.activate(Z), Y)), rel=1e-6)


def test_naive_cross_entropy_is_infinite_where_the_true_class_underflows(xp):
    """Below the overflow A is finite (so is the gradient A - Y), but a true class at a_y = 0 gives -log 0 = inf;
    the log-sum-exp loss is finite: -log a_y = logsumexp(z) - z_y = 160 here."""
    Z = xp.asarray([[80.0], [-80.0], [0.0]], dtype=xp.float32)
    Y = xp.asarray([[0.0], [1.0], [0.0]], dtype=xp.float32)
    stable, naive = get_head("softmax_ce"), get_head("naive_softmax_ce")
    A = naive.activate(Z)
    assert bool(xp.all(xp.isfinite(A - Y)))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        assert float(naive.cost(Z, A, Y)) == np.inf
    assert float(stable.cost(Z, stable.activate(Z), Y)) == pytest.approx(160.0, rel=1e-6)


def test_log_softmax_equals_log_of_softmax(xp):
    Z = xp.asarray(np.random.default_rng(2).normal(size=(5, 4)) * 4)
    np.testing.assert_allclose(to_numpy(log_softmax(Z)), np.log(to_numpy(softmax(Z))), rtol=1e-12, atol=1e-14)


# --- the fused delta is dJ/dZ ---------------------------------------------------------------------


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_fused_delta_is_the_gradient_of_the_cost(xp, name):
    """J is a mean over the m examples, so dJ/dZ = delta / m entry by entry."""
    head = get_head(name)
    rng = np.random.default_rng(3)
    n, m = 3, 5
    z = rng.normal(size=(n, m)) * 2
    Y = xp.asarray(targets(name, n, m, rng))
    h = 1e-6
    numeric = np.zeros((n, m))
    for i, j in np.ndindex(n, m):
        plus, minus = z.copy(), z.copy()
        plus[i, j] += h
        minus[i, j] -= h
        numeric[i, j] = (float(cost(head, xp.asarray(plus))(Y)) - float(cost(head, xp.asarray(minus))(Y))) / (2 * h)
    Z = xp.asarray(z)
    delta = to_numpy(head.delta(Z, head.activate(Z), Y))
    np.testing.assert_allclose(delta / m, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_cost_is_the_mean_over_the_batch(xp, name):
    head = get_head(name)
    rng = np.random.default_rng(4)
    z = rng.normal(size=(3, 4))
    y = targets(name, 3, 4, rng)
    J = float(cost(head, xp.asarray(z))(xp.asarray(y)))
    doubled = float(cost(head, xp.asarray(np.hstack([z, z])))(xp.asarray(np.hstack([y, y]))))
    assert doubled == pytest.approx(J, rel=1e-13)
    # and the sum over examples / m: the first column alone plus the rest, weighted
    J1 = float(cost(head, xp.asarray(z[:, :1]))(xp.asarray(y[:, :1])))
    J3 = float(cost(head, xp.asarray(z[:, 1:]))(xp.asarray(y[:, 1:])))
    assert J == pytest.approx((J1 + 3 * J3) / 4, rel=1e-13)


def test_mse_is_the_mean_over_outputs_and_examples(xp):
    head = get_head("linear_mse")
    Z = xp.asarray([[1.0, 2.0], [3.0, 5.0]])
    Y = xp.asarray([[0.0, 2.0], [1.0, 2.0]])
    # squared errors 1, 0, 4, 9: sum 14 / (n=2 * m=2)
    assert float(head.cost(Z, head.activate(Z), Y)) == pytest.approx(14 / 4)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_head_keeps_float32(xp, name):
    head = get_head(name)
    rng = np.random.default_rng(5)
    Z = xp.asarray(rng.normal(size=(3, 4)), dtype=xp.float32)
    Y = xp.asarray(targets(name, 3, 4, rng), dtype=xp.float32)
    A = head.activate(Z)
    assert A.dtype == xp.float32
    assert head.cost(Z, A, Y).dtype == xp.float32
    assert head.delta(Z, A, Y).dtype == xp.float32
    if head.accuracy is not None:
        assert head.accuracy(A, Y).dtype == xp.float32


# --- accuracy ---------------------------------------------------------------------------------------


def test_threshold_accuracy(xp):
    head = get_head("sigmoid_bce")
    A = xp.asarray([[0.9, 0.2, 0.5, 0.4]])
    Y = xp.asarray([[1.0, 0.0, 0.0, 1.0]])
    # right, right, wrong (0.5 counts as 1), wrong
    assert float(head.accuracy(A, Y)) == pytest.approx(0.5)


def test_argmax_accuracy(xp):
    head = get_head("softmax_ce")
    A = xp.asarray([[0.7, 0.1, 0.2], [0.2, 0.8, 0.3], [0.1, 0.1, 0.5]])
    Y = xp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    assert float(head.accuracy(A, Y)) == pytest.approx(2 / 3)


def test_regression_head_has_no_accuracy():
    assert get_head("linear_mse").accuracy is None


def test_unknown_head_lists_valid_names():
    with pytest.raises(ValueError, match="hinge") as info:
        get_head("hinge")
    for name in HEADS:
        assert name in str(info.value)


# --- a softmax head on multi-label data -------------------------------------------------------------


MULTI_HOT = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 1.0]])  # {0, 2}, none, {1}, all


def test_label_sets_train_toward_their_distribution_and_no_label_is_uniform(xp):
    assert to_numpy(label_distribution(xp.asarray(MULTI_HOT))) == pytest.approx(
        np.array([[0.5, 1 / 3, 0.0, 1 / 3], [0.0, 1 / 3, 1.0, 1 / 3], [0.5, 1 / 3, 0.0, 1 / 3]]))
    assert label_distribution(xp.asarray(MULTI_HOT, dtype=xp.float32)).dtype == xp.float32


@pytest.mark.parametrize("name", ["softmax_ce", "naive_softmax_ce"])
def test_a_softmax_head_on_label_sets_is_its_loss_on_their_distribution(xp, name):
    """Cost and delta[L] of `on_label_sets(head)` are the head's on `label_distribution(Y)`; delta is
    still the gradient of the cost (central differences)."""
    head, multi = get_head(name), on_label_sets(get_head(name))
    z = np.random.default_rng(6).normal(size=MULTI_HOT.shape)
    Z, Y = xp.asarray(z), xp.asarray(MULTI_HOT)
    A = head.activate(Z)
    assert float(multi.cost(Z, A, Y)) == float(head.cost(Z, A, label_distribution(Y)))
    h, m = 1e-6, z.shape[1]
    numeric = np.zeros_like(z)
    for i, j in np.ndindex(*z.shape):
        plus, minus = z.copy(), z.copy()
        plus[i, j] += h
        minus[i, j] -= h
        numeric[i, j] = (float(cost(multi, xp.asarray(plus))(Y)) - float(cost(multi, xp.asarray(minus))(Y))) / (2 * h)
    np.testing.assert_allclose(to_numpy(multi.delta(Z, A, Y)) / m, numeric, rtol=1e-6, atol=1e-9)


def test_accuracy_on_label_sets_tells_no_label_from_every_label(xp):
    """The distribution of "no label" and of "every label" is the same uniform column; the accuracy must
    read the label sets: a net that predicts no label is right on the empty example, wrong on the full one."""
    nothing = xp.zeros((3, 1))
    assert float(threshold_accuracy(nothing, xp.asarray(MULTI_HOT[:, 1:2]))) == 1.0
    assert float(threshold_accuracy(nothing, xp.asarray(MULTI_HOT[:, 3:4]))) == 0.0


def test_sigmoid_mse_delta_keeps_its_float32_precision_where_the_output_saturates(xp):
    """delta[L] = 2 (a - y) / n sigma'(z): at |z| = 20 float32 rounds sigma(z) to 1 (or sigma(-z) (1 - sigma(-z))
    loses it), so a (1 - a) from A would starve the saturated units to exactly 0 instead of their true ~2e-9."""
    z = np.array([[-20.0, -18.0, 18.0, 20.0]])
    y = np.array([[1.0, 1.0, 0.0, 0.0]])  # every output confidently wrong
    e = np.exp(-np.abs(z))
    true = 2.0 * (1.0 / (1.0 + np.exp(-z)) - y) * e / (1.0 + e) ** 2  # n[L] = 1
    head = get_head("sigmoid_mse")
    Z, Y = xp.asarray(z, dtype=xp.float32), xp.asarray(y, dtype=xp.float32)
    delta = to_numpy(head.delta(Z, head.activate(Z), Y))
    assert delta.dtype == np.float32
    np.testing.assert_allclose(delta, true, rtol=1e-5)
