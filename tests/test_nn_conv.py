"""Conv1D, Reshape, Flatten and the cnn1d builder (§11.3): a loop-written reference convolution,
the adjoint of backward, float64 gradient checks, dtype keeping, names, shapes and errors."""

from __future__ import annotations

import numpy as np
import pytest
from test_nn_gradcheck import batch as gradcheck_batch

from nnresearch.backend import make_rng, to_numpy
from nnresearch.nn.activations import ACTIVATIONS, get_activation
from nnresearch.nn.architectures import Builder, Init, cnn1d
from nnresearch.nn.conv import Conv1D, Flatten, Reshape
from nnresearch.nn.gradcheck import gradient_check
from nnresearch.nn.losses import HEADS

# (padding, stride, k, L, L_out, pad_left): the expected geometry written out by hand.
# same: L_out = ceil(L / stride), total padding (L_out - 1) stride + k - L, the odd zero on the right.
GEOMETRIES = [
    ("same", 1, 3, 9, 9, 1),
    ("same", 1, 4, 9, 9, 1),   # total 3: one zero left, two right
    ("valid", 1, 3, 9, 7, 0),
    ("same", 2, 4, 9, 5, 1),   # total 4 * 2 + 4 - 9 = 3
    ("valid", 2, 3, 9, 4, 0),
    ("same", 2, 3, 10, 5, 0),  # total 4 * 2 + 3 - 10 = 1: the one zero goes right
    ("same", 4, 1, 10, 3, 0),  # stride beyond the kernel: 2 * 4 + 1 - 10 = -1, no padding (never negative)
    ("same", 4, 2, 11, 3, 0),  # 2 * 4 + 2 - 11 = -1
]


def reference_conv(X, W, b, stride, pad_left, L_out):
    """Z[o, t, i] = sum_{c, j} W[o, c, j] X[c, t stride + j - pad_left, i] + b[o], zeros outside X."""
    c_out, c_in, k = W.shape
    _, L, m = X.shape
    Z = np.zeros((c_out, L_out, m))
    for o in range(c_out):
        for t in range(L_out):
            for i in range(m):
                total = b[o, 0, 0]
                for c in range(c_in):
                    for j in range(k):
                        p = t * stride + j - pad_left
                        if 0 <= p < L:
                            total += W[o, c, j] * X[c, p, i]
                Z[o, t, i] = total
    return Z


def make_conv(xp, rng, c_out, c_in, k, stride, padding, activation="linear", dtype="float64"):
    W = rng.standard_normal((c_out, c_in, k))
    b = rng.standard_normal((c_out, 1, 1))
    dt = getattr(xp, dtype)
    layer = Conv1D(xp.asarray(W, dtype=dt), xp.asarray(b, dtype=dt), get_activation(activation), stride, padding)
    return layer, W, b


@pytest.mark.parametrize("padding, stride, k, L, L_out, pad_left", GEOMETRIES)
def test_forward_matches_loop_reference(xp, padding, stride, k, L, L_out, pad_left):
    rng = np.random.default_rng(1)
    layer, W, b = make_conv(xp, rng, 2, 3, k, stride, padding, activation="tanh")
    X = rng.standard_normal((3, L, 2))
    A = layer.forward(xp.asarray(X, dtype=xp.float64))
    Z = reference_conv(X, W, b, stride, pad_left, L_out)
    assert tuple(A.shape) == (2, L_out, 2)
    np.testing.assert_allclose(to_numpy(layer.Z), Z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(A), np.tanh(Z), rtol=1e-12, atol=1e-12)


def test_same_padding_stride_one_is_numpy_correlate(xp):
    """One channel, odd k: 'same' is np.correlate(x, w, 'same') (a cross-correlation, no kernel flip)."""
    rng = np.random.default_rng(2)
    layer, W, b = make_conv(xp, rng, 1, 1, 5, 1, "same")
    x = rng.standard_normal(11)
    Z = to_numpy(layer.forward(xp.asarray(x.reshape(1, 11, 1), dtype=xp.float64)))
    np.testing.assert_allclose(Z[0, :, 0], np.correlate(x, W[0, 0], "same") + b[0, 0, 0], rtol=1e-12)


