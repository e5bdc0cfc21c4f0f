"""Structured configs: the schema Hydra composes `conf/` into, and its validation.

Hydra checks types and key names while composing (a typo such as `model.depht=3` fails there).
Hydra's error suggests `+model.depht=3`, which adds the key instead; `validate(cfg)` refuses any
key that is not a field of the schema. It then checks values and names against the core's own
registries, so an unknown key, an unknown activation, a negative or NaN learning rate, a batch
size of 0, too few samples to split, or a setting the chosen model, activation, optimizer, schedule,
initializer or data set ignores fails before any MLflow run exists, with a message naming the key
and what is allowed. `check_machine(cfg)` refuses what depends on the machine a run starts on:
`trainer.device=gpu` without a usable GPU, a `trainer.resume` checkpoint that is missing there or
that this config cannot continue. `validate` stays a function of the config alone, so a run's
logged config validates on any machine (the analyses rebuild GPU and resumed runs on a laptop).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from nnresearch.backend import DEVICES, DTYPES
from nnresearch.nn.losses import HEADS, ONE_HOT_HEADS  # the heads `_check_fits_data` checks

SKIP_FINISHED = ("sweeps", "always", "never")
MODELS = ("logistic", "softmax_regression", "mlp", "residual_mlp", "cnn1d")
OBJECTIVES = ("val/loss", "val/acc")
# The direction in which each objective improves; a search told the other way finds the worst config.
OBJECTIVE_DIRECTIONS = {"val/loss": "minimize", "val/acc": "maximize"}


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


# The ModelConfig fields each weight / bias initializer reads (`nnresearch.nn.initializers.initialize`:
# std, limit, value); the others (zeros, xavier_*, he_*, lecun_normal) read none.
INIT_FIELDS = {"normal": ("init_std",), "uniform": ("init_limit",), "constant": ("init_value",)}
BIAS_INIT_FIELDS = {"constant": ("bias_value",)}
# The ModelConfig fields each model reads (`nnresearch.experiment._architecture`; the init fields
# above apply to all). logistic builds one sigmoid neuron and softmax_regression one softmax layer:
# no hidden layer, so no depth, width, activation or BatchNorm; cnn1d has no BatchNorm for its
# convolutions, and residual_mlp's blocks all have `width` units (no `widths`).
MODEL_FIELDS = {
    "logistic": (),
    "softmax_regression": ("head",),
    "mlp": ("depth", "width", "widths", "activation", "alpha", "batchnorm", "head"),
    "residual_mlp": ("depth", "width", "activation", "alpha", "batchnorm", "head"),
    "cnn1d": ("channels", "kernel_size", "activation", "alpha", "head"),
}
# The ModelConfig fields each hidden activation reads (`nnresearch.nn.activations.get_activation`).
ACTIVATION_FIELDS = {"leaky_relu": ("alpha",)}


@dataclass
class DataConfig:
    """A data set of `nnresearch.data` and how it is split and scaled; `seed` fixes data and split
    (separate from `trainer.seed`, so a study's seeds vary the initialization on the same data).
    `train_size` (null: all) trains on that many examples of the train split, val and test unchanged."""

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
    train_size: int | None = None


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


# The OptimConfig fields each optimizer reads: `nnresearch.experiment` passes exactly these to
# `make_optimizer`. Any other of these fields set away from its default has no effect on the run
# (yet changes its name and config hash), so `validate` refuses it.
OPTIMIZER_FIELDS = {
    "sgd": ("weight_decay",),
    "momentum": ("momentum", "weight_decay"),
    "nesterov": ("momentum", "weight_decay"),
    "adam": ("beta1", "beta2", "eps", "weight_decay"),
}
# The OptimConfig fields each learning-rate schedule reads (`warmup_epochs` applies to every one).
SCHEDULE_FIELDS = {"constant": (), "step_decay": ("step_epochs", "gamma"), "cosine": ("min_lr",)}


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


def _at_most(key: str, value: float | None, high: float, bound: str | None = None) -> None:
    """`value <= high`; `bound` names where `high` comes from (e.g. "trainer.epochs=2")."""
    if value is not None and value > high:
        raise ValueError(f"{key}={value} is out of range; expected {key} <= {bound or high}")


def _unit_interval(key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{key}={value} is out of range; expected 0 <= {key} < 1")


def _schema_fields(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every schema field of the dataclass `node`, nested groups walked."""
    for f in fields(node):
        value = getattr(node, f.name)
        if is_dataclass(value):
            yield from _schema_fields(value, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, value


def _check_known_keys(node: Any, prefix: str = "") -> None:
    """Refuse a key that is not a schema field: `+model.depht=3` composes, and `OmegaConf.to_object`
    keeps `depht` as a plain attribute that nothing reads."""
    import difflib

    names = [f.name for f in fields(node)]
    for name in vars(node):
        if name not in names:
            group = f"the keys of {prefix.rstrip('.')}" if prefix else "the top-level keys"
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {prefix}{close[0]} (without '+')?" if close else ""
            raise ValueError(f"{prefix}{name} is not a config key; {group} are: {', '.join(names)}{hint}")
    for name in names:
        if is_dataclass(getattr(node, name)):
            _check_known_keys(getattr(node, name), f"{prefix}{name}.")


FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max
FLOAT32_ROUNDS_TO_INF = 3.4028235677973366e38  # (2 - 2^-24) 2^127, halfway to the next power: from it a value becomes inf
FLOAT32_ROUNDS_TO_ZERO = 7.006492321624085e-46  # half of float32's smallest subnormal: below it a value becomes 0


def _check_finite(c: Config) -> None:
    """Every float of the schema is finite (NaN passes every range check, inf most of them), and in a
    float32 run within float32's range, where it would become inf, or, nonzero, 0."""
    floats = [(key, value) for key, value in _schema_fields(c) if isinstance(value, float)]
    for key, value in floats:
        if not math.isfinite(value):
            raise ValueError(f"{key}={value} is not a finite number; expected a finite {key}")
    if c.trainer.dtype != "float32":
        return
    for key, value in floats:
        if abs(value) >= FLOAT32_ROUNDS_TO_INF:
            raise ValueError(f"{key}={value} is inf in float32 (trainer.dtype=float32, largest {FLOAT32_MAX:.4g}); "
                             f"expected a smaller {key}, or trainer.dtype=float64")
        if 0 < abs(value) <= FLOAT32_ROUNDS_TO_ZERO:
            raise ValueError(f"{key}={value} is 0 in float32 (trainer.dtype=float32); expected 0 itself, a larger "
                             f"{key}, or trainer.dtype=float64")


def _asked_for(node: Any, key: str, presets: Sequence[Any] = ()) -> bool:
    """Whether `node.<key>` was set on purpose: away from its schema default and from its value in each
    of `presets` (a model's own config, which sets what the model needs)."""
    value = getattr(node, key)
    return all(value != getattr(preset, key) for preset in (type(node)(), *presets))


def _check_unread_fields(node: Any, group: str, choice: str, readers: dict[str, tuple[str, ...]],
                         presets: Sequence[Any] = ()) -> None:
    """Refuse a field of `readers` (choice -> the fields it reads) that the chosen `node.<choice>`
    does not read, set away from its schema default and from its value in each of `presets` (the
    chosen model's own config): it has no effect on the run. `group` is the node's key."""
    chosen = getattr(node, choice)
    specific = {key for used in readers.values() for key in used}
    for key in sorted(specific - set(readers.get(chosen, ()))):
        if _asked_for(node, key, presets):
            value = getattr(node, key)
            users = ", ".join(name for name, used in readers.items() if key in used)
            chooser = group if choice == "name" else f"{group}.{choice}"
            raise ValueError(f"{group}.{key}={value} has no effect with {chooser}={chosen}; it is used by "
                             f"{chooser}={users} (drop {group}.{key}, or choose one of those)")


@functools.cache
def _model_preset(name: str) -> ModelConfig:
    """The model `model=<name>` composes: conf/model/<name>.yaml over the schema's defaults. What it
    sets (cnn1d's depth 0, logistic's depth 0) is what the model's own config says, not a request."""
    from nnresearch.paths import CONFIG_DIR

    return ModelConfig(**OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / f"{name}.yaml")))


