"""The core on CuPy gives NumPy's numbers (float32, within 1e-5) and keeps float32 on the device."""

from __future__ import annotations

import numpy as np
import pytest

from nnresearch.backend import gpu_available, select, to_numpy
from nnresearch.nn.architectures import Builder, mlp, residual_mlp

pytestmark = pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device is not available")


def build(xp, kind: str, activation: str):
    builder = Builder(xp, xp.float32, np.random.default_rng(0), activation=activation, batchnorm=kind == "mlp_batchnorm")
    if kind == "residual_mlp":
        return residual_mlp(builder, 8, width=16, depth=3, n_outputs=4, head="softmax_ce")
    return mlp(builder, [8, 16, 16, 4], "softmax_ce")


@pytest.mark.parametrize("activation", ["relu", "gelu", "sigmoid"])
@pytest.mark.parametrize("kind", ["mlp", "mlp_batchnorm", "residual_mlp"])
def test_cupy_matches_numpy_in_float32(kind, activation):
    cp = select("gpu")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 32)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[:, rng.integers(0, 4, size=32)]

    host, device = build(np, kind, activation), build(cp, kind, activation)
    J_host = host.loss_and_gradients(x, y)
    J_device = device.loss_and_gradients(cp.asarray(x), cp.asarray(y))

    assert J_device.dtype == cp.float32
    assert float(J_device) == pytest.approx(float(J_host), abs=1e-5)
    np.testing.assert_allclose(to_numpy(device.A_L), host.A_L, atol=1e-5)
    grads = device.grads()
    assert set(grads) == set(host.grads())
    for name, grad in grads.items():
        assert grad.dtype == cp.float32, name
        assert type(grad).__module__.startswith("cupy"), name  # still on the device
        np.testing.assert_allclose(to_numpy(grad), host.grads()[name], atol=1e-5, err_msg=name)
    for name, buffer in device.buffers().items():
        np.testing.assert_allclose(to_numpy(buffer), host.buffers()[name], atol=1e-5, err_msg=name)
