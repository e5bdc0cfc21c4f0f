"""Optimizers, clipping and learning-rate schedules: steps worked by hand, on every backend."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from nnresearch.backend import to_numpy
from nnresearch.nn.optim import (
    Adam,
    GradientDescent,
    clip_by_global_norm,
    clip_by_value,
    decays,
    global_norm,
    make_optimizer,
)
from nnresearch.nn.schedules import make_schedule


def arr(xp, values, dtype="float64"):
    return xp.asarray(values, dtype=getattr(xp, dtype))


def host(a):
    return to_numpy(a)


# --- gradient descent ------------------------------------------------------------------------


def test_one_gradient_descent_step_by_hand(xp):
    # W := W - alpha dJ/dW with alpha = 0.1: [1, 2] - 0.1 * [0.5, -1] = [0.95, 2.1]
    params = {"W1": arr(xp, [1.0, 2.0]), "b1": arr(xp, [0.5])}
    grads = {"W1": arr(xp, [0.5, -1.0]), "b1": arr(xp, [2.0])}
    make_optimizer("sgd").step(params, grads, lr=0.1)
    np.testing.assert_allclose(host(params["W1"]), [0.95, 2.1], rtol=1e-15)
    np.testing.assert_allclose(host(params["b1"]), [0.3], rtol=1e-15)


def reference_momentum(w, gs, lr, mu, nesterov):
    """Sutskever-form momentum written out with Python floats."""
    v = 0.0
    for g in gs:
        v = mu * v - lr * g
        w = w + (mu * v - lr * g if nesterov else v)
    return w


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_hand_reference_over_three_steps(xp, nesterov):
    gs = [0.5, -0.2, 0.3]
    opt = GradientDescent(momentum=0.9, nesterov=nesterov)
    params = {"W1": arr(xp, [1.0])}
    for g in gs:
        opt.step(params, {"W1": arr(xp, [g])}, lr=0.1)
    expected = reference_momentum(1.0, gs, 0.1, 0.9, nesterov)
    np.testing.assert_allclose(host(params["W1"]), [expected], rtol=1e-14)


def test_momentum_keeps_each_step_s_learning_rate_in_the_velocity():
    """Under a schedule the velocity holds lr * g of the step it came from (README: PyTorch's SGD scales
    the whole velocity by the current lr instead, so the two agree only at a constant lr).
    lr 0.1 then 0.01, mu 0.9, g = 1, 1: v1 = -0.1, W = 0.9; v2 = -0.09 - 0.01 = -0.1, W = 0.8
    (PyTorch: buf 1 then 1.9, W = 1 - 0.1 - 0.019 = 0.881)."""
    params = {"W1": np.array([1.0])}
    opt = GradientDescent(momentum=0.9)
    for lr in (0.1, 0.01):
        opt.step(params, {"W1": np.array([1.0])}, lr=lr)
    np.testing.assert_allclose(params["W1"], [0.8], rtol=1e-15)


def test_momentum_numbers_by_hand():
    # classical, lr 0.1, mu 0.9, g = 1, 1: v1 = -0.1, W = 0.9; v2 = -0.09 - 0.1 = -0.19, W = 0.71
    params = {"W1": np.array([1.0])}
    opt = GradientDescent(momentum=0.9)
    for _ in range(2):
        opt.step(params, {"W1": np.array([1.0])}, lr=0.1)
    np.testing.assert_allclose(params["W1"], [0.71])
    # Nesterov: step 1: v = -0.1, W = 1 + 0.9(-0.1) - 0.1 = 0.81
    params = {"W1": np.array([1.0])}
    GradientDescent(momentum=0.9, nesterov=True).step(params, {"W1": np.array([1.0])}, lr=0.1)
    np.testing.assert_allclose(params["W1"], [0.81])


def test_weight_decay_only_on_weights(xp):
    params = {
        "W1": arr(xp, [2.0]),
        "K2": arr(xp, [2.0]),
        "b1": arr(xp, [2.0]),
        "gamma3": arr(xp, [2.0]),
        "beta3": arr(xp, [2.0]),
    }
    zero = {k: arr(xp, [0.0]) for k in params}
    make_optimizer("sgd", weight_decay=0.5).step(params, zero, lr=0.1)
    # coupled L2: W := W - lr * wd * W = 2 - 0.1 * 0.5 * 2 = 1.9
    got = {k: float(host(v)[0]) for k, v in params.items()}
    assert got == pytest.approx({"W1": 1.9, "K2": 1.9, "b1": 2.0, "gamma3": 2.0, "beta3": 2.0})
    assert [n for n in params if decays(n)] == ["W1", "K2"]


def test_adamw_decay_only_on_weights(xp):
    params = {"W1": arr(xp, [2.0]), "b1": arr(xp, [2.0])}
    zero = {k: arr(xp, [0.0]) for k in params}
    make_optimizer("adam", weight_decay=0.5).step(params, zero, lr=0.1)
    # m = v = 0 so the Adam part is 0; decoupled decay: W := W - lr * wd * W = 1.9
    np.testing.assert_allclose(host(params["W1"]), [1.9])
    np.testing.assert_allclose(host(params["b1"]), [2.0])


# --- Adam --------------------------------------------------------------------------------------


def test_adam_first_two_steps_by_hand(xp):
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    params = {"W1": arr(xp, [1.0])}
    opt = Adam(beta1=b1, beta2=b2, eps=eps)
    # step 1, g = 0.5: m = 0.05, v = 0.00025; m_hat = 0.5, v_hat = 0.25 -> W = 1 - 0.1 * 0.5/0.5
    opt.step(params, {"W1": arr(xp, [0.5])}, lr=lr)
    w1 = 1.0 - lr * 0.5 / (math.sqrt(0.25) + eps)
    np.testing.assert_allclose(host(params["W1"]), [w1], rtol=1e-14)
    assert w1 == pytest.approx(0.9, abs=1e-8)
    # step 2, g = -0.25: m = 0.9*0.05 - 0.025 = 0.02, v = 0.999*0.00025 + 0.001*0.0625
    opt.step(params, {"W1": arr(xp, [-0.25])}, lr=lr)
    m, v = 0.02, 0.999 * 0.00025 + 0.001 * 0.0625
    m_hat, v_hat = m / (1 - b1**2), v / (1 - b2**2)
    w2 = w1 - lr * m_hat / (math.sqrt(v_hat) + eps)
    np.testing.assert_allclose(host(params["W1"]), [w2], rtol=1e-14)
    np.testing.assert_allclose(host(opt.state["m"]["W1"]), [m], rtol=1e-14)
    np.testing.assert_allclose(host(opt.state["v"]["W1"]), [v], rtol=1e-14)
    assert opt.t == 2


def adam_alone(params, grads, state, t, lr, b1=0.9, b2=0.999, eps=1e-8, wd=1e-2):
    """Adam on each parameter by itself, as the chapter writes it (the reference for the flat buffers)."""
    for name, g in grads.items():
        m = b1 * state.setdefault(("m", name), 0 * g) + (1.0 - b1) * g
        v = b2 * state.setdefault(("v", name), 0 * g) + (1.0 - b2) * (g * g)
        state["m", name], state["v", name] = m, v
        update = (m / (1.0 - b1**t)) / (np.sqrt(v / (1.0 - b2**t)) + eps)
        if name.startswith("W"):
            update = update + wd * params[name]
        params[name] -= lr * update


def test_adam_s_flat_buffers_give_each_parameter_the_numbers_it_gets_alone():
    """Bit for bit, through a parameter frozen for a while (the buffers change layout) and a
    checkpoint of the state taken and loaded mid-way."""
    params, grads = model(np)
    reference, state = {k: v.copy() for k, v in params.items()}, {}
    opt = Adam(weight_decay=1e-2)
    rng = np.random.default_rng(1)
    for t in range(1, 9):
        step_grads = {k: (g * rng.standard_normal()).astype(np.float32) for k, g in grads.items()
                      if not (k == "b1" and 3 <= t <= 5)}  # b1 frozen for three steps
        opt.step(params, step_grads, lr=0.01)
        adam_alone(reference, step_grads, state, t, lr=0.01)
        for k in params:
            assert np.array_equal(params[k], reference[k]), (t, k)
            assert params[k].dtype == np.float32
        if t == 6:
            saved = opt.state_dict()
            opt = Adam(weight_decay=1e-2)
            opt.load_state_dict(saved, params)
    for (slot, name), value in state.items():  # read once, at the end: reading it must not be what keeps it right
        assert np.array_equal(opt.state[slot][name], value), (slot, name)


def test_adam_refuses_a_parameter_that_changed_shape_or_mixed_dtypes_before_counting_the_step():
    opt = Adam()
    opt.step({"W1": np.ones((4, 3), np.float32)}, {"W1": np.ones((4, 3), np.float32)}, lr=0.1)
    with pytest.raises(ValueError, match=r"m.W1 has shape \(4, 3\) but its gradient \(2, 3\)"):
        opt.step({"W1": np.ones((2, 3), np.float32)}, {"W1": np.ones((2, 3), np.float32)}, lr=0.1)
    mixed = {"W1": np.ones((4, 3), np.float32), "b1": np.ones((4, 1), np.float64)}
    with pytest.raises(ValueError, match="share one dtype"):
        opt.step(mixed, {k: np.ones_like(v) for k, v in mixed.items()}, lr=0.1)
    assert opt.t == 1


# --- dtype, identity ---------------------------------------------------------------------------

ALL = [
    ("sgd", {}),
    ("momentum", {}),
    ("nesterov", {"weight_decay": 1e-2}),
    ("adam", {"weight_decay": 1e-2}),
]


def model(xp, dtype="float32"):
    rng = np.random.default_rng(0)
    shapes = {"W1": (4, 3), "b1": (4, 1), "gamma2": (4, 1), "beta2": (4, 1)}
    params = {k: arr(xp, rng.standard_normal(s), dtype) for k, s in shapes.items()}
    grads = {k: arr(xp, rng.standard_normal(s), dtype) for k, s in shapes.items()}
    return params, grads


@pytest.mark.parametrize("name,kwargs", ALL)
def test_float32_stays_float32_and_updates_in_place(xp, name, kwargs):
    params, grads = model(xp)
    ids = {k: id(v) for k, v in params.items()}
    before = {k: host(v).copy() for k, v in params.items()}
    opt = make_optimizer(name, **kwargs)
    for _ in range(3):
        opt.step(params, grads, lr=np.float64(0.01))  # even a NumPy float64 lr must not promote
    for k, p in params.items():
        assert p.dtype == xp.float32, k
        assert id(p) == ids[k], k
        assert not np.array_equal(host(p), before[k]), k
    for table in opt.state.values():
        for a in table.values():
            assert a.dtype == xp.float32
    for key, a in opt.state_dict().items():
        assert isinstance(a, float) or (isinstance(a, np.ndarray) and a.dtype == np.float32), key


def test_reference_held_by_a_layer_sees_the_update():
    W = np.ones((2, 2), dtype=np.float32)
    layer_view = W  # what a layer keeps
    make_optimizer("momentum").step({"W1": W}, {"W1": np.ones((2, 2), np.float32)}, lr=0.5)
    np.testing.assert_allclose(layer_view, 0.5)


def test_frozen_parameter_without_gradient_is_left_alone():
    params = {"W1": np.ones(2), "W2": np.ones(2)}
    make_optimizer("adam").step(params, {"W1": np.ones(2)}, lr=0.1)
    np.testing.assert_array_equal(params["W2"], 1.0)


def test_gradient_must_match_its_parameter():
    opt = make_optimizer("sgd")
    with pytest.raises(ValueError, match="W9.*no parameter"):
        opt.step({"W1": np.ones(2)}, {"W9": np.ones(2)}, lr=0.1)
    with pytest.raises(ValueError, match="must match"):
        opt.step({"W1": np.ones(2, np.float32)}, {"W1": np.ones(2)}, lr=0.1)
    with pytest.raises(ValueError, match=r"lr=-0.1.*lr >= 0"):
        opt.step({"W1": np.ones(2)}, {"W1": np.ones(2)}, lr=-0.1)


# --- checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,kwargs", ALL)
def test_state_dict_round_trip_gives_identical_steps(xp, name, kwargs):
    params, grads = model(xp)
    opt = make_optimizer(name, **kwargs)
    for _ in range(2):
        opt.step(params, grads, lr=0.01)
    state = opt.state_dict()
    snapshot = {k: arr(xp, host(v).copy(), "float32") for k, v in params.items()}  # copies: asarray would alias params

    opt.step(params, grads, lr=0.01)
    opt.step(params, grads, lr=0.02)

    restored = make_optimizer(name, **kwargs)
    restored.load_state_dict(state, like=snapshot)
    restored.step(snapshot, grads, lr=0.01)
    restored.step(snapshot, grads, lr=0.02)
    for k in params:
        np.testing.assert_array_equal(host(snapshot[k]), host(params[k]))
    assert set(restored.state_dict()) == set(opt.state_dict())
    if name == "adam":
        assert state["t"] == 2.0 and {"m.W1", "v.W1", "v.b1"} <= set(state)
    elif name != "sgd":
        assert set(state) == {"v.W1", "v.b1", "v.gamma2", "v.beta2"}
    else:
        assert state == {}


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_state_dict_is_a_host_copy(name):
    """Adam updates its moments in place (one flat buffer), so a state_dict that handed out views
    would change under the caller with every later step."""
    params, grads = model(np)
    opt = make_optimizer(name)
    opt.step(params, grads, lr=0.1)
    state = opt.state_dict()
    saved = {key: np.array(value, copy=True) for key, value in state.items()}
    opt.step(params, grads, lr=0.1)
    for key, value in saved.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_load_state_dict_rejects_bad_state():
    params, _ = model(np)
    opt = make_optimizer("adam")
    with pytest.raises(ValueError, match="lacks t"):
        opt.load_state_dict({}, like=params)
    with pytest.raises(ValueError, match="unexpected key 'q.W1'.*m.<param>"):
        opt.load_state_dict({"t": 1.0, "q.W1": np.zeros((4, 3))}, like=params)
    with pytest.raises(ValueError, match="names no parameter"):
        opt.load_state_dict({"t": 1.0, "m.W7": np.zeros((4, 3))}, like=params)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict({"t": 1.0, "m.W1": np.zeros((3, 4))}, like=params)
    with pytest.raises(ValueError, match="whole number"):  # a step count is never truncated
        opt.load_state_dict({"t": 1.5}, like=params)


# --- clipping ----------------------------------------------------------------------------------


def test_clip_by_global_norm(xp):
    originals = {"W1": arr(xp, [[3.0, 0.0]], "float32"), "b1": arr(xp, [4.0], "float32")}
    grads = dict(originals)
    assert global_norm(grads) == pytest.approx(5.0)
    norm = clip_by_global_norm(grads, max_norm=1.0)
    assert isinstance(norm, float) and norm == pytest.approx(5.0)
    assert global_norm(grads) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(host(grads["W1"]), [[0.6, 0.0]], rtol=1e-6)  # direction kept
    np.testing.assert_allclose(host(grads["b1"]), [0.8], rtol=1e-6)
    assert all(g.dtype == xp.float32 for g in grads.values())
    # the arrays handed in (a network's own dJ/dW, which the diagnostics read) are left unclipped
    assert global_norm(originals) == pytest.approx(5.0)
    # below the threshold nothing changes
    assert clip_by_global_norm(grads, max_norm=10.0) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(host(grads["b1"]), [0.8], rtol=1e-6)


@pytest.mark.parametrize("max_norm", [5.0, 5.5, 9.0])
def test_clip_by_global_norm_at_or_just_below_the_norm_changes_nothing(max_norm):
    grads = {"W1": np.array([[3.0, 0.0]]), "b1": np.array([4.0])}  # ||g|| = 5
    originals = dict(grads)
    assert clip_by_global_norm(grads, max_norm) == 5.0
    assert all(grads[name] is originals[name] for name in grads)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_clip_by_global_norm_leaves_a_non_finite_gradient_to_the_divergence_check(bad):
    """Scaling by max_norm / inf would turn the gradients into zeros (and NaN) and hide the divergence."""
    grads = {"W1": np.array([bad, 1.0]), "b1": np.array([2.0])}
    originals = dict(grads)
    assert not math.isfinite(clip_by_global_norm(grads, max_norm=1.0))
    assert all(grads[name] is originals[name] for name in grads)


def test_global_norm_of_a_float32_explosion_is_finite():
    grads = {"W1": np.full((2, 2), 1e30, np.float32)}
    assert global_norm(grads) == pytest.approx(2e30, rel=1e-6)
    assert global_norm({}) == 0.0


def test_clip_by_value(xp):
    grads = {"W1": arr(xp, [-3.0, 0.5, 2.0], "float32")}
    clip_by_value(grads, limit=1.0)
    np.testing.assert_array_equal(host(grads["W1"]), [-1.0, 0.5, 1.0])
    assert grads["W1"].dtype == xp.float32


def test_clipping_rejects_bad_limits():
    with pytest.raises(ValueError, match=r"max_norm=0.*max_norm > 0"):
        clip_by_global_norm({"W1": np.ones(2)}, 0)
    with pytest.raises(ValueError, match=r"limit=-1.*limit > 0"):
        clip_by_value({"W1": np.ones(2)}, -1)


# --- factory and validation --------------------------------------------------------------------


def test_make_optimizer_names():
    assert make_optimizer("sgd").momentum == 0.0
    assert make_optimizer("momentum").momentum == 0.9
    nag = make_optimizer("nesterov", momentum=0.5)
    assert nag.nesterov and nag.momentum == 0.5
    assert isinstance(make_optimizer("adam"), Adam)
    valid = "sgd, momentum, nesterov, adam"
    with pytest.raises(ValueError, match=f"unknown optimizer 'rmsprop'; expected one of {valid}"):
        make_optimizer("rmsprop")
    with pytest.raises(TypeError, match="beta1.*accepts momentum, nesterov, weight_decay"):
        make_optimizer("sgd", beta1=0.9)


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("momentum", {"momentum": 1.0}, r"momentum=1.0 is out of range; expected 0 <= mom"),
        ("sgd", {"momentum": -0.1}, r"momentum=-0.1"),
        ("nesterov", {"momentum": 0.0}, r"nesterov=True needs 0 < momentum < 1"),
        ("sgd", {"weight_decay": -1e-4}, r"weight_decay=-0.0001.*weight_decay >= 0"),
        ("adam", {"beta1": 1.0}, r"beta1=1.0.*0 <= beta1 < 1"),
        ("adam", {"beta2": -0.5}, r"beta2=-0.5.*0 <= beta2 < 1"),
        ("adam", {"eps": 0.0}, r"eps=0.0.*eps > 0"),
        ("adam", {"weight_decay": float("nan")}, r"weight_decay=nan"),
        ("sgd", {"weight_decay": float("inf")}, r"weight_decay=inf"),
    ],
)
def test_bad_hyperparameters_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(name, **kwargs)


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -0.1])
def test_a_step_refuses_a_learning_rate_that_is_not_finite_and_non_negative(lr):
    with pytest.raises(ValueError, match=f"lr={lr}"):
        make_optimizer("sgd").step({"W1": np.ones(2)}, {"W1": np.ones(2)}, lr=lr)


# --- schedules ---------------------------------------------------------------------------------


def test_constant_and_step_decay():
    s = make_schedule("constant", 0.1, 100)
    assert [s(t) for t in (0, 50, 99, 500)] == [0.1] * 4
    s = make_schedule("step_decay", 0.1, 100, step_size=10, gamma=0.5)
    assert [s(t) for t in (0, 9, 10, 19, 20, 35)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125]
    )
    assert isinstance(s(np.int64(3)), float)


def test_cosine_endpoints_and_midpoint():
    s = make_schedule("cosine", 0.1, 100, min_lr=0.01)
    assert s(0) == pytest.approx(0.1)
    assert s(50) == pytest.approx(0.055)  # halfway: mean of base and min
    assert s(100) == pytest.approx(0.01)
    assert s(1000) == pytest.approx(0.01)  # clamped after the horizon
    assert all(s(t) >= s(t + 1) for t in range(100))


def test_warmup_ramp_composes_with_every_schedule():
    s = make_schedule("constant", 0.1, 100, warmup_steps=4)
    assert [s(t) for t in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    s = make_schedule("step_decay", 0.1, 100, step_size=2, gamma=0.5, warmup_steps=4)
    assert [s(t) for t in range(5)] == pytest.approx([0.025, 0.05, 0.0375, 0.05, 0.025])
    s = make_schedule("cosine", 0.1, 100, warmup_steps=10)
    plain = make_schedule("cosine", 0.1, 100)
    assert s(0) == pytest.approx(0.1 * 0.5 / 10 * (1 + math.cos(0)))
    assert s(4) == pytest.approx(0.5 * plain(4))
    assert [s(t) for t in range(10, 101, 30)] == [plain(t) for t in range(10, 101, 30)]


def test_schedule_is_picklable_and_readable():
    s = make_schedule("cosine", 0.1, 10, warmup_steps=2)
    assert pickle.loads(pickle.dumps(s))(5) == s(5)
    assert "cosine" in repr(s)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (("linear", 0.1, 10), {}, r"unknown schedule 'linear'.*constant, step_decay, cosine"),
        (("constant", -0.1, 10), {}, r"base_lr=-0.1"),
        (("constant", float("inf"), 10), {}, r"base_lr=inf"),
        (("constant", 0.1, 0), {}, r"total_steps=0.*total_steps >= 1"),
        (("constant", 0.1, 10), {"warmup_steps": 11}, r"warmup_steps=11.*<= total_steps=10"),
        (("step_decay", 0.1, 10), {}, r"needs step_size"),
        (("step_decay", 0.1, 10), {"step_size": 0}, r"step_size=0"),
        (("step_decay", 0.1, 10), {"step_size": 2, "gamma": 1.5}, r"gamma=1.5.*0 < gamma <= 1"),
        (("step_decay", 0.1, 10), {"step_size": 2, "gamma": 0.0}, r"gamma=0.0.*0 < gamma <= 1"),
        (("cosine", 0.1, 10), {"min_lr": 0.2}, r"min_lr=0.2.*<= base_lr=0.1"),
    ],
)
def test_bad_schedule_values_raise(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(*args, **kwargs)


def test_schedule_rejects_bad_steps():
    with pytest.raises(TypeError, match="total_steps must be an integer"):
        make_schedule("constant", 0.1, True)  # a bool is not a count
    s = make_schedule("constant", 0.1, 10)
    with pytest.raises(ValueError, match="step=-1"):
        s(-1)
    with pytest.raises(TypeError, match="integer"):
        s(1.5)
