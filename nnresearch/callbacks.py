"""Hydra callbacks: a check of a single run's config before Hydra creates its output folder
(`hydra.callbacks.run_check`), a check of a search's direction before any trial (`hydra.callbacks.sweep_check`),
a progress bar over the jobs of a sweep (`hydra.callbacks.sweep_progress`), and a guard that
leaves no run RUNNING when a local sweep is interrupted (`hydra.callbacks.sweep_guard`); and the
grid's expansion they share with the grid sweeper (`hydra_plugins.nnresearch_sweeper`), whose
check of every job before the first starts is `refuse_bad_jobs`.

The bar lives in the process that launches the sweep and counts jobs as they end, whatever runs
them: Hydra's basic launcher runs jobs in that process, which advances the bar directly; joblib
and submitit run them in other processes, which get a copy of the callback without the bar
(Hydra pickles callbacks to them) and mark each ended job with a file that the launching process
counts. Like the per-run bar, it stays quiet when stderr is not a terminal.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import math
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"  # runs the jobs in this process


def sweep_overrides(command_line: list[str], sweeper_params: dict[str, Any], config_loader: Any = None) -> list:
    """The sweeper's `params` with the command line on top (it wins), parsed as Hydra parses them."""
    merged = {key: f"{key}={value}" for key, value in (sweeper_params or {}).items()}
    merged |= {override.split("=", 1)[0]: override for override in command_line}
    return OverridesParser.create(config_loader).parse_overrides(list(merged.values()))


def sweep_size(command_line: list[str], sweeper_params: dict[str, Any]) -> int:
    """How many jobs the basic sweeper makes: the product of the sweep lengths (command line wins)."""
    overrides = sweep_overrides(command_line, sweeper_params)
    return math.prod(len(list(o.sweep_iterator())) for o in overrides if o.is_sweep_override())


def sweep_jobs(command_line: list[str], sweeper_params: dict[str, Any], config_loader: Any = None) -> list[list[str]]:
    """The overrides of every job the basic sweeper makes, in its order (its own grid expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    (jobs,) = BasicSweeper.split_arguments(sweep_overrides(command_line, sweeper_params, config_loader), None)
    return jobs


def _job_configs(loader: Any, config: DictConfig, jobs: list[list[str]]) -> Iterator[DictConfig]:
    """Each job's config (without its `hydra` node) as `loader` composes it for the launcher: the
    grid sweeper's `nnresearch.composition.ComposeOncePerChoice`, which keeps what it composes here
    for the jobs to reuse."""
    for overrides in jobs:
        yield _without_hydra(loader.load_sweep_config(config, overrides))


def _without_hydra(job: DictConfig) -> DictConfig:
    """`job` without its `hydra` node (deleted in place): what the task function gets."""
    with open_dict(job):
        del job["hydra"]
    return job


def _check_search_direction(config: DictConfig) -> None:
    """SystemExit(2) if a search's `hydra.sweeper.direction` (Optuna's) works against `objective`."""
    from nnresearch.config import OBJECTIVE_DIRECTIONS

    direction = OmegaConf.select(config, "hydra.sweeper.direction")
    objective = OmegaConf.select(config, "objective")
    if isinstance(direction, str) and OBJECTIVE_DIRECTIONS.get(objective, direction) != direction:
        print(f"sweep refused before any run started: objective={objective} with hydra.sweeper.direction={direction} "
              f"would search for the worst config; set hydra.sweeper.direction={OBJECTIVE_DIRECTIONS[objective]}",
              file=sys.stderr)
        raise SystemExit(2)


def _launcher(config: DictConfig) -> str | None:
    """The class path of the sweep's launcher (`hydra/launcher`)."""
    return OmegaConf.select(config, "hydra.launcher._target_")


# Launchers whose jobs run on the machine that launches the sweep and die with its process (Hydra's
# basic one, joblib's); jobs on Slurm or a Ray cluster run on their own nodes, outlive it and end their own runs.
LOCAL_LAUNCHERS = (BASIC_LAUNCHER, "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")
# Launchers whose jobs run on this machine, so its GPU, checkpoints and store are theirs: the local ones,
# and submitit's local launcher (its jobs are processes of their own, which end their own runs).
THIS_MACHINE_LAUNCHERS = (*LOCAL_LAUNCHERS, "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher")