@pytest.mark.parametrize("padding, stride, k, L, L_out, pad_left", GEOMETRIES)
def test_backward_is_the_adjoint_of_forward(xp, padding, stride, k, L, L_out, pad_left):
    """With g linear and b = 0, Z = T(X) is linear, so <dA, T(X)> = <T^T dA, X> = <dA_prev, X>."""
    rng = np.random.default_rng(3)
    layer, _, _ = make_conv(xp, rng, 2, 3, k, stride, padding)
    layer.params["b"] = xp.zeros((2, 1, 1), dtype=xp.float64)
    X = rng.standard_normal((3, L, 4))
    dA = rng.standard_normal((2, L_out, 4))
    Z = to_numpy(layer.forward(xp.asarray(X, dtype=xp.float64)))
    dX = to_numpy(layer.backward(xp.asarray(dA, dtype=xp.float64)))
    assert dX.shape == X.shape
    np.testing.assert_allclose(np.sum(dA * Z), np.sum(dX * X), rtol=1e-12)


def batch(xp, n_inputs, n_classes, m, seed, dtype="float64"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_inputs, m))
    Y = np.eye(n_classes)[:, rng.integers(0, n_classes, m)]
    return xp.asarray(X, dtype=getattr(xp, dtype)), xp.asarray(Y, dtype=getattr(xp, dtype))


def small_cnn(xp, activation, padding, stride=1, dtype="float64", hidden=5, seed=0):
    builder = Builder(xp, getattr(xp, dtype), make_rng(seed), Init("xavier_normal", bias="normal"), activation)
    # bias="normal" draws biases N(0, 1): nonzero, so db is checked on a generic point.
    return cnn1d(builder, 12, [3, 4], 3, 3, "softmax_ce", stride=stride, hidden=hidden, padding=padding)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradient_check(xp, activation, padding, stride):
    net = small_cnn(xp, activation, padding, stride)
    X, Y = batch(xp, 12, 3, 4, seed=1)
    net.forward(X)
    if activation == "relu":  # central differences are only valid away from the kink at 0
        for unit in net.units[:-1]:
            assert float(np.min(np.abs(to_numpy(unit.Z)))) > 1e-4
    errors = gradient_check(net, X, Y)
    assert set(errors) == {f"{p}{l}" for p in "Wb" for l in range(1, 5)}
    assert max(errors.values()) < 1e-6, errors


SMOOTH = sorted(set(ACTIVATIONS) - {"relu", "leaky_relu"})  # central differences need no kink near the point


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("activation", SMOOTH)
def test_gradient_check_every_head_and_activation_with_one_example(activation, head):
    """Beyond tanh/relu with softmax: every smooth activation and every head, on a batch of one example
    (m = 1) with a stride longer than the kernel (stride 4 > k 3: positions the kernel never reaches)."""
    builder = Builder(np, np.float64, make_rng(0), Init("xavier_normal", bias="normal"), activation)
    net = cnn1d(builder, 12, [3, 2], 3, 2, head, stride=4, hidden=3, padding="valid")
    X, Y = gradcheck_batch(head, np, np.random.default_rng(5), n_in=12, n_out=2, m=1)
    errors = gradient_check(net, X, Y)
    assert max(errors.values()) < 1e-6, errors


def test_float32_is_kept_through_forward_and_backward(xp):
    net = small_cnn(xp, "relu", "same", dtype="float32")
    X, Y = batch(xp, 12, 3, 6, seed=2, dtype="float32")
    J = net.loss_and_gradients(X, Y)
    assert J.dtype == xp.float32 and net.A_L.dtype == xp.float32
    for unit in net.units:
        arrays = [*unit.params.values(), *unit.grads.values(), unit.Z, unit.A, unit.delta]
        assert all(a.dtype == xp.float32 for a in arrays), unit


@pytest.mark.parametrize("padding, stride, lengths", [("same", 1, (12, 12)), ("valid", 1, (10, 8)),
                                                      ("same", 2, (6, 3)), ("valid", 2, (5, 2))])
def test_parameter_names_and_shapes(xp, padding, stride, lengths):
    net = small_cnn(xp, "tanh", padding, stride)
    shapes = {name: tuple(p.shape) for name, p in net.params().items()}
    assert shapes == {"W1": (3, 1, 3), "b1": (3, 1, 1), "W2": (4, 3, 3), "b2": (4, 1, 1),
                      "W3": (5, 4 * lengths[1]), "b3": (5, 1), "W4": (3, 5), "b4": (3, 1)}
    X, Y = batch(xp, 12, 3, 7, seed=3)
    net.loss_and_gradients(X, Y)
    assert tuple(net.A_L.shape) == (3, 7)
    assert [tuple(u.A.shape) for u in net.units[:2]] == [(3, lengths[0], 7), (4, lengths[1], 7)]
    assert {n: tuple(g.shape) for n, g in net.grads().items()} == shapes
    assert net.parameter_count() == 9 + 3 + 36 + 4 + 20 * lengths[1] + 5 + 15 + 3


