"""The data containers: `Samples` as a generator draws them, `Dataset` as a model consumes them.

Generators speak scikit-learn's row convention (one example per row); `Dataset` holds the
chapter's column-stacked notation, `X` of shape `(n_features, m)` and `Y` of shape `(n_outputs, m)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

TASKS = ("binary", "multiclass", "multilabel", "regression")


class Samples(NamedTuple):
    """All examples of a data set before splitting, one example per row.

    X: `(m, n_features)` float64.
    y: binary `(m,)` 0/1 ints; multiclass `(m,)` ints in `[0, C)`; multilabel `(m, C)` 0/1 ints;
       regression `(m,)` floats.
    task: one of `TASKS`.
    """

    X: np.ndarray
    y: np.ndarray
    task: str


def content_hash(*arrays: np.ndarray) -> str:
    """sha256 hex digest of each array's dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Dataset:
    """A split, encoded data set in column-stacked notation.

    X_*: `(n_features, m_split)`; Y_*: `(n_outputs, m_split)`, all C-contiguous float64 and
    read-only. Targets: binary a 0/1 row `(1, m)`; multiclass one-hot `(C, m)`; multilabel
    multi-hot `(C, m)`; regression `(1, m)`. `eq=False`: arrays have no single truth value, so two
    datasets compare by identity; compare `content_hash` to compare contents.
    """

    name: str
    task: str
    X_train: np.ndarray
    Y_train: np.ndarray
    X_val: np.ndarray
    Y_val: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    content_hash: str

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is not one of {', '.join(TASKS)}")

    @property
    def n_features(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_outputs(self) -> int:
        return self.Y_train.shape[0]

    @property
    def sizes(self) -> dict[str, int]:
        """Examples per split: {"train": m_train, "val": m_val, "test": m_test}."""
        return {
            "train": self.X_train.shape[1],
            "val": self.X_val.shape[1],
            "test": self.X_test.shape[1],
        }

    def describe(self) -> dict:
        """A flat-enough summary to log as run params / tags."""
        return {
            "name": self.name,
            "task": self.task,
            "sizes": self.sizes,
            "n_features": self.n_features,
            "n_outputs": self.n_outputs,
            "content_hash": self.content_hash,
        }


def permute_features(data: Dataset, seed: int) -> Dataset:
    """The same data set with its feature positions shuffled by one fixed permutation (the same for
    every split), as in the inductive-bias experiment: an MLP cannot tell, a CNN loses locality."""
    order = np.random.default_rng(seed).permutation(data.n_features)
    arrays = {split: getattr(data, f"X_{split}")[order] for split in ("train", "val", "test")}
    for array in arrays.values():
        array.setflags(write=False)
    targets = (data.Y_train, data.Y_val, data.Y_test)
    digest = content_hash(arrays["train"], data.Y_train, arrays["val"], data.Y_val, arrays["test"], data.Y_test)
    return Dataset(f"{data.name}-permuted", data.task, arrays["train"], targets[0], arrays["val"], targets[1],
                   arrays["test"], targets[2], digest)