def refuse_bad_jobs(loader: Any, config: DictConfig, jobs: list[list[str]], *, job: str = "job") -> None:
    """SystemExit(2), naming the job and its reason, if any of `jobs` composes a config that
    `nnresearch.config.validate` refuses, or, where the jobs run on this machine
    (`THIS_MACHINE_LAUNCHERS`), that `check_machine` refuses (no GPU, no checkpoint) or its data
    refuse (`_check_data_of`); then each tracking store the jobs use is checked once
    (`stores.check_store`), and one that every job uses is refused as the sweep's, not its first
    job's. The grid sweeper's check before the sweep's folder or any run exists; a search's check of
    the corners of its space (`search_corners`), whose refusal names a `job="search point"`."""
    from nnresearch.config import check_machine, validate
    from nnresearch.stores import check_store

    here = _launcher(config) in THIS_MACHINE_LAUNCHERS
    jobs_of_store: dict[str | None, list[int]] = {}
    for number, (overrides, composed) in enumerate(zip(jobs, _job_configs(loader, config, jobs))):
        try:
            checked = validate(composed)
            if here:
                check_machine(checked)
                _check_data_of(checked)
        except (ValueError, OSError) as error:
            swept = [override for override in overrides if any(override not in other for other in jobs)]
            _refuse_sweep(f"{job} {number} of {len(jobs)} ({' '.join(swept)}): {error}")
        if here and checked.tracking.enabled:
            jobs_of_store.setdefault(checked.tracking.uri, []).append(number)
    for uri, numbers in jobs_of_store.items():
        try:
            check_store(uri)
        except (ValueError, OSError) as error:
            listed = ", ".join(map(str, numbers[:8])) + (f", ... ({len(numbers)})" if len(numbers) > 8 else "")
            which = "" if len(numbers) == len(jobs) else f"{job}s {listed} of {len(jobs)}: "
            _refuse_sweep(f"{which}{error}")


def _check_data_of(job: Any) -> None:
    """RefusedBeforeRun (a ValueError) if what only the job's data tell refuses it; its data are made
    only where they may (`config.data_may_refuse`: a head with an accuracy on regression data,
    BatchNorm on digits or breast_cancer)."""
    from nnresearch.config import data_may_refuse

    if data_may_refuse(job):
        from nnresearch.experiment import check_fits_data, prepare  # MLflow's import (~1 s) only here

        check_fits_data(job, prepare(job))


def _refuse(prefix: str, reason: object) -> NoReturn:
    print(f"{prefix}: {reason}", file=sys.stderr)
    raise SystemExit(2) from None


def _refuse_sweep(reason: str) -> NoReturn:
    _refuse("sweep refused before any run started", reason)


def refuse_run(error: Exception) -> NoReturn:
    """A run refused before it exists: one line on stderr, exit status 2 (no traceback)."""
    _refuse("refused, no run created", error)


