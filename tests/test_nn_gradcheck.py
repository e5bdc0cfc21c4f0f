"""Backpropagation against float64 central differences, for every activation x head x layer kind."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nnresearch.backend import to_numpy
from nnresearch.nn import activations
from nnresearch.nn.activations import ACTIVATIONS
from nnresearch.nn.architectures import Builder, Init, logistic_regression, mlp, residual_mlp, softmax_regression
from nnresearch.nn.batchnorm import BatchNorm
from nnresearch.nn.gradcheck import gradient_check
from nnresearch.nn.losses import HEADS, get_head, on_label_sets

TOLERANCE = 1e-6
KINKED = ("relu", "leaky_relu")
N_IN, N_OUT, M = 3, 3, 6


def batch(head: str, xp, rng: np.random.Generator, n_in: int = N_IN, n_out: int = N_OUT, m: int = M):
    X = rng.normal(size=(n_in, m))
    if head.startswith(("softmax", "naive_softmax")):
        Y = np.eye(n_out)[:, rng.integers(0, n_out, size=m)]
    elif head == "sigmoid_bce":
        Y = rng.integers(0, 2, size=(n_out, m)).astype(float)
    elif head == "sigmoid_mse":
        Y = rng.uniform(0, 1, size=(n_out, m))
    else:
        Y = rng.normal(size=(n_out, m))
    return xp.asarray(X), xp.asarray(Y)


def build(kind: str, activation: str, head: str, seed: int, xp=np):
    builder = Builder(xp, xp.float64, np.random.default_rng(seed), activation=activation, alpha=0.1,
                      batchnorm=kind == "mlp_batchnorm")
    if kind == "residual_mlp":
        return residual_mlp(builder, N_IN, width=4, depth=3, n_outputs=N_OUT, head=head)
    return mlp(builder, [N_IN, 4, 4, N_OUT], head)


def kink_margin(network) -> float:
    """Smallest |input of g| over the hidden units of the last forward (relu's kink sits at 0)."""
    hidden = network.units[:-1]
    return min(float(np.min(np.abs(to_numpy(unit.Z_act)))) for unit in hidden)


def checked_setup(kind: str, activation: str, head: str, xp=np):
    """The first seed whose relu-family pre-activations stay at least 1e-3 from the kink."""
    for seed in range(50):
        network = build(kind, activation, head, seed, xp)
        X, Y = batch(head, xp, np.random.default_rng(1000 + seed))
        network.forward(X, train=True)
        if activation not in KINKED or kink_margin(network) > 1e-3:
            return network, X, Y
    raise AssertionError("no seed keeps the pre-activations away from the kink")


def assert_passes(errors: dict[str, float], network) -> None:
    assert set(errors) == set(network.params())
    bad = {name: error for name, error in errors.items() if not error < TOLERANCE}
    assert not bad, f"gradient check failed: {bad}"


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("kind", ["mlp", "mlp_batchnorm", "residual_mlp"])
def test_backprop_matches_central_differences(kind, activation, head):
    network, X, Y = checked_setup(kind, activation, head)
    errors = gradient_check(network, X, Y)
    if kind == "mlp_batchnorm" and activation == "linear":
        # A[1] = gamma1 Zhat1 + beta1 feeds W2 and BatchNorm 2 straight away, which subtracts any shift:
        # dJ/dbeta1 = 0 exactly, so a relative error compares two round-off noises. Check it is zero.
        assert np.max(np.abs(to_numpy(network.grads()["beta1"]))) < 1e-12
        errors["beta1"] = 0.0
    assert_passes(errors, network)
    if activation in KINKED:  # the differences never straddled the kink
        assert kink_margin(network) > 1e-4


def test_logistic_regression_gradients():
    network = logistic_regression(Builder(np, np.float64, np.random.default_rng(0)), 4)
    X, Y = batch("sigmoid_bce", np, np.random.default_rng(1), n_in=4, n_out=1, m=7)
    assert_passes(gradient_check(network, X, Y), network)


def test_softmax_regression_gradients():
    network = softmax_regression(Builder(np, np.float64, np.random.default_rng(0)), 4, 5)
    X, Y = batch("softmax_ce", np, np.random.default_rng(1), n_in=4, n_out=5, m=7)
    assert_passes(gradient_check(network, X, Y), network)


@pytest.mark.parametrize("m", [2, 12])
def test_dense_gradients_whichever_array_carries_the_one_over_m(xp, m):
    # m=2 < n[l-1]: the 1/m scales delta before the product; m=12 >= n[l-1]: it scales dW after it
    network = mlp(Builder(xp, xp.float64, np.random.default_rng(0), activation="tanh"), [8, 10, 3], "softmax_ce")
    X, Y = batch("softmax_ce", xp, np.random.default_rng(1), n_in=8, n_out=3, m=m)
    assert_passes(gradient_check(network, X, Y), network)


@pytest.mark.parametrize(("kind", "activation", "head"), [
    ("mlp_batchnorm", "tanh", "softmax_ce"),
    ("residual_mlp", "gelu", "sigmoid_bce"),
    ("mlp", "leaky_relu", "linear_mse"),
])
def test_gradient_check_on_every_backend(xp, kind, activation, head):
    network, X, Y = checked_setup(kind, activation, head, xp)
    assert_passes(gradient_check(network, X, Y), network)


def test_gradient_check_samples_large_parameters():
    builder = Builder(np, np.float64, np.random.default_rng(0), activation="tanh")
    network = mlp(builder, [12, 10, 2], "softmax_ce")  # W1 has 120 entries
    X, Y = batch("softmax_ce", np, np.random.default_rng(1), n_in=12, n_out=2)
    calls = []
    original = network.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    network.forward = counting_forward
    errors = gradient_check(network, X, Y, max_entries=20)
    assert max(errors.values()) < TOLERANCE
    # one forward for backprop, then 2 per checked entry: W1 20, b1 10, W2 20, b2 2
    assert len(calls) == 1 + 2 * (20 + 10 + 20 + 2)


def test_gradient_check_leaves_the_parameters_unchanged():
    network, X, Y = checked_setup("mlp_batchnorm", "tanh", "softmax_ce")
    before = {name: to_numpy(a).copy() for name, a in network.params().items()}
    gradient_check(network, X, Y)
    for name, value in before.items():
        np.testing.assert_array_equal(to_numpy(network.params()[name]), value, err_msg=name)


def test_gradient_check_restores_batchnorm_running_statistics():
    """The docstring promises the running statistics are restored: the check is not a training step."""
    network, X, Y = checked_setup("mlp_batchnorm", "tanh", "softmax_ce")
    before = {name: to_numpy(a).copy() for name, a in network.buffers().items()}
    assert before
    gradient_check(network, X, Y)
    for name, value in before.items():
        np.testing.assert_array_equal(to_numpy(network.buffers()[name]), value, err_msg=name)


def test_wrong_activation_derivative_is_detected(monkeypatch):
    """tanh' off by 10%: every layer below the output gets a visibly wrong gradient."""
    monkeypatch.setitem(ACTIVATIONS, "tanh", (activations.tanh, lambda Z, A: 1.1 * (1.0 - A * A)))
    network, X, Y = checked_setup("mlp", "tanh", "softmax_ce")
    errors = gradient_check(network, X, Y)
    assert errors["W1"] > 1e-2 and errors["W2"] > 1e-2
    assert errors["W3"] < TOLERANCE  # the output layer sits above every tanh


def test_wrong_output_delta_is_detected():
    network, X, Y = checked_setup("mlp", "tanh", "softmax_ce")
    right = network.head
    network.head = dataclasses.replace(right, delta=lambda Z, A, Y: 1.1 * right.delta(Z, A, Y))
    errors = gradient_check(network, X, Y)
    assert min(errors.values()) > 1e-2


def test_wrong_batchnorm_backward_is_detected(monkeypatch):
    """Dropping the batch-statistics terms of BatchNorm's backward (eval-mode formula in train mode)."""
    def eval_style_backward(self, dOut, gamma):
        return gamma * self.inv_std * dOut, np.mean(dOut * self.Zhat, axis=1, keepdims=True), np.mean(dOut, axis=1, keepdims=True)

    monkeypatch.setattr(BatchNorm, "backward", eval_style_backward)
    network, X, Y = checked_setup("mlp_batchnorm", "tanh", "softmax_ce")
    errors = gradient_check(network, X, Y)
    assert errors["W1"] > 1e-2


def test_gradient_check_refuses_float32(xp):
    builder = Builder(xp, xp.float32, np.random.default_rng(0), activation="tanh")
    network = mlp(builder, [N_IN, 4, N_OUT], "softmax_ce")
    X, Y = batch("softmax_ce", xp, np.random.default_rng(1))
    with pytest.raises(TypeError, match="float64"):
        gradient_check(network, xp.astype(X, xp.float32), xp.astype(Y, xp.float32))


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("kind", ["mlp", "residual_mlp"])
def test_backprop_with_a_batch_of_one_example(kind, head):
    """m = 1: every 1/m and every sum over the batch axis of a single column (BatchNorm refuses m = 1 in training)."""
    network = build(kind, "tanh", head, seed=0)
    X, Y = batch(head, np, np.random.default_rng(7), m=1)
    assert_passes(gradient_check(network, X, Y), network)


@pytest.mark.parametrize("name", ["softmax_ce", "naive_softmax_ce"])
def test_backprop_of_a_softmax_head_on_label_sets(name):
    """Multi-hot targets, some columns empty, some full: the head trains on their distribution."""
    network = build("mlp", "tanh", name, seed=0)
    network.head = on_label_sets(get_head(name))
    X = np.random.default_rng(8).normal(size=(N_IN, 4))
    Y = np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])  # all, none, two, one
    assert_passes(gradient_check(network, X, Y), network)