def test_without_hidden_layer_and_state_round_trip(xp):
    net = small_cnn(xp, "tanh", "same", hidden=None)
    assert [tuple(net.params()[n].shape) for n in ("W3", "b3")] == [(3, 48), (3, 1)]
    X, _ = batch(xp, 12, 3, 2, seed=4)
    before = to_numpy(net.forward(X))
    other = small_cnn(xp, "tanh", "same", hidden=None, seed=99)
    other.load_state({n: to_numpy(p) for n, p in net.state().items()})
    np.testing.assert_allclose(to_numpy(other.forward(X)), before, rtol=1e-12)


def test_reshape_and_flatten_round_trip(xp):
    X = xp.reshape(xp.arange(24, dtype=xp.float64), (6, 4))
    reshape, flatten = Reshape((2, 3)), Flatten()
    A = reshape.forward(X)
    assert tuple(A.shape) == (2, 3, 4) and reshape.units == () and flatten.units == ()
    # channel-major: row c * L + t of the flat view is position t of channel c
    assert float(A[1, 2, 3]) == float(X[5, 3])
    F = flatten.forward(A)
    np.testing.assert_array_equal(to_numpy(F), to_numpy(X))
    np.testing.assert_array_equal(to_numpy(reshape.backward(flatten.backward(F))), to_numpy(X))


def test_bad_kernel_size_names_it(xp):
    builder = Builder(xp, xp.float64, make_rng(0))
    with pytest.raises(ValueError, match=r"k=5.*length 4.*valid"):
        cnn1d(builder, 4, [2], 5, 3, "softmax_ce", padding="valid")
    with pytest.raises(ValueError, match=r"k=3.*length 2"):  # the second layer sees length 2
        cnn1d(builder, 4, [2, 2], 3, 3, "softmax_ce", padding="valid")
    layer, _, _ = make_conv(xp, np.random.default_rng(0), 2, 1, 5, 1, "valid")
    with pytest.raises(ValueError, match="k=5"):
        layer.forward(xp.zeros((1, 3, 2), dtype=xp.float64))


def test_bad_arguments_raise_value_errors(xp):
    builder = Builder(xp, xp.float64, make_rng(0))
    with pytest.raises(ValueError, match="padding 'full'"):
        cnn1d(builder, 8, [2], 3, 3, "softmax_ce", padding="full")
    with pytest.raises(ValueError, match="stride"):
        cnn1d(builder, 8, [2], 3, 3, "softmax_ce", stride=0)
    with pytest.raises(ValueError, match="stride"):
        cnn1d(builder, 8, [2], 3, 3, "softmax_ce", stride=True)  # a bool is not a stride
    with pytest.raises(ValueError, match="channels"):
        cnn1d(builder, 8, [], 3, 3, "softmax_ce")
    with pytest.raises(ValueError, match="c_in=1"):
        make_conv(xp, np.random.default_rng(0), 2, 1, 3, 1, "same")[0].forward(xp.zeros((2, 8, 1), dtype=xp.float64))
    with pytest.raises(ValueError, match="Reshape|reshape"):
        Reshape((2, 3)).forward(xp.zeros((5, 1), dtype=xp.float64))
    for shape in [(2, 0), (-2, -2), ()]:
        with pytest.raises(ValueError, match="positive sizes"):
            Reshape(shape)


def test_a_cnn_draws_every_layer_from_the_builder_s_init_options():
    """init=constant with init_value: the Conv1D kernels get the value, as Dense layers do (they got 0 before)."""
    builder = Builder(np, np.float32, make_rng(0), Init("constant", value=0.3, bias="constant", bias_value=-0.1))
    network = cnn1d(builder, 8, [2, 3], 3, 2, "softmax_ce")
    convs = [layer for layer in network.layers if isinstance(layer, Conv1D)]
    assert len(convs) == 2
    for layer in [*convs, network.layers[-1]]:
        assert np.all(to_numpy(layer.params["W"]) == np.float32(0.3)) and np.all(to_numpy(layer.params["b"]) == np.float32(-0.1))
