"""Batch normalization of pre-activations (Ioffe & Szegedy 2015), a vanishing-gradient mitigation (§8.3).

Train mode normalizes each unit over the batch: Zhat = (Z - mu_B) / sqrt(var_B + eps) and
returns gamma * Zhat + beta, while updating running averages of mu_B and var_B (biased batch
variance); eval mode uses the running averages instead. Shapes: Z is `(n, m)`; gamma, beta,
running_mean and running_var are `(n, 1)`.

Backward works on per-example error signals (the chapter's delta, without the 1/m), so
dL/dZ = (gamma / sigma) (dOut - mean(dOut) - Zhat mean(dOut Zhat)) with means over the batch.
"""

from __future__ import annotations

from typing import Any

from nnresearch.backend import namespace

Array = Any


class BatchNorm:
    """The normalization step and its running statistics; gamma and beta live with the layer's params."""

    def __init__(self, n: int, xp: Any, dtype: Any, eps: float = 1e-5, momentum: float = 0.1) -> None:
        self.eps = eps
        self.momentum = momentum
        self.buffers = {
            "running_mean": xp.zeros((n, 1), dtype=dtype),
            "running_var": xp.ones((n, 1), dtype=dtype),
        }

    def forward(self, Z: Array, gamma: Array, beta: Array, train: bool) -> Array:
        """gamma * (Z - mu) / sqrt(var + eps) + beta, with batch (train) or running (eval) statistics."""
        xp = namespace(Z)
        if train:
            if Z.shape[1] < 2:
                raise ValueError(f"BatchNorm in train mode needs a batch of 2+ examples, got {Z.shape[1]}: the "
                                 "variance of one is 0, so the output would be beta whatever the input")
            mu = xp.mean(Z, axis=1, keepdims=True)
            centered = Z - mu
            var = xp.mean(centered * centered, axis=1, keepdims=True)
            keep = 1.0 - self.momentum
            self.buffers["running_mean"] = keep * self.buffers["running_mean"] + self.momentum * mu
            self.buffers["running_var"] = keep * self.buffers["running_var"] + self.momentum * var
        else:
            centered = Z - self.buffers["running_mean"]
            var = self.buffers["running_var"]
        self.inv_std = 1.0 / xp.sqrt(var + self.eps)
        self.Zhat = centered * self.inv_std
        self.train = train
        return gamma * self.Zhat + beta

    def backward(self, dOut: Array, gamma: Array) -> tuple[Array, Array, Array]:
        """(dZ, dgamma, dbeta): per-example dZ, and dgamma = mean(dOut Zhat), dbeta = mean(dOut) over the batch."""
        xp = namespace(dOut)
        dgamma = xp.mean(dOut * self.Zhat, axis=1, keepdims=True)
        dbeta = xp.mean(dOut, axis=1, keepdims=True)
        scale = gamma * self.inv_std
        if not self.train:
            return scale * dOut, dgamma, dbeta
        return scale * (dOut - dbeta - self.Zhat * dgamma), dgamma, dbeta
