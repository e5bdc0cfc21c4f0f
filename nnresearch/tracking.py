"""MLflow runs: one run per job, nested under its sweep's parent run, never left RUNNING.

Ground floor: this module knows MLflow and nothing of the network code or Hydra. The wiring layer
opens a run with `open_run(...)` and hands the yielded `MLflowSink` (`nnresearch.mlflow_sink`) to
the training loop, which only sees the `nnresearch.sinks.Sink` protocol. Where the store is and how
it is created is `nnresearch.stores`.

Choices that matter for multirun sweeps:

- Runs are created with `MlflowClient`, never the fluent `mlflow.start_run`, so no "active run"
  survives from one job to the next in a reused worker process.
- A process looks up an experiment's id, a sweep's parent run and a parent's experiment once, not
  once per job: a sweep's jobs in one process (Hydra's basic launcher) skip those queries.
- The run always ends FINISHED, FAILED (exception) or KILLED (KeyboardInterrupt, SystemExit),
  with every metric logged before the end flushed first; except where its tracking server stops
  answering: then it stays RUNNING there and the error says so (`TrackingServerLost`).

Artifacts of experiments created here go to `<db dir>/mlruns/<experiment>/`.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags

from nnresearch.mlflow_sink import MLflowSink, check_flush_every, signals_held
from nnresearch.stores import ensure_store, forget_store, lost_reason, server_lost, sqlite_path, store_lock

PARENT_RUN_TAG = "mlflow.parentRunId"
DESCRIPTION_TAG = "mlflow.note.content"
SWEEP_ID_TAG = "nnresearch.sweep_id"
ROLE_TAG = "nnresearch.role"
CONFIG_HASH_TAG = "nnresearch.config_hash"
CODE_VERSION_TAG = "nnresearch.code_version"
JOB_FAILED_TAG = "nnresearch.job_failed"  # on a parent: one of its jobs failed, perhaps before its run existed
HOST_TAG = "nnresearch.host"  # the machine and process that run a job: `end_orphaned_runs` reads them
PID_TAG = "nnresearch.pid"
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")

T = TypeVar("T")

# What this process has looked up in a store, so that the jobs of a sweep run by one process (Hydra's
# basic launcher) ask once instead of once per job: (uri, experiment name) -> the id of the active
# experiment, forgotten when a run cannot be created in it (`_in_experiment`); (uri, run id) -> its
# experiment id, which MLflow never changes; (uri, experiment name, sweep id) -> the sweep's parent run;
# (uri, experiment id) whose orphaned runs were ended (`end_orphaned_runs`), once per process.
_EXPERIMENT_IDS: dict[tuple[str, str], str] = {}
_RUN_EXPERIMENTS: dict[tuple[str, str], str] = {}
_SWEEP_PARENTS: dict[tuple[str, str, str], str] = {}
_ORPHANS_ENDED: set[tuple[str, str]] = set()


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """`_active_or_new_experiment`, looked up once per process (see `_in_experiment` for when it changes)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"experiment name must be a non-empty string, got {name!r}")
    if (uri, name) not in _EXPERIMENT_IDS:
        _EXPERIMENT_IDS[(uri, name)] = _active_or_new_experiment(client, name, uri)
    return _EXPERIMENT_IDS[(uri, name)]


def _active_or_new_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of the active experiment `name`, created if absent (safe if created in parallel)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(uri, name))
        except MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise ValueError(
            f"experiment {name!r} is deleted in {uri}; restore it "
            f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) "
            "or choose another experiment name"
        )
    return experiment.experiment_id


def _in_experiment(client: MlflowClient, uri: str, name: str, create: Callable[[str], T]) -> T:
    """`create(experiment id)` for experiment `name`. If it fails with an id remembered from earlier
    in this process (the experiment was deleted since, or the store replaced), the id is looked up
    afresh and `create` tried once more: a deleted experiment then fails naming how to restore it."""
    remembered = (uri, name) in _EXPERIMENT_IDS
    try:
        return create(_experiment_id(client, name, uri))
    except MlflowException:
        if not remembered:
            raise
        del _EXPERIMENT_IDS[(uri, name)]
        return create(_experiment_id(client, name, uri))


def _known_experiment_id(client: MlflowClient, uri: str, name: str) -> str | None:
    """The id of experiment `name` if it exists (creates nothing)."""
    if (uri, name) in _EXPERIMENT_IDS:
        return _EXPERIMENT_IDS[(uri, name)]
    experiment = client.get_experiment_by_name(name)
    return None if experiment is None else experiment.experiment_id


