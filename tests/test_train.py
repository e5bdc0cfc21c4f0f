"""The training loop (`nnresearch.train`): batches, what it logs at which step, divergence, determinism."""

from __future__ import annotations

import os

import numpy as np
import pytest

from nnresearch.backend import make_rng, to_numpy
from nnresearch.nn.architectures import Builder, mlp
from nnresearch.nn.network import NonFiniteError
from nnresearch.nn.optim import make_optimizer
from nnresearch.sinks import MemorySink
from nnresearch.train import LoopOptions, Splits, batches, evaluate, train

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


def test_train_metrics_are_the_whole_split_at_step_0_then_each_batch_before_its_update(xp):
    """Step 0: the train split at init (eval mode). Epoch e: the size-weighted mean over its batches, each
    taken before its update. Full batch and no BatchNorm make both exact: epoch 1's train/loss is the loss
    at init, epoch 2's the loss after the one update: a twin net trained one epoch, evaluated on the train split."""
    _, sink, _ = fit(xp, LoopOptions(epochs=2, batch_size=None, progress=False))
    twin, twin_sink, _ = fit(xp, LoopOptions(epochs=1, batch_size=None, progress=False))
    loss = {step: value for step, value in sink.history["train/loss"]}
    assert loss[1] == pytest.approx(loss[0], rel=1e-6)  # before the first update: the state at init
    data = splits(xp)
    after_one = float(evaluate(twin, data.X_train, data.Y_train)["loss"])
    assert loss[2] == pytest.approx(after_one, rel=1e-5) and loss[2] != pytest.approx(loss[0], rel=1e-3)
    assert twin_sink.history["train/loss"][0][1] == pytest.approx(loss[0], rel=1e-6)  # the same seed, the same init


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


@pytest.mark.parametrize("batchnorm", [True, False])
def test_the_gradient_noise_probe_does_not_change_the_run(batchnorm):
    """Same seed with and without `gradient_noise`: every logged number and every array of the
    final state is bit-identical (the probe's train-mode passes leave BatchNorm's statistics alone)."""
    def run(gradient_noise: bool):
        rng = make_rng(0)
        network = mlp(Builder(np, np.float32, rng, activation="tanh", batchnorm=batchnorm), SIZES, "softmax_ce")
        sink = MemorySink()
        options = LoopOptions(epochs=3, batch_size=16, gradient_noise=gradient_noise, progress=False)
        train(network, splits(np), make_optimizer("sgd"), lambda step: 0.1, options, rng, sink)
        return network, sink.history

    plain, plain_history = run(False)
    probed, probed_history = run(True)
    assert [step for step, _ in probed_history["grad_noise"]] == [1, 2, 3]
    for name, values in plain_history.items():
        if name != "time_s":
            assert probed_history[name] == values, name
    for name, value in plain.state().items():
        np.testing.assert_array_equal(probed.state()[name], value, err_msg=name)


def test_step_zero_logging_leaves_batchnorm_statistics_at_their_initial_values(xp):
    """Step 0's diagnostics come from a train-mode pass over the first batch; it must not move the
    running statistics, or step 0's val/* (eval mode) would describe another network than init."""
    from nnresearch.train import evaluate

    rng = make_rng(0)
    network = mlp(Builder(xp, xp.float32, rng, activation="tanh", batchnorm=True), SIZES, "softmax_ce")
    data = splits(xp)
    buffers = {name: to_numpy(b).copy() for name, b in network.buffers().items()}
    assert buffers, "the network under test must have BatchNorm buffers"
    at_init = evaluate(network, data.X_val, data.Y_val, 0)
    sink = MemorySink()
    train(network, data, make_optimizer("sgd"), lambda step: 0.1, LoopOptions(epochs=0, batch_size=16, progress=False),
          rng, sink)
    for name, value in network.buffers().items():
        np.testing.assert_array_equal(to_numpy(value), buffers[name], err_msg=name)
    assert sink.history["val/loss"] == [(0, at_init["loss"])]
    assert "grad_norm/layer1" in sink.history


