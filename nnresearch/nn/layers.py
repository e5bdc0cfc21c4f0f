"""Layers in the chapter's notation: activations are column-stacked `(n[l], m)`.

Every layer has `forward(A_prev, train) -> A` and `backward(dA) -> dA_prev`, side by side; what
backward needs (A_prev, Z, A) is kept from forward, never recomputed. Layers with parameters keep
them in `params` (local names "W", "b", ...) and their gradients of the cost J in `grads`.
"""

from __future__ import annotations

from typing import Any

from nnresearch.backend import namespace
from nnresearch.nn.activations import Activation
from nnresearch.nn.batchnorm import BatchNorm

Array = Any


class Dense:
    """Layer l: Z[l] = W[l] A[l-1] + b[l], A[l] = g(Z[l]); with BatchNorm A[l] = g(BN(W[l] A[l-1])).

    W is `(n[l], n[l-1])`, b is `(n[l], 1)` and broadcasts over the m columns.
    """

    def __init__(self, W: Array, b: Array, activation: Activation, norm: BatchNorm | None = None,
                 gamma: Array | None = None, beta: Array | None = None) -> None:
        self.activation = activation
        self.norm = norm
        # BatchNorm's beta replaces the bias b (b would be cancelled by the mean subtraction).
        self.params = {"W": W, "b": b} if norm is None else {"W": W, "gamma": gamma, "beta": beta}
        self.grads: dict[str, Array] = {}

    @property
    def units(self) -> tuple[Dense, ...]:
        """The numbered layers inside this one (the chapter's l = 1..L): just itself."""
        return (self,)

    @property
    def buffers(self) -> dict[str, Array]:
        return self.norm.buffers if self.norm is not None else {}

    def forward(self, A_prev: Array, train: bool = False) -> Array:
        """A[l] = g(W A[l-1] + b); with BatchNorm, A[l] = g(gamma Zhat + beta)."""
        p = self.params
        self.A_prev = A_prev
        if self.norm is None:
            Z = p["W"] @ A_prev
            Z += p["b"]  # in place on the fresh product: no second (n[l], m) array
            self.Z = self.Z_act = Z
        else:
            self.Z = p["W"] @ A_prev
            self.Z_act = self.norm.forward(self.Z, p["gamma"], p["beta"], train)
        self.A = self.activation.forward(self.Z_act)
        return self.A

    def backward(self, dA: Array, input_grad: bool = True) -> Array | None:
        """delta[l] = dA[l] * g'(Z[l]); returns W[l]^T delta[l] (= dA[l-1] before the next g'),
        or None with `input_grad=False` (the first layer: nothing needs dA[0])."""
        return self.backward_pre_activation(dA * self.activation.derivative(self.Z_act, self.A), input_grad)

    def backward_pre_activation(self, dZ_act: Array, input_grad: bool = True) -> Array | None:
        """From dL/d(input of g): dW = delta A[l-1]^T / m, db = (1/m) sum_i delta^(i); returns W^T delta
        (None with `input_grad=False`).

        db is the product delta @ (1/m, ..., 1/m)^T `(m, 1)`: a matrix-vector product on BLAS's
        threads, where a NumPy sum over axis 1 plus a division is two single-threaded passes.
        The 1/m of dW goes on the smaller of delta `(n[l], m)` and the product `(n[l], n[l-1])`:
        for wide layers a pass over dW costs more than a scaled copy of delta.
        """
        xp = namespace(dZ_act)
        m = dZ_act.shape[1]
        if self.norm is None:
            self.delta = dZ_act
            self.grads["b"] = self.delta @ xp.full((m, 1), 1.0 / m, dtype=self.delta.dtype)
        else:
            self.delta, self.grads["gamma"], self.grads["beta"] = self.norm.backward(dZ_act, self.params["gamma"])
        if m < self.A_prev.shape[0]:
            dW = (self.delta / m) @ self.A_prev.T
        else:
            dW = self.delta @ self.A_prev.T
            dW /= m  # in place: a second (n[l], n[l-1]) temporary costs a pass and fresh pages every step
        self.grads["W"] = dW
        return self.params["W"].T @ self.delta if input_grad else None


class Residual:
    """A residual block around one Dense layer of equal width: A[l] = A[l-1] + g(W A[l-1] + b).

    The identity path gives dA[l-1] = dA[l] + W^T (dA[l] * g'), so the gradient reaches early
    layers undiminished even when g saturates (He et al. 2016).
    """

    def __init__(self, dense: Dense) -> None:
        n_out, n_in = dense.params["W"].shape
        if n_out != n_in:
            raise ValueError(f"a residual block needs a square W (width in == width out), got {n_out}x{n_in}")
        self.dense = dense
        self.units = (dense,)

    def forward(self, A_prev: Array, train: bool = False) -> Array:
        return A_prev + self.dense.forward(A_prev, train)

    def backward(self, dA: Array, input_grad: bool = True) -> Array | None:
        dA_dense = self.dense.backward(dA, input_grad)
        return dA + dA_dense if input_grad else None