def _artifact_location(uri: str, experiment_name: str) -> str | None:
    """`<db dir>/mlruns/<experiment>` for SQLite stores, whatever the cwd; else the store's own."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / "mlruns" / re.sub(r"[^\w.-]+", "_", experiment_name)).as_uri()


def _check_run_in(client: MlflowClient, uri: str, run_id: str, experiment_id: str) -> None:
    """Raise ValueError unless run `run_id` exists in experiment `experiment_id`."""
    if (uri, run_id) not in _RUN_EXPERIMENTS:
        try:
            run = client.get_run(run_id)
        except MlflowException as err:
            raise ValueError(f"parent run {run_id!r} does not exist in this store") from err
        _RUN_EXPERIMENTS[(uri, run_id)] = run.info.experiment_id
    if _RUN_EXPERIMENTS[(uri, run_id)] != experiment_id:
        raise ValueError(
            f"parent run {run_id!r} is in experiment {_RUN_EXPERIMENTS[(uri, run_id)]}, not "
            f"{experiment_id}; MLflow nests runs only within one experiment"
        )


@contextmanager
def open_run(
    uri: str | None,
    experiment_name: str,
    run_name: str | None,
    *,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    description: str | None = None,
    flush_every_s: float = 2.0,
) -> Iterator[MLflowSink]:
    """Create a run and yield its sink; the run ends FINISHED, FAILED or KILLED, never RUNNING unless
    its tracking server stops answering (TrackingServerLost: nothing more is sent to it).

    The experiment is created if absent, and at the first run of it in this process, its runs left
    RUNNING by a process of this machine that is gone are ended KILLED (`end_orphaned_runs`).
    `parent_run_id` nests the run under that run (same
    experiment) in the UI and, when this run ends, ends the parent at that time with the worst status
    of its children (`end_parent_run`), so a sweep's parent ends with its last child and shows
    whether any job failed. `description` is the run's note.

    On an exception the run is FAILED; on KeyboardInterrupt or SystemExit (e.g. raised by a
    SIGTERM handler), or a scheduler stopping the job (`stopped_by_scheduler`), KILLED; the exception
    propagates either way, after the buffered metrics are sent. Tags also get MLflow's usual context
    (user, source, git commit).
    """
    check_flush_every(flush_every_s)
    uri = ensure_store(uri)
    client = MlflowClient(uri)
    run_tags = {key: str(value) for key, value in (tags or {}).items()} | {HOST_TAG: socket.gethostname(),
                                                                           PID_TAG: str(os.getpid())}
    if parent_run_id is not None:
        run_tags[PARENT_RUN_TAG] = parent_run_id
    if description is not None:
        run_tags[DESCRIPTION_TAG] = description

    def create(experiment_id: str) -> Run:
        if parent_run_id is not None:
            _check_run_in(client, uri, parent_run_id, experiment_id)
        with signals_held():
            return client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(run_tags))

    run = _in_experiment(client, uri, experiment_name, create)
    sink = MLflowSink(client, run, flush_every_s=flush_every_s)
    status = "FINISHED"
    try:
        if (uri, run.info.experiment_id) not in _ORPHANS_ENDED:
            end_orphaned_runs(uri, run.info.experiment_id)
            _ORPHANS_ENDED.add((uri, run.info.experiment_id))
        yield sink
    except Exception as error:
        if server_lost(error):  # asking it to end the run would only wait through the retries again
            raise _lost(uri, sink, error) from None
        status = "KILLED" if stopped_by_scheduler(error) else "FAILED"
        raise
    except BaseException:
        status = "KILLED"
        raise
    finally:
        if not sink.lost:
            _end(uri, sink, status, parent_run_id)


# What a cluster scheduler's launcher raises in a job it stops: submitit's, at Slurm's time limit once no
# requeue is left (conf/hydra/launcher/slurm.yaml: max_num_timeout 0), from its SIGUSR2 handler.
SCHEDULER_STOPS = (("submitit.core.utils", "UncompletedJobError"),)


def stopped_by_scheduler(error: BaseException) -> bool:
    """Whether `error` is a scheduler stopping the job (`SCHEDULER_STOPS`): the run ends KILLED, as on
    SIGTERM, not FAILED. Matched by name: the launchers are optional and never imported here."""
    return (type(error).__module__, type(error).__name__) in SCHEDULER_STOPS


def _end(uri: str, sink: MLflowSink, status: str, parent_run_id: str | None) -> None:
    """End the run with `status`, then its parent (`end_parent_run`), also when the run's last writes
    failed (the run is FAILED then: the parent shows it); TrackingServerLost, and no more asking, if
    the server stopped answering meanwhile."""
    try:
        sink.end(status)
    except Exception as error:
        if server_lost(error):
            raise _lost(uri, sink, error) from None
        _end_parent(uri, parent_run_id)
        raise
    _end_parent(uri, parent_run_id)


def _end_parent(uri: str, parent_run_id: str | None) -> None:
    if parent_run_id is not None:
        with signals_held():
            end_parent_run(uri, parent_run_id)


class TrackingServerLost(ConnectionError):
    """The tracking server stopped answering during a run, after MLflow's retries (`stores.HTTP_RETRY_DEFAULTS`)."""


