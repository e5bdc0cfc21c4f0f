"""Timing on a shared, noisy machine: interleaved blocks, medians, and the environment they ran in.

`interleave(contenders, repeats, block_s)` runs every contender `warmup` times (the last call sizes
its block to about `block_s` seconds; with `warmup=0` a block is one call), then `repeats` rounds;
in each round every contender runs one block of calls, so slow spells of the machine fall on all
contenders alike. The orders of the rounds form a Williams design (`balanced_orders`): over a full
cycle of them each contender runs right after every other one equally often, so what one contender
leaves behind (PyTorch's spinning worker threads, a cold cache) does not always land on the same
next one, as it would with a plain rotation. Each round opens with one unmeasured call of its first
contender, so the last block of the previous round precedes nothing that is measured. Balance holds
for whole cycles: give `repeats` as a multiple of `len(balanced_orders(n))`. A contender is a
callable returning how many units (training steps) one call performed (None = 1).

Balance spreads a carryover evenly; it does not remove one that hits some contenders and not others.
OpenBLAS's idle worker threads spin for about 0.1 s after each BLAS call (2^28 cycles, its default
THREAD_TIMEOUT), so on a 2-core machine the block right after any NumPy contender runs with a core
taken: a process idling 0.3 s after a 784-1024-1024-10 NumPy step burnt 71-91 ms of CPU, after
PyTorch's step 8 ms (libgomp). PyTorch's block follows a NumPy contender in most orders, NumPy's
own contenders reuse the spinning threads. With `settle_s`, every block opens with unmeasured calls
of its own contender for at least that long (one call at least), so its measured calls follow
itself, as in a training loop, whatever ran before.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Contender = Callable[[], "int | None"]


@dataclass
class Timing:
    """Seconds per unit, one entry per round."""

    per_unit_s: list[float] = field(default_factory=list)
    units_per_block: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.per_unit_s)

    @property
    def best(self) -> float:
        return min(self.per_unit_s)

    def summary(self) -> dict[str, Any]:
        s = sorted(self.per_unit_s)
        q = lambda f: s[min(len(s) - 1, int(round(f * (len(s) - 1))))]  # noqa: E731
        return {"median_s": self.median, "min_s": self.best, "q25_s": q(0.25), "q75_s": q(0.75),
                "repeats": len(s), "units_per_block": self.units_per_block, "per_round_s": self.per_unit_s}


def _call(fn: Contender) -> tuple[float, int]:
    start = time.perf_counter()
    units = fn()
    return time.perf_counter() - start, int(units or 1)


def _settle(fn: Contender, seconds: float) -> None:
    """Unmeasured calls of fn: at least one, and until they have taken `seconds`."""
    spent_s = _call(fn)[0]
    while spent_s < seconds:
        spent_s += _call(fn)[0]


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of range(n), one per round, in which every i runs right after every other j equally
    often: n orders for even n, 2n for odd n (Williams 1949). Each is the base order
    0, 1, n-1, 2, n-2, ... shifted by the round (and, for odd n, also reversed)."""
    base = [0]
    for k in range(1, n):
        base.append((k + 1) // 2 if k % 2 else n - k // 2)
    rows = [[(i + shift) % n for i in base] for shift in range(n)]
    return rows if n % 2 == 0 else rows + [row[::-1] for row in rows]


def interleave(contenders: dict[str, Contender], repeats: int, block_s: float, warmup: int = 1,
               settle_s: float = 0.0) -> dict[str, Timing]:
    """Median-ready timings of every contender, measured in interleaved blocks (`balanced_orders`);
    with `settle_s` > 0 each block opens with at least that long of its own unmeasured calls."""
    calls: dict[str, int] = {}
    timings = {name: Timing() for name in contenders}
    for name, fn in contenders.items():
        elapsed, units = 0.0, 1
        for _ in range(warmup):
            elapsed, units = _call(fn)
        calls[name] = max(1, math.ceil(block_s / elapsed)) if warmup and elapsed > 0 else 1
        timings[name].units_per_block = calls[name] * units
    names = list(contenders)
    orders = balanced_orders(len(names))
    for round_ in range(repeats):
        order = [names[i] for i in orders[round_ % len(orders)]]
        if settle_s <= 0:  # the round's first block follows its own contender, not the last round's
            _settle(contenders[order[0]], 0.0)
        for name in order:
            fn, total_s, total_units = contenders[name], 0.0, 0
            if settle_s > 0:  # every block: the other contenders' threads have gone idle
                _settle(fn, settle_s)
            for _ in range(calls[name]):
                elapsed, units = _call(fn)
                total_s += elapsed
                total_units += units
            timings[name].per_unit_s.append(total_s / total_units)
    return timings


def paired_ratio(a_s: list[float], b_s: list[float]) -> float:
    """The median over rounds of a's time / b's time in the same round (`a_s[i]`, `b_s[i]`)."""
    if len(a_s) != len(b_s) or not a_s:
        raise ValueError(f"paired rounds need equal, non-zero counts, got {len(a_s)} and {len(b_s)}")
    return statistics.median(a / b for a, b in zip(a_s, b_s))


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """The shortest of `repeats` wall times of fn() (after one warm-up call); its result is dropped."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def blas_threads() -> tuple[int, str]:
    """How many threads NumPy's BLAS uses, and how that was found (threadpoolctl, else cpu_count).

    NumPy's is the BLAS library under NumPy's folder (its wheel's `numpy.libs`), else the first loaded:
    once scikit-learn or PyTorch is imported, SciPy's own OpenBLAS is listed first."""
    try:
        from threadpoolctl import threadpool_info

        from nnresearch.blas import belongs_to_numpy

        blas = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
        blas.sort(key=lambda pool: not belongs_to_numpy(Path(pool.get("filepath", ""))))
        if blas:
            pool = blas[0]
            kernels = f", {pool['architecture']} kernels" if pool.get("architecture") else ""
            return int(pool["num_threads"]), f"threadpoolctl ({pool.get('internal_api')} {pool.get('version')}{kernels})"
    except Exception:  # threadpoolctl missing or unable to inspect this BLAS
        pass
    return os.cpu_count() or 1, "os.cpu_count()"


def cpu_model() -> str | None:
    """The processor's model name (Linux's /proc/cpuinfo): the same VM size can land on other hardware,
    with other BLAS kernels, other speeds and other float32 rounding."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), None)
    except OSError:
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """What the numbers depend on: machine, versions, thread counts, load when measured."""
    import numpy as np

    threads, source = blas_threads()
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "blas_threads": threads,
        "blas_threads_source": source,
        "numpy": np.__version__,
        "load_average_start": load_average(),
    }
    for module in ("torch", "sklearn", "cupy"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            env[module] = None
    return env
