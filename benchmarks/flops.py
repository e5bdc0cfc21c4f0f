"""FLOPs of one training step of an MLP, and this machine's float32 matmul peak.

Counting only the matrix products (elementwise work is O(m n) against O(m n_in n_out)):

    forward, layer l:   Z = W A_prev               2 m n_in n_out
    backward, layer l:  dW = delta A_prev^T        2 m n_in n_out
                        dA_prev = W^T delta        2 m n_in n_out   (not for the first layer)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.timing import best_of


def step_flops(sizes: list[int], m: int) -> int:
    """Matmul FLOPs of forward + backward for layer sizes `[n0, ..., nL]` and batch `m`."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * m * n_in * n_out for n_in, n_out in pairs)
    first = 2 * m * sizes[0] * sizes[1]
    return forward + 2 * forward - first


def square_matmul(n: int, seed: int = 0):
    """A callable doing one float32 `(n, n) @ (n, n)` product: 2 n^3 FLOPs."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)

    def product() -> None:
        a @ b

    return product


def matmul_peak(sides: tuple[int, ...], repeats: int, seed: int = 0) -> dict[str, float]:
    """Best-of-`repeats` float32 FLOP/s of np.matmul on square matrices, per side and overall."""
    out = {f"numpy_{n}": 2.0 * n**3 / best_of(square_matmul(n, seed), repeats) for n in sides}
    out["peak"] = max(out.values())
    return out


def gemm_only(sizes: list[int], m: int, seed: int = 0, xp: Any = np):
    """A step's matrix products and nothing else (the floor for any implementation on `xp`).

    Returns a callable performing exactly the products counted by `step_flops`, on preallocated
    float32 arrays of the step's shapes in the namespace `xp` (NumPy, or CuPy for the GPU part).
    """
    rng = np.random.default_rng(seed)
    Ws = [xp.asarray(rng.standard_normal((n_out, n_in), dtype=np.float32)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    As = [xp.asarray(rng.standard_normal((n, m), dtype=np.float32)) for n in sizes[:-1]]
    deltas = [xp.asarray(rng.standard_normal((n, m), dtype=np.float32)) for n in sizes[1:]]

    def products() -> None:
        for W, A in zip(Ws, As):
            W @ A
        for index, (W, A, delta) in enumerate(zip(Ws, As, deltas)):
            delta @ A.T
            if index > 0:
                W.T @ delta

    return products
