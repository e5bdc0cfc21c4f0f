"""Hydra callbacks: a progress bar over the jobs of a sweep (`hydra.callbacks.sweep_progress`).

The bar counts jobs as they end, so it advances with Hydra's basic launcher, which runs jobs in
this process; parallel launchers run jobs elsewhere and print their own lines. Like the per-run
bar, it stays quiet when stderr is not a terminal.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from tqdm.auto import tqdm


def sweep_size(command_line: list[str], sweeper_params: dict[str, Any]) -> int:
    """How many jobs the basic sweeper makes: the product of the sweep lengths (command line wins)."""
    merged = {key: f"{key}={value}" for key, value in (sweeper_params or {}).items()}
    merged |= {override.split("=", 1)[0]: override for override in command_line}
    overrides = OverridesParser.create().parse_overrides(list(merged.values()))
    return math.prod(len(list(o.sweep_iterator())) for o in overrides if o.is_sweep_override())


class SweepProgress(Callback):
    """One tqdm bar per multirun: jobs done out of jobs planned."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        total = sweep_size(list(config.hydra.overrides.task), dict(config.hydra.sweeper.get("params") or {}))
        self.bar = tqdm(total=total, desc="sweep", unit="job", disable=not sys.stderr.isatty())

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
