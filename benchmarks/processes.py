"""The command line as a user meets it: start-up time and sweep throughput, as subprocesses.

Every command runs `python -m nnresearch.run ...` with this interpreter, in a fresh temporary
folder (so `multirun/`, `outputs/` and the MLflow store land there), with the checkout first on
PYTHONPATH so the code measured is the code beside this file. `python -c pass` is the reference:
the interpreter's own start-up in the same invocation.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def timed(args: list[str], cwd: Path, timeout_s: float) -> dict[str, Any]:
    """Wall time of `python args...` in `cwd`; `error` carries the tail of its output if it failed."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"wall_s": time.perf_counter() - start, "error": f"timed out after {timeout_s:.0f} s"}
    result: dict[str, Any] = {"wall_s": time.perf_counter() - start}
    if done.returncode != 0:
        result["error"] = f"exit {done.returncode}: " + (done.stderr or done.stdout)[-1500:]
    return result


def _uri(folder: Path) -> str:
    return f"tracking.uri=sqlite:///{folder / 'mlflow.db'}"


def startup(repeats: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """Median wall time of `--help`, and of a default run in a fresh folder (a new store each time)."""
    commands = {
        "python_pass": lambda folder: ["-c", "pass"],
        "run_help": lambda folder: ["-m", "nnresearch.run", "--help"],
        "default_run": lambda folder: ["-m", "nnresearch.run", _uri(folder), "trainer.progress=false"],
    }
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    for _ in range(repeats):  # interleaved: one of each per round
        for name, args in commands.items():
            with tempfile.TemporaryDirectory(prefix="nnresearch-bench-") as tmp:
                samples[name].append(timed(args(Path(tmp)), Path(tmp), timeout_s))
    out: dict[str, Any] = {}
    for name, runs in samples.items():
        ok = [r["wall_s"] for r in runs if "error" not in r]
        out[name] = {"median_s": statistics.median(ok) if ok else None, "runs_s": [r["wall_s"] for r in runs],
                     "command": "python " + " ".join(commands[name](Path("<tmp>"))),
                     **({"error": runs[-1]["error"]} if len(ok) < len(runs) else {})}
    return out


def sweep(depths: list[int], seeds: list[int], epochs: int, timeout_s: float = 600.0) -> dict[str, Any]:
    """Runs per minute of one multirun with Hydra's basic launcher and with joblib (2 workers)."""
    grid = [f"model.depth={','.join(map(str, depths))}", f"trainer.seed={','.join(map(str, seeds))}",
            f"trainer.epochs={epochs}", "trainer.progress=false"]
    launchers = {"basic": [], "joblib_2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}
    n_runs = len(depths) * len(seeds)
    out: dict[str, Any] = {"runs": n_runs}
    for name, extra in launchers.items():
        with tempfile.TemporaryDirectory(prefix="nnresearch-bench-") as tmp:
            args = ["-m", "nnresearch.run", "-m", *grid, _uri(Path(tmp)), *extra]
            result = timed(args, Path(tmp), timeout_s)
        result["command"] = "python " + " ".join(args).replace(tmp, "<tmp>")
        if "error" not in result:
            result["runs_per_minute"] = 60.0 * n_runs / result["wall_s"]
        out[name] = result
    basic, joblib = out["basic"].get("runs_per_minute"), out["joblib_2"].get("runs_per_minute")
    out["joblib_speedup"] = joblib / basic if basic and joblib else None
    return out
