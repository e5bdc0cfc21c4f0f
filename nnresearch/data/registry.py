"""`DATASETS` (name -> generator) and `load_dataset`, the one entry point callers use.

A generator is `f(rng, *, n_samples=..., [noise=...], [n_classes=...], [options...]) -> Samples`;
its keyword defaults are the data set's defaults, and `load_dataset` passes only the arguments the
caller set, refusing those the generator does not take.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import numpy as np

from . import images, real, regression, synthetic
from .dataset import Dataset, Samples
from .splits import build_dataset, check_fractions, train_subset

DATASETS: dict[str, Callable[..., Samples]] = {
    "xor": synthetic.xor,
    "moons": synthetic.moons,
    "circles": synthetic.circles,
    "spirals": synthetic.spirals,
    "blobs": synthetic.blobs,
    "multilabel": synthetic.multilabel,
    "sine": regression.sine,
    "step": regression.step,
    "abs": regression.absolute,
    "sawtooth": regression.sawtooth,
    "digits": real.digits,
    "breast_cancer": real.breast_cancer,
    "mnist1d": real.mnist1d,
    "images64": images.images64,
}
# Each data set's task (one of `TASKS`), known without generating it: config validation checks
# that the model and the objective fit the data before any run exists.
DATA_TASKS: dict[str, str] = {
    "xor": "binary", "moons": "binary", "circles": "binary", "spirals": "multiclass", "blobs": "multiclass",
    "multilabel": "multilabel", "sine": "regression", "step": "regression", "abs": "regression",
    "sawtooth": "regression", "digits": "multiclass", "breast_cancer": "binary", "mnist1d": "multiclass",
    "images64": "binary",
}


def _check_int(arg: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{arg}={value}; expected an int >= {minimum}")


@functools.cache
def generator_arguments(name: str) -> dict[str, object]:
    """The keyword arguments data set `name`'s generator takes (all but `rng`), with their defaults."""
    parameters = inspect.signature(DATASETS[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.name != "rng"}


def _generator_kwargs(
    name: str, n_samples: int | None, noise: float | None, n_classes: int | None, options: dict,
) -> dict:
    """The keyword arguments the caller set, checked against what data set `name`'s generator accepts."""
    if n_samples is not None:
        _check_int("n_samples", n_samples, 3)
    if n_classes is not None:
        _check_int("n_classes", n_classes, 2)
    if noise is not None:
        if isinstance(noise, bool) or not isinstance(noise, (int, float)):
            raise TypeError(f"noise must be a float, got {type(noise).__name__} {noise!r}")
        if noise < 0:
            raise ValueError(f"noise={noise}; expected a standard deviation >= 0")
    given = {"n_samples": n_samples, "noise": noise, "n_classes": n_classes, **options}
    kwargs = {k: v for k, v in given.items() if v is not None}
    accepted = list(generator_arguments(name))
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"data set {name!r} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}"
        )
    return kwargs


def load_dataset(
    name: str, *, seed: int = 0, n_samples: int | None = None, val_fraction: float = 0.2,
    test_fraction: float = 0.2, standardize: bool = True, noise: float | None = None,
    n_classes: int | None = None, train_size: int | None = None, **options,
) -> Dataset:
    """Generate (or load) data set `name` and split it into train / val / test.

    `seed` fixes everything (generation and split): the same arguments give bit-identical arrays
    and `content_hash`. `n_samples`, `noise`, `n_classes` and `options` (e.g. `compositions` for
    "sawtooth") left as None take the data set's own defaults; setting one the data set does not
    use is an error. `train_size` keeps that many examples of the train split (`splits.train_subset`:
    stratified, nested in `train_size` for one seed); val, test and the standardisation stay those of
    the whole split, so only the number of examples trained on changes. Returns X_* `(n_features, m)`
    and Y_* `(n_outputs, m)`, float64.

    The process keeps the last `KEPT` data sets it made (their arrays are read-only), so the jobs
    of a sweep that one process runs generate each data set once.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    _check_int("seed", seed, 0)
    check_fractions(val_fraction, test_fraction)
    kwargs = _generator_kwargs(name, n_samples, noise, n_classes, options)
    if train_size is not None:
        _check_int("train_size", train_size, 2)
    data = _made(name, seed, val_fraction, test_fraction, standardize, tuple(sorted(kwargs.items())))
    if train_size is None:
        return data
    return train_subset(data, train_size, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SUBSET_STREAM,))))


KEPT = 8
SUBSET_STREAM = 2  # spawn key of train_subset's generator, after `_made`'s data (0) and split (1) streams


@functools.lru_cache(maxsize=KEPT)
def _made(name: str, seed: int, val_fraction: float, test_fraction: float, standardize: bool,
          kwargs: tuple[tuple[str, object], ...]) -> Dataset:
    """Data set `name` generated from `seed` and split (`load_dataset`, its arguments checked)."""
    data_seed, split_seed = np.random.SeedSequence(seed).spawn(2)
    samples = DATASETS[name](np.random.default_rng(data_seed), **dict(kwargs))
    return build_dataset(
        name, samples, np.random.default_rng(split_seed), val_fraction=val_fraction,
        test_fraction=test_fraction, standardize=standardize,
    )