def test_a_sign_flipped_gradient_is_detected():
    """-dJ/dtheta has the right norm and the wrong direction: the error compares the vectors, not their sizes."""
    network, X, Y = checked_setup("mlp", "tanh", "softmax_ce")
    right = network.head
    network.head = dataclasses.replace(right, delta=lambda Z, A, Y: -right.delta(Z, A, Y))
    errors = gradient_check(network, X, Y)
    assert min(errors.values()) > 0.99  # ||g - (-g)|| / (||g|| + ||-g||) = 1


def test_sampled_entries_come_from_the_whole_parameter_not_its_first_rows():
    """A gradient wrong everywhere but in its first `max_entries` entries is still caught."""
    builder = Builder(np, np.float64, np.random.default_rng(0), activation="tanh")
    network = mlp(builder, [12, 10, 2], "softmax_ce")  # W1 has 120 entries
    X, Y = batch("softmax_ce", np, np.random.default_rng(1), n_in=12, n_out=2)
    original = network.backward

    def backward_wrong_past_the_first_20_entries_of_W1(Y):
        original(Y)
        flat = network.units[0].grads["W"].reshape(-1)  # a view: C-ordered (10, 12)
        flat[20:] *= 2.0

    network.backward = backward_wrong_past_the_first_20_entries_of_W1
    errors = gradient_check(network, X, Y, max_entries=20)
    assert errors["W1"] > 0.1
    assert errors["W2"] < TOLERANCE


