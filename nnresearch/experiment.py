"""One job: data, network, optimizer and tracking built from a validated config, then `train()`.

This is the only module that knows both the core and MLflow; `run.py` hands it Hydra's config.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nnresearch import backend, tracking
from nnresearch.backend import namespace
from nnresearch.checkpoint import check_epochs_left, load_checkpoint, save_checkpoint
from nnresearch.config import (DEFAULT_HEADS, OPTIMIZER_FIELDS, Config, check_batchnorm_batches, config_hash,
                               has_batchnorm, resume_settings)
from nnresearch.data import Dataset, load_dataset, permute_features
from nnresearch.mlflow_sink import flatten
from nnresearch.nn import architectures
from nnresearch.nn.architectures import Builder, Init
from nnresearch.nn.losses import ONE_HOT_HEADS, argmax_accuracy, on_label_sets, threshold_accuracy
from nnresearch.nn.network import Network, NonFiniteError
from nnresearch.nn.optim import make_optimizer
from nnresearch.nn.schedules import make_schedule
from nnresearch.sinks import MemorySink, NullSink, TeeSink
from nnresearch.train import LoopOptions, Splits, batch_starts, evaluate, train

PERMUTATION_SEED = 1234  # one fixed feature permutation for every run of the inductive-bias study
TASK_ACCURACY = {"binary": threshold_accuracy, "multilabel": threshold_accuracy, "multiclass": argmax_accuracy}
SHORT_INIT = {"xavier_normal": "xavier", "xavier_uniform": "xavieru", "he_normal": "he", "he_uniform": "heu",
              "lecun_normal": "lecun", "normal": "normal", "uniform": "uniform", "zeros": "zeros", "constant": "const"}


@dataclass
class Outcome:
    """What one job produced: the objective Hydra's sweepers minimise or maximise, and the metrics."""

    objective: float
    metrics: dict[str, float]
    run_id: str | None
    run_name: str
    diverged_at: int | None = None


def build_network(cfg: Config, data: Dataset, xp: Any, rng: np.random.Generator) -> Network:
    """The architecture `cfg.model` for `data`'s input and output sizes."""
    m = cfg.model
    init = Init(m.init, m.init_std, m.init_limit, m.init_value, m.bias_init, m.bias_value)
    builder = Builder(xp, backend.dtype_of(xp, cfg.trainer.dtype), rng, init, m.activation, m.alpha, m.batchnorm)
    head = m.head or DEFAULT_HEADS[data.task]
    network = _architecture(cfg, data, builder, head)
    if network.head.accuracy is not None:  # accuracy follows the task, whichever output the study puts on it
        network.head = replace(network.head, accuracy=TASK_ACCURACY.get(data.task, network.head.accuracy))
    if data.task == "multilabel" and network.head.name in ONE_HOT_HEADS:
        network.head = on_label_sets(network.head)
    return network


def _architecture(cfg: Config, data: Dataset, builder: Builder, head: str) -> Network:
    m = cfg.model
    n_in, n_out = data.n_features, data.n_outputs
    if m.name == "logistic":  # validate has checked that the model fits the data's task (config.MODEL_TASKS)
        return architectures.logistic_regression(builder, n_in)
    if m.name == "softmax_regression":
        return architectures.mlp(builder, [n_in, n_out], m.head or "softmax_ce")
    if m.name == "residual_mlp":
        return architectures.residual_mlp(builder, n_in, m.width, m.depth, n_out, head)
    if m.name == "cnn1d":
        return architectures.cnn1d(builder, n_in, list(m.channels), m.kernel_size, n_out, head)
    widths = list(m.widths) if m.widths is not None else [m.width] * m.depth
    return architectures.mlp(builder, [n_in, *widths, n_out], head)


def run_name(cfg: Config, extra: list[str] | None = None) -> str:
    """A name a person can scan: `mlp-relu-d8-w64-he-s0`, then any swept keys (`-lr0.1-bs1`)."""
    m = cfg.model
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    parts = [m.name]
    if m.name in ("mlp", "residual_mlp", "cnn1d"):
        parts.append(m.activation)
        if m.name == "cnn1d":
            parts += [f"c{'x'.join(map(str, m.channels))}", f"k{m.kernel_size}"]
        else:
            parts.append(f"d{m.depth}")
            if m.depth:  # no hidden layer, no width
                parts.append(f"w{'x'.join(map(str, m.widths)) if m.widths else m.width}")
    parts.append(SHORT_INIT.get(m.init, m.init))
    parts += extra or []
    parts.append(f"s{cfg.trainer.seed}")
    return "-".join(parts)


