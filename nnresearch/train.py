"""The training loop (chapter §7.2, §9): epochs of shuffled batches, one gradient step per batch.

Batch size 1 is SGD, the full training set is full-batch gradient descent, anything between is
mini-batch gradient descent; the order is reshuffled every epoch from the run's generator.
What the loop measures goes to a sink (`nnresearch.sinks`), never to MLflow directly.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nnresearch import backend
from nnresearch.backend import namespace
from nnresearch.nn.network import Network, NonFiniteError
from nnresearch.nn.optim import clip_by_global_norm, clip_by_value
from nnresearch.probes import gradient_noise, layer_diagnostics, state_kept
from nnresearch.sinks import Sink

Array = Any
PROBE_STREAM = 1  # spawn-key slot of the probes' generators (`derived_rng(rng, PROBE_STREAM, epoch)`)


@dataclass
class Splits:
    """Training and validation data on the run's device, column-stacked: X `(n[0], m)`, Y `(n[L], m)`."""

    X_train: Array
    Y_train: Array
    X_val: Array
    Y_val: Array


@dataclass(frozen=True)
class LoopOptions:
    """How to run the loop; `batch_size=None` (or >= m) means the full training set (full-batch GD)."""

    epochs: int
    batch_size: int | None
    clip_norm: float | None = None
    clip_value: float | None = None
    eval_every: int = 1
    probe_every: int = 1
    gradient_noise: bool = False
    progress: bool = True


def batch_starts(m: int, batch_size: int | None) -> range:
    """Where each batch of an epoch starts; the last batch may be short."""
    return range(0, m, m if batch_size is None else min(batch_size, m))


def batches(m: int, batch_size: int | None, rng: np.random.Generator, xp: Any) -> list[Array]:
    """Index arrays of one epoch: a fresh permutation of range(m) cut into batches."""
    order = backend.permutation(rng, m, xp)
    starts = batch_starts(m, batch_size)
    return [order[start:min(start + starts.step, m)] for start in starts]  # the Array API leaves stops past the end unspecified


def evaluate(network: Network, X: Array, Y: Array, step: int = 0) -> dict[str, float]:
    """Cost and accuracy of the network in eval mode on a whole split; a non-finite cost is a divergence."""
    network.forward(X, train=False)
    metrics = {"loss": float(network.cost(Y))}
    if not math.isfinite(metrics["loss"]):
        raise NonFiniteError(step, *network.first_non_finite())
    accuracy = network.accuracy(Y)
    if accuracy is not None:
        metrics["acc"] = float(accuracy)
    return metrics


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in metrics.items()}


