"""Learning-rate schedules: the alpha of chapter §9 as a function of the step t = 0, 1, 2, ...

Each schedule is a small pure function of the step returning a Python float (a Python float keeps
a float32 network float32; see the optimizers):

    constant:    lr(t) = base_lr
    step_decay:  lr(t) = base_lr * gamma ** floor(t / step_size)
    cosine:      lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * min(t, T) / T)) / 2
                 (T = total_steps: base_lr at t = 0, min_lr at t >= T)
    warm-up:     lr(t) = min(1, (t + 1) / warmup_steps) * schedule(t)

Warm-up multiplies any schedule by a linear ramp, so it composes with all of them without
changing what they do after the ramp; the first step already moves (lr = base_lr / warmup_steps)
and step ``warmup_steps - 1`` reaches the schedule's own value.

`make_schedule` validates the hyperparameters once and returns a `functools.partial` of these
module-level functions: callable as ``lr = schedule(step)``, readable in logs, and picklable
(Hydra's joblib launcher ships jobs to worker processes).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from typing import Any

Schedule = Callable[[int], float]


def constant(step: int, base_lr: float) -> float:
    """lr(t) = base_lr."""
    return base_lr


def step_decay(step: int, base_lr: float, step_size: int, gamma: float) -> float:
    """lr(t) = base_lr * gamma ** floor(t / step_size)."""
    return base_lr * gamma ** (step // step_size)


def cosine(step: int, base_lr: float, total_steps: int, min_lr: float = 0.0) -> float:
    """lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * min(t, T) / T)) / 2, T = total_steps."""
    t = min(step, total_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t / total_steps))


def warmup(step: int, schedule: Schedule, warmup_steps: int) -> float:
    """lr(t) = min(1, (t + 1) / warmup_steps) * schedule(t); no ramp when warmup_steps == 0."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps * schedule(step)
    return schedule(step)


def _at(step: Any, schedule: Schedule, warmup_steps: int) -> float:
    """The schedule `make_schedule` returns: checks the step, then applies warm-up."""
    try:
        t = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer, got {step!r}") from None
    if t < 0:
        raise ValueError(f"step={step!r} is out of range; expected step >= 0")
    return float(warmup(t, schedule, warmup_steps))


SCHEDULES = ("constant", "step_decay", "cosine")


def _fail(name: str, value: Any, expected: str) -> None:
    raise ValueError(f"{name}={value!r} is out of range; expected {expected}")


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def make_schedule(
    name: str,
    base_lr: float,
    total_steps: int,
    *,
    step_size: int | None = None,
    gamma: float = 0.1,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
) -> Schedule:
    """The schedule called `name` (one of `SCHEDULES`) as ``lr = schedule(step)``.

    `step_size` is required for "step_decay"; `gamma` is only used by "step_decay" and `min_lr`
    only by "cosine". `warmup_steps` (0 = none) adds a linear ramp to any of them.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    base_lr = float(base_lr)
    if not (math.isfinite(base_lr) and base_lr >= 0.0):
        _fail("base_lr", base_lr, "a finite base_lr >= 0")
    total_steps = _integer("total_steps", total_steps)
    if total_steps < 1:
        _fail("total_steps", total_steps, "total_steps >= 1")
    warmup_steps = _integer("warmup_steps", warmup_steps)
    if not 0 <= warmup_steps <= total_steps:
        _fail("warmup_steps", warmup_steps, f"0 <= warmup_steps <= total_steps={total_steps}")

    inner: Schedule
    if name == "constant":
        inner = functools.partial(constant, base_lr=base_lr)
    elif name == "step_decay":
        if step_size is None:
            raise ValueError("schedule 'step_decay' needs step_size (steps between decays)")
        step_size = _integer("step_size", step_size)
        if step_size < 1:
            _fail("step_size", step_size, "step_size >= 1")
        gamma = float(gamma)
        if not 0.0 < gamma <= 1.0:
            _fail("gamma", gamma, "0 < gamma <= 1")
        inner = functools.partial(step_decay, base_lr=base_lr, step_size=step_size, gamma=gamma)
    else:  # cosine
        min_lr = float(min_lr)
        if not 0.0 <= min_lr <= base_lr:
            _fail("min_lr", min_lr, f"0 <= min_lr <= base_lr={base_lr}")
        inner = functools.partial(
            cosine, base_lr=base_lr, total_steps=total_steps, min_lr=min_lr
        )
    return functools.partial(_at, schedule=inner, warmup_steps=warmup_steps)
