"""Shared fixtures. Keep this small: one fixture per idea, helpers live in the test files."""

from __future__ import annotations

import numpy as np
import pytest

from nnresearch.backend import gpu_available


@pytest.fixture(params=["numpy", "array_api_strict", "cupy"])
def xp(request):
    """The array namespace under test.

    `array_api_strict` makes any NumPy-only call in the core fail; `cupy` skips itself unless
    CuPy imports and sees a CUDA device.
    """
    if request.param == "numpy":
        return np
    if request.param == "cupy":
        if not gpu_available():
            pytest.skip("CuPy with a CUDA device is not available")
        import array_api_compat.cupy

        return array_api_compat.cupy
    return pytest.importorskip("array_api_strict")


# Per-process memos keyed by a store's URI (nnresearch.stores, nnresearch.tracking). A test's URI is its
# own for sqlite:/// stores (tmp_path), but not for http://127.0.0.1:<port>: a port a closed server of an
# earlier test in this worker had may be handed out again, and a memo saying "checked, answers" would let a
# test expecting "nothing answers there" pass the check. Each test starts with none.
URI_MEMOS = {"nnresearch.stores": ("_CHECKED_STORES", "_READY_STORES"),
             "nnresearch.tracking": ("_EXPERIMENT_IDS", "_RUN_EXPERIMENTS", "_SWEEP_PARENTS", "_ORPHANS_ENDED")}


@pytest.fixture(autouse=True)
def no_store_memos_from_earlier_tests():
    import sys

    for module, names in URI_MEMOS.items():
        if module in sys.modules:  # not imported yet: nothing memorised
            for name in names:
                memo = getattr(sys.modules[module], name, None)
                if memo is not None:  # None: still being imported (by a thread an earlier test left), nothing memorised yet
                    memo.clear()
    yield


# --------------------------------------------------------------------------------------------
# Harness fixtures (tests/test_harness.py, tests/test_cli.py): Hydra configs and MLflow stores.


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory):
    """An empty MLflow SQLite store, migrated once per session (migrations take seconds).

    Created with the working directory inside its own folder, so nothing (not even the store's
    "Default" experiment location) points into the repository.
    """
    import os

    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow_template")
    db = folder / "mlflow.db"
    previous = os.getcwd()
    os.chdir(folder)
    try:
        MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    finally:
        os.chdir(previous)
    return db


@pytest.fixture
def mlflow_uri(tmp_path, mlflow_template_db):
    """`sqlite:///<tmp_path>/mlflow.db`: a fresh, already migrated store for one test."""
    import shutil

    db = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template_db, db)
    return f"sqlite:///{db}"


@pytest.fixture
def compose():
    """`compose(["model=mlp", ...])`: the primary config composed in-process, like the CLI does."""
    from nnresearch.config import compose

    return compose


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds or starts something heavy (a wheel); deselect with -m 'not slow'")


@pytest.fixture
def main_in_process(monkeypatch, capsys):
    """`python -m nnresearch.run *args` inside this process, as a function returning (exit code, stdout, stderr)."""
    import signal
    import sys

    from nnresearch import run

    def call(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["nnresearch.run", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"])
        code, handlers = 0, {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            run.main()
        except SystemExit as exit:
            code = exit.code
        finally:
            for signum, handler in handlers.items():  # run.main and Hydra callbacks install their own; restore pytest's
                signal.signal(signum, handler)
        out, err = capsys.readouterr()
        return code, out, err

    return call
