"""The command line as a user meets it: start-up time and sweep throughput, as subprocesses.

Every command runs `python -m nnresearch.run ...` with this interpreter, in a fresh temporary
folder (so `multirun/`, `outputs/` and the MLflow store land there), with the checkout first on
PYTHONPATH so the code measured is the code beside this file. `python -c pass` is the reference:
the interpreter's own start-up in the same invocation.

Creating a new MLflow SQLite store runs MLflow's schema migrations, a one-time cost of seconds.
`StoreTemplate` creates one store once, in this process (timed: `store_creation_s`), and copies it
into each folder that should start with an existing store: the in-process harness run with
tracking, the sweeps (so runs per minute measure the launcher, not one migration) and the
`default_run_existing_store` start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DB = "mlflow.db"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def timed(args: list[str], cwd: Path, timeout_s: float, keep_stdout: bool = False) -> dict[str, Any]:
    """Wall time of `python args...` in `cwd`; `error` carries the tail of its output if it failed,
    `stdout` its output if `keep_stdout`."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"wall_s": time.perf_counter() - start, "error": f"timed out after {timeout_s:.0f} s"}
    result: dict[str, Any] = {"wall_s": time.perf_counter() - start}
    if keep_stdout:
        result["stdout"] = done.stdout
    if done.returncode != 0:
        result["error"] = f"exit {done.returncode}: " + (done.stderr or done.stdout)[-1500:]
    return result


def uri_override(folder: Path) -> str:
    return f"tracking.uri=sqlite:///{folder / DB}"


class StoreTemplate:
    """One MLflow store created by `nnresearch.stores.ensure_store`, copied into fresh folders."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="nnresearch-bench-store-"))
        self.import_s: float | None = None
        self.creation_s: float | None = None
        self.error: str | None = None
        try:
            start = time.perf_counter()
            from nnresearch import stores

            self.import_s = time.perf_counter() - start
            start = time.perf_counter()
            stores.ensure_store(f"sqlite:///{self._dir / DB}")
            self.creation_s = time.perf_counter() - start
            if not (self._dir / DB).is_file():
                raise FileNotFoundError(f"ensure_store left no {self._dir / DB}")
        except Exception as error:  # the harness is under construction: fall back to new stores
            self.error = f"{type(error).__name__}: {error}"
            self.creation_s = None

    def fill(self, folder: Path) -> bool:
        """Copy the store into `folder`; False (folder left empty) if there is no template."""
        if self.error is not None:
            return False
        shutil.copy2(self._dir / DB, folder / DB)
        return True

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return {"store_creation_s": self.creation_s, "tracking_import_s": self.import_s,
                **({"error": self.error} if self.error else {})}


def _median_entry(runs: list[dict[str, Any]], command: str) -> dict[str, Any]:
    ok = [r["wall_s"] for r in runs if "error" not in r]
    errors = [r["error"] for r in runs if "error" in r]
    return {"median_s": statistics.median(ok) if ok else None, "runs_s": [r["wall_s"] for r in runs],
            "command": command, **({"error": errors[-1]} if errors else {})}


def startup(repeats: int, template: StoreTemplate, new_store: bool, timeout_s: float = 300.0) -> dict[str, Any]:
    """Median wall times of `--help` and of a default run (existing store; also a new one if `new_store`)."""
    default = lambda folder: ["-m", "nnresearch.run", uri_override(folder), "trainer.progress=false"]  # noqa: E731
    commands: dict[str, tuple[Callable[[Path], list[str]], bool]] = {
        "python_pass": (lambda folder: ["-c", "pass"], False),
        "run_help": (lambda folder: ["-m", "nnresearch.run", "--help"], False),
        "default_run_existing_store": (default, True),
    }
    if new_store:
        commands["default_run_new_store"] = (default, False)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    for _ in range(repeats):  # interleaved: one of each per round
        for name, (args, with_store) in commands.items():
            with tempfile.TemporaryDirectory(prefix="nnresearch-bench-") as tmp:
                folder = Path(tmp)
                if with_store and not template.fill(folder):
                    samples[name].append({"wall_s": 0.0, "error": f"no store template: {template.error}"})
                    continue
                samples[name].append(timed(args(folder), folder, timeout_s))
    out = {name: _median_entry(runs, "python " + " ".join(commands[name][0](Path("<tmp>"))))
           for name, runs in samples.items()}
    out["store"] = template.describe()
    return out


LAUNCHERS = {"basic": [], "joblib_2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
             # the reference for the grid sweeper (the default): Hydra's basic sweeper, basic launcher
             "basic_hydra_sweeper": ["hydra/sweeper=basic"]}


def sweep_check(grid: list[str], timeout_s: float) -> dict[str, Any]:
    """`benchmarks.sweep_check` on `grid` in a fresh process: what validating every job up front costs."""
    done = timed(["-m", "benchmarks.sweep_check", *grid], ROOT, timeout_s, keep_stdout=True)
    return {"error": done["error"]} if "error" in done else json.loads(done["stdout"].splitlines()[-1])


def sweep(depths: list[int], seeds: list[int], epochs: int, template: StoreTemplate, launchers: tuple[str, ...],
          timeout_s: float = 600.0) -> dict[str, Any]:
    """Runs per minute of one multirun with each of `launchers` (Hydra's basic, joblib with 2 workers,
    and the basic one under Hydra's own sweeper), and what the grid sweeper's check costs (`check`)."""
    grid = [f"model.depth={','.join(map(str, depths))}", f"trainer.seed={','.join(map(str, seeds))}",
            f"trainer.epochs={epochs}", "trainer.progress=false"]
    n_runs = len(depths) * len(seeds)
    out: dict[str, Any] = {"runs": n_runs}
    for name in launchers:
        extra = LAUNCHERS[name]
        with tempfile.TemporaryDirectory(prefix="nnresearch-bench-") as tmp:
            folder = Path(tmp)
            existing = template.fill(folder)
            args = ["-m", "nnresearch.run", "-m", *grid, uri_override(folder), *extra]
            result = timed(args, folder, timeout_s)
        result["command"] = "python " + " ".join(args).replace(tmp, "<tmp>")
        result["store"] = "existing" if existing else "new"
        if "error" not in result:
            result["runs_per_minute"] = 60.0 * n_runs / result["wall_s"]
        out[name] = result
    basic, joblib = (out.get(name, {}).get("runs_per_minute") for name in ("basic", "joblib_2"))
    out["joblib_speedup"] = joblib / basic if basic and joblib else None
    hydra_sweeper = out.get("basic_hydra_sweeper", {}).get("runs_per_minute")
    out["grid_sweeper_speedup"] = basic / hydra_sweeper if basic and hydra_sweeper else None
    out["check"] = sweep_check(grid, timeout_s)
    return out
