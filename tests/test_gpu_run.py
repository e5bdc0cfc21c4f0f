"""A run end to end on the GPU, as the README's tour runs it (`python -m nnresearch.run trainer.device=gpu`):
the command line into an MLflow store, and one config giving the same numbers on both devices.

Skipped unless CuPy sees a CUDA device (`tests/test_nn_cupy.py` checks the core layer by layer).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from mlflow import MlflowClient

from nnresearch import experiment
from nnresearch.backend import gpu_available
from nnresearch.config import validate

pytestmark = pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device is not available")

SHORT = ["trainer.progress=false", "trainer.epochs=3"]


def test_the_cli_trains_on_the_gpu_into_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-m", "nnresearch.run", "trainer.device=gpu", *SHORT, f"tracking.uri={uri}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert (run.data.params["trainer.device"], run.data.tags["backend"]) == ("gpu", "cupy")
    assert np.isfinite(run.data.metrics["test/loss"])
    final = client.download_artifacts(run.info.run_id, "params/final.npz", str(tmp_path / "down"))
    with np.load(final, allow_pickle=False) as weights:
        assert {weights[name].dtype for name in weights.files} == {np.dtype(np.float32)}  # copied to the host, float32


@pytest.mark.parametrize("overrides", [[], ["model=residual_mlp", "data=spirals", "optim=adam", "optim.lr=0.003"]],
                         ids=["default", "residual_adam"])
def test_a_run_gives_the_same_numbers_on_the_gpu_as_on_the_cpu(compose, overrides):
    """Same seed, same batches, float32 on both: only the order of float32 sums differs (cuBLAS vs
    OpenBLAS). On an H200 the metrics differed by at most 3.4e-7 relative after these 3 epochs, the
    accuracies not at all; 1e-3 leaves room for other GPUs and BLAS builds, not for a wrong step."""
    outcomes = {device: experiment.execute(validate(compose([*overrides, *SHORT, f"trainer.device={device}",
                                                             "tracking.enabled=false"])))
                for device in ("cpu", "gpu")}
    for key in ("train/loss", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert outcomes["gpu"].metrics[key] == pytest.approx(outcomes["cpu"].metrics[key], rel=1e-3, abs=1e-6), key