@pytest.mark.parametrize("clipping", [{"clip_norm": 1e-6}, {"clip_value": 1e-6}])
def test_grad_norm_is_the_gradient_before_clipping(clipping):
    """Full batch, one epoch: both runs take the same first gradient, so the grad_norm logged after
    it is the same whether the update was clipped (by global norm or by value) or not."""
    def grad_norms(**clip):
        _, sink, _ = fit(np, LoopOptions(epochs=1, batch_size=None, progress=False, **clip))
        return {name: values[-1] for name, values in sink.history.items() if name.startswith("grad_norm/")}

    plain, clipped = grad_norms(), grad_norms(**clipping)
    assert plain and clipped == plain
    assert all(value > 1e-3 for _, value in plain.values())


def test_the_probe_batches_follow_the_run_seed_without_using_its_generator(monkeypatch):
    """Each trainer.seed probes its own batches (a generator derived from the seed and the epoch),
    and drawing them leaves the training generator's stream where it was."""
    from nnresearch import train as train_module

    drawn: list[int] = []

    def fake_noise(network, X, Y, batch_size, rng):
        drawn.append(int(rng.integers(1 << 30)))
        return 0.5

    monkeypatch.setattr(train_module, "gradient_noise", fake_noise)
    options = LoopOptions(epochs=2, batch_size=16, gradient_noise=True, progress=False)
    fit(np, options, seed=0)
    fit(np, options, seed=1)
    seed0, seed1 = drawn[:2], drawn[2:]
    assert seed0[0] != seed0[1], "each epoch probes other batches"
    assert seed0 != seed1, "each seed probes other batches"

    from nnresearch.backend import derived_rng

    rng = make_rng(7)
    before = rng.bit_generator.state
    assert derived_rng(rng, 1, 3).integers(1 << 30) == derived_rng(make_rng(7), 1, 3).integers(1 << 30)
    assert derived_rng(rng, 1, 3).integers(1 << 30) != derived_rng(rng, 1, 4).integers(1 << 30)
    assert rng.bit_generator.state == before


def test_the_same_seed_gives_the_same_bits_in_another_process():
    """A run's numbers depend on its seed only: two fresh processes, each with its own hash seed, train the
    same config (shuffled batches, a schedule, clipping, probes) to bit-identical parameters."""
    import subprocess
    import sys

    script = """
import hashlib
from nnresearch import experiment
from nnresearch.config import compose, validate
from nnresearch.nn.optim import make_optimizer
from nnresearch.sinks import MemorySink
from nnresearch.train import LoopOptions, train
cfg = validate(compose(["data=spirals", "trainer.epochs=3", "trainer.batch_size=32", "tracking=off"]))
p = experiment.prepare(cfg)
train(p.network, p.splits, make_optimizer("momentum", momentum=0.9), lambda step: 0.1 / (1 + step / 50),
      LoopOptions(epochs=3, batch_size=32, clip_norm=1.0, probe_every=1, progress=False), p.rng, MemorySink())
digest = hashlib.sha256()
for name, array in sorted(p.network.params().items()):
    digest.update(name.encode() + array.tobytes())
print(digest.hexdigest())
"""
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(hash_seed)}).stdout.strip()
               for hash_seed in (1, 2)}
    assert len(digests) == 1 and len(next(iter(digests))) == 64, digests


def tanh_net(seed: int = 0):
    return mlp(Builder(np, np.float32, make_rng(seed), activation="tanh"), SIZES, "softmax_ce")


def test_each_update_takes_the_schedule_at_its_own_step():
    """The chapter's alpha(t) for t = 0, 1, 2, ...: one call per update, in order, and the logged lr is the
    last update's of the epoch (4 batches of 16, 16, 16, 2 per epoch)."""
    calls: list[int] = []

    def schedule(step: int) -> float:
        calls.append(step)
        return 0.1 / (1 + step)

    sink = MemorySink()
    train(tanh_net(), splits(np), make_optimizer("sgd"), schedule, LoopOptions(epochs=2, batch_size=16, progress=False),
          make_rng(0), sink)
    assert calls == list(range(8))
    assert sink.history["lr"] == [(1, 0.1 / 4), (2, 0.1 / 8)]