def _check_model(m: ModelConfig) -> None:
    from nnresearch.nn.activations import ACTIVATIONS
    from nnresearch.nn.initializers import INITIALIZERS
    from nnresearch.nn.losses import HEADS

    _one_of("model.name", m.name, MODELS)
    _one_of("model.activation", m.activation, ACTIVATIONS)
    _check_unread_fields(m, "model", "name", MODEL_FIELDS, [_model_preset(m.name)])  # before widths sets depth
    _check_unread_fields(m, "model", "activation", ACTIVATION_FIELDS)
    _one_of("model.init", m.init, INITIALIZERS)
    _one_of("model.bias_init", m.bias_init, INITIALIZERS)
    if m.head is not None:
        _one_of("model.head", m.head, HEADS)
    _at_least("model.depth", m.depth, 0)
    _at_least("model.width", m.width, 1)
    if m.widths is not None:
        if min(m.widths, default=1) < 1:
            raise ValueError(f"model.widths={m.widths}: every width must be >= 1")
        for key, implied in (("depth", len(m.widths)), ("width", None)):  # widths gives both (validated: depth is its length)
            value = getattr(m, key)
            if value != implied and _asked_for(m, key, [_model_preset(m.name)]):
                raise ValueError(f"model.{key}={value} has no effect with model.widths={m.widths}, which sets every "
                                 f"hidden layer's width (drop model.{key}, or model.widths)")
        m.depth = len(m.widths)
    if not m.channels or min(m.channels) < 1:
        raise ValueError(f"model.channels={m.channels}: expected a non-empty list of channel counts, every one >= 1")
    if m.name == "residual_mlp":
        _at_least("model.depth", m.depth, 1)
    _at_least("model.kernel_size", m.kernel_size, 1)
    _unit_interval("model.alpha", m.alpha)
    _at_least("model.init_std", m.init_std, 0.0, strict=True)
    _at_least("model.init_limit", m.init_limit, 0.0)
    _check_unread_fields(m, "model", "init", INIT_FIELDS)
    _check_unread_fields(m, "model", "bias_init", BIAS_INIT_FIELDS)