def _lost(uri: str, sink: MLflowSink, error: BaseException) -> TrackingServerLost:
    """Give up on the server: nothing more is sent for the run (`sink.lost`), its uploads not yet started
    are cancelled, and the store is checked afresh before its next use in this process (`forget_store`);
    the error names what was stored and how to go on."""
    sink.lost = True
    sink.abandon_uploads()
    forget_store(uri)
    stored = "no metrics" if sink.stored_through_step is None else f"its metrics up to step {sink.stored_through_step}"
    return TrackingServerLost(
        f"lost the tracking server {uri} during run {sink.run_name} ({sink.run_id}), after "
        f"{MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()} retries "
        f"(MLFLOW_HTTP_REQUEST_MAX_RETRIES and MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR set how long they wait): "
        f"{lost_reason(error)}. The run stays RUNNING there with {stored} ({sink.unsent} later values not "
        "stored); run the same command again once the server is back")


def open_parent_run(
    uri: str | None,
    experiment_name: str,
    sweep_id: str,
    run_name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """The id of the parent run of sweep `sweep_id`, created by the first job that asks.

    The parent is the active run tagged `nnresearch.sweep_id = sweep_id` and
    `nnresearch.role = parent`. For SQLite the look-up-or-create holds `<db>-lock`; for other
    stores, parallel creators all keep the oldest parent and delete their own duplicate. The
    parent is RUNNING until its first child ends; each child that ends ends it again at that time,
    with the worst status of the children so far (`end_parent_run`); `fail_parent_run` fails it
    for a job that failed before its run existed. A process asks the
    store once per sweep: its later jobs get the same id without a query.
    """
    if not isinstance(sweep_id, str) or not sweep_id or "'" in sweep_id or '"' in sweep_id:
        raise ValueError(f"sweep_id must be a non-empty string without quotes, got {sweep_id!r}")
    uri = ensure_store(uri)
    if (uri, experiment_name, sweep_id) in _SWEEP_PARENTS:
        return _SWEEP_PARENTS[(uri, experiment_name, sweep_id)]
    client = MlflowClient(uri)

    def find_or_create(experiment_id: str) -> str:
        with store_lock(uri):
            existing = _parent_runs(client, experiment_id, sweep_id)
            if existing:
                parent = existing[0].info.run_id
            else:
                run_tags = {key: str(value) for key, value in (tags or {}).items()}
                run_tags |= {SWEEP_ID_TAG: sweep_id, ROLE_TAG: "parent"}
                own = client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(run_tags))
                parent = _parent_runs(client, experiment_id, sweep_id)[0].info.run_id
                if parent != own.info.run_id:
                    client.delete_run(own.info.run_id)
        _RUN_EXPERIMENTS[(uri, parent)] = experiment_id
        return parent

    parent = _in_experiment(client, uri, experiment_name, find_or_create)
    _SWEEP_PARENTS[(uri, experiment_name, sweep_id)] = parent
    return parent