def test_the_order_of_the_examples_is_shuffled_from_the_run_generator():
    """Batches are a fresh permutation drawn from the run's generator: not the data's order, another
    for another generator, and so another trained network for another loop seed from the same init."""
    def order(seed: int) -> list[int]:
        return np.concatenate([to_numpy(i) for i in batches(M_TRAIN, 16, np.random.default_rng(seed), np)]).tolist()

    assert order(0) != list(range(M_TRAIN)) and order(0) != order(1) and order(0) == order(0)

    def trained(loop_seed: int) -> dict[str, np.ndarray]:
        network = tanh_net(0)  # the same init for both
        train(network, splits(np), make_optimizer("sgd"), lambda step: 0.1,
              LoopOptions(epochs=1, batch_size=16, progress=False), make_rng(loop_seed), MemorySink())
        return {name: to_numpy(p) for name, p in network.params().items()}

    a, b = trained(1), trained(2)
    assert any(not np.array_equal(a[name], b[name]) for name in a)


def test_train_acc_is_the_fraction_of_the_epoch_s_examples_classified_right():
    """Batches of 16, 16, 16 and 2: the epoch's train/acc weights each batch's accuracy by its size."""
    network = tanh_net()
    per_batch: list[tuple[float, int]] = []
    accuracy = network.accuracy

    def recording_accuracy(Y):
        value = accuracy(Y)
        if Y.shape[-1] not in (M_TRAIN, M_VAL):  # a training batch, not a whole split's evaluation
            per_batch.append((float(value), Y.shape[-1]))
        return value

    network.accuracy = recording_accuracy
    sink = MemorySink()
    train(network, splits(np), make_optimizer("sgd"), lambda step: 0.5, LoopOptions(epochs=1, batch_size=16, progress=False),
          make_rng(0), sink)
    assert [size for _, size in per_batch] == [16, 16, 16, 2]
    correct = sum(value * size for value, size in per_batch)
    assert correct == pytest.approx(round(correct))  # a count of examples
    assert sink.history["train/acc"][-1][1] == pytest.approx(correct / M_TRAIN, rel=1e-6)


def test_update_ratio_is_the_size_of_the_last_update():
    """Plain SGD: W_after - W_before = -lr dJ/dW, so update_ratio = lr grad_norm / ||W_before||, which
    differs from lr grad_norm / weight_norm (||W_after||) by at most that ratio squared."""
    lr = 0.5
    sink = MemorySink()
    train(tanh_net(), splits(np), make_optimizer("sgd"), lambda step: lr, LoopOptions(epochs=2, batch_size=None, progress=False),
          make_rng(0), sink)
    h = sink.history
    for layer in (1, 2, 3):
        for (step, ratio), (_, grad), (_, weight) in zip(h[f"update_ratio/layer{layer}"], h[f"grad_norm/layer{layer}"][1:],
                                                         h[f"weight_norm/layer{layer}"][1:]):
            expected = lr * grad / weight
            assert expected > 1e-4
            assert ratio == pytest.approx(expected, rel=2 * expected + 1e-4), (layer, step)


