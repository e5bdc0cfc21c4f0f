"""Activation functions g and their derivatives g' (chapter §5), as one table.

Each entry is `name -> (g, g_prime)`; `g(Z)` returns A and `g_prime(Z, A)` returns dA/dZ
elementwise. sigmoid' and tanh' are computed from Z, not as the chapter's sigma (1 - sigma) and
1 - tanh^2 of the kept A, which round to 0 once A rounds to 1 (float32: z > ~16.6 and |z| > ~9). Shapes: Z and A are `(n[l], m)`; everything keeps Z's dtype.

Value of the derivative at z = 0 (where relu and leaky_relu have a kink): relu'(0) = 0, the
chapter's indicator 1[z > 0]; leaky_relu'(0) = alpha. All others are smooth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from nnresearch.backend import erf, namespace

Array = Any
SQRT_2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


def sigmoid(Z: Array) -> Array:
    """sigma(z) = 1 / (1 + e^-z), evaluated as e^-|z| based branches: no overflow for any |z|."""
    xp = namespace(Z)
    e = xp.exp(-xp.abs(Z))
    r = 1.0 / (1.0 + e)
    return xp.where(Z >= 0, r, e * r)


def sigmoid_prime(Z: Array, A: Array) -> Array:
    """sigma'(z) = sigma(z) (1 - sigma(z)) = e / (1 + e)^2 with e = e^-|z|, in (0, 0.25].

    From z, not from A: in float32 sigma(z) rounds to 1 for z > ~16.6, so A (1 - A) would be 0
    there (and off by 17% at z = 15) while sigma'(-z), the same number, stays exact."""
    xp = namespace(Z)
    e = xp.exp(-xp.abs(Z))
    r = 1.0 / (1.0 + e)
    return e * r * r


def tanh(Z: Array) -> Array:
    """tanh(z) = (e^z - e^-z) / (e^z + e^-z)."""
    return namespace(Z).tanh(Z)


def tanh_prime(Z: Array, A: Array) -> Array:
    """tanh'(z) = 1 - tanh(z)^2 = 4 e / (1 + e)^2 with e = e^-2|z|, in (0, 1].

    From z, not from A: in float32 tanh(z) rounds to +-1 for |z| > ~9, where 1 - A^2 would be 0."""
    return 4.0 * sigmoid_prime(2.0 * Z, A)  # tanh'(z) = 4 sigma'(2z); the doubling and the 4 are exact


def relu(Z: Array) -> Array:
    """relu(z) = max(0, z)."""
    return namespace(Z).maximum(Z, 0.0)


def relu_prime(Z: Array, A: Array) -> Array:
    """relu'(z) = 1[z > 0] (0 at z = 0)."""
    xp = namespace(Z)
    return xp.astype(Z > 0, Z.dtype)


def leaky_relu(Z: Array, alpha: float = 0.01) -> Array:
    """leaky_relu(z) = z for z > 0, alpha z otherwise (= max(alpha z, z) for alpha < 1)."""
    return namespace(Z).where(Z > 0, Z, alpha * Z)


def leaky_relu_prime(Z: Array, A: Array, alpha: float = 0.01) -> Array:
    """leaky_relu'(z) = 1 for z > 0, alpha otherwise (alpha at z = 0)."""
    xp = namespace(Z)
    return xp.where(Z > 0, xp.ones_like(Z), xp.full_like(Z, alpha))


def gelu(Z: Array) -> Array:
    """gelu(z) = z Phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2 (exact, erf-based)."""
    return Z * (0.5 * (1.0 + erf(Z / SQRT_2)))


def gelu_prime(Z: Array, A: Array) -> Array:
    """gelu'(z) = Phi(z) + z phi(z), phi(z) = e^(-z^2/2) / sqrt(2 pi)."""
    xp = namespace(Z)
    return 0.5 * (1.0 + erf(Z / SQRT_2)) + Z * (INV_SQRT_2PI * xp.exp(-0.5 * Z * Z))


def gelu_tanh(Z: Array) -> Array:
    """gelu_tanh(z) = z (1 + tanh(u)) / 2, u = sqrt(2/pi) (z + 0.044715 z^3) (the GPT-2 approximation)."""
    xp = namespace(Z)
    return 0.5 * Z * (1.0 + xp.tanh(SQRT_2_OVER_PI * (Z + GELU_TANH_C * Z * Z * Z)))


def gelu_tanh_prime(Z: Array, A: Array) -> Array:
    """d/dz of gelu_tanh: (1 + t)/2 + z (1 - t^2) u'(z) / 2, t = tanh(u), u' = sqrt(2/pi)(1 + 3 c z^2)."""
    xp = namespace(Z)
    t = xp.tanh(SQRT_2_OVER_PI * (Z + GELU_TANH_C * Z * Z * Z))
    du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * Z * Z)
    return 0.5 * (1.0 + t) + 0.5 * Z * (1.0 - t * t) * du


def linear(Z: Array) -> Array:
    """linear(z) = z: no non-linearity (the deep linear networks of §11.4 collapse to one map)."""
    return Z


def linear_prime(Z: Array, A: Array) -> Array:
    """linear'(z) = 1."""
    return namespace(Z).ones_like(Z)


ACTIVATIONS: dict[str, tuple[Callable[..., Array], Callable[..., Array]]] = {
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (tanh, tanh_prime),
    "relu": (relu, relu_prime),
    "leaky_relu": (leaky_relu, leaky_relu_prime),
    "gelu": (gelu, gelu_prime),
    "gelu_tanh": (gelu_tanh, gelu_tanh_prime),
    "linear": (linear, linear_prime),
}


@dataclass(frozen=True)
class Activation:
    """One activation with its parameters bound: `forward(Z) -> A`, `derivative(Z, A) -> g'(Z)`."""

    name: str
    forward: Callable[[Array], Array]
    derivative: Callable[[Array, Array], Array]


def get_activation(name: str, alpha: float = 0.01) -> Activation:
    """The activation called `name`; `alpha` is leaky_relu's negative slope (ignored otherwise)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid activations: {', '.join(ACTIVATIONS)}")
    g, g_prime = ACTIVATIONS[name]
    if name == "leaky_relu":
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"leaky_relu alpha must be in [0, 1), got {alpha}")
        g, g_prime = partial(g, alpha=alpha), partial(g_prime, alpha=alpha)
    return Activation(name, g, g_prime)
