"""The MLflow sink: what one run logs (params, metrics, artifacts), sent to its MLflow run.

Ground floor: this module knows MLflow and nothing of the network code or Hydra. `nnresearch.tracking`
opens the run and yields an `MLflowSink`; the training loop only sees the `nnresearch.sinks.Sink`
protocol (`log_metrics`, `set_tags`).

- Metrics are buffered and sent in batches, one store write per ~1000 numbers or per
  `flush_every_s` seconds, instead of one blocking write per number; into an SQLite store
  as one bulk insert (`nnresearch.store_rows`), elsewhere with `log_batch`.
- Arrays are written by a background thread while training goes on; artifacts go straight to the
  run's artifact repository.
- `end(status)` sends everything buffered, waits for the uploads and sets the final status; a
  Ctrl-C or SIGTERM arriving during a store write acts once the write is done (`signals_held`).
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from nnresearch import store_rows

_KEY_CHARS = re.compile(r"^[/\w.\- :]+$")


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
        or key == "."
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
def signals_held() -> Iterator[None]:
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


class MLflowSink:
    """The Sink of one MLflow run; metrics are buffered and sent in batches (`store_rows.write_metrics`).

    Each full batch of MLflow's limit (1000 metrics) is sent as soon as it fills; the whole buffer
    is sent when a `log_metrics` call finds it `flush_every_s` seconds old, and on `flush()` (which
    `end()` calls). Arrays (`log_arrays`) are snapshotted at the call and written by a background
    thread while training goes on; `wait_for_uploads()` (which `end()` calls before the final
    status) waits for them. Everything else (params, tags, other artifacts)
    is sent at once. Artifacts go straight to the run's artifact repository, made once from the
    run's `artifact_uri` (MLflow's client would look the run up again to find it).
    """

    def __init__(self, client: MlflowClient, run: Run, *, flush_every_s: float = 2.0) -> None:
        check_flush_every(flush_every_s)
        self._client = client
        self._info = run.info
        self._flush_every_s = flush_every_s
        self._buffer: list[Metric] = []
        self._oldest = 0.0
        self._known_names: set[str] = set()
        self._uploader: ThreadPoolExecutor | None = None
        self._uploads: list[Future[None]] = []
        self.stored_through_step: int | None = None  # the step of the last metric written to the store
        self.lost = False  # the store stopped answering: nothing more is sent (`tracking.TrackingServerLost`)

    @cached_property
    def _artifacts(self) -> ArtifactRepository:
        """The run's artifact repository, made on first use (inside the run, so that an unusable
        artifact location fails the run instead of leaving it RUNNING), as MLflow's client makes it."""
        return artifact_repository(self._info.artifact_uri, self._client.tracking_uri)

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
            chunk = metrics[start : start + MAX_METRICS_PER_BATCH]
            try:
                with signals_held():
                    store_rows.write_metrics(self._client, self.run_id, chunk)
            except BaseException:
                self._buffer = list(metrics[start:]) + self._buffer
                raise
            self.stored_through_step = chunk[-1].step

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

    @property
    def unsent(self) -> int:
        """How many metric values are buffered, not yet written to the store."""
        return len(self._buffer)

    def abandon_uploads(self) -> None:
        """Cancel the background uploads not yet started (the store is gone; they would only wait on it)."""
        if self._uploader is not None:
            self._uploader.shutdown(wait=False, cancel_futures=True)
            self._uploader = None
        self._uploads = []

    def end(self, status: str) -> None:
        """Send what is buffered and wait for the background uploads, then set the final `status`
        (FAILED if either fails); a Ctrl-C or SIGTERM arriving meanwhile acts once the status is set."""
        with signals_held():
            try:
                try:
                    self.flush()
                finally:
                    self.wait_for_uploads()
            except Exception:
                self._client.set_terminated(self.run_id, "FAILED" if status == "FINISHED" else status)
                raise
            self._client.set_terminated(self.run_id, status)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set string tags (values stringified, cut to MLflow's tag length limit)."""
        entries = [
            RunTag(_check_key(key, "tag"), str(value)[:MAX_TAG_VAL_LENGTH])
            for key, value in tags.items()
        ]
        for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            with signals_held():
                self._client.log_batch(self.run_id, tags=chunk, synchronous=True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (possibly nested) mapping as params: flattened with ".", values stringified and
        cut to MLflow's param length limit. MLflow refuses to change a param once logged."""
        entries = [
            Param(_check_key(key, "param"), value[:MAX_PARAM_VAL_LENGTH])
            for key, value in flatten(params).items()
        ]
        for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            with signals_held():
                store_rows.write_params(self._client, self.run_id, chunk)

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
            with signals_held():
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
            with signals_held():
                self._client.log_table(self.run_id, frame, artifact_file)
            return
        self._upload(artifact_file, lambda path: frame.to_csv(path, index=False))

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload a local file or directory, under `artifact_path` in the run if given."""
        if not Path(path).exists():
            raise FileNotFoundError(
                f"cannot log artifact {os.fspath(path)!r}: no such file or directory"
            )
        with signals_held():
            if Path(path).is_dir():
                self._artifacts.log_artifacts(os.fspath(path), posixpath.join(artifact_path or "", Path(path).name))
            else:
                self._artifacts.log_artifact(os.fspath(path), artifact_path)


_YAML_DUMPER = getattr(yaml, "CDumper", yaml.Dumper)  # yaml.dump's own Dumper, written in C


def artifact_repository(artifact_uri: str, tracking_uri: str) -> ArtifactRepository:
    """The artifact repository at a run's `artifact_uri`, as MLflow's client makes it, without looking
    the run up in the store again (MLflow's `download_artifacts` reads the whole run, twice)."""
    uri = add_databricks_profile_info_to_artifact_uri(artifact_uri, tracking_uri)
    return get_artifact_repository(uri, tracking_uri=tracking_uri)


def check_flush_every(flush_every_s: float) -> None:
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