@pytest.mark.parametrize("clipping", [{"clip_norm": 1e-3}, {"clip_value": 1e-4}])
def test_clipping_bounds_the_update_it_is_applied_to(clipping):
    """Full batch, one SGD step of lr 0.1: the parameters move by at most lr * max_norm (global norm) or
    lr * limit per entry; unclipped, the same step is far larger."""
    def step_taken(**clip) -> dict[str, np.ndarray]:
        network = tanh_net()
        before = {name: to_numpy(p).astype(np.float64) for name, p in network.params().items()}
        train(network, splits(np), make_optimizer("sgd"), lambda step: 0.1,
              LoopOptions(epochs=1, batch_size=None, progress=False, **clip), make_rng(0), MemorySink())
        return {name: to_numpy(p).astype(np.float64) - before[name] for name, p in network.params().items()}

    plain, clipped = step_taken(), step_taken(**clipping)
    if "clip_norm" in clipping:
        size = lambda step: np.sqrt(sum(np.sum(d * d) for d in step.values()))  # noqa: E731
        bound = 0.1 * clipping["clip_norm"]
    else:
        size = lambda step: max(np.max(np.abs(d)) for d in step.values())  # noqa: E731
        bound = 0.1 * clipping["clip_value"]
    assert size(plain) > 10 * bound
    assert size(clipped) <= 1.01 * bound  # 1%: the float32 rounding of W - lr g


def test_a_non_finite_parameter_is_caught_even_where_the_loss_stays_finite():
    """An update that leaves a relu layer's bias at -inf: z = -inf, a = relu(z) = 0, so every loss stays
    finite and relu'(z) = 0 keeps the bias there; only the parameter check after the epoch sees it."""
    class OverflowingSGD:
        def step(self, params, grads, lr):
            params["b1"][...] = -np.inf  # what lr * g overflowing to inf would leave

    network = mlp(Builder(np, np.float32, make_rng(0), activation="relu"), SIZES, "softmax_ce")
    with pytest.raises(NonFiniteError) as caught:
        train(network, splits(np), OverflowingSGD(), lambda step: 0.1, LoopOptions(epochs=2, batch_size=None, progress=False),
              make_rng(0), MemorySink())
    assert (caught.value.step, caught.value.layer, caught.value.quantity) == (1, "layer1", "parameter b1")


def test_train_draws_only_the_epoch_orders_from_the_run_generator():
    """Step 0's probe batch comes from its own generator, not the run's."""
    rng, expected = make_rng(5), make_rng(5)
    batches(M_TRAIN, 16, expected, np)
    train(tanh_net(), splits(np), make_optimizer("sgd"), lambda s: 0.1, LoopOptions(epochs=1, batch_size=16, progress=False),
          rng, MemorySink())
    assert rng.bit_generator.state == expected.bit_generator.state


def test_epoch_train_loss_is_the_size_weighted_mean_over_unequal_batches():
    """lr 0 keeps the net at init, so epoch 1's train/loss (batches 16, 16, 16, 2) is the whole split's loss."""
    sink = MemorySink()
    train(tanh_net(), splits(np), make_optimizer("sgd"), lambda s: 0.0, LoopOptions(epochs=1, batch_size=16, progress=False),
          make_rng(0), sink)
    loss = dict(sink.history["train/loss"])
    assert loss[1] == pytest.approx(loss[0], rel=1e-5)


def test_a_non_finite_batch_loss_raises_at_that_step_not_at_the_epoch_end():
    """A NaN weight after the first update makes the second batch's loss NaN: step 1, not 4."""
    class PoisoningSGD:
        def step(self, params, grads, lr):
            params["W1"][...] = np.nan

    with pytest.raises(NonFiniteError) as caught:
        train(tanh_net(), splits(np), PoisoningSGD(), lambda s: 0.1, LoopOptions(epochs=1, batch_size=16, progress=False),
              make_rng(0), MemorySink())
    assert caught.value.step == 1


def test_epoch_diagnostics_describe_the_last_update_of_the_epoch():
    """weight_norm logged at epoch 1 is the norm of the weights the epoch ends with."""
    network, sink = tanh_net(), MemorySink()
    train(network, splits(np), make_optimizer("sgd"), lambda s: 0.5, LoopOptions(epochs=1, batch_size=16, progress=False),
          make_rng(0), sink)
    for layer in (1, 2, 3):
        final = np.linalg.norm(to_numpy(network.params()[f"W{layer}"]).astype(np.float64))
        assert sink.history[f"weight_norm/layer{layer}"][-1] == (1, pytest.approx(final, rel=1e-5))
