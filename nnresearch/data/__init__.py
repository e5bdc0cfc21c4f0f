"""The data layer: seeded synthetic, 1-D regression, bundled real and procedural image sets.

Ground floor: depends on NumPy, scikit-learn and mnist1d only. Everything is generated or read
from installed packages; nothing is downloaded. `load_dataset(name, seed=...)` returns a `Dataset`
in the chapter's column-stacked notation: `X` is `(n_features, m)`, `Y` is `(n_outputs, m)`.

scikit-learn (about a second to import) and mnist1d are imported by the generators that use them,
not with the package: config validation reads `DATASETS` and `DATA_TASKS` without paying for them,
and so does the process that launches a parallel sweep and validates its jobs.
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