def _parent_runs(client: MlflowClient, experiment_id: str, sweep_id: str) -> list[Run]:
    """Active parent runs of `sweep_id`, oldest first (ties broken by run id)."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SWEEP_ID_TAG}` = '{sweep_id}' and tags.`{ROLE_TAG}` = 'parent'",
    )
    return sorted(found, key=lambda run: (run.info.start_time, run.info.run_id))


def find_parent_run(uri: str | None, experiment_name: str, sweep_id: str) -> str | None:
    """The id of the parent run of sweep `sweep_id`, or None if no job of it has started (creates nothing)."""
    uri = ensure_store(uri)
    if (uri, experiment_name, sweep_id) in _SWEEP_PARENTS:
        return _SWEEP_PARENTS[(uri, experiment_name, sweep_id)]
    client = MlflowClient(uri)
    experiment_id = _known_experiment_id(client, uri, experiment_name)
    if experiment_id is None:
        return None
    found = _parent_runs(client, experiment_id, sweep_id)
    return found[0].info.run_id if found else None


def end_running_runs(uri: str | None, parent_run_id: str, status: str = "KILLED") -> list[str]:
    """Mark the children of `parent_run_id` that are still RUNNING, and the parent if it is, `status`.

    For the launching process of an interrupted local sweep, whose workers were killed before they
    could end their runs. Returns the ids of the runs it ended.
    """
    if status not in ("FAILED", "KILLED"):
        raise ValueError(f"status must be FAILED or KILLED, got {status!r}")
    client = MlflowClient(ensure_store(uri))
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    ended = [run.info.run_id for run in children]
    if parent.info.status in ("RUNNING", "FINISHED"):  # a sweep cut short did not finish, even if its last child did
        ended.append(parent_run_id)
    for run_id in ended:
        client.set_terminated(run_id, status)
    return ended


def end_orphaned_runs(uri: str | None, experiment_id: str) -> list[str]:
    """End KILLED the runs of `experiment_id` that a process of this machine left RUNNING and that no
    longer exists (SIGKILL, the OOM killer, a power cut: nothing of it could end its run), and end their
    sweeps' parents again (`end_parent_run`: KILLED unless a job failed). Runs of other machines, of
    processes still alive, and parents (ended by their jobs) are left alone; so is a run whose process
    id was taken by another process since. Returns the ids of the runs ended, and logs a warning naming them."""
    client = MlflowClient(ensure_store(uri))
    running = client.search_runs([experiment_id], filter_string=(
        f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'"))
    orphans = [run for run in running if not _alive(int(run.data.tags[PID_TAG]))]
    for run in orphans:
        client.set_terminated(run.info.run_id, "KILLED")
    for parent in {run.data.tags.get(PARENT_RUN_TAG) for run in orphans} - {None}:
        end_parent_run(uri, parent)
    ended = [run.info.run_id for run in orphans]
    if ended:
        logging.getLogger(__name__).warning(
            "ended KILLED %d run(s) of this experiment left RUNNING by processes of this machine that are gone: %s",
            len(ended), ", ".join(ended))
    return ended


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def end_parent_run(uri: str | None, parent_run_id: str) -> str:
    """End `parent_run_id` now with the worst status of its ended children, FAILED before KILLED
    before FINISHED (one failed job fails the sweep); returns it. FINISHED only when every ended
    child finished; children still RUNNING do not count (the last to end sets the status again);
    FAILED once a job failed before its run existed (`fail_parent_run`). For SQLite the look-up and
    the update hold `<db>-lock`, so two children ending together cannot leave the parent with the
    status of only one of them.
    """
    uri = ensure_store(uri)
    client = MlflowClient(uri)
    with store_lock(uri):
        status = _worst_ended_child(client, client.get_run(parent_run_id))
        client.set_terminated(parent_run_id, status)
    return status


def _worst_ended_child(client: MlflowClient, parent: Run) -> str:
    """The worst status of `parent`'s ended children (see `end_parent_run`), FAILED if it is tagged
    so (`fail_parent_run`). One query when no child failed or was killed, the usual case of a
    sweep whose every job ends its parent; a second only to tell a KILLED child from a FAILED one."""
    if parent.data.tags.get(JOB_FAILED_TAG) == "true":
        return "FAILED"

    def a_child(status_condition: str) -> Run | None:
        found = client.search_runs([parent.info.experiment_id], max_results=1, filter_string=(
            f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}' and {status_condition}"))
        return found[0] if found else None

    ended_badly = a_child(" and ".join(f"attributes.status != '{status}'"
                                       for status in ("FINISHED", "RUNNING", "SCHEDULED")))
    if ended_badly is None:
        return "FINISHED"
    if ended_badly.info.status == "FAILED" or a_child("attributes.status = 'FAILED'") is not None:
        return "FAILED"
    return ended_badly.info.status


def fail_parent_run(uri: str | None, parent_run_id: str) -> None:
    """A job of the sweep failed, perhaps before its run existed (no FAILED child to show it): end the
    parent FAILED and tag it so, so that a later job's `end_parent_run` keeps it FAILED."""
    uri = ensure_store(uri)
    client = MlflowClient(uri)
    with store_lock(uri):
        client.set_tag(parent_run_id, JOB_FAILED_TAG, "true")
        client.set_terminated(parent_run_id, "FAILED")


def finished_runs_with_config(uri: str | None, experiment_name: str, config_hash: str, code_version: str | None = None, *,
                              max_results: int) -> list[Run]:
    """The newest FINISHED runs of `experiment_name` tagged with `config_hash` (and with `code_version`
    unless it is None), newest first, at most `max_results`."""
    uri = ensure_store(uri)
    client = MlflowClient(uri)
    experiment_id = _known_experiment_id(client, uri, experiment_name)
    if experiment_id is None:
        return []
    same_code = "" if code_version is None else f" and tags.`{CODE_VERSION_TAG}` = '{code_version}'"
    return client.search_runs([experiment_id], max_results=max_results, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.`{CONFIG_HASH_TAG}` = '{config_hash}'{same_code} and attributes.status = 'FINISHED'")


def adopt_run(uri: str | None, run_id: str, parent_run_id: str) -> None:
    """Move an existing run under `parent_run_id`: a resumed sweep lists the jobs it skipped as its own.

    The parent is ended at this time, as when a child run ends (`open_run`): a resumed sweep whose
    every job is skipped still ends its parent.
    """
    client = MlflowClient(ensure_store(uri))
    client.set_tag(run_id, PARENT_RUN_TAG, parent_run_id)
    end_parent_run(uri, parent_run_id)