class RunCheck(Callback):
    """Refuse a single run's bad config, unusable machine or data that refuse it (`_check_data_of`) before
    Hydra creates its output folder (`hydra.callbacks.run_check`): `on_run_start` comes before Hydra's
    `outputs/<date>/<time>/`, and the store is checked last, so a refused run creates none. The run
    validates again where it starts (`nnresearch.run.main`), which a sweep's jobs rely on."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from nnresearch.config import check_machine, validate
        from nnresearch.stores import check_store

        try:
            checked = validate(_without_hydra(config.copy()))  # Hydra goes on with `config`
            check_machine(checked)
            _check_data_of(checked)
            if checked.tracking.enabled:
                check_store(checked.tracking.uri)
        except (ValueError, OSError) as error:
            refuse_run(error)


def search_corners(command_line: list[str], sweeper_params: dict[str, Any], config_loader: Any = None) -> list[list[str]]:
    """The overrides of the corners of a search space: every searched key at each of its choices (a
    range or an interval at its two ends, the largest float below a float interval's open end), the
    other searched keys at their first, the plain overrides as given."""
    fixed, searched = [], []
    for override in sweep_overrides(command_line, sweeper_params, config_loader):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(f"{key}={override.get_value_element_as_str()}")
        elif override.is_range_sweep() and not override.value().shuffle:  # Optuna draws from [start, stop]
            bounds = override.value()
            searched.append([f"{key}={bounds.start}", f"{key}={bounds.stop}"])
        elif override.is_discrete_sweep():
            searched.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:  # Hydra's interval(x, y) is x <= value < y for floats, both ends for ints
            bounds = override.value()
            top = bounds.end if isinstance(bounds.end, int) else math.nextafter(bounds.end, bounds.start)
            searched.append([f"{key}={bounds.start}", f"{key}={top}"])
    first = [values[0] for values in searched]
    return [fixed + first] + [fixed + first[:index] + [value] + first[index + 1:]
                              for index, values in enumerate(searched) for value in values[1:]]


# Sweepers that expand a grid, whose jobs are not a search's: the grid sweeper checks every job before the
# first (`refuse_bad_jobs`), Hydra's basic one only composes them (each job validates itself as it runs).
GRID_SWEEPERS = ("hydra_plugins.nnresearch_sweeper.GridSweeper", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper")


class SweepCheck(Callback):
    """Before any trial of a search (Optuna; `hydra.callbacks.sweep_check`): refuse a direction that
    works against the objective, and check the corners of its space (`search_corners`) as the grid
    sweeper checks its jobs (`refuse_bad_jobs`), so a bad plain value or choice is one line, not the
    first trial's traceback. A search draws its jobs as it goes, and each is validated again when it
    runs; a grid's jobs are all validated up front by the grid sweeper
    (`hydra_plugins.nnresearch_sweeper.GridSweeper`).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_search_direction(config)
        if OmegaConf.select(config, "hydra.sweeper._target_") in GRID_SWEEPERS:
            return
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        corners = search_corners(list(config.hydra.overrides.task), dict(config.hydra.sweeper.get("params") or {}), loader)
        refuse_bad_jobs(loader, config, corners, job="search point")


class SweepProgress(Callback):
    """One tqdm bar per multirun: jobs done out of jobs planned.

    Jobs that end in another process touch `<sweep dir>/.jobs_done/<job number>`; a thread of the
    launching process counts those files every `poll_s` seconds. The folder is removed when the
    multirun ends, or at exit when a failed job or an interrupt ends it first.
    """

    MARKS = ".jobs_done"

    def __init__(self, poll_s: float = 0.5) -> None:
        self.poll_s = poll_s
        self._reset()

    def _reset(self, marks: Path | None = None) -> None:
        self.bar: tqdm | None = None
        self.marks = marks
        self._lock = threading.Lock()  # jobs on threads (joblib's threading backend) share the bar
        self._stop = threading.Event()
        self._counter: threading.Thread | None = None
        self._created: list[Path] = []  # the folders on the sweep dir's path that this instance made

    def __getstate__(self) -> dict[str, Any]:
        """What a job in another process gets: where to mark its end, no bar, no thread."""
        return {"poll_s": self.poll_s, "marks": self.marks}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.poll_s = state["poll_s"]
        self._reset(state["marks"])

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish()  # this instance's previous multirun, if one ended without on_multirun_end
        self._reset()
        try:
            total = sweep_size(list(config.hydra.overrides.task), dict(config.hydra.sweeper.get("params") or {}))
        except HydraException:  # a search (Optuna's interval/tag params) has no grid: count its trials
            total = config.hydra.sweeper.get("n_trials")
        self.bar = tqdm(total=total, desc="sweep", unit="job", disable=not sys.stderr.isatty())
        if self.bar.disable or _launcher(config) == BASIC_LAUNCHER:
            return
        sweep_dir = Path(config.hydra.sweep.dir).absolute()
        self._created = [folder for folder in (sweep_dir, *sweep_dir.parents) if not folder.exists()]
        self.marks = sweep_dir / self.MARKS
        shutil.rmtree(self.marks, ignore_errors=True)  # a sweep dir given again: count this sweep's jobs only
        self.marks.mkdir(parents=True)
        atexit.register(self._finish)  # a failed job or an interrupt ends the multirun without on_multirun_end
        self._counter = threading.Thread(target=self._count_marks, args=(self._stop, self.marks),
                                         name="sweep-progress", daemon=True)
        self._counter.start()

    def _count_marks(self, stop: threading.Event, marks: Path) -> None:
        while not stop.wait(self.poll_s):
            self._show_marked(marks)

    def _show_marked(self, marks: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            done = len(os.listdir(marks))
            with self._lock:
                if self.bar is not None and done > self.bar.n:
                    self.bar.update(done - self.bar.n)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.bar is not None:  # the job ran in the launching process
            with self._lock:
                self.bar.update(1)
        elif self.marks is not None:
            with contextlib.suppress(FileNotFoundError):  # the sweep has ended: a straggler
                (self.marks / str(config.hydra.job.num)).touch()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish()

    def _finish(self) -> None:
        """Stop counting (a last count first), remove the marks and the folders made for them that
        stayed empty (a sweep refused before its first job), close the bar; safe to call twice."""
        if self._counter is not None:
            atexit.unregister(self._finish)
            self._stop.set()
            self._counter.join()
            self._show_marked(self.marks)
            shutil.rmtree(self.marks, ignore_errors=True)
            for folder in self._created:  # deepest first; one that holds anything stays
                with contextlib.suppress(OSError):
                    folder.rmdir()
            self._counter = None
        if self.bar is not None:
            self.bar.close()


class SweepGuard(Callback):
    """In the process that launches a local multirun: Ctrl-C or SIGTERM interrupts the sweep, and on
    the way out the runs its killed workers left RUNNING (and the parent) are marked KILLED.

    Joblib kills its workers (SIGKILL) as soon as the launching process is interrupted, too soon for
    them to end their own runs; without a handler, SIGTERM kills the launching process outright and
    leaves the workers running on their own.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        """What a job in another process gets (submitit pickles the launcher with its callbacks): a
        guard without the launching process's signal handlers, which hold locks and threads."""
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._previous = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        reap = None
        if OmegaConf.select(config, "tracking.enabled", default=False) and \
                _launcher(config) in LOCAL_LAUNCHERS:
            from nnresearch.run import sweep_id  # the parent run's key, as the jobs compute it

            # MLflow cannot be imported at exit, nor safely inside a signal handler (a second signal
            # would cut the import short): it is imported now, beside the launcher, for the reaper.
            preload = threading.Thread(target=importlib.import_module, args=("nnresearch.tracking",),
                                       name="sweep-guard-import", daemon=True)
            preload.start()
            experiment = OmegaConf.select(config, "tracking.experiment") or OmegaConf.select(config, "study")
            reap = functools.partial(_end_interrupted_sweep, preload, OmegaConf.select(config, "tracking.uri"),
                                     experiment, sweep_id(config.hydra))
        interrupted = SweepInterrupt(reap)
        self._previous = {signum: signal.signal(signum, interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class SweepInterrupt:
    """`SweepGuard`'s SIGINT / SIGTERM handler: the first signal registers `reap` to run at exit and
    stops the sweep (KeyboardInterrupt, or SystemExit(128 + signum)); later ones are ignored, so they
    cannot cut short the launcher stopping its workers, nor a job of the basic launcher ending its run
    and the parent (`nnresearch.run.main` leaves this handler in place of its own)."""

    def __init__(self, reap: Callable[[], None] | None) -> None:
        self.reap = reap
        self.stopping = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.stopping:
            print("already stopping the sweep", file=sys.stderr)
            return
        self.stopping = True
        if self.reap is not None:
            atexit.register(self.reap)  # runs after the launcher has stopped its workers
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


def _end_interrupted_sweep(preload: threading.Thread, uri: str | None, experiment: str, sweep: str) -> None:
    """At exit after an interrupt: end what the killed workers left RUNNING, and the parent, KILLED.
    Signals are ignored meanwhile: a second Ctrl-C would otherwise leave the runs RUNNING for good."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    try:
        preload.join()
        from nnresearch import tracking

        parent = tracking.find_parent_run(uri, experiment, sweep)
        ended = tracking.end_running_runs(uri, parent, "KILLED") if parent else []
    except Exception as error:  # noqa: BLE001 - at exit: report, never mask the interrupt
        print(f"could not end the runs of the interrupted sweep: {error}", file=sys.stderr)
        return
    if ended:
        print(f"interrupted sweep: marked {len(ended)} run(s) KILLED", file=sys.stderr)