def test_eval_mode_batchnorm_backward_matches_central_differences():
    """In eval mode BatchNorm is a fixed affine map of Z (running statistics, not the batch's), so its
    backward is gamma / sigma * dOut. `gradient_check` runs train mode, so the eval branch is checked here."""
    network = build("mlp_batchnorm", "tanh", "softmax_ce", seed=0)
    X, Y = batch("softmax_ce", np, np.random.default_rng(5))
    for seed in range(3):  # running statistics away from their initial 0 and 1
        network.forward(np.random.default_rng(10 + seed).normal(1.0, 2.0, size=X.shape), train=True)

    def cost() -> float:
        network.forward(X, train=False)
        return float(network.cost(Y))

    network.forward(X, train=False)
    network.backward(Y)
    eps = 1e-6
    for name, param in network.params().items():
        backprop = to_numpy(network.grads()[name]).copy()
        numeric = np.zeros_like(backprop)
        for index in np.ndindex(param.shape):
            original = float(param[index])
            param[index] = original + eps
            plus = cost()
            param[index] = original - eps
            numeric[index] = (plus - cost()) / (2 * eps)
            param[index] = original
        error = np.linalg.norm(numeric - backprop) / max(np.linalg.norm(numeric) + np.linalg.norm(backprop), 1e-7)
        assert error < TOLERANCE, (name, error)


def test_a_parameter_without_gradient_passes_instead_of_giving_nan():
    """A relu layer whose units are all off (bias -100): its W1 and b1 have exactly zero gradient by backprop
    and by differences; 0 / 0 must not make the error NaN (which fails every `error < tolerance`)."""
    builder = Builder(np, np.float64, np.random.default_rng(0), Init("xavier_normal", bias="constant", bias_value=-100.0),
                      activation="relu")
    network = mlp(builder, [N_IN, 4, N_OUT], "softmax_ce")
    X, Y = batch("softmax_ce", np, np.random.default_rng(1))
    errors = gradient_check(network, X, Y)
    assert errors["W1"] == 0.0 and errors["b1"] == 0.0
    assert errors["b2"] < TOLERANCE
