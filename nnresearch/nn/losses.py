"""Output layers and their losses ("heads"), each computed from the logits Z[L] for stability.

A head pairs the output activation with its loss: `activate(Z) -> A[L]`, `cost(Z, A, Y) -> J`
(the mean of the per-example loss over the batch, §9) and `delta(Z, A, Y) -> delta[L]`, the
per-example error signal dL/dZ[L] that backpropagation starts from (§8.2). Shapes: Z, A, Y and
delta are all `(n[L], m)`.

| head             | A[L]                  | L per example                        | delta[L]              |
|------------------|-----------------------|--------------------------------------|-----------------------|
| sigmoid_bce      | sigmoid per output    | sum_k BCE(a_k, y_k) (binary, multi-label) | A - Y            |
| softmax_ce       | shifted softmax       | -sum_k y_k log a_k                   | A - Y                 |
| naive_softmax_ce | unshifted softmax     | -sum_{k: y_k>0} y_k log a_k (§3.1)   | A - Y                 |
| linear_mse       | Z                     | mean_k (a_k - y_k)^2                 | 2 (A - Y) / n[L]      |
| sigmoid_mse      | sigmoid per output    | mean_k (a_k - y_k)^2                 | 2 (A - Y) / n[L] * sigma'(Z) |

The fused `A - Y` is exact only for these pairs: sigmoid with BCE, and softmax with cross-entropy
when every column of Y sums to 1 (one-hot or a probability vector).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from nnresearch.backend import namespace
from nnresearch.nn.activations import sigmoid, sigmoid_prime

Array = Any


def softmax(Z: Array) -> Array:
    """a_i = e^(z_i - max_j z_j) / sum_j e^(z_j - max_j z_j), per column (the log-sum-exp shift)."""
    xp = namespace(Z)
    E = xp.exp(Z - xp.max(Z, axis=0, keepdims=True))
    return E / xp.sum(E, axis=0, keepdims=True)


def naive_softmax(Z: Array) -> Array:
    """a_i = e^z_i / sum_j e^z_j without the shift: e^z overflows to inf (and inf/inf = NaN) for large z."""
    xp = namespace(Z)
    E = xp.exp(Z)
    return E / xp.sum(E, axis=0, keepdims=True)


def log_softmax(Z: Array) -> Array:
    """log a_i = z_i - logsumexp(z), with logsumexp(z) = max z + log sum_j e^(z_j - max z)."""
    xp = namespace(Z)
    shifted = Z - xp.max(Z, axis=0, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=0, keepdims=True))


def _mean_over_batch(per_example: Array) -> Array:
    """J = (1/m) sum_i L^(i), from an `(n[L], m)` array whose column sums are the L^(i)."""
    xp = namespace(per_example)
    return xp.sum(per_example) / per_example.shape[1]


def bce_cost(Z: Array, A: Array, Y: Array) -> Array:
    """BCE from logits: L = max(z, 0) - z y + log(1 + e^-|z|) = -[y log a + (1-y) log(1-a)]."""
    xp = namespace(Z)
    return _mean_over_batch(xp.maximum(Z, 0.0) - Z * Y + xp.log1p(xp.exp(-xp.abs(Z))))


def cross_entropy_cost(Z: Array, A: Array, Y: Array) -> Array:
    """Categorical cross-entropy L = -sum_k y_k log a_k, with log a from the stable log-softmax."""
    return _mean_over_batch(-(Y * log_softmax(Z)))


def naive_cross_entropy_cost(Z: Array, A: Array, Y: Array) -> Array:
    """L = -sum_{k: y_k > 0} y_k log a_k taken from the naive softmax A directly (for one-hot Y: -log a_y).

    Classes with y_k = 0 are left out of the sum (0 log 0 = 0), so an a_k that underflowed to 0 gives no
    0 * log 0 = NaN: the loss is non-finite only where A is (e^z overflowed, inf / inf = NaN) or where the
    true class's a_y itself underflowed to 0 (-log 0 = inf), while the gradient A - Y stays finite.
    """
    xp = namespace(A)
    return _mean_over_batch(-(Y * xp.log(xp.where(Y > 0, A, 1.0))))


def mse_cost(Z: Array, A: Array, Y: Array) -> Array:
    """Mean squared error L = (1/n[L]) sum_k (a_k - y_k)^2."""
    return _mean_over_batch((A - Y) * (A - Y)) / A.shape[0]


def prediction_error(Z: Array, A: Array, Y: Array) -> Array:
    """delta[L] = A - Y (softmax + cross-entropy, sigmoid + BCE)."""
    return A - Y


def mse_linear_delta(Z: Array, A: Array, Y: Array) -> Array:
    """delta[L] = 2 (A - Y) / n[L] for an identity output."""
    return (2.0 / A.shape[0]) * (A - Y)


def mse_sigmoid_delta(Z: Array, A: Array, Y: Array) -> Array:
    """delta[L] = 2 (A - Y) / n[L] * sigma'(Z): the sigma' factor is what starves MSE early (§2.2)."""
    return (2.0 / A.shape[0]) * (A - Y) * sigmoid_prime(Z, A)


def threshold_accuracy(A: Array, Y: Array) -> Array:
    """Fraction of outputs where (a >= 0.5) == (y > 0): binary accuracy, per-label for multi-label."""
    xp = namespace(A)
    return xp.mean(xp.astype((A >= 0.5) == (Y > 0), A.dtype))


def argmax_accuracy(A: Array, Y: Array) -> Array:
    """Fraction of columns whose largest output is the true class."""
    xp = namespace(A)
    return xp.mean(xp.astype(xp.argmax(A, axis=0) == xp.argmax(Y, axis=0), A.dtype))


def identity(Z: Array) -> Array:
    return Z


@dataclass(frozen=True)
class Head:
    """An output activation with its loss; `accuracy` is None for regression heads."""

    name: str
    activate: Callable[[Array], Array]
    cost: Callable[[Array, Array, Array], Array]
    delta: Callable[[Array, Array, Array], Array]
    accuracy: Callable[[Array, Array], Array] | None
    multi_hot: bool = False  # a one-hot head given multi-hot label sets (`on_label_sets`)


HEADS: dict[str, Head] = {
    head.name: head
    for head in (
        Head("sigmoid_bce", sigmoid, bce_cost, prediction_error, threshold_accuracy),
        Head("softmax_ce", softmax, cross_entropy_cost, prediction_error, argmax_accuracy),
        Head("naive_softmax_ce", naive_softmax, naive_cross_entropy_cost, prediction_error, argmax_accuracy),
        Head("linear_mse", identity, mse_cost, mse_linear_delta, None),
        Head("sigmoid_mse", sigmoid, mse_cost, mse_sigmoid_delta, threshold_accuracy),
    )
}


# Heads whose targets are one-hot over several classes (`Network.check_batch` checks each column sums to 1).
ONE_HOT_HEADS = ("softmax_ce", "naive_softmax_ce")


def label_distribution(Y: Array) -> Array:
    """Multi-hot labels Y `(C, m)` as the distribution a softmax head is trained toward: an example's
    labels share its probability equally, y_k / sum_j y_j; an example with no label is uniform, 1/C."""
    xp = namespace(Y)
    counts = xp.sum(Y, axis=0, keepdims=True)
    return xp.where(counts > 0, Y / xp.maximum(counts, 1), 1.0 / Y.shape[0])


def _on_distribution(function: Callable[[Array, Array, Array], Array], Z: Array, A: Array, Y: Array) -> Array:
    return function(Z, A, label_distribution(Y))


def on_label_sets(head: Head) -> Head:
    """A one-hot head for multi-label data: its cost and delta[L] see `label_distribution(Y)`, while
    its accuracy sees the label sets themselves (the distribution cannot tell no label from every label)."""
    return replace(head, cost=partial(_on_distribution, head.cost), delta=partial(_on_distribution, head.delta),
                   multi_hot=True)


def get_head(name: str) -> Head:
    """The head called `name`, or a ValueError listing the valid ones."""
    if name not in HEADS:
        raise ValueError(f"unknown output head {name!r}; valid heads: {', '.join(HEADS)}")
    return HEADS[name]