def train(
    network: Network,
    data: Splits,
    optimizer: Any,
    schedule: Callable[[int], float],
    options: LoopOptions,
    rng: np.random.Generator,
    sink: Sink,
    on_epoch_end: Callable[[int], None] | None = None,
    start_epoch: int = 0,
) -> dict[str, float]:
    """Train for `options.epochs` epochs and return the last epoch's metrics.

    Step 0 logs the state at initialization: `train/*` and `val/*` over the whole splits in eval
    mode, and per-layer diagnostics from one backward pass over the first batch without an update.
    Epoch e logs at step e: `train/*` as the size-weighted mean over its batches (train mode, each
    taken before its update), `val/*` over the whole split in eval mode. Raises `NonFiniteError` naming the step and
    layer as soon as the cost or a parameter becomes NaN or inf.
    """
    network.check_batch(data.X_train, data.Y_train)
    network.check_batch(data.X_val, data.Y_val)
    xp = namespace(data.X_train)
    m = data.X_train.shape[-1]
    steps_per_epoch = len(batch_starts(m, options.batch_size))
    step = start_epoch * steps_per_epoch
    started = time.perf_counter()
    if start_epoch == 0:
        # A batch of the batch size from its own generator (seed 0), not the run's first: drawing it
        # from `rng` would move every later epoch's order; it is the same examples in every seed.
        first = batches(m, options.batch_size, backend.make_rng(0), xp)[0]
        with state_kept(network):  # a train-mode pass: BatchNorm's running statistics must not move
            network.loss_and_gradients(xp.take(data.X_train, first, axis=-1), xp.take(data.Y_train, first, axis=-1))
            initial = layer_diagnostics(network)
        initial |= _prefixed("train", evaluate(network, data.X_train, data.Y_train, step))
        sink.log_metrics(initial | _prefixed("val", evaluate(network, data.X_val, data.Y_val, step)), step=0)

    metrics: dict[str, float] = {}
    bar = tqdm(range(start_epoch, options.epochs), desc="epochs", unit="ep", leave=False,
               disable=not options.progress or not sys.stderr.isatty(), initial=start_epoch, total=options.epochs)
    for epoch in bar:
        probe = (epoch + 1) % options.probe_every == 0 or epoch + 1 == options.epochs
        metrics, step = _train_epoch(network, data, optimizer, schedule, options, rng, step, probe)
        metrics["time_s"] = time.perf_counter() - started
        if (epoch + 1) % options.eval_every == 0 or epoch + 1 == options.epochs:
            metrics |= _prefixed("val", evaluate(network, data.X_val, data.Y_val, step))
        if probe and options.gradient_noise:
            metrics["grad_noise"] = gradient_noise(network, data.X_train, data.Y_train, options.batch_size,
                                                   backend.derived_rng(rng, PROBE_STREAM, epoch))
        _check_parameters(network, step)
        sink.log_metrics(metrics, step=epoch + 1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    return metrics


def _train_epoch(network: Network, data: Splits, optimizer: Any, schedule: Callable[[int], float],
                 options: LoopOptions, rng: np.random.Generator, step: int, probe: bool) -> tuple[dict[str, float], int]:
    """One pass over shuffled batches: a gradient step per batch. Returns the epoch's training
    metrics (mean loss and accuracy over the batches, the last lr, and the layer diagnostics of the
    last step when `probe`) and the global step count after it."""
    xp = namespace(data.X_train)
    total_loss, total_correct, seen = 0.0, 0.0, 0
    epoch_batches = batches(data.X_train.shape[-1], options.batch_size, rng, xp)
    diagnostics: dict[str, float] = {}
    for position, index in enumerate(epoch_batches):
        Xb, Yb = xp.take(data.X_train, index, axis=-1), xp.take(data.Y_train, index, axis=-1)
        J = float(network.loss_and_gradients(Xb, Yb))
        if not math.isfinite(J):
            raise NonFiniteError(step, *network.first_non_finite())
        size = Xb.shape[-1]
        total_loss += J * size
        accuracy = network.accuracy(Yb)
        if accuracy is not None:  # summed on the device; one transfer at the end of the epoch
            total_correct = total_correct + accuracy * size
        seen += size
        grads = network.grads()
        if options.clip_norm is not None:
            clip_by_global_norm(grads, options.clip_norm)
        if options.clip_value is not None:
            clip_by_value(grads, options.clip_value)
        last = probe and position == len(epoch_batches) - 1
        before = {name: xp.asarray(w, copy=True) for name, w in network.params().items() if name.startswith("W")} if last else None
        lr = schedule(step)
        optimizer.step(network.params(), grads, lr)
        step += 1
        if last:
            diagnostics = layer_diagnostics(network, before)
    metrics = {"train/loss": total_loss / seen, "lr": lr} | diagnostics
    if network.head.accuracy is not None:
        metrics["train/acc"] = float(total_correct) / seen
    return metrics, step


def _check_parameters(network: Network, step: int) -> None:
    """NonFiniteError if an update left any parameter non-finite."""
    for name, array in network.params().items():
        xp = namespace(array)
        if not bool(xp.all(xp.isfinite(array))):
            raise NonFiniteError(step, *network.first_non_finite())