def _data_arguments() -> dict[str, tuple[str, ...]]:
    """The DataConfig fields each data set's generator takes (`nnresearch.data.load_dataset` passes
    the ones set and refuses the others)."""
    from nnresearch.data import DATASETS
    from nnresearch.data.registry import generator_arguments

    return {name: tuple(generator_arguments(name)) for name in DATASETS}


def _classes(d: DataConfig) -> int:
    """How many classes the splits of data set `d` are stratified by (`nnresearch.data.splits`): 2 for
    a binary set, `data.n_classes` or the set's own default for a multiclass one, 1 for multilabel
    and regression sets (not stratified)."""
    from nnresearch.data import DATA_TASKS
    from nnresearch.data.real import MNIST1D_CLASSES
    from nnresearch.data.registry import generator_arguments
    from nnresearch.data.splits import STRATIFIED_TASKS

    task = DATA_TASKS[d.name]
    if task not in STRATIFIED_TASKS:
        return 1
    if task == "binary":
        return 2
    if d.n_classes is not None:
        return d.n_classes
    return generator_arguments(d.name).get("n_classes", MNIST1D_CLASSES)  # mnist1d alone has no n_classes


def _splits_fit(n: int, classes: int, val_fraction: float, test_fraction: float) -> bool:
    """Whether `n` examples split as `nnresearch.data.splits` needs (`splits_fit`), a stratified split
    also with `MIN_PER_CLASS` examples of every class (the data sets draw their classes in equal
    shares, so the least has n // classes)."""
    from nnresearch.data.splits import MIN_PER_CLASS, splits_fit

    enough_per_class = classes == 1 or n // classes >= MIN_PER_CLASS
    return enough_per_class and splits_fit(n, classes, val_fraction, test_fraction)


def _least_samples(classes: int, val_fraction: float, test_fraction: float) -> int:
    """The least count from which every count splits (`_splits_fit`; rounding makes a few smaller
    counts split too): counted down from one the bounds round(f n) >= f n - 1/2 guarantee."""
    from nnresearch.data.splits import MIN_PER_CLASS

    surely = math.ceil(max((classes + 0.5) / min(val_fraction, test_fraction),
                           (max(classes, 2) + 1) / (1 - val_fraction - test_fraction), MIN_PER_CLASS * classes))
    least = surely
    while least > 1 and _splits_fit(least - 1, classes, val_fraction, test_fraction):
        least -= 1
    return least


