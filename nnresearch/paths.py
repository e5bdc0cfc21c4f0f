"""Where the Hydra configs are: `conf/` beside the package in a checkout, `nnresearch/conf` in a wheel."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT_CONF = _PACKAGE.parent / "conf"

CONFIG_DIR = _CHECKOUT_CONF if (_CHECKOUT_CONF / "config.yaml").is_file() else _PACKAGE / "conf"


def study_file(study: str) -> Path:
    """`experiments/<study>.yaml` (the `experiment` config group), which may not exist."""
    return CONFIG_DIR / "experiment" / f"{study}.yaml"
