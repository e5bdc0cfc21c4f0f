"""The MLflow sink: one run per job, its params, metrics, artifacts and final status.

Ground floor: this module knows MLflow and nothing of the network code or Hydra. The wiring layer
opens a run with `open_run(...)` and hands the yielded `MLflowSink` to the training loop, which
only sees the `nnresearch.sinks.Sink` protocol (`log_metrics`, `set_tags`).

Choices that matter for multirun sweeps:

- URIs are made absolute (`resolve_uri`), so Hydra changing the working directory or a joblib
  worker starting elsewhere never moves the store. The default is `MLFLOW_TRACKING_URI` if set, else
  MLflow 3's `sqlite:///mlflow.db`.
- A fresh SQLite store is created under a file lock (`ensure_store`): MLflow's schema migrations
  race when several processes create the same database at once.
- Runs are created with `MlflowClient`, never the fluent `mlflow.start_run`, so no "active run"
  survives from one job to the next in a reused worker process.
- A process looks up an experiment's id, a sweep's parent run and a parent's experiment once, not
  once per job: a sweep's jobs in one process (Hydra's basic launcher) skip those queries.
- Metrics are buffered and sent with `log_batch`, one store write per ~1000 numbers or per
  `flush_every_s` seconds, instead of one blocking write per number.
- The run always ends FINISHED, FAILED (exception) or KILLED (KeyboardInterrupt, SystemExit),
  with every metric logged before the end flushed first.

Lock files sit next to the database as `<db>-lock`, like SQLite's own `-journal` and `-wal`
sidecars. Artifacts of experiments created here go to `<db dir>/mlruns/<experiment>/`.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import numpy as np
import yaml
from filelock import FileLock

# No usage telemetry leaves the machine unless the user asks for it (these machines are offline).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, Run, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository  # noqa: E402
from mlflow.tracking.context.registry import resolve_tags  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_RUN_TAG = "mlflow.parentRunId"
DESCRIPTION_TAG = "mlflow.note.content"
SWEEP_ID_TAG = "nnresearch.sweep_id"
ROLE_TAG = "nnresearch.role"
CONFIG_HASH_TAG = "nnresearch.config_hash"
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")

HTTP_TIMEOUT_S = 5.0
LOCK_TIMEOUT_S = 300.0

T = TypeVar("T")

_KEY_CHARS = re.compile(r"^[/\w.\- :]+$")
_READY_STORES: set[str] = set()
# What this process has looked up in a store, so that the jobs of a sweep run by one process (Hydra's
# basic launcher) ask once instead of once per job: (uri, experiment name) -> the id of the active
# experiment, forgotten when a run cannot be created in it (`_in_experiment`); (uri, run id) -> its
# experiment id, which MLflow never changes; (uri, experiment name, sweep id) -> the sweep's parent run.
_EXPERIMENT_IDS: dict[tuple[str, str], str] = {}
_RUN_EXPERIMENTS: dict[tuple[str, str], str] = {}
_SWEEP_PARENTS: dict[tuple[str, str, str], str] = {}


# --------------------------------------------------------------------------------------------
# URIs and stores


def resolve_uri(uri: str | None = None) -> str:
    """The absolute tracking URI for `uri`.

    None or "" means the environment's `MLFLOW_TRACKING_URI` (as for every MLflow tool) when it is
    set, else MLflow 3's default `sqlite:///mlflow.db`.

    `sqlite:///relative.db` and `file:relative` are made absolute against the current working
    directory; `http(s)://` URIs pass through (without a trailing slash); other `scheme://` URIs
    (postgresql, mysql, databricks) pass through untouched.
    """
    if uri is None or uri == "":
        uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if not isinstance(uri, str):
        raise TypeError(f"tracking uri must be a string or None, got {type(uri).__name__}: {uri!r}")
    if uri.startswith("sqlite:"):
        return _absolute_sqlite_uri(uri)
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    if uri.startswith("file:"):
        return _absolute_file_uri(uri)
    if "://" in uri:
        return uri
    raise ValueError(
        f"tracking uri {uri!r} has no scheme; use sqlite:///path/to/mlflow.db (the default), "
        "file:path/to/mlruns or http://host:port"
    )


def _absolute_sqlite_uri(uri: str) -> str:
    """`sqlite:///rel.db` -> `sqlite:////abs/rel.db`; in-memory databases are refused."""
    prefix = "sqlite:///"
    path, _, query = uri.removeprefix(prefix).partition("?")
    if not uri.startswith(prefix) or path in ("", ":memory:"):
        raise ValueError(
            f"tracking uri {uri!r} names no database file (an in-memory store vanishes with the "
            "process); use sqlite:///mlflow.db or sqlite:////absolute/path/mlflow.db"
        )
    path = os.path.abspath(os.path.expanduser(path))
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


def _absolute_file_uri(uri: str) -> str:
    """`file:relative/mlruns` -> `file:///abs/relative/mlruns`; remote hosts pass through."""
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        return uri
    return Path(os.path.abspath(os.path.expanduser(unquote(parsed.path)))).as_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a resolved `sqlite:` URI, or None for any other kind of store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].partition("?")[0])


def _lock_path(db: Path) -> Path:
    """The lock file guarding store creation and sweep-parent creation for database `db`."""
    return db.with_name(db.name + "-lock")


def _store_lock(uri: str) -> AbstractContextManager[Any]:
    """An inter-process lock for a local SQLite store; no lock for any other store."""
    db = sqlite_path(uri)
    return nullcontext() if db is None else FileLock(_lock_path(db), timeout=LOCK_TIMEOUT_S)


def ensure_store(uri: str | None = None) -> str:
    """Make the store at `uri` usable and return its resolved URI; done once per process.

    SQLite: check the location is writable, then create (run MLflow's migrations on) a fresh
    database while holding `<db>-lock`, so parallel jobs never race in the migrations.
    HTTP: check that a server answers. `file:`: MLflow 3 refuses its file store unless
    `MLFLOW_ALLOW_FILE_STORE=true`; asking for a `file:` URI sets it in this process unless it is
    already set. Other stores are used as they are.
    """
    uri = resolve_uri(uri)
    if uri in _READY_STORES:
        return uri
    db = sqlite_path(uri)
    if db is not None:
        _check_writable(db)
        with _store_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    elif uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    _READY_STORES.add(uri)
    return uri


def _check_writable(db: Path) -> None:
    """Raise PermissionError naming `db` unless its directory (and file, if any) is writable."""
    fix = "set tracking.uri to a writable place, e.g. sqlite:///mlflow.db in your project"
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(
            f"cannot create the directory of the MLflow store {db}: {err}; {fix}"
        ) from err
    for target in (db.parent, db):
        if target.exists() and not os.access(target, os.W_OK):
            raise PermissionError(f"the MLflow store {db} is not writable ({target}); {fix}")


def _check_server(uri: str) -> None:
    """Raise ConnectionError naming `uri` unless an HTTP server answers its /health endpoint."""
    try:
        urllib.request.urlopen(f"{uri}/health", timeout=HTTP_TIMEOUT_S).close()
    except urllib.error.HTTPError as err:
        if err.code >= 500:
            raise ConnectionError(
                f"the MLflow server at {uri} answers {err.code} {err.reason}; check its logs"
            ) from err
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(
            f"no MLflow tracking server answers at {uri} ({err}); start one with "
            f"`mlflow server --port {urlparse(uri).port or 5000}` or use a sqlite:/// store"
        ) from err


# --------------------------------------------------------------------------------------------
# Names and values


def flatten(mapping: Mapping[str, Any], sep: str = ".") -> dict[str, str]:
    """Nested mappings as one level: `{"model": {"depth": 8}}` -> `{"model.depth": "8"}`.

    Values are stringified; lists stay whole (`"[64, 64]"`); an empty mapping stays as `"{}"`.
    Resolve OmegaConf configs first (`OmegaConf.to_container(cfg, resolve=True)`).
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(f"flatten expects a mapping, got {type(mapping).__name__}: {mapping!r}")
    flat: dict[str, str] = {}
    _flatten_into(flat, mapping, sep, prefix="")
    return flat


def _flatten_into(flat: dict[str, str], mapping: Mapping[str, Any], sep: str, prefix: str) -> None:
    """Add the leaves of `mapping` to `flat`, their keys prefixed with `prefix + sep`."""
    for key, value in mapping.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            _flatten_into(flat, value, sep, name)
        else:
            flat[name] = str(value)


def _check_key(key: str, kind: str) -> str:
    """Return `key` if MLflow accepts it as a metric/param/tag name, else raise ValueError."""
    if (
        not isinstance(key, str)
        or len(key) > MAX_ENTITY_KEY_LENGTH
        or not _KEY_CHARS.match(key)
        or posixpath.normpath(key) != key
        or key.startswith(("/", ".."))
    ):
        raise ValueError(
            f"{kind} name {key!r} is not valid in MLflow: use at most {MAX_ENTITY_KEY_LENGTH} "
            "letters, digits, '_', '-', '.', ' ', ':' and '/', not starting with '/' or '..', "
            "e.g. 'train/loss'"
        )
    return key


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of `items` of at most `size` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def _signals_held() -> Iterator[None]:
    """Let a store write finish before SIGINT / SIGTERM act on it, then let them act.

    A write cut in half can leave the run RUNNING (an interrupted final flush skips the final
    status) or a SQLite transaction open that keeps the database locked for the rest of the
    process. A second signal during the write is not held: pressing Ctrl-C twice stops at once.
    Main thread only (signal handlers live there); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous: dict[int, Any] = {}

    def hold(signum: int, frame: object) -> None:
        received.append(signum)
        for other, handler in previous.items():
            signal.signal(other, handler)

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not None:  # None: a handler not set from Python, leave it alone
            previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])


def _artifact_parts(artifact_file: str, suffixes: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """Split a run-relative `dir/name.ext` into (`dir` or None, `name.ext`).

    Raises ValueError unless it is a normalised relative posix path ending in one of `suffixes`
    (any name if `suffixes` is empty).
    """
    if (
        not isinstance(artifact_file, str)
        or posixpath.isabs(artifact_file)
        or posixpath.normpath(artifact_file) != artifact_file
        or artifact_file.startswith("..")
        or (suffixes and not artifact_file.endswith(suffixes))
    ):
        allowed = f" ending in one of {', '.join(suffixes)}" if suffixes else ""
        raise ValueError(
            f"artifact_file {artifact_file!r} must be a relative posix path{allowed}, "
            f"e.g. 'weights/final{suffixes[0] if suffixes else '.txt'}'"
        )
    directory, name = posixpath.split(artifact_file)
    return directory or None, name


# --------------------------------------------------------------------------------------------
# Sinks


class MLflowSink:
    """The Sink of one MLflow run; metrics are buffered and sent with `MlflowClient.log_batch`.

    Each full batch of MLflow's limit (1000 metrics) is sent as soon as it fills; the whole buffer
    is sent when a `log_metrics` call finds it `flush_every_s` seconds old, and on `flush()` (which
    `open_run` calls at the end). Arrays (`log_arrays`) are snapshotted at the call and written by
    a background thread while training goes on; `wait_for_uploads()` (which `open_run` calls at the
    end, before the final status) waits for them. Everything else (params, tags, other artifacts)
    is sent at once. Artifacts go straight to the run's artifact repository, made once from the
    run's `artifact_uri` (MLflow's client would look the run up again to find it).
    """

    def __init__(self, client: MlflowClient, run: Run, *, flush_every_s: float = 2.0) -> None:
        _check_flush_every(flush_every_s)
        self._client = client
        self._info = run.info
        self._artifacts = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
        self._flush_every_s = flush_every_s
        self._buffer: list[Metric] = []
        self._oldest = 0.0
        self._known_names: set[str] = set()
        self._uploader: ThreadPoolExecutor | None = None
        self._uploads: list[Future[None]] = []

    @property
    def run_id(self) -> str:
        return self._info.run_id

    @property
    def run_name(self) -> str:
        return self._info.run_name

    @property
    def experiment_id(self) -> str:
        return self._info.experiment_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer `metrics` (name -> number) at `step`; send full batches, or all if it is old."""
        timestamp, step = int(time.time() * 1000), int(step)
        entries = [
            Metric(self._metric_name(name), _as_float(name, value), timestamp, step)
            for name, value in metrics.items()
        ]
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer.extend(entries)
        if time.monotonic() - self._oldest >= self._flush_every_s:
            self.flush()
        elif len(self._buffer) >= MAX_METRICS_PER_BATCH:
            self._send_full_batches()

    def _metric_name(self, name: str) -> str:
        """`name`, checked once per sink so a bad name fails here and not at the next flush."""
        if name not in self._known_names:
            self._known_names.add(_check_key(name, "metric"))
        return name

    def _send_full_batches(self) -> None:
        """Send whole batches of MLflow's size limit and keep the rest (now the oldest) buffered."""
        full = len(self._buffer) - len(self._buffer) % MAX_METRICS_PER_BATCH
        pending, self._buffer = self._buffer[:full], self._buffer[full:]
        self._oldest = time.monotonic()
        self._send(pending)

    def _send(self, metrics: list[Metric]) -> None:
        """Write `metrics` to the store, one `log_batch` per MLflow batch limit. If a write fails,
        the metrics not yet written go back to the front of the buffer (the final flush retries them)."""
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            try:
                with _signals_held():
                    self._client.log_batch(self.run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH], synchronous=True)
            except BaseException:
                self._buffer = list(metrics[start:]) + self._buffer
                raise

    def flush(self) -> None:
        """Send every buffered metric, in chunks of MLflow's batch limit; raise the error of a
        background upload that has failed meanwhile (see `log_arrays`)."""
        pending, self._buffer = self._buffer, []
        self._send(pending)
        failed = [upload for upload in self._uploads if upload.done() and upload.exception() is not None]
        if failed:
            self._uploads.remove(failed[0])
            failed[0].result()

    def wait_for_uploads(self) -> None:
        """Wait until every background upload has ended; raise the first one's error, if any failed."""
        uploads, self._uploads = self._uploads, []
        errors = [upload.exception() for upload in uploads]  # waits for each
        if self._uploader is not None:
            self._uploader.shutdown()
            self._uploader = None
        for error in errors:
            if error is not None:
                raise error

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set string tags (values stringified, cut to MLflow's tag length limit)."""
        entries = [
            RunTag(_check_key(key, "tag"), str(value)[:MAX_TAG_VAL_LENGTH])
            for key, value in tags.items()
        ]
        for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            with _signals_held():
                self._client.log_batch(self.run_id, tags=chunk, synchronous=True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (possibly nested) mapping as params: flattened with ".", values stringified and
        cut to MLflow's param length limit. MLflow refuses to change a param once logged."""
        entries = [
            Param(_check_key(key, "param"), value[:MAX_PARAM_VAL_LENGTH])
            for key, value in flatten(params).items()
        ]
        for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            with _signals_held():
                self._client.log_batch(self.run_id, params=chunk, synchronous=True)

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Save `obj` as the artifact `artifact_file`: `.json`, or `.yaml` / `.yml` (block style,
        keys sorted, as MLflow's `log_dict` writes it, but through libyaml where PyYAML has it: 4x faster)."""
        _artifact_parts(artifact_file, (".json", ".yaml", ".yml"))
        if artifact_file.endswith(".json"):
            text = json.dumps(dict(obj), indent=2, default=str)
        else:
            text = yaml.dump(dict(obj), Dumper=_YAML_DUMPER, indent=2, default_flow_style=False)
        self.log_text(text, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Save `text` as the artifact `artifact_file` (any extension, e.g. `.txt`, `.md`)."""
        self._upload(artifact_file, lambda path: path.write_text(text, encoding="utf-8"))

    def _upload(self, artifact_file: str, write: Callable[[Path], Any]) -> None:
        """`write(path)` a temporary file named like `artifact_file`, then upload it there: the
        store never sees half a file. A signal arriving during the upload acts after it."""
        directory, name = _artifact_parts(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, name)
            write(path)
            with _signals_held():
                self._artifacts.log_artifact(str(path), directory)

    def log_arrays(self, arrays: Mapping[str, Any], artifact_file: str) -> None:
        """Save host arrays as one `.npz` artifact (`np.savez`, no pickled objects), in the background.

        The arrays are copied before this returns, so the caller may change them at once (training
        updates its weights in place); one background thread writes and uploads the copies, in call
        order, so the caller goes on training instead of waiting for the disk and the store.
        Its errors surface at the next `flush()` or at `wait_for_uploads()`, so the run ends FAILED.
        Read the file back with `np.load(path, allow_pickle=False)`.
        """
        _artifact_parts(artifact_file, (".npz",))
        snapshot = {key: np.array(_plain_array(key, value), copy=True) for key, value in arrays.items()}
        self._in_background(self._upload, artifact_file, lambda path: np.savez(path, **snapshot))

    def _in_background(self, work: Callable[..., None], *args: Any) -> None:
        if self._uploader is None:
            self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnresearch-upload")
        self._uploads.append(self._uploader.submit(work, *args))

    def log_table(self, table: Any, artifact_file: str) -> None:
        """Save a DataFrame or a list of dicts as `.csv` (plain) or `.json` (MLflow's table format,
        shown in the UI; logging again appends rows; read back with `MlflowClient(uri).load_table(
        experiment_id, artifact_file, run_ids=[run_id])` with `MLFLOW_TRACKING_URI=uri`: MLflow looks
        the runs up in the store of the process's tracking URI, not the client's)."""
        import pandas as pd

        _artifact_parts(artifact_file, (".csv", ".json"))
        frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
        if artifact_file.endswith(".json"):
            with _signals_held():
                self._client.log_table(self.run_id, frame, artifact_file)
            return
        self._upload(artifact_file, lambda path: frame.to_csv(path, index=False))

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload a local file or directory, under `artifact_path` in the run if given."""
        if not Path(path).exists():
            raise FileNotFoundError(
                f"cannot log artifact {os.fspath(path)!r}: no such file or directory"
            )
        with _signals_held():
            if Path(path).is_dir():
                self._artifacts.log_artifacts(os.fspath(path), posixpath.join(artifact_path or "", Path(path).name))
            else:
                self._artifacts.log_artifact(os.fspath(path), artifact_path)


_YAML_DUMPER = getattr(yaml, "CDumper", yaml.Dumper)  # yaml.dump's own Dumper, written in C


def _check_flush_every(flush_every_s: float) -> None:
    """Raise ValueError unless `flush_every_s` is a number of seconds >= 0."""
    if not flush_every_s >= 0:
        raise ValueError(f"flush_every_s must be >= 0 seconds, e.g. 2.0, got {flush_every_s!r}")


def _as_float(name: str, value: Any) -> float:
    """`value` as a Python float, or a TypeError naming the metric."""
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"metric {name!r} must be a number, got {type(value).__name__}: {value!r}"
        ) from err


def _plain_array(key: str, value: Any) -> np.ndarray:
    """`value` as a NumPy array that `np.savez` can store without pickling."""
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise TypeError(
            f"array {key!r} has dtype object, which would need pickling; pass numeric arrays "
            "(move device arrays to the host first, e.g. with cupy.asnumpy)"
        )
    return array


class NullSink:
    """The sink for `tracking.enabled=false`: same methods as `MLflowSink`, records nothing."""

    run_id = None
    run_name = None
    experiment_id = None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Discard `metrics`."""

    def flush(self) -> None:
        """Nothing is buffered."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Discard `tags`."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Discard `params`."""

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Discard `obj`."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Discard `text`."""

    def log_arrays(self, arrays: Mapping[str, Any], artifact_file: str) -> None:
        """Discard `arrays`."""

    def log_table(self, table: Any, artifact_file: str) -> None:
        """Discard `table`."""

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Discard `path`."""


# --------------------------------------------------------------------------------------------
# Experiments and runs


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
    """Create a run and yield its sink; the run ends FINISHED, FAILED or KILLED, never RUNNING.

    The experiment is created if absent. `parent_run_id` nests the run under that run (same
    experiment) in the UI and, when this run ends, marks the parent FINISHED with the current end
    time, so a sweep's parent ends with its last child. `description` is the run's note.

    On an exception the run is FAILED; on KeyboardInterrupt or SystemExit (e.g. raised by a
    SIGTERM handler) KILLED; the exception propagates either way, after the buffered metrics are
    sent. Tags also get MLflow's usual context (user, source, git commit).
    """
    _check_flush_every(flush_every_s)
    uri = ensure_store(uri)
    client = MlflowClient(uri)
    run_tags = {key: str(value) for key, value in (tags or {}).items()}
    if parent_run_id is not None:
        run_tags[PARENT_RUN_TAG] = parent_run_id
    if description is not None:
        run_tags[DESCRIPTION_TAG] = description

    def create(experiment_id: str) -> Run:
        if parent_run_id is not None:
            _check_run_in(client, uri, parent_run_id, experiment_id)
        with _signals_held():
            return client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(run_tags))

    run = _in_experiment(client, uri, experiment_name, create)
    sink = MLflowSink(client, run, flush_every_s=flush_every_s)
    status = "FINISHED"
    try:
        yield sink
    except Exception:
        status = "FAILED"
        raise
    except BaseException:
        status = "KILLED"
        raise
    finally:
        _end_run(client, sink, status)
        if parent_run_id is not None:
            client.set_terminated(parent_run_id, "FINISHED")


def _end_run(client: MlflowClient, sink: MLflowSink, status: str) -> None:
    """Send what is buffered and wait for the background uploads, then set the final status (FAILED
    if either fails); a Ctrl-C or SIGTERM arriving meanwhile acts once the status is set."""
    with _signals_held():
        try:
            try:
                sink.flush()
            finally:
                sink.wait_for_uploads()
        except Exception:
            client.set_terminated(sink.run_id, "FAILED" if status == "FINISHED" else status)
            raise
        client.set_terminated(sink.run_id, status)


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
    parent is RUNNING until its first child ends; each child that ends marks it FINISHED at that
    time (see `open_run`). `finish_parent_run` sets another status explicitly. A process asks the
    store once per sweep: its later jobs get the same id without a query.
    """
    if not isinstance(sweep_id, str) or not sweep_id or "'" in sweep_id or '"' in sweep_id:
        raise ValueError(f"sweep_id must be a non-empty string without quotes, got {sweep_id!r}")
    uri = ensure_store(uri)
    if (uri, experiment_name, sweep_id) in _SWEEP_PARENTS:
        return _SWEEP_PARENTS[(uri, experiment_name, sweep_id)]
    client = MlflowClient(uri)

    def find_or_create(experiment_id: str) -> str:
        with _store_lock(uri):
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
    if parent.info.status == "RUNNING":
        ended.append(parent_run_id)
    for run_id in ended:
        client.set_terminated(run_id, status)
    return ended


def finish_parent_run(uri: str | None, run_id: str, status: str = "FINISHED") -> None:
    """End a parent run (or any run) with `status`: FINISHED, FAILED or KILLED, at this time."""
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"status must be FINISHED, FAILED or KILLED, got {status!r}")
    MlflowClient(ensure_store(uri)).set_terminated(run_id, status)


def finished_run_with_config(uri: str | None, experiment_name: str, config_hash: str) -> tuple[str, str, dict[str, float]] | None:
    """(run id, run name, last metrics) of a FINISHED run of `experiment_name` tagged with `config_hash`, if any."""
    uri = ensure_store(uri)
    client = MlflowClient(uri)
    experiment_id = _known_experiment_id(client, uri, experiment_name)
    if experiment_id is None:
        return None
    found = client.search_runs([experiment_id], max_results=1,
                               filter_string=f"tags.`{CONFIG_HASH_TAG}` = '{config_hash}' and attributes.status = 'FINISHED'")
    return (found[0].info.run_id, found[0].info.run_name, dict(found[0].data.metrics)) if found else None


def adopt_run(uri: str | None, run_id: str, parent_run_id: str) -> None:
    """Move an existing run under `parent_run_id`: a resumed sweep lists the jobs it skipped as its own.

    The parent is marked FINISHED at this time, as when a child run ends (`open_run`): a resumed
    sweep whose every job is skipped still ends its parent.
    """
    client = MlflowClient(ensure_store(uri))
    client.set_tag(run_id, PARENT_RUN_TAG, parent_run_id)
    client.set_terminated(parent_run_id, "FINISHED")