def _own_count(name: str) -> int | None:
    """The data set's own count of examples (None for digits and breast_cancer, known once loaded)."""
    from nnresearch.data.registry import generator_arguments

    return generator_arguments(name)["n_samples"]


def _n_samples(d: DataConfig) -> int | None:
    """`data.n_samples`, or the data set's own count (`_own_count`)."""
    return d.n_samples if d.n_samples is not None else _own_count(d.name)


def _check_splits(d: DataConfig) -> None:
    """`data.n_samples` (or the data set's own count) leaves every split the examples it needs. digits
    and breast_cancer default to their whole set, whose size is known only once loaded (1,797 and 569)."""
    from nnresearch.data.splits import MIN_PER_CLASS

    n = _n_samples(d)
    classes = _classes(d)
    if n is None or _splits_fit(n, classes, d.val_fraction, d.test_fraction):
        return
    given = f"data.n_samples={n}" if d.n_samples is not None else f"data.n_samples (unset: data={d.name}'s {n})"
    need = "one example in val and in test, two in train" if classes == 1 else \
        f"one example of each of its {classes} classes in val and test, {max(classes, 2)} in train, {MIN_PER_CLASS} of every class"
    raise ValueError(f"{given} is out of range for data={d.name} split by data.val_fraction={d.val_fraction} and "
                     f"data.test_fraction={d.test_fraction}; expected data.n_samples >= "
                     f"{_least_samples(classes, d.val_fraction, d.test_fraction)} ({need})")


def _check_data(d: DataConfig) -> None:
    from nnresearch.data import DATASETS

    _one_of("data.name", d.name, DATASETS)
    _at_least("data.seed", d.seed, 0)
    _at_least("data.noise", d.noise, 0.0)
    _at_least("data.n_classes", d.n_classes, 2)
    _at_least("data.compositions", d.compositions, 1)
    _at_least("data.val_fraction", d.val_fraction, 0.0, strict=True)
    _at_least("data.test_fraction", d.test_fraction, 0.0, strict=True)
    if d.val_fraction + d.test_fraction >= 1.0:
        raise ValueError(f"data.val_fraction + data.test_fraction must be < 1, got {d.val_fraction} + {d.test_fraction}")
    _check_unread_fields(d, "data", "name", _data_arguments())
    _check_splits(d)
    _check_train_size(d)


def _check_train_size(d: DataConfig) -> None:
    """`data.train_size` keeps one example per class and two (`least_per_split`), and no more than the
    train split has, where its size is known before loading (`nnresearch.data.splits.train_subset`
    checks digits and breast_cancer at their whole set once loaded)."""
    from nnresearch.data.splits import least_per_split

    if d.train_size is None:
        return
    _at_least("data.train_size", d.train_size, least_per_split(_classes(d))["train"])
    split = _split_train_size(d)
    if split is not None:
        _at_most("data.train_size", d.train_size, split,
                 bound=f"{split}, the train split of data.n_samples={_n_samples(d)} (raise data.n_samples for more)")


