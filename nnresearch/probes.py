"""Per-layer diagnostics, read from the caches of the last forward/backward (cheap: no extra pass).

For every numbered layer l (`Network.units`), with A = A[l], Z = the input of g, delta = delta[l]:

| metric              | definition                                                          |
|---------------------|---------------------------------------------------------------------|
| act_mean, act_std   | mean and std of A[l] over units and examples                        |
| saturated (sigmoid) | fraction of entries with a <= 0.01 or a >= 0.99 (sigma' < 0.01)      |
| saturated (tanh)    | fraction of entries with abs(a) >= 0.99 (tanh' < 0.02)              |
| dead (relu family)  | fraction of units with z <= 0 for every example of the batch        |
| delta_norm          | ||delta[l]||_F / sqrt(m): the RMS per-example error-signal norm      |
| grad_norm           | ||dJ/dW[l]||_F, before any clipping (`trainer.clip_*`)              |
| weight_norm         | ||W[l]||_F                                                          |
| update_ratio        | ||W[l] after - W[l] before|| / ||W[l] before|| for the last update  |
| unit_spread         | ||W - mean_row(W)||_F / ||W||_F: 0 when every unit of the layer has |
|                     | the same incoming weights (the symmetry problem, §6.1), 0 for W = 0 |

Names are `<metric>/layer<l>`, so MLflow charts each metric's layers together.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from nnresearch.backend import namespace
from nnresearch.nn.network import Network

Array = Any
SATURATED = {"sigmoid": 0.01, "tanh": 0.99}
RELU_FAMILY = ("relu", "leaky_relu")
SPREAD_BY_IDENTITY_ABOVE = 0.7  # unit_spread from ||W||^2 - n ||mu||^2 when it is at least this (see _unit_spread)


def _norm(xp: Any, x: Array) -> float:
    """||x||_F as sqrt(x . x): one dot product (BLAS on NumPy), no squared temporary.

    A float32 sum of squares overflows once ||x|| passes ~1.8e19 although the norm itself is
    representable; then (and only then) it is summed again in float64, as `optim.global_norm` does,
    so an exploding layer reports its size instead of inf.
    """
    flat = xp.reshape(x, (-1,))
    squares = float(xp.vecdot(flat, flat))
    if math.isinf(squares):
        wide = xp.astype(flat, xp.float64)
        squares = float(xp.vecdot(wide, wide))
    return math.sqrt(squares)


def _per_unit(x: Array) -> Array:
    """`(n, ...)` -> `(n, rest)`: one row per unit (a channel for convolutions)."""
    return namespace(x).reshape(x, (x.shape[0], -1))


def _unit_spread(xp: Any, W: Array, weight_norm: float) -> float:
    """||W - mean_row(W)||_F / ||W||_F, with W `(n, ...)` as n rows of incoming weights.

    By sum_i ||w_i - mu||^2 = ||W||^2 - n ||mu||^2 it costs one pass over W (the row mean) where the
    definition costs three (the mean, the difference, its norm). The identity cancels when the units
    are nearly identical, so below SPREAD_BY_IDENTITY_ABOVE^2 of ||W||^2 the difference is taken
    explicitly: the identity's rounding error is then at most 2 (eps_1 + eps_2) relative, eps_i being
    the two dot products' relative errors.
    """
    if weight_norm == 0:
        return 0.0
    rows = _per_unit(W)
    mean_row = xp.mean(rows, axis=0)
    spread_squared = weight_norm**2 - rows.shape[0] * float(xp.vecdot(mean_row, mean_row))
    if spread_squared >= SPREAD_BY_IDENTITY_ABOVE**2 * weight_norm**2:
        return math.sqrt(spread_squared) / weight_norm
    return _norm(xp, rows - mean_row) / weight_norm


def layer_diagnostics(network: Network, weights_before: Mapping[str, Array] | None = None) -> dict[str, float]:
    """The table above for every layer, from the network's caches; `weights_before` = {'W1': ...} copies."""
    out: dict[str, float] = {}
    for index, unit in enumerate(network.units, start=1):
        xp = namespace(unit.params["W"])
        tag = f"layer{index}"
        A, W = unit.A, unit.params["W"]
        out[f"act_mean/{tag}"] = float(xp.mean(A))
        out[f"act_std/{tag}"] = float(xp.std(A))
        name = unit.activation.name
        if name == "sigmoid":
            low = SATURATED["sigmoid"]
            out[f"saturated/{tag}"] = float(xp.mean(xp.astype((A <= low) | (A >= 1.0 - low), A.dtype)))
        elif name == "tanh":
            out[f"saturated/{tag}"] = float(xp.mean(xp.astype(xp.abs(A) >= SATURATED["tanh"], A.dtype)))
        elif name in RELU_FAMILY:
            inactive = xp.all(_per_unit(unit.Z_act) <= 0, axis=1)
            out[f"dead/{tag}"] = float(xp.mean(xp.astype(inactive, A.dtype)))
        m = unit.delta.shape[-1]
        out[f"delta_norm/{tag}"] = _norm(xp, unit.delta) / math.sqrt(m)
        out[f"grad_norm/{tag}"] = _norm(xp, unit.grads["W"])
        weight_norm = _norm(xp, W)
        out[f"weight_norm/{tag}"] = weight_norm
        out[f"unit_spread/{tag}"] = _unit_spread(xp, W, weight_norm)
        if weights_before is not None:
            before = weights_before[f"W{index}"]
            before_norm = _norm(xp, before)
            out[f"update_ratio/{tag}"] = _norm(xp, W - before) / before_norm if before_norm > 0 else math.nan
    return out


