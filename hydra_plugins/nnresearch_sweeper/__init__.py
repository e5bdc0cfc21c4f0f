"""nnresearch's grid sweeper, `hydra/sweeper=grid` (conf/config.yaml makes it the default).

Hydra's basic sweeper expands the same grid in the same order; before launching, it checks the
whole batch by composing every job's config from scratch (`load_sweep_config`, ~120 ms a job),
work that each job then repeats where it runs. This sweeper checks the batch by composing once
per distinct choice of config groups, applying each job's other overrides to a copy, and
validating every job against nnresearch's schema (`nnresearch.callbacks.refuse_bad_jobs`): it
catches what Hydra's check catches, and bad values too, before any MLflow run exists.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class GridSweeper(BasicSweeper):
    """Hydra's `BasicSweeper` whose up-front check of a batch is nnresearch's (see the module)."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from nnresearch.callbacks import refuse_bad_jobs

        assert self.hydra_context is not None and self.config is not None
        refuse_bad_jobs(self.hydra_context.config_loader, self.config, [list(job) for job in batch])