def _check_optim(o: OptimConfig, t: TrainerConfig) -> None:
    from nnresearch.nn.optim import OPTIMIZERS
    from nnresearch.nn.schedules import SCHEDULES

    _one_of("optim.name", o.name, OPTIMIZERS)
    _one_of("optim.schedule", o.schedule, SCHEDULES)
    _at_least("optim.lr", o.lr, 0.0, strict=True)
    _at_least("optim.weight_decay", o.weight_decay, 0.0)
    _at_least("optim.clip_norm", o.clip_norm, 0.0, strict=True)
    _at_least("optim.clip_value", o.clip_value, 0.0, strict=True)
    _at_least("optim.step_epochs", o.step_epochs, 1)
    _at_least("optim.gamma", o.gamma, 0.0, strict=True)
    _at_most("optim.gamma", o.gamma, 1.0)
    _at_least("optim.min_lr", o.min_lr, 0.0)
    _at_most("optim.min_lr", o.min_lr, o.lr, bound=f"optim.lr={o.lr} (a schedule decays the lr towards it)")
    _at_least("optim.warmup_epochs", o.warmup_epochs, 0)
    _at_most("optim.warmup_epochs", o.warmup_epochs, t.epochs, bound=f"trainer.epochs={t.epochs}")
    _unit_interval("optim.momentum", o.momentum)
    if o.name == "nesterov" and o.momentum == 0:
        raise ValueError("optim.momentum=0 with optim.name=nesterov: Nesterov momentum needs 0 < optim.momentum < 1 "
                         "(optim=sgd is plain gradient descent)")
    _unit_interval("optim.beta1", o.beta1)
    _unit_interval("optim.beta2", o.beta2)
    _at_least("optim.eps", o.eps, 0.0, strict=True)
    _check_unread_fields(o, "optim", "name", OPTIMIZER_FIELDS)
    _check_unread_fields(o, "optim", "schedule", SCHEDULE_FIELDS)


def _check_trainer(t: TrainerConfig) -> None:
    _at_least("trainer.epochs", t.epochs, 1)
    _at_least("trainer.batch_size", t.batch_size, 1)
    _at_least("trainer.seed", t.seed, 0)
    _at_least("trainer.eval_every", t.eval_every, 1)
    _at_least("trainer.probe_every", t.probe_every, 1)
    _at_least("trainer.checkpoint_every", t.checkpoint_every, 0)
    _one_of("trainer.device", t.device, DEVICES)
    _one_of("trainer.dtype", t.dtype, DTYPES)


def _check_device(t: TrainerConfig) -> None:
    """`trainer.device=gpu` needs CuPy with a CUDA device on this machine (`backend.select`); CuPy is
    imported only then, so validating a CPU or `auto` config stays cheap."""
    from nnresearch.backend import gpu_available

    if t.device == "gpu" and not gpu_available():
        raise ValueError("trainer.device=gpu is not available here: CuPy is not installed or sees no CUDA device; "
                         "allowed values on this machine: cpu, auto (the GPU where there is one)")


def _check_resume(c: Config) -> None:
    """`trainer.resume` names a checkpoint this config can continue, read from its metadata alone
    (`checkpoint.read_metadata`): written with the same settings and with epochs left to train.
    Whether its arrays fit the network is known only once the network is built (`load_checkpoint`)."""
    from nnresearch.checkpoint import check_epochs_left, check_settings, read_metadata

    t = c.trainer
    if t.resume is None:
        return
    try:
        epoch, saved = read_metadata(t.resume)
        if saved is not None:
            check_settings(t.resume, saved, resume_settings(c))
    except ValueError as error:
        raise ValueError(f"trainer.resume: {error}") from None
    check_epochs_left(t.resume, epoch, t.epochs)


# Models built for one task only (the chapter's one-neuron classifiers).
MODEL_TASKS = {"logistic": "binary", "softmax_regression": "multiclass"}
# The head a network gets for each task when `model.head` is unset.
DEFAULT_HEADS = {"binary": "sigmoid_bce", "multiclass": "softmax_ce", "multilabel": "sigmoid_bce", "regression": "linear_mse"}
# The tasks whose targets a one-hot head (`nnresearch.nn.losses.ONE_HOT_HEADS`) can take (multi-hot ones
# are normalised for it): binary labels (one output row) and regression targets never are.
ONE_HOT_TASKS = ("multiclass", "multilabel")