@cache
def git_commit() -> str:
    """The repository's HEAD commit when this process first asks (the code it runs: a sweep's jobs
    in one process ask once, not once per run), or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# Besides nnresearch's own code, what makes a run's data and float32 arithmetic.
CODE_LIBRARIES = ("numpy", "scikit-learn", "mnist1d")


@cache
def code_version() -> str:
    """The code a run's numbers come from, as 16 hex digits: nnresearch's Python source
    (`source_digest` of the installed package, uncommitted edits included) and the versions of
    `CODE_LIBRARIES`. A finished run stands in for a new one only with the same config and the same
    code version (`already_finished`): after a fix in the core, a re-run sweep trains again."""
    versions = "".join(f"{name}=={_installed_version(name)}\n" for name in CODE_LIBRARIES)
    return hashlib.sha256((source_digest(Path(__file__).resolve().parent) + versions).encode()).hexdigest()[:16]


def source_digest(package: Path) -> str:
    """sha256 of every `.py` file under `package`, by relative path and content: a commit that only
    touches docs, tests or configs (configs are in `config_hash`) leaves it as it is. Hidden names and
    what is not a regular file (an editor's `.#config.py` lock link) are not source."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.name.startswith(".") or not path.is_file():
            continue
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def device_splits(data: Dataset, xp: Any, dtype: Any) -> tuple[Splits, Any, Any]:
    """Train/val splits and the test split on the device, in `dtype`."""
    def cast(a: np.ndarray) -> Any:
        return xp.asarray(np.ascontiguousarray(a), dtype=dtype)

    splits = Splits(cast(data.X_train), cast(data.Y_train), cast(data.X_val), cast(data.Y_val))
    return splits, cast(data.X_test), cast(data.Y_test)


class RefusedBeforeRun(ValueError):
    """A job that cannot start as configured, found before its MLflow run exists (`execute`): data
    that cannot be made so (`load_data`), data and a network that do not fit in memory (`prepare`), a
    head unfit for them (`check_head_fits`), a checkpoint it cannot continue (`resume`)."""


def load_data(cfg: Config) -> Dataset:
    """The data set `cfg.data` describes, split, scaled, cut to `data.train_size` and (for the inductive-bias
    study) permuted."""
    d = cfg.data
    try:
        data = load_dataset(d.name, seed=d.seed, n_samples=d.n_samples, noise=d.noise, n_classes=d.n_classes,
                            val_fraction=d.val_fraction, test_fraction=d.test_fraction, standardize=d.standardize,
                            train_size=d.train_size,
                            **({"compositions": d.compositions} if d.compositions is not None else {}))
    except ValueError as error:  # a count or option the data set cannot honour (more samples than it has, ...)
        raise RefusedBeforeRun(str(error)) from error
    return permute_features(data, PERMUTATION_SEED) if d.permute_features else data


class Prepared(NamedTuple):
    """What a run trains on: its data set, network, device splits, test split and generator."""

    data: Dataset
    network: Network
    splits: Splits
    X_test: Any
    Y_test: Any
    rng: np.random.Generator


def prepare(cfg: Config) -> Prepared:
    """Data, network and splits of `cfg` on its device and dtype, built in the order that fixes a
    run's numbers (the generator draws the initial weights first, then every epoch's order).
    RefusedBeforeRun when they do not fit in memory (NumPy's or CuPy's MemoryError, which names the
    array it could not allocate)."""
    try:
        data = load_data(cfg)
        xp = backend.select(cfg.trainer.device)
        rng = backend.make_rng(cfg.trainer.seed)
        network = build_network(cfg, data, xp, rng)
        splits, X_test, Y_test = device_splits(data, xp, backend.dtype_of(xp, cfg.trainer.dtype))
    except MemoryError as error:
        raise RefusedBeforeRun(f"the data and network of this run do not fit in memory ({error}); make them smaller "
                               "(data.n_samples, model.width, model.depth, model.widths, model.channels)") from None
    return Prepared(data, network, splits, X_test, Y_test, rng)


def execute(cfg: Config, *, overrides: list[str] | None = None, sweep: list[str] | None = None,
            choices: dict[str, str] | None = None, parent_run_id: str | None = None,
            output_dir: str | Path = ".", sweep_id: str | None = None) -> Outcome:
    """Run one validated config end to end and log it; returns the objective and final metrics.

    With `trainer.checkpoint_every=N`, a checkpoint is written to `<output_dir>/checkpoints/` every
    N epochs; `trainer.resume=<checkpoint>` continues from one (network, optimizer and generator).
    What fails before the MLflow run is opened (data that cannot be made as configured, a head that
    cannot fit them, a BatchNorm batch of one example, a checkpoint written with other settings (`resume_settings`), with no epoch left
    or for another network) raises `RefusedBeforeRun`: nothing was logged.

    A diverged run (NaN/inf) is a result, not a crash: it ends FINISHED with tags
    `diverged=true`, `diverged_at_step`, `diverged_layer`, and an objective of NaN.
    """
    prepared = prepare(cfg)
    check_fits_data(cfg, prepared)
    data, network, splits, X_test, Y_test, rng = prepared
    o = cfg.optim
    optimizer = make_optimizer(o.name, **_optimizer_options(o))
    steps_per_epoch = len(batch_starts(splits.X_train.shape[-1], cfg.trainer.batch_size))
    schedule = make_schedule(o.schedule, o.lr, cfg.trainer.epochs * steps_per_epoch,
                             step_size=o.step_epochs * steps_per_epoch if o.schedule == "step_decay" else None,
                             gamma=o.gamma, min_lr=min(o.min_lr, o.lr), warmup_steps=o.warmup_epochs * steps_per_epoch)
    t = cfg.trainer
    options = LoopOptions(t.epochs, t.batch_size, o.clip_norm, o.clip_value, t.eval_every, t.probe_every,
                          t.gradient_noise, t.progress)
    settings = resume_settings(cfg)
    start_epoch = resume(cfg, network, optimizer, rng, settings) if t.resume else 0
    checkpoints = Path(output_dir) / "checkpoints"

    def save_every_n(epoch: int) -> None:
        if t.checkpoint_every and epoch % t.checkpoint_every == 0:
            save_checkpoint(checkpoints / f"epoch{epoch:05d}.npz", network, optimizer, rng, epoch, settings)

    name = run_name(cfg, sweep)
    tags = {"study": cfg.study, "git_commit": git_commit(), "backend": backend.backend_name(namespace(splits.X_train)),
            tracking.CONFIG_HASH_TAG: config_hash(cfg), tracking.CODE_VERSION_TAG: code_version(),
            "dataset": data.name, "dataset_hash": data.content_hash, "model": cfg.model.name}
    if sweep_id is not None:
        tags[tracking.SWEEP_ID_TAG] = sweep_id
    history = MemorySink()
    with open_tracking(cfg, name, tags, parent_run_id) as mlflow_sink:
        mlflow_sink.log_params(flatten(asdict(cfg)) | {f"choice.{k}": v for k, v in (choices or {}).items()}
                               | {f"dataset.{k}": v for k, v in data.describe().items()}
                               | {"model.parameters": network.parameter_count()})
        mlflow_sink.log_dict(asdict(cfg), "config.yaml")
        mlflow_sink.log_text("\n".join(overrides or []) + "\n", "overrides.txt")
        mlflow_sink.log_arrays(_host_state(network), "params/init.npz")
        diverged_at = None
        try:
            final_step = cfg.trainer.epochs * steps_per_epoch
            metrics = train(network, splits, optimizer, schedule, options, rng, TeeSink(mlflow_sink, history),
                            on_epoch_end=save_every_n, start_epoch=start_epoch)
            mlflow_sink.log_arrays(_host_state(network), "params/final.npz")
            metrics |= {f"test/{k}": v for k, v in evaluate(network, X_test, Y_test, final_step).items()}
            mlflow_sink.log_metrics({k: v for k, v in metrics.items() if k.startswith("test/")}, step=cfg.trainer.epochs)
        except NonFiniteError as error:
            diverged_at = error.step
            mlflow_sink.set_tags({"diverged": "true", "diverged_at_step": str(error.step), "diverged_layer": error.layer,
                                  "diverged_quantity": error.quantity})
            metrics = {name: values[-1][1] for name, values in history.history.items()}
        mlflow_sink.log_table(_diagnostics_table(history), "diagnostics.csv")
        objective = math.nan if diverged_at is not None else metrics.get(cfg.objective, math.nan)
        return Outcome(objective, metrics, mlflow_sink.run_id, name, diverged_at)


def check_fits_data(cfg: Config, prepared: Prepared) -> None:
    """RefusedBeforeRun for what only the made data tell: a head unfit for their targets
    (`check_head_fits`), a BatchNorm batch of one example (`config.check_batchnorm_batches`, with
    the training split's size, which `validate` knows only for most data sets)."""
    splits = prepared.splits
    check_head_fits(cfg, prepared.data, prepared.network,
                    [(splits.X_train, splits.Y_train), (splits.X_val, splits.Y_val), (prepared.X_test, prepared.Y_test)])
    try:
        check_batchnorm_batches(has_batchnorm(cfg.model), splits.X_train.shape[-1], cfg.trainer.batch_size)
    except ValueError as error:
        raise RefusedBeforeRun(str(error)) from None


def check_head_fits(cfg: Config, data: Dataset, network: Network, parts: list[tuple[Any, Any]]) -> None:
    """RefusedBeforeRun if the network's head cannot fit the data's targets (a regression data set
    under softmax_ce, ...): `Network.check_batch` on every split."""
    try:
        for X, Y in parts:
            network.check_batch(X, Y)
    except ValueError as error:
        fitting = DEFAULT_HEADS[data.task]
        if cfg.model.head is None:
            raise RefusedBeforeRun(f"data.name={cfg.data.name} does not fit the network model.name={cfg.model.name} "
                                   f"builds for it: {error}") from error
        raise RefusedBeforeRun(f"model.head={cfg.model.head} cannot fit data.name={cfg.data.name} ({data.task} targets): "
                               f"{error}; set model.head={fitting}, or leave model.head unset ({data.task} data gets "
                               f"{fitting})") from error


def resume(cfg: Config, network: Network, optimizer: Any, rng: np.random.Generator, settings: dict[str, str]) -> int:
    """Load `trainer.resume` into network, optimizer and generator; its finished epochs, or
    RefusedBeforeRun if it is missing or not a checkpoint, its settings differ from this run's, its
    arrays do not fit the network or it has no epoch left to train."""
    t = cfg.trainer
    try:
        start = load_checkpoint(t.resume, network, optimizer, rng, settings)
        check_epochs_left(t.resume, start, t.epochs)
    except (ValueError, FileNotFoundError) as error:
        raise RefusedBeforeRun(str(error)) from error
    return start


def experiment_name(cfg: Config) -> str:
    """The MLflow experiment of a run: `tracking.experiment`, else the study's name."""
    return cfg.tracking.experiment or cfg.study


def open_tracking(cfg: Config, name: str, tags: dict[str, str], parent_run_id: str | None) -> Any:
    """The MLflow run's context (ends FINISHED / FAILED / KILLED), or a do-nothing sink when tracking is off."""
    if not cfg.tracking.enabled:
        return nullcontext(NullSink())
    return tracking.open_run(cfg.tracking.uri, experiment_name(cfg), name, tags=tags, parent_run_id=parent_run_id)


def _skips(cfg: Config, in_sweep: bool) -> bool:
    """Whether `tracking.skip_finished` lets this job stand in a finished run for itself."""
    policy = cfg.tracking.skip_finished
    return cfg.tracking.enabled and (policy == "always" or (policy == "sweeps" and in_sweep))


NEWEST_RUNS = 10  # finished runs of a config `already_finished` reads at once


class Finished(NamedTuple):
    """What a job's config has already run: `outcome` of a FINISHED run with this exact config and
    code (`code_version`), which stands in for the job; else `other_code`, (run id, run name) of the
    newest FINISHED run of this config under other code, which the job trains again, saying why."""

    outcome: Outcome | None = None
    other_code: tuple[str, str] | None = None


def already_finished(cfg: Config, in_sweep: bool) -> Finished:
    """The FINISHED runs of this config, when `tracking.skip_finished` says to skip them: one query for
    its `NEWEST_RUNS` newest runs, of which the newest with this code (a second query only when none of
    a full window has it)."""
    if not _skips(cfg, in_sweep):
        return Finished()
    uri, name, config = cfg.tracking.uri, experiment_name(cfg), config_hash(cfg)
    runs = tracking.finished_runs_with_config(uri, name, config, max_results=NEWEST_RUNS)
    same = next((run for run in runs if run.data.tags.get(tracking.CODE_VERSION_TAG) == code_version()), None)
    if same is None and len(runs) == NEWEST_RUNS:  # this code's run may be older than those: ask for it alone
        same = next(iter(tracking.finished_runs_with_config(uri, name, config, code_version(), max_results=1)), None)
    if same is not None:
        metrics = dict(same.data.metrics)
        return Finished(Outcome(metrics.get(cfg.objective, math.nan), metrics, same.info.run_id, same.info.run_name))
    return Finished(other_code=(runs[0].info.run_id, runs[0].info.run_name) if runs else None)


def _optimizer_options(o: Any) -> dict[str, float]:
    """The settings optimizer `o.name` reads (`OPTIMIZER_FIELDS`), as keyword arguments of `make_optimizer`."""
    return {key: getattr(o, key) for key in OPTIMIZER_FIELDS[o.name]}


def _host_state(network: Network) -> dict[str, np.ndarray]:
    return {name: backend.to_numpy(array) for name, array in network.state().items()}


def _diagnostics_table(history: MemorySink) -> list[dict[str, float]]:
    """Per-layer diagnostics as rows (step, layer, metric columns) for the `diagnostics.csv` artifact."""
    rows: dict[tuple[int, str], dict[str, float]] = {}
    for name, values in history.history.items():
        if "/layer" not in name:
            continue
        metric, layer = name.split("/")
        for step, value in values:
            rows.setdefault((step, layer), {"step": step, "layer": layer})[metric] = value
    return [rows[key] for key in sorted(rows, key=lambda k: (k[0], int(k[1].removeprefix("layer"))))]
