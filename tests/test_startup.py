"""`nnresearch.startup.frozen_imports`: collection paused during imports, import-time objects frozen."""

import gc
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