def _check_fits_data(c: Config) -> None:
    """The model, its head and the objective must suit the data set's task (`nnresearch.data.DATA_TASKS`);
    what depends on the data's values (a sigmoid head on regression targets outside [0, 1]) is
    checked when the data is loaded (`experiment.check_head_fits`)."""
    from nnresearch.data import DATA_TASKS

    task = DATA_TASKS[c.data.name]
    needed = MODEL_TASKS.get(c.model.name)
    if needed is not None and task != needed:
        suited = ", ".join(name for name, its_task in DATA_TASKS.items() if its_task == needed)
        raise ValueError(f"model={c.model.name} needs a {needed} data set; data.name={c.data.name} is {task} "
                         f"(the {needed} ones: {suited})")
    if c.model.head in ONE_HOT_HEADS and task not in ONE_HOT_TASKS:
        suited = ", ".join(name for name, its_task in DATA_TASKS.items() if its_task in ONE_HOT_TASKS)
        raise ValueError(f"model.head={c.model.head} needs one-hot targets; data.name={c.data.name} is {task} "
                         f"(the multiclass and multilabel ones: {suited}); set model.head={DEFAULT_HEADS[task]}, "
                         f"or leave model.head unset ({task} data gets {DEFAULT_HEADS[task]})")
    _one_of("objective", c.objective, OBJECTIVES)
    if c.objective == "val/acc" and task == "regression":
        raise ValueError(f"objective=val/acc has no value for data.name={c.data.name} (regression targets: every job "
                         "would report NaN); use objective=val/loss")
    if c.objective == "val/acc" and c.model.head is not None and HEADS[c.model.head].accuracy is None:
        raise ValueError(f"objective=val/acc has no value with model.head={c.model.head} (an output without an "
                         "accuracy: every job would report NaN); use objective=val/loss")


def check_batchnorm_batches(batchnorm: bool, n_train: int | None, batch_size: int | None) -> None:
    """ValueError if BatchNorm would normalize a batch of one example: its batch variance is 0, so
    the layer outputs beta whatever its input and passes no gradient back, and the running variance
    is pulled toward 0 (PyTorch refuses such a batch too). That is `trainer.batch_size=1`, or a
    batch size that leaves the `n_train` training examples (None: not known yet) a last batch of one
    (n_train mod B = 1)."""
    if not batchnorm or batch_size is None:
        return
    if batch_size == 1:
        raise ValueError("trainer.batch_size=1 with model.batchnorm=true: a batch of one example has variance 0, so "
                         "BatchNorm outputs beta whatever its input and trains nothing; use trainer.batch_size >= 2")
    if n_train is None or n_train % batch_size != 1:
        return
    fits = next(b for b in range(batch_size + 1, n_train + 2) if n_train % b != 1)
    raise ValueError(f"trainer.batch_size={batch_size} with model.batchnorm=true leaves the {n_train} training "
                     f"examples a last batch of one, whose variance is 0 (BatchNorm trains nothing on it); "
                     f"use another batch size, e.g. {fits}")


def has_batchnorm(m: ModelConfig) -> bool:
    """Whether the model builds a BatchNorm layer: `model.batchnorm` with a hidden layer to normalize."""
    return m.batchnorm and (len(m.widths) if m.widths is not None else m.depth) >= 1


def _split_train_size(d: DataConfig) -> int | None:
    """The whole train split's size, where it is known before loading (from `data.n_samples` or the
    generator's count); None for digits and breast_cancer at their whole set."""
    from nnresearch.data.splits import split_counts

    n = _n_samples(d)
    return split_counts(n, d.val_fraction, d.test_fraction)["train"] if n is not None else None


def known_train_size(d: DataConfig) -> int | None:
    """How many examples a run trains on, where it is known before loading: `data.train_size`, else
    the whole train split's size (`_split_train_size`)."""
    return d.train_size if d.train_size is not None else _split_train_size(d)


def _check_batchnorm(c: Config) -> None:
    """`check_batchnorm_batches` wherever the training split's size is known before loading (digits
    and breast_cancer are checked once loaded, `experiment.check_fits_data`)."""
    check_batchnorm_batches(has_batchnorm(c.model), known_train_size(c.data), c.trainer.batch_size)


def data_may_refuse(cfg: Config) -> bool:
    """Whether `experiment.check_fits_data` may refuse the validated `cfg`: a head with an accuracy
    (its targets must lie in [0, 1]) on regression data, or BatchNorm, `data.train_size` or `data.n_samples`
    (more than the set holds) on a data set whose size `validate` does not know (digits, breast_cancer). The grid sweeper makes the data of just
    these jobs before the first starts (`callbacks.refuse_bad_jobs`)."""
    from nnresearch.data import DATA_TASKS

    task = DATA_TASKS[cfg.data.name]
    head = HEADS[cfg.model.head or DEFAULT_HEADS[task]]
    size_unknown = _split_train_size(cfg.data) is None
    return ((task == "regression" and head.accuracy is not None) or (has_batchnorm(cfg.model) and known_train_size(cfg.data) is None)
            or (cfg.data.train_size is not None and size_unknown)
            or (cfg.data.n_samples is not None and _own_count(cfg.data.name) is None))


