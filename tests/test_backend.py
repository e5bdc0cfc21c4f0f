"""`backend.namespace`: the array namespace of the inputs, NumPy itself for NumPy arrays; `backend.select`:
the namespace of a device choice; `backend.axpy`: the in-place update y += alpha x."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

from nnresearch import blas
from nnresearch.backend import AXPY_CHUNK, axpy, backend_name, gpu_available, namespace, select


def test_numpy_arrays_get_numpy_itself():
    assert namespace(np.ones(2, dtype=np.float32), np.zeros((2, 2))) is np


def test_other_arrays_get_what_array_api_compat_says_also_when_asked_again():
    xs = pytest.importorskip("array_api_strict")
    a, b = xs.asarray([1.0]), xs.asarray([2.0])
    expected = array_api_compat.array_namespace(a)
    assert namespace(a) is expected
    assert namespace(a, b) is expected  # the remembered answer
    assert namespace(b) is expected


def test_arrays_of_different_libraries_are_refused_also_after_each_was_asked_alone():
    xs = pytest.importorskip("array_api_strict")
    a, n = xs.asarray([1.0]), np.ones(1)
    namespace(a)
    namespace(n)
    with pytest.raises(TypeError, match="Multiple namespaces"):
        namespace(a, n)


def test_device_auto_takes_the_gpu_when_cupy_sees_one_else_the_cpu():
    assert backend_name(select("auto")) == ("cupy" if gpu_available() else "numpy")
    assert select("cpu") is np


def test_device_gpu_without_one_and_unknown_devices_are_refused():
    if not gpu_available():
        with pytest.raises(ValueError, match="device=cpu or device=auto"):
            select("gpu")
    with pytest.raises(ValueError, match="cpu, gpu, auto"):
        select("tpu")


SHAPES = [(3, 4), (AXPY_CHUNK + 1,), (2 * AXPY_CHUNK + 7, 3), (512, 3 * AXPY_CHUNK // 512)]


def _operands(shape, dtype):
    rng = np.random.default_rng(0)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


def _numpy_bundles_scipy_openblas() -> bool:
    return np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"] == "scipy-openblas"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_axpy_without_numpys_blas_updates_in_place_exactly_like_the_plain_expression(monkeypatch, dtype, shape):
    """The chunked path: below, at and across chunk boundaries (a partial last chunk, whole chunks)."""
    monkeypatch.setattr(blas, "axpy_routine", lambda dtype: None)
    x, y = _operands(shape, dtype)
    expected = y.copy()
    expected += -0.37 * x
    axpy(-0.37, x, y)  # in place: y's own values must change
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_axpy_through_numpys_blas_matches_the_plain_expression_to_the_last_rounding(dtype, shape):
    """Equal to the plain expression within a rounding of alpha x + y (BLAS may fuse the multiply-add)."""
    if blas.axpy_routine(np.dtype(dtype)) is None:
        pytest.skip("this NumPy's BLAS has no scipy_cblas_*axpy64_ (not a PyPI wheel): axpy takes the chunked path")
    x, y = _operands(shape, dtype)
    plain = y.copy()
    plain += -0.37 * x
    exact = y.astype(np.longdouble) + np.longdouble(dtype(-0.37)) * x.astype(np.longdouble)
    axpy(-0.37, x, y)
    assert y.dtype == dtype
    eps = np.finfo(dtype).eps
    scale = np.abs(y) + 0.37 * np.abs(x)
    assert np.all(np.abs(y - plain) <= eps * scale)
    assert np.all(np.abs(y - exact) <= eps * scale)
    again = _operands(shape, dtype)[1]
    axpy(-0.37, x, again)
    np.testing.assert_array_equal(again, y)  # the same inputs give the same bits


@pytest.mark.skipif(not _numpy_bundles_scipy_openblas(), reason="this NumPy is not built on scipy-openblas (a PyPI wheel is)")
def test_numpys_bundled_openblas_is_found_for_both_float_dtypes():
    """NumPy's PyPI wheels bundle scipy-openblas64: the update must not silently lose its BLAS path."""
    assert blas.axpy_routine(np.dtype(np.float32)) is not None
    assert blas.axpy_routine(np.dtype(np.float64)) is not None
    assert blas.axpy_routine(np.dtype(np.float16)) is None


def test_axpy_on_read_only_or_overlapping_arrays_takes_the_plain_expression():
    x, y = _operands((2 * AXPY_CHUNK,), np.float32)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        axpy(1.0, x, y)
    base = np.arange(2 * AXPY_CHUNK + 1, dtype=np.float32)
    expected = base[1:] + base[:-1]
    axpy(1.0, base[:-1], base[1:])  # x and y overlap, shifted by one element
    np.testing.assert_array_equal(base[1:], expected)


def test_axpy_on_strided_views_and_other_namespaces_takes_the_plain_expression():
    base = np.zeros((2 * AXPY_CHUNK, 2), dtype=np.float32)
    column = base[:, 0]  # not contiguous: a chunked reshape(-1) would update a copy
    axpy(2.0, np.ones_like(column), column)
    assert (base[:, 0] == 2.0).all() and (base[:, 1] == 0.0).all()

    import array_api_strict as xp

    y = xp.ones((AXPY_CHUNK + 3,), dtype=xp.float32)
    axpy(0.5, xp.ones_like(y), y)
    assert y.dtype == xp.float32 and bool(xp.all(y == 1.5))
