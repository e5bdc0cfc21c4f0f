"""nnresearch's grid sweeper, `hydra/sweeper=grid` (conf/config.yaml makes it the default).

Hydra's basic sweeper expands the same grid in the same order, but composes every job's config
from scratch twice: once to check the whole batch before launching (`load_sweep_config`, ~70-120
ms a job), and again where the job runs. This sweeper hands Hydra's loader, wrapped in
`nnresearch.composition.ComposeOncePerChoice`, to its check and to the launcher: each distinct
choice of config groups is composed once, and each job's config is a copy of that with its other
overrides applied. The check validates every job against nnresearch's schema
(`nnresearch.callbacks.refuse_bad_jobs`): it catches what Hydra's check catches, and bad values
too, for every batch (`max_batch_size`) before the sweep's folder or any MLflow run exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class GridSweeper(BasicSweeper):
    """Hydra's `BasicSweeper` whose check of a batch is nnresearch's, and whose launcher composes
    each choice of config groups once (see the module)."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from nnresearch.composition import ComposeOncePerChoice

        reusing = HydraContext(config_loader=ComposeOncePerChoice(hydra_context.config_loader),
                               callbacks=hydra_context.callbacks)
        super().setup(hydra_context=reusing, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """Hydra's sweep, after every job of every batch is checked (`refuse_bad_jobs`), before the
        sweep's folder or any run exists."""
        from nnresearch.callbacks import refuse_bad_jobs, sweep_jobs

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        refuse_bad_jobs(loader, self.config, sweep_jobs(list(arguments), dict(self.params or {}), loader))
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing left to check: `sweep` checked every batch's jobs before the first."""
