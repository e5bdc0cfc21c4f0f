"""The array backend: which namespace (`xp`) runs the maths, and the one seam for randomness.

The core (`nnresearch/nn/`) only ever calls `namespace(*arrays)` and the array-API functions of
the namespace it returns, so the same code runs on NumPy, CuPy and `array_api_strict`.

Randomness: the array API has no random module, so every random draw goes through a
`numpy.random.Generator` that the caller owns; the draw is made on the host and moved to the
target namespace with `xp.asarray`. The same seed therefore gives bit-identical numbers on every
backend.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from nnresearch import blas

DEVICES = ("cpu", "gpu", "auto")
DTYPES = ("float32", "float64")


_NAMESPACE_OF_TYPE: dict[type, types.ModuleType] = {}


def namespace(*arrays: Any) -> types.ModuleType:
    """The array namespace shared by `arrays`.

    NumPy >= 2 is array-API compatible in its main namespace, so NumPy arrays get `numpy` itself
    (no wrapper overhead on every call); everything else goes through `array_api_compat`, whose
    answer for arrays of one type is remembered per type. The core asks on every operation, and
    the lookup cost ~3 us for CuPy arrays (beside a ~12 us kernel launch) and tens of us for
    array_api_strict's, the test backend.
    """
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np
    kind = type(arrays[0])
    single_type = all(type(a) is kind for a in arrays)
    if single_type and kind in _NAMESPACE_OF_TYPE:
        return _NAMESPACE_OF_TYPE[kind]
    import array_api_compat

    xp = array_api_compat.array_namespace(*arrays)
    if single_type:
        _NAMESPACE_OF_TYPE[kind] = xp
    return xp


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CuPy missing, or installed without a driver / device
        return False


def select(device: str = "cpu") -> types.ModuleType:
    """The namespace for a device choice: "cpu" -> NumPy, "gpu" -> CuPy, "auto" -> CuPy if usable."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device == "cpu" or (device == "auto" and not gpu_available()):
        return np
    if not gpu_available():
        raise ValueError("device='gpu' needs CuPy and a CUDA device; use device=cpu or device=auto")
    import array_api_compat.cupy

    return array_api_compat.cupy


def backend_name(xp: types.ModuleType) -> str:
    """A short name for logs: numpy, cupy or array_api_strict."""
    return xp.__name__.split(".")[-1]


def dtype_of(xp: types.ModuleType, name: str) -> Any:
    """`xp.float32` or `xp.float64` from its name, with a clear error for anything else."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return getattr(xp, name)


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy of any backend's array (CuPy via `.get()`, others via DLPack)."""
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    if hasattr(x, "get"):
        return x.get()
    return np.from_dlpack(x)


def make_rng(seed: int) -> np.random.Generator:
    """The generator every random draw of one run comes from."""
    return np.random.default_rng(seed)


def derived_rng(rng: np.random.Generator, *key: int) -> np.random.Generator:
    """An independent generator for a side stream of the run `rng` belongs to (e.g. a probe's
    batches): seeded by the run's SeedSequence extended by the spawn key `key`, so it depends on
    the run's seed and `key` only, and `rng`'s own stream is not advanced."""
    seed = rng.bit_generator.seed_seq
    return np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, *key)))


def normal(rng: np.random.Generator, shape: tuple[int, ...], std: float, xp: types.ModuleType, dtype: Any) -> Any:
    """N(0, std^2) samples of `shape` as an `xp` array of `dtype` (drawn in float64, then cast)."""
    return xp.asarray(rng.standard_normal(shape) * std, dtype=dtype)


def uniform(rng: np.random.Generator, shape: tuple[int, ...], limit: float, xp: types.ModuleType, dtype: Any) -> Any:
    """U(-limit, limit) samples of `shape` as an `xp` array of `dtype` (drawn in float64, then cast)."""
    return xp.asarray(rng.uniform(-limit, limit, size=shape), dtype=dtype)


def permutation(rng: np.random.Generator, n: int, xp: types.ModuleType) -> Any:
    """A random ordering of range(n) as an index array of `xp`."""
    return xp.asarray(rng.permutation(n))


AXPY_CHUNK = 1 << 16  # elements: 256 KiB of float32, a temporary that stays in a core's L2 cache


def axpy(alpha: float, x: Any, y: Any) -> None:
    """y := alpha x + y, in place; `x` and `y` of one shape and dtype.

    The plain `y += alpha * x` writes alpha x to a temporary the size of y and reads it back, on
    one core: for a large NumPy array that temporary goes through main memory. A contiguous NumPy
    array larger than `AXPY_CHUNK` elements is instead updated by NumPy's own BLAS
    (`nnresearch.blas`: one pass, on BLAS's threads; its fused multiply-add can differ from the
    plain expression in the last bit) or, where that BLAS has no axpy, in chunks of `AXPY_CHUNK`
    elements through one small buffer that stays in the cache, so main memory sees x and y read and
    y written once. Every other array (CuPy, array_api_strict, a strided, read-only or overlapping
    view, a broadcast x, a small one) takes `y += alpha * x`.
    """
    if not (isinstance(y, np.ndarray) and isinstance(x, np.ndarray) and y.size > AXPY_CHUNK
            and x.shape == y.shape and x.dtype == y.dtype and x.flags.c_contiguous and y.flags.c_contiguous
            and y.flags.writeable and (x is y or not np.may_share_memory(x, y))):
        y += alpha * x
        return
    routine = blas.axpy_routine(y.dtype)
    if routine is not None:
        routine(alpha, x, y)
        return
    x_flat, y_flat = x.reshape(-1), y.reshape(-1)
    buffer = np.empty(AXPY_CHUNK, dtype=y.dtype)
    for start in range(0, y.size, AXPY_CHUNK):
        stop = min(start + AXPY_CHUNK, y.size)
        scaled = buffer[: stop - start]
        np.multiply(x_flat[start:stop], alpha, out=scaled)
        y_flat[start:stop] += scaled


def erf(x: Any) -> Any:
    """The error function, elementwise, keeping the dtype (the array API has no erf).

    NumPy -> scipy.special, CuPy -> cupyx.scipy.special; any other namespace goes through NumPy
    and back, which is only used by the strict test backend.
    """
    xp = namespace(x)
    if xp is np:
        from scipy.special import erf as scipy_erf

        return scipy_erf(x)
    if backend_name(xp) == "cupy":
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x)
    from scipy.special import erf as scipy_erf

    return xp.asarray(scipy_erf(to_numpy(x)), dtype=x.dtype)
