"""The data layer: seeded synthetic, 1-D regression, bundled real and procedural image sets.

Ground floor: depends on NumPy, scikit-learn and mnist1d only. Everything is generated or read
from installed packages; nothing is downloaded. `load_dataset(name, seed=...)` returns a `Dataset`
in the chapter's column-stacked notation: `X` is `(n_features, m)`, `Y` is `(n_outputs, m)`.
"""

from .dataset import TASKS, Dataset, Samples, content_hash, permute_features
from .regression import tent_power
from .registry import DATA_TASKS, DATASETS, load_dataset

__all__ = [
    "DATA_TASKS",
    "DATASETS",
    "TASKS",
    "Dataset",
    "Samples",
    "content_hash",
    "load_dataset",
    "permute_features",
    "tent_power",
]