def validate(cfg: DictConfig | Config) -> Config:
    """The config as dataclasses, or a ValueError naming the first bad key and its allowed values."""
    c: Config = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    _check_known_keys(c)
    _check_finite(c)
    _check_model(c.model)
    _check_data(c.data)
    _check_trainer(c.trainer)  # before optim: its warmup bound reads trainer.epochs
    _check_optim(c.optim, c.trainer)
    _check_fits_data(c)
    _check_batchnorm(c)
    _one_of("tracking.skip_finished", c.tracking.skip_finished, SKIP_FINISHED)
    if not str(c.tracking.experiment or c.study).strip():
        raise ValueError(f"study={c.study!r} with tracking.experiment={c.tracking.experiment!r}: the MLflow experiment "
                         "needs a name; set study (or tracking.experiment) to a non-empty name")
    return c


def check_machine(c: Config) -> None:
    """A ValueError or OSError if this machine cannot start the run of the validated config `c`: no
    GPU for `trainer.device=gpu`, or no checkpoint here that `trainer.resume` can continue. The
    command line calls it for every run; the grid sweeper for every job before the first starts,
    where the launcher runs the jobs on this machine (not Slurm's or Ray's, whose nodes may have the
    GPU). The tracking store is checked apart (`stores.check_store`), once for the jobs that share it."""
    _check_device(c.trainer)
    _check_resume(c)


# What does not change a run's numbers: where it is logged, how it reports, its checkpoint cadence.
HASH_EXCLUDED = ("tracking", "trainer.progress", "trainer.checkpoint_every", "trainer.resume")
# Schema fields added since stores began tagging runs with `config_hash`, and their defaults: hashed only
# when set away from them, so a run logged before a field existed keeps its hash (a sweep still skips it).
HASH_ADDED = {"data.train_size": None}
# Keys a checkpoint's numbers do not depend on: where and how a run reports, and how far it goes
# (trainer.epochs only moves the lr of the cosine schedule, whose T is the run's total steps).
RESUME_FREE = (*HASH_EXCLUDED, "trainer.epochs", "trainer.eval_every", "trainer.probe_every", "trainer.gradient_noise",
               "trainer.device", "study", "objective")


def resume_settings(cfg: Config) -> dict[str, str]:
    """The flat config keys a checkpoint's numbers depend on (all but `RESUME_FREE`), as stored in it
    and compared when a run resumes from it (`_check_resume`, `experiment.resume`)."""
    free = RESUME_FREE if cfg.optim.schedule != "cosine" else tuple(k for k in RESUME_FREE if k != "trainer.epochs")
    return {key: str(value) for key, value in _schema_fields(cfg) if not within(key, free)}


def within(key: str, dotted_keys: Sequence[str]) -> bool:
    """Whether the flat key `key` is one of `dotted_keys` or lies inside one (`tracking.uri` in `tracking`)."""
    return any(key == dotted or key.startswith(dotted + ".") for dotted in dotted_keys)


def config_hash(cfg: Config) -> str:
    """sha256 (16 hex digits) of everything in the config that decides the run's numbers: the
    nested settings without `HASH_EXCLUDED` and without the `HASH_ADDED` fields at their defaults,
    as sorted JSON."""
    import hashlib
    import json
    from dataclasses import asdict

    settings = asdict(cfg)
    dropped = [*HASH_EXCLUDED, *(dotted for dotted, default in HASH_ADDED.items() if _at(settings, dotted) == default)]
    for dotted in dropped:
        parent, _, key = dotted.rpartition(".")
        del (_at(settings, parent) if parent else settings)[key]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _at(settings: dict[str, Any], dotted: str) -> Any:
    """The value at the dotted path `dotted` of the nested dict `settings`."""
    for name in dotted.split("."):
        settings = settings[name]
    return settings
