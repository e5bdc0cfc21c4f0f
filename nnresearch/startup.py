"""Start-up of the command line: import-time objects live for the whole process, so the cyclic
garbage collector should not keep re-scanning them.

Importing Hydra, MLflow (with SQLAlchemy) and scikit-learn creates a few hundred thousand objects
that are never freed. CPython runs a full collection each time the long-lived set grows by a
quarter, so during the imports and the first store writes it scans them again and again: about a
second of a four-second default run (`python -m benchmarks.run --parts startup`). `frozen_imports`
pauses collection while the imports run, then moves everything alive into the permanent generation
(`gc.freeze`), so later collections visit only what the run itself creates. It freezes only when
the block imported something: the next job of a sweep imports nothing new, and freezing its
predecessor's leftovers would keep their reference cycles alive for good.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_imports() -> Iterator[None]:
    """Run the block (imports) without cyclic collection; if it imported modules, freeze what exists.

    Left alone if collection is already off (the caller, or an outer `frozen_imports`, owns it).
    """
    if not gc.isenabled():
        yield
        return
    modules = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        try:
            if len(sys.modules) > modules:
                gc.freeze()
        finally:
            gc.enable()
