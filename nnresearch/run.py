"""The command line: `python -m nnresearch.run [key=value ...]`, `-m` for sweeps.

Hydra composes `conf/` (and `experiment=<name>` from `experiments/`) into a config; this module
validates it before anything is created, hands it to `nnresearch.experiment.execute` and returns
the objective (`objective=val/loss` by default) for Hydra's sweepers.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from nnresearch.startup import frozen_imports

with frozen_imports():  # the heavier imports in main() freeze everything imported by then
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from nnresearch.config import OBJECTIVE_DIRECTIONS, Config, check_machine, register, validate
    from nnresearch.paths import CONFIG_DIR

register()


def register_grid_sweeper() -> None:
    """Make `hydra/sweeper=grid` known to Hydra however nnresearch was installed.

    Hydra finds plugins by scanning the hydra_plugins folders on sys.path, which setuptools' default
    editable install hides (its import hook still imports them). The scan runs first: it re-imports
    Hydra's own plugin modules, and a sweeper imported before it would subclass a stale BasicSweeper."""
    with frozen_imports():  # the scan imports every plugin module
        plugins = Plugins.instance()
        from hydra_plugins.nnresearch_sweeper import GridSweeper
    plugins.register(GridSweeper)


register_grid_sweeper()

# Group choices and keys that already appear in the run name, or that would only clutter it.
NAMED_GROUPS = ("model", "experiment", "profile", "tracking")
NAMED_KEYS = {"model.name", "model.activation", "model.depth", "model.width", "model.widths", "model.channels",
              "model.kernel_size", "model.init", "trainer.seed", "study",
              "objective", "trainer.checkpoint_every", "trainer.resume", "trainer.epochs", "trainer.progress",
              "trainer.device", "trainer.eval_every", "trainer.probe_every", "data.n_samples"}
NAMED_PREFIXES = ("tracking.", "hydra.")
SHORT_KEYS = {"optim.lr": "lr", "trainer.batch_size": "bs", "optim.name": "", "data.name": "", "model.bias_value": "bias",
              "optim.weight_decay": "wd", "optim.clip_norm": "clip", "model.batchnorm": "bn", "model.alpha": "alpha",
              "data.permute_features": "perm", "data.train_size": "n", "model.head": ""}


def swept_values(task_overrides: list[str]) -> list[str]:
    """`['optim.lr=0.1', 'optim=adam', 'model.depth=4']` -> `['lr0.1', 'adam']`: what a run name should add."""
    parts = []
    for override in task_overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in NAMED_GROUPS or key in NAMED_KEYS or key.startswith(NAMED_PREFIXES):
            continue
        is_group = "." not in key  # a config group choice such as optim=adam shows as "adam"
        parts.append(value if is_group else SHORT_KEYS.get(key, key.split(".")[-1]) + value)
    return parts


def config_choices(hydra_cfg: DictConfig) -> dict[str, str]:
    """The config-group options this job was composed from (`model: mlp`, `mitigation: residual`, ...)."""
    return {group: str(option) for group, option in hydra_cfg.runtime.choices.items()
            if not group.startswith("hydra") and option is not None}


def sweep_id(hydra_cfg: DictConfig) -> str | None:
    """An id shared by the jobs of one multirun (a hash of its sweep directory); None for a single run."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return hashlib.sha1(str(Path(hydra_cfg.sweep.dir).resolve()).encode()).hexdigest()[:12]


def sweep_parent(cfg: Config, hydra_cfg: DictConfig) -> str | None:
    """The parent run that groups the jobs of this multirun (one per sweep directory)."""
    if not cfg.tracking.enabled or hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    from nnresearch import tracking
    from nnresearch.experiment import experiment_name

    sweep = sweep_id(hydra_cfg)
    return tracking.open_parent_run(cfg.tracking.uri, experiment_name(cfg), sweep, f"{cfg.study}-sweep-{sweep[:6]}",
                                    tags={"command": " ".join(sys.argv)})


def show_in_dashboard(cfg: Config, hydra_cfg: DictConfig, parent: str | None, metrics: Iterable[str]) -> None:
    """After a job of a sweep: its experiment's MLflow dashboard, prepared if the job logged new metric names."""
    if parent is None:
        return
    from nnresearch import dashboards
    from nnresearch.experiment import experiment_name

    dashboards.prepare_sweep_dashboard(cfg.tracking.uri, experiment_name(cfg), list(hydra_cfg.overrides.task), parent,
                                       objective=cfg.objective, study=cfg.study, job_metrics=metrics)


def sweeper_value(cfg: Config, objective: float) -> float:
    """What a sweeper is told: the objective, or for a diverged run (NaN) the worst value in its
    direction, +inf to minimize and -inf to maximize. Optuna fails a NaN trial, and its Hydra sweeper
    then stops the whole search; an infinite one is a finished trial it learns to avoid."""
    if not math.isnan(objective):
        return objective
    return math.inf if OBJECTIVE_DIRECTIONS[cfg.objective] == "minimize" else -math.inf


