"""NumPy's own BLAS, for the one routine the core needs that NumPy does not expose: axpy.

axpy is y := alpha x + y, in place, over n contiguous elements: SGD's update p := p - lr g.
NumPy's wheels (Linux, Windows, Intel macOS) bundle OpenBLAS built with 64-bit integers and
`scipy_`-prefixed names (scipy-openblas64); threadpoolctl says where that library was loaded
from, and ctypes binds `scipy_cblas_saxpy64_` / `scipy_cblas_daxpy64_` in it. Being the library
behind NumPy's matmul, it runs on the same thread pool, under the same limits (threadpoolctl's,
`OPENBLAS_NUM_THREADS`), already awake after the backward pass's GEMMs. SciPy's BLAS would be a
second OpenBLAS with a pool of its own, contending with NumPy's for the cores.

Any other NumPy build (MKL, Accelerate, a system OpenBLAS with plain names) gets None, and the
caller keeps to NumPy.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

Axpy = Callable[[float, np.ndarray, np.ndarray], None]

_ROUTINES = {
    np.dtype(np.float32): ("scipy_cblas_saxpy64_", ctypes.c_float),
    np.dtype(np.float64): ("scipy_cblas_daxpy64_", ctypes.c_double),
}


def belongs_to_numpy(library: Path) -> bool:
    """True for the libraries NumPy's wheels bundle: `numpy.libs/` (Linux, Windows), `numpy/.dylibs/` (macOS)."""
    return library.parent.name == "numpy.libs" or library.parent.parent.name == "numpy"


@functools.cache
def _numpy_openblas() -> ctypes.CDLL | None:
    """The OpenBLAS that NumPy loaded, or None (another BLAS, or threadpoolctl cannot tell)."""
    from threadpoolctl import threadpool_info

    for pool in threadpool_info():
        library = Path(pool.get("filepath", ""))
        if pool.get("internal_api") == "openblas" and belongs_to_numpy(library):
            return ctypes.CDLL(str(library))  # already loaded: this only returns its handle
    return None


@functools.cache
def axpy_routine(dtype: np.dtype) -> Axpy | None:
    """`routine(alpha, x, y)`: y := alpha x + y for C-contiguous `x`, `y` of one size and `dtype`;
    None where NumPy's BLAS has no such routine for `dtype` (the caller checks the arrays)."""
    name, scalar = _ROUTINES.get(np.dtype(dtype), (None, None))
    library = _numpy_openblas() if name is not None else None
    if library is None or not hasattr(library, name):
        return None
    routine = getattr(library, name)
    routine.argtypes = [ctypes.c_int64, scalar, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
    routine.restype = None

    def axpy(alpha: float, x: np.ndarray, y: np.ndarray) -> None:
        routine(y.size, alpha, x.ctypes.data, 1, y.ctypes.data, 1)

    return axpy
