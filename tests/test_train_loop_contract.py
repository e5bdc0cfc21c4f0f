"""What `train.train` and `probes.layer_diagnostics` promise at their edges: the run's generator draws only
the epoch orders, an epoch's loss is weighted by batch size, a divergence is named at its step, the logged
diagnostics are the last update's, sigmoid saturation counts both tails, an update ratio from W = 0 is NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnresearch.backend import make_rng, to_numpy
from nnresearch.nn.architectures import Builder, Init, mlp
from nnresearch.nn.network import NonFiniteError
from nnresearch.nn.optim import make_optimizer
from nnresearch.probes import layer_diagnostics
from nnresearch.sinks import MemorySink
from nnresearch.train import LoopOptions, Splits, batches, train

SIZES = [2, 8, 8, 3]
M_TRAIN, M_VAL = 50, 20  # batches of 16 -> 16, 16, 16, 2


def _splits() -> Splits:
    rng = np.random.default_rng(0)

    def part(m):
        X = rng.normal(size=(SIZES[0], m))
        Y = np.eye(SIZES[-1])[:, rng.integers(0, SIZES[-1], m)]
        return X.astype(np.float32), Y.astype(np.float32)

    return Splits(*part(M_TRAIN), *part(M_VAL))


def _net(activation="tanh", init=Init("xavier_normal")):
    return mlp(Builder(np, np.float32, make_rng(0), init, activation), SIZES, "softmax_ce")


def test_train_draws_only_the_epoch_orders_from_the_run_generator():
    """Step 0's probe batch must come from its own generator, not the run's."""
    rng, expected = make_rng(5), make_rng(5)
    batches(M_TRAIN, 16, expected, np)
    train(_net(), _splits(), make_optimizer("sgd"), lambda s: 0.1, LoopOptions(epochs=1, batch_size=16, progress=False),
          rng, MemorySink())
    assert rng.bit_generator.state == expected.bit_generator.state


def test_epoch_train_loss_is_the_size_weighted_mean_over_unequal_batches():
    """Lr 0 keeps the net at init, so epoch 1's train/loss (batches 16,16,16,2) is the whole split's loss."""
    sink = MemorySink()
    train(_net(), _splits(), make_optimizer("sgd"), lambda s: 0.0, LoopOptions(epochs=1, batch_size=16, progress=False),
          make_rng(0), sink)
    loss = dict(sink.history["train/loss"])
    assert loss[1] == pytest.approx(loss[0], rel=1e-5)


def test_a_non_finite_batch_loss_raises_at_that_step_not_at_the_epoch_end():
    """A NaN weight after the first update makes the second batch's loss NaN: step 1, not 4."""
    class PoisoningSGD:
        def step(self, params, grads, lr):
            params["W1"][...] = np.nan

    with pytest.raises(NonFiniteError) as caught:
        train(_net(), _splits(), PoisoningSGD(), lambda s: 0.1, LoopOptions(epochs=1, batch_size=16, progress=False),
              make_rng(0), MemorySink())
    assert caught.value.step == 1


def test_epoch_diagnostics_describe_the_last_update_of_the_epoch():
    """Weight_norm logged at epoch 1 is the norm of the weights the epoch ends with."""
    network, sink = _net(), MemorySink()
    train(network, _splits(), make_optimizer("sgd"), lambda s: 0.5, LoopOptions(epochs=1, batch_size=16, progress=False),
          make_rng(0), sink)
    for layer in (1, 2, 3):
        final = np.linalg.norm(to_numpy(network.params()[f"W{layer}"]).astype(np.float64))
        assert sink.history[f"weight_norm/layer{layer}"][-1] == (1, pytest.approx(final, rel=1e-5))


def test_sigmoid_saturation_counts_the_upper_tail():
    """Sigmoid(50) ~ 1 is saturated as much as sigmoid(-50) ~ 0."""
    network = _net("sigmoid", Init("constant", value=1.0))
    X = np.full((SIZES[0], 9), 25.0, dtype=np.float32)
    Y = np.eye(SIZES[-1], dtype=np.float32)[:, np.arange(9) % SIZES[-1]]
    network.loss_and_gradients(X, Y)
    assert layer_diagnostics(network)["saturated/layer1"] == 1.0


def test_update_ratio_from_zero_weights_is_nan():
    """A relative update from W = 0 is undefined: NaN, not 0."""
    network = _net("relu", Init("zeros"))
    X = np.ones((SIZES[0], 4), dtype=np.float32)
    Y = np.eye(SIZES[-1], dtype=np.float32)[:, [0, 1, 2, 0]]
    network.loss_and_gradients(X, Y)
    before = {name: np.zeros_like(w) for name, w in network.params().items() if name.startswith("W")}
    got = layer_diagnostics(network, before)
    assert math.isnan(got["update_ratio/layer1"])