@contextmanager
def state_kept(network: Network) -> Iterator[None]:
    """Run the body, then put back every layer's buffers and grads as they were before it.

    A probe's (or the step-0 logging pass's) forward passes run in train mode, which moves
    BatchNorm's running statistics (running <- (1 - momentum) running + momentum batch), and its
    backward passes replace the gradients; a measurement must leave the run's numbers as they were. Parameters are never
    written by a probe; the forward/backward caches (A, Z, delta) are scratch that the next step
    refills. The buffers are copied (they are small: `(n, 1)` per BatchNorm layer).
    """
    saved = []
    for unit in network.units:
        buffers = {name: namespace(b).asarray(b, copy=True) for name, b in unit.buffers.items()}
        saved.append((unit, buffers, dict(unit.grads)))
    try:
        yield
    finally:
        for unit, buffers, grads in saved:
            for name, value in buffers.items():
                unit.buffers[name] = value
            unit.grads.clear()
            unit.grads.update(grads)


def gradient_noise(network: Network, X: Array, Y: Array, batch_size: int | None, rng: Any, n_batches: int = 8) -> float:
    """E_B ||g_B - g||^2 / ||g||^2: how far a mini-batch gradient g_B strays from the full-batch one g.

    Averaged over `n_batches` random batches of `batch_size` (sampled without replacement within a
    batch); 0 for full-batch gradient descent. The gradients are those of training (train mode:
    BatchNorm normalizes with batch statistics), but the network's buffers (BatchNorm running
    statistics) and grads are restored afterwards, so probing never changes a run's numbers.
    """
    m = X.shape[-1]
    if batch_size is None or batch_size >= m:
        return 0.0
    with state_kept(network):
        return _gradient_noise(network, X, Y, batch_size, rng, n_batches)


def _gradient_noise(network: Network, X: Array, Y: Array, batch_size: int, rng: Any, n_batches: int) -> float:
    """`gradient_noise`'s passes: one full-batch gradient g, then `n_batches` batch gradients g_B."""
    xp = namespace(X)
    m = X.shape[-1]
    network.loss_and_gradients(X, Y)
    full = {name: xp.asarray(g, copy=True) for name, g in network.grads().items()}
    full_sq = sum(float(xp.sum(g * g)) for g in full.values())
    total = 0.0
    for _ in range(n_batches):
        index = xp.asarray(rng.choice(m, size=batch_size, replace=False))
        network.loss_and_gradients(xp.take(X, index, axis=-1), xp.take(Y, index, axis=-1))
        total += sum(float(xp.sum((g - full[name]) * (g - full[name]))) for name, g in network.grads().items())
    return total / n_batches / full_sq if full_sq > 0 else math.nan
