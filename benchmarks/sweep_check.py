"""What validating every job of a grid before the first starts costs the launching process.

`python -m benchmarks.sweep_check OVERRIDE...` prints one JSON object, timed in a fresh process:

- `check_cold_s`: the first `callbacks.SweepCheck.on_multirun_start` on the grid, imports included,
  as a sweep's launching process pays it (with joblib that process trains nothing itself).
- `check_s` and `compose_each_s`: medians of warm repeats, interleaved, of the check as written
  (one composition per choice of config groups, the other overrides applied to a copy) and of the
  reference it replaced, Hydra's `load_sweep_config` for every job followed by `validate`.
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
    from omegaconf import open_dict

    from nnresearch.callbacks import SweepCheck, sweep_jobs
    from nnresearch.config import register
    from nnresearch.paths import CONFIG_DIR

    register()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=grid, run_mode=RunMode.MULTIRUN)
        check = lambda: SweepCheck().on_multirun_start(master)  # noqa: E731
        cold = _timed(check)
        from nnresearch.config import validate

        jobs = sweep_jobs(list(master.hydra.overrides.task), dict(master.hydra.sweeper.get("params") or {}), loader)

        def compose_each() -> None:
            for overrides in jobs:
                job = loader.load_sweep_config(master, overrides)
                with open_dict(job):
                    del job["hydra"]
                validate(job)

        checks, references = [], []
        for _ in range(repeats):
            checks.append(_timed(check))
            references.append(_timed(compose_each))
    return {"jobs": len(jobs), "check_cold_s": cold, "check_s": statistics.median(checks),
            "compose_each_s": statistics.median(references)}


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1:])))
