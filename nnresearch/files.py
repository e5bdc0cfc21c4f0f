"""Files written whole or not at all (`replaced_atomically`): parameters, checkpoints, figures, reports.

Ground floor: the standard library only, so the core (`nn/network.py`) writes through it too.
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A new file name next to `path` to write to, renamed onto `path` when the block ends without error
    and removed otherwise: readers find the old file or the whole new one, never part of it (a crashed
    process leaves nothing; the rename is not fsynced against a power cut). The name is hidden and
    ends in `.tmp`, so a glob for `path`'s suffix never finds it: writers that pick a format by the
    suffix (matplotlib) must be told it. The file is the writer's to create, so it gets the
    permissions of any new file (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
