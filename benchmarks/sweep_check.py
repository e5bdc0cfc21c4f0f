"""What checking every job of a grid before the first starts costs the launching process.

`python -m benchmarks.sweep_check OVERRIDE...` prints one JSON object, timed in a fresh process:

- `check_cold_s`: the grid sweeper's first check of the batch (`callbacks.refuse_bad_jobs` with
  a new `composition.ComposeOncePerChoice`, whose compositions the jobs then reuse),
  imports included, as a sweep's launching process pays it (with joblib that process trains nothing).
- `check_s` and `hydra_check_s`: medians of warm repeats, interleaved, of that check (one
  composition per choice of config groups, the other overrides applied to a copy, every job
  validated against the schema) and of the check of Hydra's basic sweeper that it replaces
  (`Sweeper.validate_batch_is_legal`: `load_sweep_config` for every job, no schema).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

REPEATS = 3


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(grid: list[str], repeats: int = REPEATS) -> dict[str, float | int]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from nnresearch.callbacks import refuse_bad_jobs, sweep_jobs
    from nnresearch.composition import ComposeOncePerChoice
    from nnresearch.config import register
    from nnresearch.paths import CONFIG_DIR

    register()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=grid, run_mode=RunMode.MULTIRUN)
        jobs = sweep_jobs(list(master.hydra.overrides.task), dict(master.hydra.sweeper.get("params") or {}), loader)
        check = lambda: refuse_bad_jobs(ComposeOncePerChoice(loader), master, jobs)  # noqa: E731

        def hydra_check() -> None:
            for overrides in jobs:
                loader.load_sweep_config(master, overrides)

        cold = _timed(check)
        checks, references = [], []
        for _ in range(repeats):
            checks.append(_timed(check))
            references.append(_timed(hydra_check))
    return {"jobs": len(jobs), "check_cold_s": cold, "check_s": statistics.median(checks),
            "hydra_check_s": statistics.median(references)}


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1:])))
