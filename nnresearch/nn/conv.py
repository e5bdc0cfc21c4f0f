"""1-D convolution for the inductive-bias study (chapter §11.3: MLP vs CNN on MNIST-1D).

Activations stay batch-last as everywhere in the core: a dense layer sees `(n[l], m)`, a
convolutional layer sees `(channels, length, m)`. `Reshape` and `Flatten` move between the two.

`Conv1D` is written with im2col: the k shifted (and strided) slices of the zero-padded input are
stacked into one column matrix `(c_in k, L_out m)`, so the whole layer is one matmul with the
kernel flattened to `(c_out, c_in k)`; backward is two matmuls and a scatter-add of the columns
back onto the input positions they were read from. Only array-API calls are used (slicing,
`stack`, `concat`, `reshape`, matmul), so it runs on NumPy, CuPy and `array_api_strict`.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from nnresearch.backend import namespace
from nnresearch.nn.activations import Activation

Array = Any
PADDINGS = ("same", "valid")


def _zeros(xp: Any, shape: tuple[int, ...], like: Array) -> Array:
    """Zeros of `shape` with the dtype and device of `like`."""
    return xp.zeros(shape, dtype=like.dtype, device=array_api_compat.device(like))


def conv_geometry(length: int, k: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(L_out, pad_left, pad_right) of a 1-D convolution over `length` positions.

    valid: no padding, L_out = floor((L - k) / stride) + 1, needs k <= L.
    same:  L_out = ceil(L / stride) with total padding (L_out - 1) stride + k - L split as evenly
           as possible, the odd zero on the right (TensorFlow's convention, and PyTorch's for stride 1); with
           stride 1 and odd k that is (k - 1) / 2 zeros on each side and L_out = L.
    """
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; expected one of {', '.join(PADDINGS)}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if k < 1:
        raise ValueError(f"kernel size k={k} must be >= 1")
    if padding == "valid":
        if k > length:
            raise ValueError(f"kernel size k={k} is larger than the input length {length} with padding='valid'; "
                             "use a kernel size <= the length or padding='same'")
        return (length - k) // stride + 1, 0, 0
    L_out = -(-length // stride)
    total = max((L_out - 1) * stride + k - length, 0)
    return L_out, total // 2, total - total // 2


class Reshape:
    """(n, m) -> (*shape, m): the batch stays the last axis; backward reshapes dA back."""

    units: tuple[Any, ...] = ()  # no parameters: not one of the numbered layers W1, b1, ...

    def __init__(self, shape: tuple[int, ...]) -> None:
        if not shape or any(int(s) < 1 for s in shape):
            raise ValueError(f"Reshape needs a non-empty shape of positive sizes, got {shape}")
        self.shape = tuple(int(s) for s in shape)

    def forward(self, A_prev: Array, train: bool = False) -> Array:
        *features, m = A_prev.shape
        if math.prod(features) != math.prod(self.shape):
            raise ValueError(f"cannot reshape an input of shape {tuple(A_prev.shape)} to {(*self.shape, m)}: "
                             f"{math.prod(features)} features per example, {math.prod(self.shape)} expected")
        self.input_shape = tuple(A_prev.shape)
        return namespace(A_prev).reshape(A_prev, (*self.shape, m))

    def backward(self, dA: Array) -> Array:
        return namespace(dA).reshape(dA, self.input_shape)


class Flatten:
    """(c, L, m) -> (c L, m), channel-major (row c holds positions c L .. c L + L - 1); backward undoes it."""

    units: tuple[Any, ...] = ()  # no parameters: not one of the numbered layers W1, b1, ...

    def forward(self, A_prev: Array, train: bool = False) -> Array:
        self.input_shape = tuple(A_prev.shape)
        m = A_prev.shape[-1]
        return namespace(A_prev).reshape(A_prev, (math.prod(A_prev.shape[:-1]), m))

    def backward(self, dA: Array) -> Array:
        return namespace(dA).reshape(dA, self.input_shape)


class Conv1D:
    """Z[c_o, t, i] = sum_{c, j} W[c_o, c, j] A_prev_pad[c, t stride + j, i] + b[c_o];  A = g(Z).

    A_prev is `(c_in, L, m)`, W `(c_out, c_in, k)`, b `(c_out, 1, 1)`, Z and A `(c_out, L_out, m)`;
    A_prev_pad is A_prev with pad_left zeros before and pad_right after along the length axis
    (see `conv_geometry`). As a matmul: Z = W_flat @ cols + b, with W_flat `(c_out, c_in k)` and
    cols[(c, j), (t, i)] = A_prev_pad[c, t stride + j, i] of shape `(c_in k, L_out m)`.
    """

    def __init__(self, W: Array, b: Array, activation: Activation, stride: int = 1, padding: str = "same") -> None:
        if len(W.shape) != 3:
            raise ValueError(f"Conv1D needs a kernel W of shape (c_out, c_in, k), got shape {tuple(W.shape)}")
        c_out = W.shape[0]
        if tuple(b.shape) != (c_out, 1, 1):
            raise ValueError(f"Conv1D bias b must have shape ({c_out}, 1, 1), got {tuple(b.shape)}")
        conv_geometry(W.shape[2], W.shape[2], stride, padding)  # ValueError for a bad stride or padding
        self.activation = activation
        self.stride = stride
        self.padding = padding
        self.params = {"W": W, "b": b}
        self.grads: dict[str, Array] = {}

    @property
    def units(self) -> tuple[Conv1D, ...]:
        """The numbered layers inside this one: just itself (its kernel is W[l], its bias b[l])."""
        return (self,)

    @property
    def buffers(self) -> dict[str, Array]:
        """No non-trained state."""
        return {}

    def forward(self, A_prev: Array, train: bool = False) -> Array:
        """A = g(W_flat @ cols + b), reshaped to `(c_out, L_out, m)`; keeps A_prev, cols, Z, A."""
        xp = namespace(A_prev)
        W, b = self.params["W"], self.params["b"]
        c_out, c_in, k = W.shape
        if len(A_prev.shape) != 3 or A_prev.shape[0] != c_in:
            raise ValueError(f"Conv1D with c_in={c_in} needs input of shape ({c_in}, length, m), "
                             f"got {tuple(A_prev.shape)}")
        _, length, m = A_prev.shape
        L_out, pad_left, pad_right = conv_geometry(length, k, self.stride, self.padding)
        self.A_prev, self.geometry = A_prev, (L_out, pad_left, pad_right)
        self.cols = self._im2col(xp, self._pad(xp, A_prev, pad_left, pad_right), k, L_out)
        Z = xp.reshape(xp.reshape(W, (c_out, c_in * k)) @ self.cols, (c_out, L_out, m))
        self.Z = self.Z_act = Z + b  # Z_act: the input of g, as in Dense (no normalization here)
        self.A = self.activation.forward(self.Z)
        return self.A

    def backward(self, dA: Array, input_grad: bool = True) -> Array | None:
        """delta = dA * g'(Z); dW = sum_{t,i} delta cols^T / m, db = sum_{t,i} delta / m; returns dA_prev
        (None with `input_grad=False`: the first layer skips W^T delta and the col2im scatter).

        dA_prev is the scatter-add of dcols = W_flat^T delta: column entry (c, j), (t, i) goes back
        to A_prev_pad[c, t stride + j, i]; the padded border is then cut off.
        """
        xp = namespace(dA)
        W = self.params["W"]
        c_out, c_in, k = W.shape
        _, length, m = self.A_prev.shape
        L_out, pad_left, pad_right = self.geometry
        self.delta = dA * self.activation.derivative(self.Z, self.A)
        D = xp.reshape(self.delta, (c_out, L_out * m))
        self.grads["W"] = xp.reshape(D @ self.cols.T, (c_out, c_in, k)) / m
        self.grads["b"] = xp.sum(self.delta, axis=(1, 2), keepdims=True) / m
        if not input_grad:
            return None
        dcols = xp.reshape(xp.reshape(W, (c_out, c_in * k)).T @ D, (c_in, k, L_out, m))
        dA_pad = self._col2im(xp, dcols, pad_left + length + pad_right)
        return dA_pad[:, pad_left:pad_left + length, :]

    # ---- im2col and its adjoint ------------------------------------------------------------
    @staticmethod
    def _pad(xp: Any, A: Array, left: int, right: int) -> Array:
        """A with `left` and `right` zero positions added along the length axis (axis 1)."""
        if left == 0 and right == 0:
            return A
        c, _, m = A.shape
        return xp.concat([_zeros(xp, (c, left, m), A), A, _zeros(xp, (c, right, m), A)], axis=1)

    def _im2col(self, xp: Any, A_pad: Array, k: int, L_out: int) -> Array:
        """cols[(c, j), (t, i)] = A_pad[c, t stride + j, i]: k strided slices stacked, `(c_in k, L_out m)`."""
        c_in, _, m = A_pad.shape
        span = self.stride * (L_out - 1) + 1
        shifted = [A_pad[:, j:j + span:self.stride, :] for j in range(k)]
        return xp.reshape(xp.stack(shifted, axis=1), (c_in * k, L_out * m))

    def _col2im(self, xp: Any, dcols: Array, padded_length: int) -> Array:
        """Adjoint of `_im2col`: dA_pad[c, t stride + j, i] += dcols[c, j, t, i] for every j, t."""
        c_in, k, L_out, m = dcols.shape
        span = self.stride * (L_out - 1) + 1
        dA_pad = _zeros(xp, (c_in, padded_length, m), dcols)
        for j in range(k):
            dA_pad[:, j:j + span:self.stride, :] += dcols[:, j, :, :]
        return dA_pad
