"""The Network (chapter §4, §8, §9): a step by hand, dtypes, seeds, BatchNorm, residuals, files, checks."""

from __future__ import annotations

import math
import os
import stat
import warnings

import numpy as np
import pytest

from nnresearch.backend import to_numpy
from nnresearch.nn.activations import get_activation
from nnresearch.nn.architectures import Builder, Init, logistic_regression, mlp, residual_mlp
from nnresearch.nn.layers import Dense, Residual
from nnresearch.nn.losses import HEADS
from nnresearch.nn.network import NonFiniteError, load_npz, save_npz

KINDS = ["mlp", "mlp_batchnorm", "residual_mlp"]


def build(xp, dtype="float64", kind="mlp", head="softmax_ce", seed=0, activation="tanh"):
    builder = Builder(xp, getattr(xp, dtype), np.random.default_rng(seed), activation=activation,
                      batchnorm=kind == "mlp_batchnorm")
    if kind == "residual_mlp":
        return residual_mlp(builder, 3, width=4, depth=3, n_outputs=2, head=head)
    return mlp(builder, [3, 5, 4, 2], head)


def batch(xp, dtype="float64", head="softmax_ce", n_in=3, n_out=2, m=6, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_in, m))
    if head.startswith(("softmax", "naive_softmax")):
        Y = np.eye(n_out)[:, rng.integers(0, n_out, size=m)]
    elif head == "linear_mse":
        Y = rng.normal(size=(n_out, m))
    else:
        Y = rng.integers(0, 2, size=(n_out, m)).astype(float)
    return xp.asarray(X, dtype=getattr(xp, dtype)), xp.asarray(Y, dtype=getattr(xp, dtype))


def host_state(network):
    return {name: to_numpy(a).copy() for name, a in network.state().items()}


