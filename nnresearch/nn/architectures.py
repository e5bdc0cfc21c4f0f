"""Builders for the chapter's architectures, all drawing weights from the caller's generator.

- `logistic_regression(n)`: one sigmoid neuron, W `(1, n)` (§2).
- `softmax_regression(n, C)`: one softmax layer, W `(C, n)` (§3.1).
- `mlp(sizes, ...)`: layers n[0] -> n[1] -> ... -> n[L], hidden activation g, optional BatchNorm.
- `residual_mlp(n_in, width, depth, n_out, ...)`: an input layer to `width`, then `depth - 1`
  residual blocks A[l] = A[l-1] + g(W A[l-1] + b), then the output layer.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnresearch.nn.activations import get_activation
from nnresearch.nn.batchnorm import BatchNorm
from nnresearch.nn.initializers import initialize
from nnresearch.nn.layers import Dense, Residual
from nnresearch.nn.losses import get_head
from nnresearch.nn.network import Network


@dataclass(frozen=True)
class Init:
    """How one network's parameters are drawn: the weight rule and its options, and the bias rule."""

    weights: str = "he_normal"
    std: float = 1.0
    limit: float = 0.05
    value: float = 0.0
    bias: str = "zeros"
    bias_value: float = 0.0


@dataclass(frozen=True)
class Builder:
    """Everything shared by the layers of one network: namespace, dtype, generator, init, activation."""

    xp: types.ModuleType
    dtype: Any
    rng: np.random.Generator
    init: Init = Init()
    activation: str = "relu"
    alpha: float = 0.01
    batchnorm: bool = False

    def weights(self, shape: tuple[int, ...]) -> Any:
        """A weight array of `shape` from the builder's weight initializer and its std, limit or value."""
        return initialize(self.init.weights, shape, self.rng, self.xp, self.dtype,
                          std=self.init.std, limit=self.init.limit, value=self.init.value)

    def bias(self, shape: tuple[int, ...]) -> Any:
        """A bias array of `shape` from the builder's bias initializer."""
        return initialize(self.init.bias, shape, self.rng, self.xp, self.dtype, value=self.init.bias_value)

    def dense(self, n_in: int, n_out: int, activation: str | None = None, batchnorm: bool | None = None) -> Dense:
        """A Dense layer n_in -> n_out; `activation=None` uses the builder's hidden activation."""
        W = self.weights((n_out, n_in))
        b = self.bias((n_out, 1))
        g = get_activation(activation or self.activation, self.alpha)
        if not (self.batchnorm if batchnorm is None else batchnorm):
            return Dense(W, b, g)
        gamma = self.xp.ones((n_out, 1), dtype=self.dtype)
        return Dense(W, None, g, BatchNorm(n_out, self.xp, self.dtype), gamma, b)

    def output(self, n_in: int, n_out: int) -> Dense:
        """The output layer: affine only (the head applies its activation), never normalized."""
        return self.dense(n_in, n_out, activation="linear", batchnorm=False)


def mlp(builder: Builder, sizes: list[int], head: str) -> Network:
    """A multilayer perceptron with layer sizes `[n0, n1, ..., nL]` (len 2 = no hidden layer)."""
    if len(sizes) < 2 or any(n < 1 for n in sizes):
        raise ValueError(f"sizes must list at least input and output widths, all >= 1; got {sizes}")
    hidden = [builder.dense(n_in, n_out) for n_in, n_out in zip(sizes[:-2], sizes[1:-1])]
    return Network([*hidden, builder.output(sizes[-2], sizes[-1])], get_head(head), sizes[0])


def logistic_regression(builder: Builder, n_inputs: int) -> Network:
    """a = sigma(w^T x + b): one neuron with BCE (§2)."""
    return mlp(builder, [n_inputs, 1], "sigmoid_bce")


def softmax_regression(builder: Builder, n_inputs: int, n_classes: int) -> Network:
    """a = softmax(W x + b) with cross-entropy (§3.1)."""
    return mlp(builder, [n_inputs, n_classes], "softmax_ce")


def residual_mlp(builder: Builder, n_inputs: int, width: int, depth: int, n_outputs: int, head: str) -> Network:
    """`depth` hidden layers of `width`: one input layer, then depth - 1 residual blocks."""
    if depth < 1 or width < 1:
        raise ValueError(f"residual_mlp needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
    layers: list[Any] = [builder.dense(n_inputs, width)]
    layers += [Residual(builder.dense(width, width)) for _ in range(depth - 1)]
    layers.append(builder.output(width, n_outputs))
    return Network(layers, get_head(head), n_inputs)


def cnn1d(builder: Builder, n_inputs: int, channels: list[int], kernel_size: int, n_outputs: int, head: str,
          stride: int = 1, hidden: int | None = None, padding: str = "same") -> Network:
    """A 1-D CNN (§11.3): X `(n_inputs, m)` -> Reshape `(1, n_inputs, m)` -> Conv1D per entry of
    `channels` (kernel `(c_out, c_in, kernel_size)`, the builder's activation and init) -> Flatten
    `(c_last L_last, m)` -> optional hidden Dense of width `hidden` -> affine output layer.
    """
    from nnresearch.nn.conv import Conv1D, Flatten, Reshape, conv_geometry

    if not channels or any(c < 1 for c in channels):
        raise ValueError(f"cnn1d needs a non-empty list of channel counts, all >= 1; got channels={channels}")
    if kernel_size < 1 or n_inputs < 1 or n_outputs < 1 or (hidden is not None and hidden < 1):
        raise ValueError(f"cnn1d needs kernel_size, n_inputs, n_outputs (and hidden) >= 1; got kernel_size="
                         f"{kernel_size}, n_inputs={n_inputs}, n_outputs={n_outputs}, hidden={hidden}")
    if builder.batchnorm:
        raise ValueError("cnn1d has no BatchNorm for its Conv1D layers; build it with batchnorm=False")
    g = get_activation(builder.activation, builder.alpha)
    layers: list[Any] = [Reshape((1, n_inputs))]
    c_in, length = 1, n_inputs
    for c_out in channels:
        length = conv_geometry(length, kernel_size, stride, padding)[0]  # ValueError if the kernel does not fit
        layers.append(Conv1D(builder.weights((c_out, c_in, kernel_size)), builder.bias((c_out, 1, 1)), g,
                             stride=stride, padding=padding))
        c_in = c_out
    layers.append(Flatten())
    width = c_in * length
    if hidden is not None:
        layers.append(builder.dense(width, hidden))
        width = hidden
    layers.append(builder.output(width, n_outputs))
    return Network(layers, get_head(head), n_inputs)
