"""`nnresearch.startup.frozen_imports`: collection paused during imports, import-time objects frozen."""

import gc
import subprocess
import sys

import pytest

from nnresearch.startup import frozen_imports


@pytest.fixture
def clean_gc():
    """Unfreeze and re-enable collection whatever a test leaves behind."""
    yield
    gc.unfreeze()
    gc.enable()


@pytest.fixture
def new_module(tmp_path, monkeypatch):
    """The name of a module not imported yet (importing it adds an entry to sys.modules)."""
    (tmp_path / "frozen_imports_probe.py").write_text("TABLE = {i: str(i) for i in range(100)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "frozen_imports_probe"
    sys.modules.pop("frozen_imports_probe", None)


def test_collection_is_paused_inside_and_back_after(clean_gc):
    with frozen_imports():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_freezes_what_an_import_created(clean_gc, new_module):
    gc.unfreeze()
    with frozen_imports():
        __import__(new_module)
    assert gc.get_freeze_count() > 0


def test_freezes_nothing_when_nothing_was_imported(clean_gc):
    gc.unfreeze()
    with frozen_imports():
        [object() for _ in range(10)]
    assert gc.get_freeze_count() == 0


def test_an_error_inside_still_turns_collection_back_on(clean_gc):
    with pytest.raises(ZeroDivisionError), frozen_imports():
        1 / 0
    assert gc.isenabled()


def test_leaves_collection_off_when_the_caller_turned_it_off(clean_gc, new_module):
    gc.unfreeze()
    gc.disable()
    with frozen_imports():
        __import__(new_module)
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0


FROZEN_AFTER_A_RUN = """
import atexit, gc, runpy, sys

def report():
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # imported by the run: a lookup
    from sklearn.base import BaseEstimator
    from nnresearch.experiment import execute
    visible = {id(o) for o in gc.get_objects()}  # every generation but the permanent one
    print("NOT FROZEN:", [c.__name__ for c in (SqlAlchemyStore, BaseEstimator, execute) if id(c) in visible])

atexit.register(report)
sys.argv = ["nnresearch.run", *sys.argv[1:]]
runpy.run_module("nnresearch.run", run_name="__main__")
"""


def test_a_run_freezes_what_it_imports_scikit_learn_and_mlflow_s_store_included(tmp_path):
    """The imports that main() makes lazily (scikit-learn beside validate(), MLflow's SQLAlchemy
    store on the first store access) run inside `frozen_imports`: otherwise the collector scans
    their objects again and again during the run (0.15-0.2 s of full collections in a default run)."""
    done = subprocess.run([sys.executable, "-c", FROZEN_AFTER_A_RUN, "trainer.epochs=1", "trainer.progress=false",
                           f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={tmp_path}/run"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NOT FROZEN: []" in done.stdout, done.stdout


def test_validating_a_config_imports_no_scikit_learn():
    """The process that launches a parallel sweep validates every job but generates no data: the
    data sets' registry it reads must not cost scikit-learn's import (about a second)."""
    probe = ("import sys\nfrom nnresearch.config import Config, validate\nfrom nnresearch.data import DATASETS\n"
             "for name in DATASETS:\n    cfg = Config()\n    cfg.data.name = name\n    cfg.model.name = 'mlp'\n"
             "    validate(cfg)\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'mnist1d')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", done.stdout