def assert_same_arrays(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert to_numpy(a[name]).dtype == to_numpy(b[name]).dtype, name
        np.testing.assert_array_equal(to_numpy(a[name]), to_numpy(b[name]), err_msg=name)


# --- one step worked by hand --------------------------------------------------------------------


def test_logistic_regression_step_by_hand(xp):
    w, b = np.array([[0.5, -0.25]]), np.array([[0.1]])
    x = np.array([[1.0, 2.0, -1.0], [0.0, 1.0, 3.0]])  # n = 2 features, m = 3 examples
    y = np.array([[1.0, 0.0, 1.0]])
    m = x.shape[1]
    z = w @ x + b  # [[0.6, 0.85, -1.15]]
    a = 1 / (1 + np.exp(-z))
    J = -np.mean(y * np.log(a) + (1 - y) * np.log(1 - a))
    dw = (a - y) @ x.T / m
    db = np.sum(a - y) / m

    network = logistic_regression(Builder(xp, xp.float64, np.random.default_rng(0)), 2)
    network.load_state({"W1": w, "b1": b})
    cost = network.loss_and_gradients(xp.asarray(x), xp.asarray(y))
    np.testing.assert_allclose(to_numpy(network.A_L), a, rtol=1e-14)
    assert float(cost) == pytest.approx(J, rel=1e-14)
    grads = network.grads()
    assert set(grads) == {"W1", "b1"}
    assert tuple(grads["W1"].shape) == (1, 2) and tuple(grads["b1"].shape) == (1, 1)
    np.testing.assert_allclose(to_numpy(grads["W1"]), dw, rtol=1e-13)
    np.testing.assert_allclose(to_numpy(grads["b1"]), [[db]], rtol=1e-13)


# --- dtype discipline -----------------------------------------------------------------------------


def cached_arrays(network, J):
    """Every array a forward + backward leaves behind, by a readable name."""
    arrays = {f"param {k}": v for k, v in network.params().items()}
    arrays |= {f"grad {k}": v for k, v in network.grads().items()}
    arrays |= {f"buffer {k}": v for k, v in network.buffers().items()}
    for index, unit in enumerate(network.units, start=1):
        for attribute in ("A_prev", "Z", "Z_act", "A", "delta"):
            arrays[f"{attribute}[{index}]"] = getattr(unit, attribute)
        if unit.norm is not None:
            arrays[f"Zhat[{index}]"] = unit.norm.Zhat
    arrays |= {"Z_L": network.Z_L, "A_L": network.A_L, "delta_L": network.delta_L, "J": J}
    return arrays


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_array_keeps_the_network_dtype(xp, dtype, kind, head):
    network = build(xp, dtype, kind, head, activation="gelu")
    X, Y = batch(xp, dtype, head)
    J = network.loss_and_gradients(X, Y)
    wrong = {name: a.dtype for name, a in cached_arrays(network, J).items() if a.dtype != getattr(xp, dtype)}
    assert not wrong, f"arrays left {dtype}: {wrong}"
    accuracy = network.accuracy(Y)
    assert accuracy is None if head == "linear_mse" else accuracy.dtype == getattr(xp, dtype)


def test_loss_and_accuracy_come_back_to_the_host(xp):
    """J is "a 0-d array" of the backend; the loop logs it through `to_numpy`, so that must accept it."""
    network = build(xp, "float32")
    X, Y = batch(xp, "float32")
    J = network.loss_and_gradients(X, Y)
    for value in (J, network.accuracy(Y)):
        host = to_numpy(value)
        assert host.shape == () and host.dtype == np.float32


# --- seeds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_gives_bit_identical_networks(xp, kind):
    a, b = build(xp, "float32", kind, seed=5), build(xp, "float32", kind, seed=5)
    assert_same_arrays(a.state(), b.state())
    X, Y = batch(xp, "float32")
    Ja, Jb = a.loss_and_gradients(X, Y), b.loss_and_gradients(X, Y)
    assert float(Ja) == float(Jb)  # float32 -> float is exact, so this is bit for bit
    assert_same_arrays(a.grads(), b.grads())
    c = build(xp, "float32", kind, seed=6)
    assert not np.array_equal(to_numpy(a.params()["W1"]), to_numpy(c.params()["W1"]))


# --- parameter names and shapes ---------------------------------------------------------------------


def test_chapter_names_and_shapes(xp):
    plain = build(xp)
    assert {k: tuple(v.shape) for k, v in plain.params().items()} == {
        "W1": (5, 3), "b1": (5, 1), "W2": (4, 5), "b2": (4, 1), "W3": (2, 4), "b3": (2, 1)}
    assert plain.parameter_count() == 15 + 5 + 20 + 4 + 8 + 2
    normed = build(xp, kind="mlp_batchnorm")
    assert list(normed.params()) == ["W1", "gamma1", "beta1", "W2", "gamma2", "beta2", "W3", "b3"]
    assert list(normed.buffers()) == ["running_mean1", "running_var1", "running_mean2", "running_var2"]
    residual = build(xp, kind="residual_mlp")
    assert {k: tuple(v.shape) for k, v in residual.params().items()} == {
        "W1": (4, 3), "b1": (4, 1), "W2": (4, 4), "b2": (4, 1), "W3": (4, 4), "b3": (4, 1), "W4": (2, 4), "b4": (2, 1)}


# --- BatchNorm --------------------------------------------------------------------------------------


def test_batchnorm_train_and_eval_modes(xp):
    network = build(xp, kind="mlp_batchnorm")
    unit = network.units[0]
    X, _ = batch(xp, m=16)
    X = X + 3.0  # a batch mean far from the initial running mean 0
    Z = to_numpy(unit.params["W"] @ X)
    mu, var = Z.mean(axis=1, keepdims=True), Z.var(axis=1, keepdims=True)

    A_train = to_numpy(network.forward(X, train=True))
    Zn = to_numpy(unit.Z_act)  # train mode: normalized with the batch's own statistics
    np.testing.assert_allclose(Zn.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(Zn.var(axis=1), var[:, 0] / (var[:, 0] + 1e-5), rtol=1e-12)
    # running averages move from (0, 1) by momentum 0.1 toward the batch's statistics
    np.testing.assert_allclose(to_numpy(network.buffers()["running_mean1"]), 0.1 * mu, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(network.buffers()["running_var1"]), 0.9 + 0.1 * var, rtol=1e-12)

    distances = []
    for _ in range(60):
        network.forward(X, train=True)
        distances.append(np.max(np.abs(to_numpy(network.buffers()["running_mean1"]) - mu)))
    assert all(later < earlier for earlier, later in zip(distances, distances[1:]))
    assert distances[-1] < 0.01 * np.max(np.abs(mu))

    # eval mode uses the running statistics and leaves them alone
    network.forward(X, train=True)  # one more step so the running stats differ from this batch's
    before = host_state(network)
    A_eval = to_numpy(network.forward(X, train=False))
    assert_same_arrays(before, host_state(network))
    rm, rv = before["running_mean1"], before["running_var1"]
    expected = np.tanh(to_numpy(unit.params["gamma"]) * (Z - rm) / np.sqrt(rv + 1e-5) + to_numpy(unit.params["beta"]))
    np.testing.assert_allclose(to_numpy(unit.A), expected, rtol=1e-12)
    assert not np.allclose(A_train, A_eval)
    # eval works on one example alone, where batch statistics would be meaningless
    single = network.forward(X[:, :1], train=False)
    np.testing.assert_allclose(to_numpy(single), A_eval[:, :1], rtol=1e-12)


# --- residual blocks ---------------------------------------------------------------------------------


def test_residual_block_needs_square_weights(xp):
    g = get_activation("relu")
    W, b = xp.zeros((3, 4), dtype=xp.float64), xp.zeros((3, 1), dtype=xp.float64)
    with pytest.raises(ValueError, match="square"):
        Residual(Dense(W, b, g))


def test_residual_block_adds_the_identity(xp):
    rng = np.random.default_rng(0)
    w, b, x = rng.normal(size=(3, 3)), rng.normal(size=(3, 1)), rng.normal(size=(3, 5))
    block = Residual(Dense(xp.asarray(w), xp.asarray(b), get_activation("tanh")))
    np.testing.assert_allclose(to_numpy(block.forward(xp.asarray(x))), x + np.tanh(w @ x + b), rtol=1e-14)
    dA = rng.normal(size=(3, 5))
    expected = dA + w.T @ (dA * (1 - np.tanh(w @ x + b) ** 2))
    np.testing.assert_allclose(to_numpy(block.backward(xp.asarray(dA))), expected, rtol=1e-13)


# --- saving and loading ------------------------------------------------------------------------------


def test_save_load_round_trip(xp, tmp_path):
    source = build(xp, seed=1)
    path = tmp_path / "runs" / "net.npz"
    source.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["net.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as data:
        stored = {name: data[name] for name in data.files}
    assert {k: v.shape for k, v in stored.items()} == {
        "W1": (5, 3), "b1": (5, 1), "W2": (4, 5), "b2": (4, 1), "W3": (2, 4), "b3": (2, 1)}
    target = build(xp, seed=2)
    target.load(path)
    assert_same_arrays(source.state(), target.state())
    X, _ = batch(xp)
    np.testing.assert_array_equal(to_numpy(target.forward(X)), to_numpy(source.forward(X)))


def test_save_load_round_trip_keeps_batchnorm_statistics(xp, tmp_path):
    source = build(xp, "float32", kind="mlp_batchnorm", seed=1)
    X, _ = batch(xp, "float32")
    source.forward(X + 1.0, train=True)
    source.save(tmp_path / "bn.npz")
    target = build(xp, "float32", kind="mlp_batchnorm", seed=2)
    target.load(tmp_path / "bn.npz")
    assert_same_arrays(source.state(), target.state())
    assert float(xp.max(xp.abs(target.buffers()["running_mean1"]))) > 0


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_parameters_get_the_permissions_of_any_new_file(tmp_path, umask):
    previous = os.umask(umask)
    try:
        save_npz(tmp_path / "final.npz", {"W1": np.ones((3, 2))})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "final.npz").stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["final.npz"]


def test_load_npz_rejects_truncated_and_corrupt_files(tmp_path):
    good = tmp_path / "good.npz"
    save_npz(good, {"W1": np.ones((3, 2)), "b1": np.zeros((3, 1))})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError) as info:
        load_npz(truncated)
    assert str(truncated) in str(info.value)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(ValueError) as info:
        load_npz(garbage)
    assert str(garbage) in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_npz(tmp_path / "missing.npz")


UNPICKLED: list[str] = []


def _record(message):
    UNPICKLED.append(message)
    return message


class Trap:
    """Unpickling this calls `_record`: the test sees whether the loader ever unpickled."""

    def __reduce__(self):
        return _record, ("unpickled",)


def test_load_npz_never_unpickles(tmp_path):
    path = tmp_path / "pickled.npz"
    objects = np.empty(1, dtype=object)
    objects[0] = Trap()
    np.savez(path, W1=objects)
    with pytest.raises(ValueError) as info:
        load_npz(path)
    assert str(path) in str(info.value)
    network = build(np)
    with pytest.raises(ValueError):
        network.load(path)
    assert UNPICKLED == []


@pytest.mark.parametrize("damage", ["shape", "missing", "unexpected", "nan", "inf"])
def test_load_state_rejects_bad_state_and_changes_nothing(xp, damage):
    network = build(xp, kind="mlp_batchnorm")
    before = host_state(network)
    state = {name: value + 0.5 for name, value in before.items()}  # differs everywhere from the network
    if damage == "shape":
        state["W2"] = state["W2"].T
    elif damage == "missing":
        del state["b3"]
    elif damage == "unexpected":
        state["W9"] = np.zeros((2, 2))
    else:  # a bad value in the very last entry: nothing before it may have been written
        state["running_var2"][-1, 0] = np.nan if damage == "nan" else np.inf
    match = {"shape": "W2", "missing": "b3", "unexpected": "W9", "nan": "running_var2", "inf": "running_var2"}
    with pytest.raises(ValueError, match=match[damage]):
        network.load_state(state)
    assert_same_arrays(before, host_state(network))


def test_load_state_accepts_a_good_state(xp):
    network = build(xp, "float32")
    state = {name: value + 1.0 for name, value in host_state(network).items()}  # float32 stays float32
    network.load_state({name: value.astype(np.float64) for name, value in state.items()})
    assert_same_arrays(state, host_state(network))  # cast back to the network's dtype


def test_batchnorm_refuses_a_training_batch_of_one_example(xp):
    network = build(xp, kind="mlp_batchnorm")
    one, _ = batch(xp, m=1)
    with pytest.raises(ValueError, match="BatchNorm in train mode needs a batch of 2"):
        network.forward(one, train=True)
    network.forward(one, train=False)  # eval mode uses the running statistics: one example is fine


def test_load_state_copies_the_arrays_it_is_given(xp):
    """A network never shares its parameters with the mapping it loaded: updating one leaves the other."""
    network = build(xp, "float32")
    state = {name: value + 1.0 for name, value in host_state(network).items()}
    network.load_state(state)
    loaded = {name: value.copy() for name, value in state.items()}
    for value in state.values():
        value += 5.0
    assert_same_arrays(loaded, host_state(network))


# --- batch checks and non-finite reporting -----------------------------------------------------------


def test_check_batch_accepts_a_good_batch(xp):
    network = build(xp)
    network.check_batch(*batch(xp))


@pytest.mark.parametrize(("head", "problem", "error", "match"), [
    ("softmax_ce", "x_rows", ValueError, "X has shape"),
    ("softmax_ce", "x_dtype", TypeError, "dtype"),
    ("softmax_ce", "y_rows", ValueError, "Y has shape"),
    ("softmax_ce", "x_nan", ValueError, "NaN"),
    ("softmax_ce", "y_inf", ValueError, "NaN or inf"),
    ("sigmoid_bce", "label_2", ValueError, "out of range"),
    ("softmax_ce", "label_negative", ValueError, "out of range"),
    ("softmax_ce", "two_hot", ValueError, "one-hot"),
    ("naive_softmax_ce", "zero_hot", ValueError, "one-hot"),
    ("softmax_ce", "sums_to_1.2", ValueError, "one-hot"),
])
def test_check_batch_names_the_problem(xp, head, problem, error, match):
    network = build(xp, head=head)
    x, y = (to_numpy(a).copy() for a in batch(xp, head=head))
    if problem == "x_rows":
        x = np.vstack([x, x[:1]])
    elif problem == "x_dtype":
        x = x.astype(np.float32)
    elif problem == "y_rows":
        y = np.vstack([y, y[:1]])
    elif problem == "x_nan":
        x[1, 2] = np.nan
    elif problem == "y_inf":
        y[0, 0] = np.inf
    elif problem == "label_2":
        y[0, 0] = 2.0
    elif problem == "label_negative":
        y[:, 0] = [-1.0, 2.0]  # sums to 1, yet not a distribution
    elif problem == "two_hot":
        y[:, 0] = [1.0, 1.0]
    elif problem == "zero_hot":
        y[:, 0] = [0.0, 0.0]
    elif problem == "sums_to_1.2":
        y[:, 0] = [0.6, 0.6]  # each label in range, the column not a distribution
    with pytest.raises(error, match=match):
        network.check_batch(xp.asarray(x), xp.asarray(y))


def test_check_batch_regression_allows_any_real_target(xp):
    network = build(xp, head="linear_mse")
    X, Y = batch(xp, head="linear_mse")
    network.check_batch(X, Y * 10.0)


def test_first_non_finite_names_the_layer(xp):
    network = build(xp)
    X, _ = batch(xp)
    network.forward(X)
    assert network.first_non_finite() == ("output", "loss")
    network.params()["W2"][1, 2] = math.nan  # params() hands out the live arrays
    assert network.first_non_finite() == ("layer2", "parameter W2")


def test_first_non_finite_finds_activations(xp):
    network = build(xp)
    x = to_numpy(batch(xp)[0]).copy()
    x[0, 0] = np.inf
    network.forward(xp.asarray(x))
    assert network.first_non_finite() == ("layer1", "Z[1]")


def test_first_non_finite_finds_an_overflowed_softmax_output(xp):
    """Finite logits, but a naive softmax's e^z overflows: the head's output A[L] is named, not the loss."""
    network = build(xp, dtype="float32", head="naive_softmax_ce")
    network.params()["b3"][0, 0] = 1e3  # z_1 ~ 1000 > 88.7 in every column: e^z_1 = inf, inf / inf = NaN
    X, _ = batch(xp, dtype="float32", head="naive_softmax_ce")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        network.forward(X)
    assert network.first_non_finite() == ("output", "A[L]")


def test_non_finite_error_names_step_and_layer():
    error = NonFiniteError(17, "layer3", "gradient dW3")
    assert isinstance(error, ArithmeticError)
    assert "step 17" in str(error) and "layer3" in str(error) and "gradient dW3" in str(error)
    assert (error.step, error.layer, error.quantity) == (17, "layer3", "gradient dW3")


@pytest.mark.parametrize("labels", [np.array([[0, 2, 1, 2, 0]]), np.array([0, 2, 1, 2, 0]), np.array([[0.0, 2.0, 1.0, 2.0, 0.0]])],
                         ids=["int (1, m)", "int (m,)", "float (1, m)"])
def test_targets_not_shaped_like_the_output_are_refused_not_broadcast(labels):
    """Class labels given where one-hot columns are expected used to broadcast against A[L]: a wrong
    loss and wrong gradients, without a word. cost and backward (so loss_and_gradients) refuse them."""
    net = mlp(Builder(np, np.float64, np.random.default_rng(0), Init("he_normal"), "relu"), [4, 8, 3], "softmax_ce")
    X = np.random.default_rng(1).normal(size=(4, 5))
    with pytest.raises(ValueError, match=r"Y has shape .*; expected \(3, 5\) like A\[L\]"):
        net.loss_and_gradients(X, labels)
    net.forward(X)
    with pytest.raises(ValueError, match="like A"):
        net.backward(labels)
