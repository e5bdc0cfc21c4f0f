"""The training loop (`nnresearch.train`): batches, what it logs at which step, divergence, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from nnresearch.backend import make_rng, to_numpy
from nnresearch.nn.architectures import Builder, mlp
from nnresearch.nn.network import NonFiniteError
from nnresearch.nn.optim import make_optimizer
from nnresearch.sinks import MemorySink
from nnresearch.train import LoopOptions, Splits, batches, train

SIZES = [2, 8, 8, 3]
M_TRAIN, M_VAL = 50, 20


def splits(xp, seed: int = 0) -> Splits:
    rng = np.random.default_rng(seed)

    def part(m: int):
        X = rng.normal(size=(SIZES[0], m))
        Y = np.eye(SIZES[-1])[:, rng.integers(0, SIZES[-1], m)]
        return xp.asarray(X, dtype=xp.float32), xp.asarray(Y, dtype=xp.float32)

    return Splits(*part(M_TRAIN), *part(M_VAL))


def fit(xp, options: LoopOptions, lr: float = 0.1, seed: int = 0):
    rng = make_rng(seed)
    network = mlp(Builder(xp, xp.float32, rng, activation="tanh"), SIZES, "softmax_ce")
    sink = MemorySink()
    metrics = train(network, splits(xp), make_optimizer("sgd"), lambda step: lr, options, rng, sink)
    return network, sink, metrics


@pytest.mark.parametrize(("batch_size", "sizes"), [(16, [16, 16, 16, 2]), (50, [50]), (None, [50]), (80, [50])])
def test_an_epoch_uses_every_example_once(xp, batch_size, sizes):
    epoch = [to_numpy(index) for index in batches(M_TRAIN, batch_size, np.random.default_rng(0), xp)]
    assert [len(index) for index in epoch] == sizes
    assert sorted(np.concatenate(epoch).tolist()) == list(range(M_TRAIN))


def test_logs_the_initial_state_then_every_epoch(xp):
    _, sink, metrics = fit(xp, LoopOptions(epochs=3, batch_size=16, progress=False))
    h = sink.history
    assert [step for step, _ in h["val/loss"]] == [0, 1, 2, 3]
    assert [step for step, _ in h["train/loss"]] == [0, 1, 2, 3]
    assert [step for step, _ in h["lr"]] == [1, 2, 3] and h["lr"][-1][1] == pytest.approx(0.1)
    assert [step for step, _ in h["grad_norm/layer2"]] == [0, 1, 2, 3]
    assert [step for step, _ in h["update_ratio/layer3"]] == [1, 2, 3]  # needs an update before it
    assert "epoch" not in h  # the step is the epoch
    times = [value for _, value in h["time_s"]]
    assert times == sorted(times) and times[0] > 0
    assert metrics["val/loss"] == h["val/loss"][-1][1]
    assert h["val/loss"][-1][1] < h["val/loss"][0][1]  # it learns


def test_eval_every_and_probe_every_thin_the_log_but_keep_the_last_epoch():
    _, sink, _ = fit(np, LoopOptions(epochs=5, batch_size=16, eval_every=2, probe_every=3, progress=False))
    assert [step for step, _ in sink.history["val/loss"]] == [0, 2, 4, 5]
    assert [step for step, _ in sink.history["grad_norm/layer1"]] == [0, 3, 5]


def test_full_batch_is_one_step_per_epoch_and_the_same_seed_gives_the_same_numbers(xp):
    a, _, metrics_a = fit(xp, LoopOptions(epochs=4, batch_size=None, progress=False))
    b, _, metrics_b = fit(xp, LoopOptions(epochs=4, batch_size=None, progress=False))
    assert {k: v for k, v in metrics_a.items() if k != "time_s"} == {k: v for k, v in metrics_b.items() if k != "time_s"}
    for name, value in a.params().items():
        assert np.array_equal(to_numpy(value), to_numpy(b.params()[name]))
        assert value.dtype == xp.float32


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # what diverging means
def test_a_diverging_run_raises_at_its_step():
    with pytest.raises(NonFiniteError) as caught:
        fit(np, LoopOptions(epochs=50, batch_size=16, progress=False), lr=1e38)
    steps_per_epoch = 4
    assert 0 < caught.value.step <= 50 * steps_per_epoch
