"""Central-difference gradient checking in float64.

For every parameter entry theta_i: (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps) is compared
with the backpropagated dJ/dtheta_i. The error of one parameter array is
||g_numeric - g_backprop|| / max(||g_numeric|| + ||g_backprop||, 1e-7), about 1e-8 or below
when backprop is right and eps = 1e-6.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnresearch.backend import namespace, to_numpy
from nnresearch.nn.network import Network

Array = Any


def numerical_gradient(network: Network, X: Array, Y: Array, name: str, eps: float, entries: list[tuple[int, ...]]) -> np.ndarray:
    """Central differences of J for the listed entries of parameter `name`."""
    param = network.params()[name]
    values = []
    for index in entries:
        original = float(param[index])
        param[index] = original + eps
        plus = _cost(network, X, Y)
        param[index] = original - eps
        minus = _cost(network, X, Y)
        param[index] = original
        values.append((plus - minus) / (2 * eps))
    return np.asarray(values)


def _cost(network: Network, X: Array, Y: Array) -> float:
    network.forward(X, train=True)
    return float(network.cost(Y))


def gradient_check(network: Network, X: Array, Y: Array, eps: float = 1e-6, max_entries: int = 60,
                   seed: int = 0) -> dict[str, float]:
    """Relative error between backprop and central differences, per parameter name.

    Needs a float64 network and batch. Parameters with more than `max_entries` entries are
    checked on a random subset of that size (drawn with `seed`). BatchNorm runs in train mode,
    its running statistics restored afterwards.
    """
    if network.params()["W1"].dtype != namespace(X).float64:
        raise TypeError("gradient_check needs a float64 network and data (float32 differences are too coarse)")
    buffers = dict(network.buffers())
    network.loss_and_gradients(X, Y)
    analytic = {name: to_numpy(g) for name, g in network.grads().items()}
    rng = np.random.default_rng(seed)
    errors = {}
    for name, grad in analytic.items():
        all_entries = list(np.ndindex(grad.shape))
        if len(all_entries) > max_entries:
            picks = rng.choice(len(all_entries), size=max_entries, replace=False)
            all_entries = [all_entries[i] for i in sorted(picks)]
        numeric = numerical_gradient(network, X, Y, name, eps, all_entries)
        backprop = np.asarray([grad[i] for i in all_entries])
        denominator = max(np.linalg.norm(numeric) + np.linalg.norm(backprop), 1e-7)
        errors[name] = float(np.linalg.norm(numeric - backprop) / denominator)
    network.load_state(network.params() | buffers)
    return errors
