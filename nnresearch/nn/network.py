"""A feed-forward network: a stack of layers and an output head (chapter §4, §8, §9).

Forward: A[0] = X, A[l] = layer_l(A[l-1]), A[L] = head.activate(Z[L]).
Backward: delta[L] = head.delta(Z[L], A[L], Y), then each layer turns dA[l] into dA[l-1].
Parameters are exposed as one flat mapping in the chapter's names: W1, b1, ..., WL, bL (plus
gamma_l, beta_l for BatchNorm layers), numbered over the layers that carry weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nnresearch import backend
from nnresearch.backend import namespace
from nnresearch.nn.losses import ONE_HOT_HEADS, Head
from nnresearch.files import replaced_atomically

Array = Any


class NonFiniteError(ArithmeticError):
    """Training produced NaN or inf: carries the step and the first layer where it appeared."""

    def __init__(self, step: int, layer: str, quantity: str) -> None:
        super().__init__(f"non-finite {quantity} at step {step} in layer {layer}")
        self.step, self.layer, self.quantity = step, layer, quantity


class Network:
    """Layers (each with forward/backward) plus a head; `n_inputs` = n[0]."""

    def __init__(self, layers: list[Any], head: Head, n_inputs: int, input_shape: tuple[int, ...] | None = None) -> None:
        self.layers = layers
        self.head = head
        self.n_inputs = n_inputs
        self.input_shape = input_shape or (n_inputs,)
        self.units = [unit for layer in layers for unit in layer.units]

    # ---- forward and backward ------------------------------------------------------------
    def forward(self, X: Array, train: bool = False) -> Array:
        """A[L] for the batch X `(n[0], m)`; keeps every layer's cache for backward."""
        A = X
        for layer in self.layers:
            A = layer.forward(A, train)
        self.Z_L = A
        self.A_L = self.head.activate(A)
        return self.A_L

    def cost(self, Y: Array) -> Array:
        """J = (1/m) sum_i L(A[L](i), y(i)) for the batch of the last forward."""
        self._check_targets(Y)
        return self.head.cost(self.Z_L, self.A_L, Y)

    def _check_targets(self, Y: Array) -> None:
        """ValueError unless Y has A[L]'s shape `(n[L], m)`: integer labels `(1, m)` or `(m,)` would
        broadcast into a wrong loss and wrong gradients without a word."""
        if tuple(Y.shape) != tuple(self.A_L.shape):
            raise ValueError(f"Y has shape {tuple(Y.shape)}; expected {tuple(self.A_L.shape)} like A[L] (outputs first, "
                             "examples in columns; class labels one-hot)")

    def backward(self, Y: Array) -> None:
        """Fills every layer's `grads` with dJ/dparam for the batch of the last forward.

        dJ/dA[0], the gradient for the input X, is never used: the first layer with parameters
        skips its W^T delta (`input_grad=False`), and parameter-free layers before it are not visited.
        """
        self._check_targets(Y)
        self.delta_L = self.head.delta(self.Z_L, self.A_L, Y)
        first = next(index for index, layer in enumerate(self.layers) if layer.units)
        last = len(self.layers) - 1
        dA = self.layers[last].backward_pre_activation(self.delta_L, input_grad=last > first)
        for index in range(last - 1, first, -1):
            dA = self.layers[index].backward(dA)
        if first < last:
            self.layers[first].backward(dA, input_grad=False)

    def loss_and_gradients(self, X: Array, Y: Array, train: bool = True) -> Array:
        """Forward, cost and backward on one batch; returns J (a 0-d array) and leaves the grads."""
        self.forward(X, train)
        J = self.cost(Y)
        self.backward(Y)
        return J

    def accuracy(self, Y: Array) -> Array | None:
        """Accuracy of the last forward's A[L] against Y, or None for regression heads."""
        return None if self.head.accuracy is None else self.head.accuracy(self.A_L, Y)

    # ---- parameters ------------------------------------------------------------------------
    def _named(self, kind: str) -> Iterator[tuple[str, Any, str]]:
        for index, unit in enumerate(self.units, start=1):
            for local in getattr(unit, kind):
                yield f"{local}{index}", unit, local

    def params(self) -> dict[str, Array]:
        """{'W1': W[1], 'b1': b[1], ...}: the live arrays (an in-place update changes the network)."""
        return {name: unit.params[local] for name, unit, local in self._named("params")}

    def grads(self) -> dict[str, Array]:
        """dJ/dparam under the same names as `params()`, from the last backward."""
        return {name: unit.grads[local] for name, unit, local in self._named("params")}

    def buffers(self) -> dict[str, Array]:
        """Non-trained state: BatchNorm running statistics (`running_mean2`, ...)."""
        return {name: unit.buffers[local] for name, unit, local in self._named("buffers")}

    def state(self) -> dict[str, Array]:
        """Everything that defines the network's function: params and buffers."""
        return self.params() | self.buffers()

    def parameter_count(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.params().values())

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace params and buffers from a mapping of arrays (any backend, NumPy included).

        Every name, shape and finiteness is checked before anything changes, so a bad mapping
        leaves the network as it was.
        """
        current = self.state()
        missing, unexpected = set(current) - set(state), set(state) - set(current)
        if missing or unexpected:
            raise ValueError(f"state names do not match the network: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        xp = namespace(next(iter(current.values())))
        converted = {}
        for name, old in current.items():
            new = np.asarray(backend.to_numpy(state[name]))
            if tuple(new.shape) != tuple(old.shape):
                raise ValueError(f"{name} has shape {tuple(new.shape)}, the network expects {tuple(old.shape)}")
            if not np.all(np.isfinite(new)):
                raise ValueError(f"{name} contains NaN or inf")
            converted[name] = xp.asarray(new, dtype=old.dtype, copy=True)  # the caller's arrays stay the caller's
        for name, unit, local in self._named("params"):
            unit.params[local] = converted[name]
        for name, unit, local in self._named("buffers"):
            unit.buffers[local] = converted[name]

    def save(self, path: str | Path) -> None:
        """Write the state to `.npz` (W1, b1, ...) atomically: a crash never leaves a half-written file."""
        save_npz(path, {name: backend.to_numpy(a) for name, a in self.state().items()})

    def load(self, path: str | Path) -> None:
        """Load a state saved by `save` (read with allow_pickle=False)."""
        self.load_state(load_npz(path))

    # ---- checks ----------------------------------------------------------------------------
    def check_batch(self, X: Array, Y: Array) -> None:
        """ValueError/TypeError naming the problem if X, Y do not fit this network."""
        xp = namespace(X)
        dtype = self.params()["W1"].dtype
        expected = (*self.input_shape, X.shape[-1])
        if tuple(X.shape) != expected:
            raise ValueError(f"X has shape {tuple(X.shape)}; expected {expected} (features first, examples in columns)")
        if X.dtype != dtype or Y.dtype != dtype:
            raise TypeError(f"X and Y must have the network's dtype {dtype}, got {X.dtype} and {Y.dtype}")
        n_out = self.units[-1].params["W"].shape[0]
        if tuple(Y.shape) != (n_out, X.shape[-1]):
            raise ValueError(f"Y has shape {tuple(Y.shape)}; expected ({n_out}, {X.shape[-1]})")
        if not bool(xp.all(xp.isfinite(X))) or not bool(xp.all(xp.isfinite(Y))):
            raise ValueError("X or Y contains NaN or inf")
        if self.head.accuracy is not None and not bool(xp.all((Y >= 0) & (Y <= 1))):
            raise ValueError(f"labels out of range for head {self.head.name}: targets must be in [0, 1] (one-hot / multi-hot)")
        if self.head.name in ONE_HOT_HEADS and not self.head.multi_hot:
            column_sums = xp.sum(Y, axis=0)
            if not bool(xp.all(xp.abs(column_sums - 1.0) < 1e-3)):
                raise ValueError("softmax targets must be one-hot: every column of Y has to sum to 1")

    def first_non_finite(self) -> tuple[str, str]:
        """(layer, quantity) of the first NaN/inf in parameters, the last forward's activations or the
        head's output A[L] (a naive softmax whose e^z overflowed); ("output", "loss") when all are finite."""
        for index, unit in enumerate(self.units, start=1):
            xp = namespace(unit.params["W"])
            for local, array in unit.params.items():
                if not bool(xp.all(xp.isfinite(array))):
                    return f"layer{index}", f"parameter {local}{index}"
            for quantity in ("Z", "A"):
                array = getattr(unit, quantity, None)
                if array is not None and not bool(xp.all(xp.isfinite(array))):
                    return f"layer{index}", f"{quantity}[{index}]"
        A_L = getattr(self, "A_L", None)  # None before the first forward
        if A_L is not None and not bool(namespace(A_L).all(namespace(A_L).isfinite(A_L))):
            return "output", "A[L]"
        return "output", "loss"


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez to `path` through `files.replaced_atomically`: a crash never leaves a half-written file,
    and the file gets the permissions of any new file (0666 less the umask), so a team shares
    checkpoints as it shares the rest of its files (`tempfile.mkstemp` would make them 0600)."""
    with replaced_atomically(path) as tmp, open(tmp, "xb") as f:
        np.savez(f, **arrays)


def load_npz(path: str | Path, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Arrays from an `.npz` (only those of `names` it holds, if given), never unpickling; a clear
    error for a missing, corrupt or truncated file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such parameter file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files if names is None or name in names}
    except Exception as error:  # zipfile.BadZipFile, EOFError, ValueError on truncated or foreign files
        raise ValueError(f"{path} is not a readable .npz file ({type(error).__name__}: {error})") from error