class Terminated(SystemExit):
    """SIGTERM in a single run: a SystemExit with the shell's status for it (143), so the MLflow run is
    flushed and marked KILLED instead of left RUNNING; `__main__` says so in one line."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


def _sweep_guarded() -> bool:
    """Whether this process launches a local sweep whose guard handles SIGTERM (`callbacks.SweepInterrupt`):
    a job of the basic launcher keeps it, which ignores a second signal while the run and its parent end."""
    from nnresearch.callbacks import SweepInterrupt  # already imported: Hydra made the callbacks

    return isinstance(signal.getsignal(signal.SIGTERM), SweepInterrupt)


@contextlib.contextmanager
def _refused_plainly(in_sweep: bool, errors: tuple[type[Exception], ...] = (ValueError, OSError)) -> Iterator[None]:
    """A bad config value or an unusable store (`errors`), found before any run exists: one line on
    stderr and exit status 2 instead of a traceback. In a sweep the error stays an exception, which the
    launcher reports against its job (a grid's jobs were all validated before the first started)."""
    try:
        yield
    except errors as error:
        if in_sweep:
            raise
        from nnresearch.callbacks import refuse_run

        refuse_run(error)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(dict_cfg: DictConfig) -> float:
    # Imported here, not at the top: MLflow and scikit-learn take seconds to import and --help needs neither.
    # The data sets import scikit-learn only when they generate (so validating is cheap), and MLflow
    # imports its SQLAlchemy store (~1 s) when the store is first opened: both belong in the block too.
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    with frozen_imports(), _refused_plainly(in_sweep):
        cfg = validate(dict_cfg)
        check_machine(cfg)
        import sklearn.datasets  # noqa: F401
        import sklearn.model_selection  # noqa: F401

        from nnresearch import stores, tracking
        from nnresearch.experiment import RefusedBeforeRun, already_finished, execute

        if cfg.tracking.enabled:
            stores.ensure_store(cfg.tracking.uri)
    study = hydra_cfg.runtime.choices.get("experiment")
    if study is not None and not in_sweep:
        print(f"note: experiment={study} is a sweep; without -m this is one run of its defaults "
              f"(python -m nnresearch.run -m experiment={study} runs its grid)", file=sys.stderr)
    finished, earlier = already_finished(cfg, in_sweep)
    if finished is not None:
        parent = sweep_parent(cfg, hydra_cfg)
        if parent is not None:
            tracking.adopt_run(cfg.tracking.uri, finished.run_id, parent)
        show_in_dashboard(cfg, hydra_cfg, parent, finished.metrics)
        print(f"skipped {finished.run_name}: this exact config already finished as run {finished.run_id}, "
              "with this code (tracking.skip_finished=never re-runs it)")
        return sweeper_value(cfg, finished.objective)
    if earlier is not None:
        print(f"running again: this config finished as run {earlier[1]} ({earlier[0]}) under other code "
              "(nnresearch's source or numpy, scikit-learn, mnist1d changed since)")
    if threading.current_thread() is threading.main_thread() and not _sweep_guarded():
        signal.signal(signal.SIGTERM, _terminate)
    overrides = list(hydra_cfg.overrides.task)
    parent = sweep_parent(cfg, hydra_cfg)
    try:
        with _refused_plainly(in_sweep, (RefusedBeforeRun,)):  # data, head or checkpoint unfit: still no run
            outcome = execute(cfg, overrides=overrides, sweep=swept_values(overrides), choices=config_choices(hydra_cfg),
                              parent_run_id=parent, output_dir=hydra_cfg.runtime.output_dir, sweep_id=sweep_id(hydra_cfg))
    except tracking.TrackingServerLost as lost:
        if in_sweep:
            raise
        print(f"error: {lost}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception:
        if parent is not None:  # a job that failed before its run existed fails the sweep, as a failed child does
            with contextlib.suppress(Exception):  # the job's own error (perhaps the store's) is the one to see
                tracking.fail_parent_run(cfg.tracking.uri, parent)
        raise
    show_in_dashboard(cfg, hydra_cfg, parent, outcome.metrics)
    summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(outcome.metrics.items()) if k.split("/")[0] in ("train", "val", "test"))
    print(f"run {outcome.run_name} ({outcome.run_id or 'tracking off'}): {summary}")
    if outcome.diverged_at is not None:
        print(f"  diverged at step {outcome.diverged_at}")
    if cfg.tracking.enabled and hydra_cfg.mode != RunMode.MULTIRUN:
        print(f"  browse it: python -m nnresearch.ui --uri {stores.resolve_uri(cfg.tracking.uri)}")
    return sweeper_value(cfg, outcome.objective)


def interrupted_exit() -> None:
    """Ctrl-C: one line instead of a traceback; exit status 130, as a shell reports SIGINT."""
    print("interrupted: a tracked run in progress ends KILLED, with what it had logged", file=sys.stderr)
    raise SystemExit(130)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        interrupted_exit()
    except Terminated:
        print("terminated: a tracked run in progress ends KILLED, with what it had logged", file=sys.stderr)
        raise
