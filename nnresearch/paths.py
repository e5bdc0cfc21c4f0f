"""Where the Hydra configs are (`conf/` beside the package in a checkout, `nnresearch/conf` in a
wheel), and how a file is replaced without ever being seen half-written (`replaced_atomically`)."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT_CONF = _PACKAGE.parent / "conf"

CONFIG_DIR = _CHECKOUT_CONF if (_CHECKOUT_CONF / "config.yaml").is_file() else _PACKAGE / "conf"


def study_file(study: str) -> Path:
    """`experiments/<study>.yaml` (the `experiment` config group), which may not exist."""
    return CONFIG_DIR / "experiment" / f"{study}.yaml"


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A new file name next to `path` to write to, renamed onto `path` when the block ends without error
    and removed otherwise: readers find the old file or the whole new one, never part of it. The
    name keeps `path`'s suffix (matplotlib picks the format by it); the file is the writer's to create,
    so it gets the permissions of any new file (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
