"""`backend.namespace`: the array namespace of the inputs, NumPy itself for NumPy arrays; `backend.select`:
the namespace of a device choice."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

from nnresearch.backend import backend_name, gpu_available, namespace, select


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
