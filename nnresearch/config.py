"""Structured configs: the schema Hydra composes `conf/` into, and its validation.

Hydra checks types and key names while composing (a typo such as `model.depht=3` fails there).
`validate(cfg)` then checks values and names against the core's own registries, so an unknown
activation, a negative learning rate or a batch size of 0 fails before any MLflow run exists,
with a message naming the key and what is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from nnresearch.backend import DEVICES, DTYPES

SKIP_FINISHED = ("sweeps", "always", "never")
MODELS = ("logistic", "softmax_regression", "mlp", "residual_mlp", "cnn1d")
OBJECTIVES = ("val/loss", "val/acc")


@dataclass
class ModelConfig:
    """Architecture: `depth` hidden layers of `width` units; `widths` (one per hidden layer) replaces both."""

    name: str = "mlp"
    depth: int = 2
    width: int = 64
    widths: list[int] | None = None
    activation: str = "relu"
    alpha: float = 0.01
    init: str = "he_normal"
    init_std: float = 1.0
    init_limit: float = 0.05
    init_value: float = 0.0
    bias_init: str = "zeros"
    bias_value: float = 0.0
    batchnorm: bool = False
    head: str | None = None
    channels: list[int] = field(default_factory=lambda: [16, 16])
    kernel_size: int = 5


@dataclass
class DataConfig:
    """A data set of `nnresearch.data` and how it is split and scaled; `seed` fixes data and split
    (separate from `trainer.seed`, so a study's seeds vary the initialization on the same data)."""

    name: str = "moons"
    seed: int = 0
    n_samples: int | None = None
    noise: float | None = None
    n_classes: int | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    standardize: bool = True
    permute_features: bool = False
    compositions: int | None = None


@dataclass
class OptimConfig:
    """Optimizer, learning-rate schedule (in epochs) and gradient clipping."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_epochs: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0
    warmup_epochs: int = 0
    clip_norm: float | None = None
    clip_value: float | None = None


@dataclass
class TrainerConfig:
    """The loop: `batch_size` 1 = SGD, null = the full training set (full-batch GD)."""

    epochs: int = 20
    batch_size: int | None = 32
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    eval_every: int = 1
    probe_every: int = 1
    gradient_noise: bool = False
    progress: bool = True
    checkpoint_every: int = 0
    resume: str | None = None


@dataclass
class TrackingConfig:
    """MLflow: `uri` None is `$MLFLOW_TRACKING_URI` if set, else MLflow's default store ./mlflow.db;
    an http URI is a tracking server.

    `skip_finished`: a job whose identical config (same `config_hash` tag) already FINISHED in the
    experiment is skipped in `sweeps` (the default: re-running a sweep resumes it), `always`, or
    `never` (force a full re-run). Failed and killed runs are always run again.
    """

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None
    skip_finished: str = "sweeps"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    study: str = "default"
    objective: str = "val/loss"


def register() -> None:
    """Put the schema into Hydra's ConfigStore as `base_config` (conf/config.yaml extends it)."""
    ConfigStore.instance().store(name="base_config", node=Config)


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The primary config for `overrides`, composed in this process as `python -m nnresearch.run`
    composes it (for notebooks, tests and benchmarks); `validate` it before use."""
    import hydra

    from nnresearch.paths import CONFIG_DIR

    register()
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra.compose(config_name="config", overrides=list(overrides))


def _one_of(key: str, value: Any, allowed: Any) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not valid; allowed values: {', '.join(map(str, allowed))}")


def _at_least(key: str, value: float | None, low: float, strict: bool = False) -> None:
    if value is not None and (value <= low if strict else value < low):
        raise ValueError(f"{key}={value} is out of range; expected {key} {'>' if strict else '>='} {low}")


def validate(cfg: DictConfig | Config) -> Config:
    """The config as dataclasses, or a ValueError naming the first bad key and its allowed values."""
    from nnresearch.data import DATASETS
    from nnresearch.nn.activations import ACTIVATIONS
    from nnresearch.nn.initializers import INITIALIZERS
    from nnresearch.nn.losses import HEADS
    from nnresearch.nn.optim import OPTIMIZERS
    from nnresearch.nn.schedules import SCHEDULES

    c: Config = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    m, d, o, t = c.model, c.data, c.optim, c.trainer
    _one_of("model.name", m.name, MODELS)
    _one_of("model.activation", m.activation, ACTIVATIONS)
    _one_of("model.init", m.init, INITIALIZERS)
    _one_of("model.bias_init", m.bias_init, INITIALIZERS)
    if m.head is not None:
        _one_of("model.head", m.head, HEADS)
    _at_least("model.depth", m.depth, 0)
    _at_least("model.width", m.width, 1)
    if m.widths is not None:
        if min(m.widths, default=1) < 1:
            raise ValueError(f"model.widths={m.widths}: every width must be >= 1")
        m.depth = len(m.widths)
    if m.name == "residual_mlp":
        _at_least("model.depth", m.depth, 1)
    _at_least("model.kernel_size", m.kernel_size, 1)
    _at_least("model.init_std", m.init_std, 0.0, strict=True)
    _one_of("data.name", d.name, DATASETS)
    _at_least("data.val_fraction", d.val_fraction, 0.0, strict=True)
    _at_least("data.test_fraction", d.test_fraction, 0.0, strict=True)
    if d.val_fraction + d.test_fraction >= 1.0:
        raise ValueError(f"data.val_fraction + data.test_fraction must be < 1, got {d.val_fraction} + {d.test_fraction}")
    _one_of("optim.name", o.name, OPTIMIZERS)
    _one_of("optim.schedule", o.schedule, SCHEDULES)
    _at_least("optim.lr", o.lr, 0.0, strict=True)
    _at_least("optim.weight_decay", o.weight_decay, 0.0)
    _at_least("optim.clip_norm", o.clip_norm, 0.0, strict=True)
    _at_least("optim.clip_value", o.clip_value, 0.0, strict=True)
    _at_least("optim.step_epochs", o.step_epochs, 1)
    _at_least("optim.warmup_epochs", o.warmup_epochs, 0)
    if not 0.0 <= o.momentum < 1.0:
        raise ValueError(f"optim.momentum={o.momentum} is out of range; expected 0 <= optim.momentum < 1")
    _at_least("trainer.epochs", t.epochs, 1)
    _at_least("trainer.batch_size", t.batch_size, 1)
    _at_least("trainer.eval_every", t.eval_every, 1)
    _at_least("trainer.probe_every", t.probe_every, 1)
    _at_least("trainer.checkpoint_every", t.checkpoint_every, 0)
    _one_of("trainer.device", t.device, DEVICES)
    _one_of("trainer.dtype", t.dtype, DTYPES)
    _one_of("objective", c.objective, OBJECTIVES)
    _one_of("tracking.skip_finished", c.tracking.skip_finished, SKIP_FINISHED)
    return c


# What does not change a run's numbers: where it is logged, how it reports, its checkpoint cadence.
HASH_EXCLUDED = ("tracking", "trainer.progress", "trainer.checkpoint_every", "trainer.resume")


def config_hash(cfg: Config) -> str:
    """sha256 (16 hex digits) of everything in the config that decides the run's numbers."""
    import hashlib
    import json
    from dataclasses import asdict

    flat = asdict(cfg)
    del flat["tracking"]
    for dotted in HASH_EXCLUDED[1:]:
        group, key = dotted.split(".")
        flat[group].pop(key)
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]
