"""Per-layer diagnostics (`nnresearch.probes`) against their definitions, recomputed in float64 NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from nnresearch import probes
from nnresearch.backend import to_numpy
from nnresearch.nn.architectures import Builder, Init, mlp
from nnresearch.nn.optim import make_optimizer
from nnresearch.probes import gradient_noise, layer_diagnostics

SIZES = [5, 7, 6, 3]
M = 9


def network_and_batch(xp, activation: str, init: Init = Init("xavier_normal"), seed: int = 0):
    network = mlp(Builder(xp, xp.float32, np.random.default_rng(seed), init, activation), SIZES, "softmax_ce")
    rng = np.random.default_rng(seed + 1)
    X = xp.asarray(rng.normal(size=(SIZES[0], M)), dtype=xp.float32)
    Y = xp.asarray(np.eye(SIZES[-1])[:, rng.integers(0, SIZES[-1], M)], dtype=xp.float32)
    return network, X, Y


def host(x) -> np.ndarray:
    return to_numpy(x).astype(np.float64)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_every_metric_matches_its_definition(xp, activation):
    network, X, Y = network_and_batch(xp, activation)
    network.loss_and_gradients(X, Y)
    before = {name: xp.asarray(w, copy=True) for name, w in network.params().items() if name.startswith("W")}
    make_optimizer("sgd").step(network.params(), network.grads(), 0.5)
    got = layer_diagnostics(network, before)

    for index, unit in enumerate(network.units, start=1):
        tag = f"layer{index}"
        A, W, Z = host(unit.A), host(unit.params["W"]), host(unit.Z_act)
        delta, dW, W0 = host(unit.delta), host(unit.grads["W"]), host(before[f"W{index}"])
        expected = {
            "act_mean": A.mean(), "act_std": A.std(),
            "delta_norm": np.linalg.norm(delta) / np.sqrt(M), "grad_norm": np.linalg.norm(dW),
            "weight_norm": np.linalg.norm(W), "unit_spread": np.linalg.norm(W - W.mean(axis=0)) / np.linalg.norm(W),
            "update_ratio": np.linalg.norm(W - W0) / np.linalg.norm(W0),
        }
        name = unit.activation.name
        if name == "relu":
            expected["dead"] = np.mean(np.all(Z <= 0, axis=1))
        elif name == "sigmoid":
            expected["saturated"] = np.mean((A <= 0.01) | (A >= 0.99))
        elif name == "tanh":
            expected["saturated"] = np.mean(np.abs(A) >= 0.99)
        assert {key for key in got if key.endswith("/" + tag)} == {f"{key}/{tag}" for key in expected}
        for key, value in expected.items():
            assert got[f"{key}/{tag}"] == pytest.approx(value, rel=1e-5, abs=1e-7), (key, tag)
            assert isinstance(got[f"{key}/{tag}"], float)


def test_identical_units_have_no_spread_and_a_negative_bias_kills_relu_units(xp):
    # constant weights: every unit of a layer gets the same incoming weights (the symmetry problem)
    network, X, Y = network_and_batch(xp, "relu", Init("constant", value=0.3, bias="constant", bias_value=-100.0))
    network.loss_and_gradients(X, Y)
    got = layer_diagnostics(network)
    assert got["unit_spread/layer1"] < 1e-6 and got["unit_spread/layer2"] < 1e-6  # float32 rounding of the row mean
    assert got["dead/layer1"] == 1.0  # z = 0.3 * sum(x) - 100 < 0 for every example and unit
    assert "update_ratio/layer1" not in got  # needs the weights before an update


@pytest.mark.parametrize("spread", [1e-4, 0.3, 0.69, 0.71, 0.99])
def test_unit_spread_matches_its_definition_on_both_sides_of_the_identity_s_threshold(xp, spread):
    """Units spread by `spread` (the metric's value, up to sampling) around one shared weight vector:
    below the threshold the difference is taken explicitly, above it the one-pass identity is used."""
    rng = np.random.default_rng(3)
    shared, noise = rng.normal(size=(1, 300)), rng.normal(size=(200, 300))
    noise -= noise.mean(axis=0)
    W = shared / np.linalg.norm(shared) * np.sqrt(1 - spread**2) + noise / np.linalg.norm(noise) * spread * np.sqrt(200)
    W = W.astype(np.float32)
    W64 = W.astype(np.float64)
    expected = np.linalg.norm(W64 - W64.mean(axis=0)) / np.linalg.norm(W64)
    assert expected == pytest.approx(spread, rel=0.01)
    got = probes._unit_spread(xp, xp.asarray(W), float(np.linalg.norm(W64)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_zero_weights_give_zero_spread_instead_of_nan(xp):
    network, X, Y = network_and_batch(xp, "tanh", Init("zeros"))
    network.loss_and_gradients(X, Y)
    got = layer_diagnostics(network)
    assert got["weight_norm/layer1"] == 0.0 and got["unit_spread/layer1"] == 0.0


def test_norms_past_the_float32_range_of_their_squares_stay_finite(xp):
    """||W|| = 2e20 is a float32 number but its square is not: the norms are summed again in
    float64 instead of reporting inf for a layer that is large but finite."""
    network, X, Y = network_and_batch(xp, "tanh")
    network.loss_and_gradients(X, Y)
    W = network.units[0].params["W"]
    network.units[0].params["W"] = xp.full(W.shape, 2e20 / np.sqrt(W.size), dtype=xp.float32)
    got = layer_diagnostics(network)
    assert got["weight_norm/layer1"] == pytest.approx(2e20, rel=1e-5)
    assert got["unit_spread/layer1"] == pytest.approx(0.0, abs=1e-3)


def test_gradient_noise_is_zero_for_full_batches_and_grows_as_batches_shrink():
    network, X, Y = network_and_batch(np, "tanh")
    assert gradient_noise(network, X, Y, batch_size=None, rng=np.random.default_rng(0)) == 0.0
    assert gradient_noise(network, X, Y, batch_size=M, rng=np.random.default_rng(0)) == 0.0
    small = gradient_noise(network, X, Y, batch_size=2, rng=np.random.default_rng(0), n_batches=64)
    large = gradient_noise(network, X, Y, batch_size=6, rng=np.random.default_rng(0), n_batches=64)
    assert small > large > 0.0


def test_gradient_noise_leaves_buffers_and_grads_as_it_found_them(xp):
    """A measurement must not change the run: its train-mode passes would move BatchNorm's running
    statistics and replace the grads of the last step, so both are put back bit for bit."""
    rng = np.random.default_rng(0)
    network = mlp(Builder(xp, xp.float32, rng, Init("he_normal"), "relu", batchnorm=True), SIZES, "softmax_ce")
    _, X, Y = network_and_batch(xp, "relu")
    network.loss_and_gradients(X, Y)
    buffers = {name: host(b) for name, b in network.buffers().items()}
    grads = {name: host(g) for name, g in network.grads().items()}
    assert buffers, "the network under test must have BatchNorm buffers"

    assert gradient_noise(network, X, Y, batch_size=3, rng=np.random.default_rng(0)) > 0.0

    for name, value in network.buffers().items():
        np.testing.assert_array_equal(host(value), buffers[name], err_msg=name)
        assert value.dtype == xp.float32
    assert network.grads().keys() == grads.keys()
    for name, value in network.grads().items():
        np.testing.assert_array_equal(host(value), grads[name], err_msg=name)


def per_example_gradients(network, X, Y) -> list[dict[str, np.ndarray]]:
    """dJ/dparam on each example alone (float64 copies)."""
    out = []
    for i in range(X.shape[-1]):
        network.loss_and_gradients(X[:, i:i + 1], Y[:, i:i + 1])
        out.append({name: host(g) for name, g in network.grads().items()})
    return out


def squared_norm(grads: dict[str, np.ndarray]) -> float:
    return sum(float(np.sum(g * g)) for g in grads.values())


def test_gradient_noise_of_single_examples_out_of_two_is_its_closed_form():
    """m = 2, batches of 1: g_B is g_1 or g_2 and g = (g_1 + g_2) / 2, so every batch gives
    ||g_B - g||^2 = ||g_1 - g_2||^2 / 4, and the mean over any number of batches is ||g_1 - g_2||^2 / ||g_1 + g_2||^2."""
    network, X, Y = network_and_batch(np, "tanh")
    X, Y = X[:, :2], Y[:, :2]
    g1, g2 = per_example_gradients(network, X, Y)
    expected = squared_norm({k: g1[k] - g2[k] for k in g1}) / squared_norm({k: g1[k] + g2[k] for k in g1})
    got = gradient_noise(network, X, Y, batch_size=1, rng=np.random.default_rng(0), n_batches=5)
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("seed", range(8))
def test_a_gradient_noise_batch_is_drawn_without_replacement(seed):
    """m = 3, batches of 2 distinct examples: a batch leaves out one example k, and then
    g_B - g = (g - g_k) / 2, so one batch's noise is one of ||g_k - g||^2 / (4 ||g||^2), k = 1, 2, 3.
    (A batch drawing one example twice would give 4 times that.)"""
    network, X, Y = network_and_batch(np, "tanh")
    X, Y = X[:, :3], Y[:, :3]
    per_example = per_example_gradients(network, X, Y)
    g = {k: sum(e[k] for e in per_example) / 3 for k in per_example[0]}
    candidates = [squared_norm({k: e[k] - g[k] for k in g}) / (4 * squared_norm(g)) for e in per_example]
    got = gradient_noise(network, X, Y, batch_size=2, rng=np.random.default_rng(seed), n_batches=1)
    assert any(got == pytest.approx(c, rel=1e-4) for c in candidates), (got, candidates)


def test_all_zero_relu_units_are_dead_and_both_tails_of_tanh_saturate(xp):
    """dead counts z <= 0, the kink included: zero weights and biases (the symmetry problem, §6.1) give
    z = 0 for every unit and example, where relu' = 0, so every unit is dead. saturated counts |a| >= 0.99
    on both sides: inputs of sum +-50 through all-ones weights put tanh at +1 for some examples and -1 for the others."""
    network, X, Y = network_and_batch(xp, "relu", Init("zeros"))
    network.loss_and_gradients(X, Y)
    got = layer_diagnostics(network)
    assert got["dead/layer1"] == 1.0 and got["dead/layer2"] == 1.0

    network, _, Y = network_and_batch(xp, "tanh", Init("constant", value=1.0))
    signs = np.where(np.arange(M) % 3 == 0, 1.0, -1.0)  # 3 examples at +50, 6 at -50
    X = xp.asarray(np.full((SIZES[0], M), 10.0) * signs, dtype=xp.float32)
    network.loss_and_gradients(X, Y)
    got = layer_diagnostics(network)
    assert got["saturated/layer1"] == 1.0
    assert got["act_mean/layer1"] == pytest.approx(-1.0 / 3.0, rel=1e-6)


def test_sigmoid_saturation_counts_the_upper_tail():
    """sigmoid(z) ~ 1 at large z is saturated as much as sigmoid(-z) ~ 0."""
    network, _, Y = network_and_batch(np, "sigmoid", Init("constant", value=1.0))
    network.loss_and_gradients(np.full((SIZES[0], M), 25.0, dtype=np.float32), Y)
    assert layer_diagnostics(network)["saturated/layer1"] == 1.0


def test_update_ratio_from_zero_weights_is_nan():
    """A relative update from W = 0 is undefined: NaN, not 0."""
    network, X, Y = network_and_batch(np, "relu", Init("zeros"))
    network.loss_and_gradients(X, Y)
    before = {name: np.zeros_like(w) for name, w in network.params().items() if name.startswith("W")}
    assert np.isnan(layer_diagnostics(network, before)["update_ratio/layer1"])
