"""The MLflow sink: URIs, store creation, run status on every exit path, batching, nesting.

Every test gets its own SQLite store in `tmp_path`, copied from one migrated per module (creating
a store runs MLflow's migrations, seconds each); the race test creates fresh ones.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from nnresearch import mlflow_sink, sinks, store_rows, stores, tracking
from nnresearch.mlflow_sink import MLflowSink


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory) -> Path:
    """A migrated, empty MLflow database file to copy from."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    stores.ensure_store(f"sqlite:///{db}")
    return db


@pytest.fixture
def uri(tmp_path, migrated_db) -> str:
    """The URI of a private, empty store in `tmp_path`."""
    shutil.copyfile(migrated_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, in step order."""
    points = MlflowClient(stores.resolve_uri(uri)).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in points)


def get_run(uri: str, run_id: str):
    return MlflowClient(stores.resolve_uri(uri)).get_run(run_id)


# --- URIs and stores --------------------------------------------------------------------------


def test_resolve_uri_makes_local_stores_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert stores.resolve_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert stores.resolve_uri("sqlite:///runs/a.db") == f"sqlite:///{tmp_path}/runs/a.db"
    assert stores.resolve_uri("sqlite:////srv/m.db?timeout=9") == "sqlite:////srv/m.db?timeout=9"
    assert stores.resolve_uri("file:mlruns") == f"file://{tmp_path}/mlruns"
    assert stores.resolve_uri("http://host:5000/") == "http://host:5000"
    assert stores.resolve_uri("postgresql://u@h/db") == "postgresql://u@h/db"


def test_no_uri_means_mlflow_tracking_uri_when_it_is_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///team/runs.db")
    assert stores.resolve_uri(None) == f"sqlite:///{tmp_path}/team/runs.db"
    assert stores.resolve_uri("") == f"sqlite:///{tmp_path}/team/runs.db"
    assert stores.resolve_uri("sqlite:///mine.db") == f"sqlite:///{tmp_path}/mine.db"  # an explicit uri wins
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert stores.resolve_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"


@pytest.mark.parametrize("bad", ["sqlite:///:memory:", "sqlite://", "mlruns", "htp://host:5000", "postgres://u@h/db", "http://",
                                 "https:///path"])
def test_resolve_uri_refuses_unusable_uris(bad):
    with pytest.raises(stores.TrackingURIError, match="tracking uri"):
        stores.resolve_uri(bad)


def test_a_uri_with_a_mistyped_scheme_names_the_close_one_and_a_plugin_s_scheme_passes(monkeypatch, request):
    with pytest.raises(stores.TrackingURIError, match=r"scheme 'htp', which no MLflow store has; did you mean http://\?"):
        stores.resolve_uri("htp://host:5000")
    assert stores.resolve_uri("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"  # a driver named
    for as_mlflow_takes_it in ("HTTPS://host", "Databricks://profile", "databricks", "databricks-uc"):
        assert stores.resolve_uri(as_mlflow_takes_it) == as_mlflow_takes_it
    plugin = metadata.EntryPoint("vault", "some_plugin:VaultStore", "mlflow.tracking_store")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [plugin] if group == "mlflow.tracking_store" else [])
    stores._known_schemes.cache_clear()  # read once per process: this one installs a plugin
    request.addfinalizer(stores._known_schemes.cache_clear)
    assert stores.resolve_uri("vault://store") == "vault://store"


@contextlib.contextmanager
def serving(status: int, content_type: str) -> Iterator[str]:
    """A local HTTP server answering every GET with `status` and a body of `content_type`; yields its URI."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(b"{}" if "json" in content_type else b"no")

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


@pytest.mark.parametrize(("status", "words"), [(403, "refuses this host name"), (404, "no MLflow server at that path"),
                                               (503, "check its logs")])
def test_a_server_that_answers_an_api_call_with_a_plain_error_is_named(status, words, monkeypatch):
    """An MLflow server started with --allowed-hosts refuses other host names (403, plain text) on its API
    (tests/test_server.py checks a real one); a proxy without MLflow behind that path answers 404 in HTML."""
    for name in stores.CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with serving(status, "text/plain") as uri:
        with pytest.raises(ConnectionError, match=f"{uri} answers {status} .*{words}"):
            stores.check_store(uri)


@pytest.mark.parametrize(("status", "content_type", "credentials"), [
    (404, "application/json", None), (403, "application/json", None), (401, "text/html", None),
    (403, "text/html", "MLFLOW_TRACKING_TOKEN")])
def test_a_server_that_answers_as_mlflow_or_asks_for_credentials_passes(status, content_type, credentials, monkeypatch):
    """A JSON error is MLflow answering (no experiment 0, no permission for it); 401 asks for the credentials
    MLflow's client sends, and so may a proxy's 403 when they are set."""
    for name in stores.CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if credentials:
        monkeypatch.setenv(credentials, "secret")
    with serving(status, content_type) as uri:
        assert stores.check_store(uri) == uri


@pytest.mark.parametrize("set_by_user", [False, True])
def test_a_server_s_retries_are_bounded_to_about_a_minute_unless_set(set_by_user, monkeypatch):
    """MLflow's own 7 retries of factor 2 wait about 4 minutes per call to a server that is gone; a server's
    store gets 5 of factor 2 (4 + 8 + 16 + 32 s), unless the user set them. MLflow reads them per call."""
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES

    for name in (*stores.HTTP_RETRY_DEFAULTS, *stores.CREDENTIAL_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    if set_by_user:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    with serving(200, "application/json") as uri:
        assert stores.ensure_store(uri) == uri
    retries, factor = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
    assert (retries, factor) == (9 if set_by_user else 5, 2)
    if not set_by_user:  # urllib3 waits none after the first failure, factor * 2**(n-1) s after the n-th
        assert sum(factor * 2 ** (n - 1) for n in range(2, retries + 1)) == 60


def test_a_lost_server_is_told_from_other_failures_by_its_cause():
    """MLflow wraps requests' errors in an MlflowException raised while handling them (no `from`)."""
    import requests
    from mlflow.exceptions import MlflowException

    def wrapped(error: Exception) -> MlflowException:
        try:
            raise error
        except Exception as cause:
            try:
                raise MlflowException(f"API request failed with exception {cause}")  # as MLflow does
            except MlflowException as raised:
                return raised

    gone = requests.exceptions.ConnectionError("Max retries exceeded")
    assert stores.server_lost(wrapped(gone)) and stores.lost_reason(wrapped(gone)) == "Max retries exceeded"
    assert stores.server_lost(wrapped(requests.exceptions.ReadTimeout("read timed out")))
    assert not stores.server_lost(wrapped(ValueError("bad param")))
    assert not stores.server_lost(ConnectionError("not requests': our own store check"))


def test_checking_a_store_creates_nothing_and_ensuring_it_creates_its_folders(tmp_path):
    """`check_store` runs for every job of a sweep before the first starts, also when a later job is refused."""
    uri = f"sqlite:///{tmp_path / 'new' / 'sub' / 'mlflow.db'}"
    assert stores.check_store(uri) == uri and not (tmp_path / "new").exists()
    stores.ensure_store(uri)
    assert (tmp_path / "new" / "sub" / "mlflow.db").is_file()


def test_ensure_store_names_an_unwritable_location(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=str(blocker / "mlflow.db")):
        stores.ensure_store(f"sqlite:///{blocker}/mlflow.db")


NOBODY = 65534  # the unprivileged user and group id


def _check_store_without_root(uri: str, answers) -> None:
    """Child process: give up root if this runs as root (root writes anywhere), then check the store."""
    if os.geteuid() == 0:
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    try:
        stores.check_store(uri)
        answers.send("accepted")
    except PermissionError as error:
        answers.send(str(error))


@pytest.mark.parametrize("new_file", [True, False], ids=["new store", "existing store"])
def test_checking_a_store_refuses_a_folder_or_file_the_user_may_not_write(new_file):
    """A read-only folder (and in it, for an existing store, a read-only file) is refused naming the store and
    the setting to change; the folder lies in a world-readable temporary folder so that `nobody` reaches it."""
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        folder = Path(top) / "read_only"
        folder.mkdir()
        db = folder / "mlflow.db"
        if new_file:
            folder.chmod(0o555)
        else:  # SQLite writes its journal beside the file: both must be writable
            folder.chmod(0o777)
            db.write_bytes(b"")
            db.chmod(0o444)
        fork = multiprocessing.get_context("fork")
        receive, send = fork.Pipe(duplex=False)
        child = fork.Process(target=_check_store_without_root, args=(f"sqlite:///{db}", send))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0 and receive.poll(), f"the check's process ended with {child.exitcode}"
        answer = receive.recv()
    assert answer == f"the MLflow store {db} is not writable ({folder if new_file else db}); set tracking.uri to a " \
                     "writable place, e.g. sqlite:///mlflow.db in your project"


def test_ensure_store_names_an_unreachable_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"http://127.0.0.1:{port}"):
        stores.ensure_store(f"http://127.0.0.1:{port}")


def _race_worker(uri: str, barrier, results) -> None:
    """Child process: wait for all, then create the store and ask for the sweep's parent."""
    barrier.wait()
    results.put(tracking.open_parent_run(uri, "race", "sweep-1", "parent"))


def test_parallel_processes_create_one_store_and_one_parent(tmp_path):
    """Without the lock, 4 processes migrating a fresh SQLite store at once fail
    ('table ... already exists'); with it all succeed and agree on one sweep parent."""
    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    workers = [ctx.Process(target=_race_worker, args=(uri, barrier, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    parent_ids = {results.get(timeout=5) for _ in workers}
    assert len(parent_ids) == 1
    client = MlflowClient(stores.resolve_uri(uri))
    experiment = client.get_experiment_by_name("race")
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == list(parent_ids)


# --- runs ---------------------------------------------------------------------------------------


def test_open_run_finishes_with_everything_readable(uri, tmp_path):
    weights = {"W1": np.arange(6, dtype=np.float32).reshape(2, 3), "steps": np.array([1, 2, 3])}
    with tracking.open_run(
        uri, "demo", "depth8", tags={"study": "depth"}, description="eight layers"
    ) as sink:
        sink.log_params({"model": {"depth": 8, "widths": [64, 64]}, "note": "x" * 7000})
        for epoch in range(3):
            sink.log_metrics({"train/loss": 1.0 / (epoch + 1), "val/acc": np.float32(0.5)}, epoch)
        sink.set_tags({"diverged_at_step": 17})
        sink.log_arrays(weights, "weights/final.npz")
        sink.log_dict({"lr": 0.1}, "config.yaml")
        sink.log_table([{"layer": 1, "norm": 0.5}], "tables/norms.csv")
        sink.log_text("hello", "notes/readme.md")

    run = get_run(uri, sink.run_id)
    assert (run.info.status, run.info.run_name) == ("FINISHED", "depth8")
    assert run.data.params["model.depth"] == "8"
    assert run.data.params["model.widths"] == "[64, 64]"
    assert run.data.params["note"] == "x" * 6000
    assert run.data.tags["study"] == "depth"
    assert run.data.tags["diverged_at_step"] == "17"
    assert run.data.tags["mlflow.note.content"] == "eight layers"
    assert history(uri, sink.run_id, "train/loss") == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    assert run.data.metrics["val/acc"] == 0.5

    client = MlflowClient(stores.resolve_uri(uri))
    local = Path(client.download_artifacts(sink.run_id, "", str(tmp_path / "down")))
    with np.load(local / "weights" / "final.npz", allow_pickle=False) as archive:
        assert archive["W1"].dtype == np.float32
        np.testing.assert_array_equal(archive["W1"], weights["W1"])
        np.testing.assert_array_equal(archive["steps"], weights["steps"])
    assert (local / "config.yaml").read_text().strip() == "lr: 0.1"
    assert (local / "tables" / "norms.csv").read_text().splitlines() == ["layer,norm", "1,0.5"]
    assert (local / "notes" / "readme.md").read_text() == "hello"


def test_artifacts_go_to_the_run_s_repository_without_looking_the_run_up(uri, tmp_path, monkeypatch):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    with tracking.open_run(uri, "demo", "artifacts") as sink:
        original = SqlAlchemyStore.get_run
        lookups: list[str] = []
        monkeypatch.setattr(SqlAlchemyStore, "get_run", lambda self, run_id: lookups.append(run_id) or original(self, run_id))
        sink.log_dict({"lr": 0.1, "widths": [4, 2]}, "config.json")
        sink.log_dict({"lr": 0.1, "widths": [4, 2]}, "config.yaml")
        sink.log_text("x", "notes.txt")
        sink.log_artifact(folder)
        sink.log_artifact(folder, "figures")
        sink.log_artifact(tmp_path / "b.txt", "files")
        assert lookups == []

    local = Path(MlflowClient(stores.resolve_uri(uri)).download_artifacts(sink.run_id, "", str(tmp_path / "down")))
    assert json.loads((local / "config.json").read_text()) == {"lr": 0.1, "widths": [4, 2]}
    assert (local / "config.yaml").read_text() == "lr: 0.1\nwidths:\n- 4\n- 2\n"
    assert [(local / name).read_text() for name in ("plots/a.txt", "figures/plots/a.txt", "files/b.txt")] == ["a", "a", "b"]


def test_a_json_table_is_mlflow_s_table_appended_per_call_and_read_back_by_load_table(uri, monkeypatch):
    with tracking.open_run(uri, "tables", "t") as sink:
        sink.log_table([{"layer": 1, "norm": 0.5}], "tables/norms.json")
        sink.log_table([{"layer": 2, "norm": 0.75}], "tables/norms.json")
    # MLflow 3.17's MlflowClient.load_table finds the runs through the fluent mlflow.search_runs, in the
    # store of the process's tracking URI, not the client's
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stores.resolve_uri(uri))
    client = MlflowClient(stores.resolve_uri(uri))
    table = client.load_table(sink.experiment_id, "tables/norms.json", run_ids=[sink.run_id])
    assert table[["layer", "norm"]].to_dict("records") == [{"layer": 1, "norm": 0.5}, {"layer": 2, "norm": 0.75}]


def test_exception_fails_the_run_after_flushing_its_metrics(uri):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.open_run(uri, "demo", "crash", flush_every_s=3600) as sink:
            for epoch in range(3):
                sink.log_metrics({"loss": float(epoch)}, epoch)
            raise RuntimeError("boom")
    assert get_run(uri, sink.run_id).info.status == "FAILED"
    assert history(uri, sink.run_id, "loss") == [(0, 0.0), (1, 1.0), (2, 2.0)]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupt_kills_the_run_after_flushing_its_metrics(uri, interrupt):
    with pytest.raises(interrupt):
        with tracking.open_run(uri, "demo", "ctrl-c", flush_every_s=3600) as sink:
            sink.log_metrics({"loss": 2.5}, 0)
            raise interrupt()
    assert get_run(uri, sink.run_id).info.status == "KILLED"
    assert history(uri, sink.run_id, "loss") == [(0, 2.5)]


@pytest.mark.parametrize("name", ["val acc!", ".", "../loss"])
def test_bad_metric_fails_at_the_call_and_the_run(uri, name):
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        with tracking.open_run(uri, "demo", "bad") as sink:
            sink.log_metrics({name: 1.0}, 0)
    with pytest.raises(TypeError, match="'loss'"):
        sink.log_metrics({"loss": "high"}, 0)
    assert get_run(uri, sink.run_id).info.status == "FAILED"


def test_log_arrays_refuses_object_arrays(uri):
    with tracking.open_run(uri, "demo", "objects") as sink:
        with pytest.raises(TypeError, match="pickling"):
            sink.log_arrays({"ragged": np.array([[1], [1, 2]], dtype=object)}, "a.npz")
        with pytest.raises(ValueError, match=".npz"):
            sink.log_arrays({"w": np.ones(2)}, "a.npy")


def downloaded(uri: str, run_id: str, artifact: str, folder: Path) -> dict[str, np.ndarray]:
    """The arrays of the `.npz` artifact `artifact` of run `run_id`."""
    local = MlflowClient(stores.resolve_uri(uri)).download_artifacts(run_id, artifact, str(folder))
    with np.load(local, allow_pickle=False) as archive:
        return dict(archive)


# How long a held upload waits at most for the test to release it: only a bound against a hung test. The
# tests release it themselves; an upload let go early by a short bound (it was 10 s) would run before the
# test looked, on a loaded machine, and fail it by chance.
HOLD_BOUND_S = 300


@pytest.fixture
def held_uploads(monkeypatch) -> Iterator[threading.Event]:
    """Uploading an artifact waits until the returned event is set (set again at teardown)."""
    release = threading.Event()
    original = LocalArtifactRepository.log_artifact

    def held(self, *args, **kwargs):
        release.wait(timeout=HOLD_BOUND_S)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", held)
    yield release
    release.set()


def test_log_arrays_uploads_a_copy_taken_at_the_call(uri, tmp_path, held_uploads):
    weights = np.zeros((3, 2), dtype=np.float32)
    with tracking.open_run(uri, "demo", "snapshot") as sink:
        sink.log_arrays({"W1": weights}, "params/init.npz")
        weights += 1.0  # training updates in place while the upload waits
        sink.log_arrays({"W1": weights}, "params/final.npz")
        weights += 1.0
        pending = MlflowClient(stores.resolve_uri(uri)).list_artifacts(sink.run_id, "params")
        held_uploads.set()
    assert pending == []  # log_arrays returned before its upload ran
    assert get_run(uri, sink.run_id).info.status == "FINISHED"
    for name, expected in (("init", 0.0), ("final", 1.0)):
        W1 = downloaded(uri, sink.run_id, f"params/{name}.npz", tmp_path / name)["W1"]
        assert W1.dtype == np.float32
        np.testing.assert_array_equal(W1, np.full((3, 2), expected, dtype=np.float32))


def test_the_run_ends_after_its_uploads(uri, tmp_path, held_uploads):
    threading.Timer(0.2, held_uploads.set).start()
    with pytest.raises(KeyboardInterrupt):
        with tracking.open_run(uri, "demo", "ctrl-c during upload") as sink:
            sink.log_arrays({"W1": np.ones(4)}, "w.npz")
            raise KeyboardInterrupt
    assert get_run(uri, sink.run_id).info.status == "KILLED"
    np.testing.assert_array_equal(downloaded(uri, sink.run_id, "w.npz", tmp_path)["W1"], np.ones(4))


def test_a_failed_upload_fails_the_run_at_the_next_flush(uri, monkeypatch):
    def full_disk(self, *args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", full_disk)
    with pytest.raises(OSError, match="no space left"):
        with tracking.open_run(uri, "demo", "full disk", flush_every_s=3600) as sink:
            sink.log_arrays({"W1": np.ones(4)}, "w.npz")
            sink.log_metrics({"loss": 1.0}, 0)
            deadline = time.monotonic() + 120  # a bound against a hang only: the upload thread may start late
            while time.monotonic() < deadline:  # training goes on until a flush sees the failure
                sink.flush()
                time.sleep(0.01)
            pytest.fail("flush() never raised the failed upload's error")
    assert get_run(uri, sink.run_id).info.status == "FAILED"
    assert history(uri, sink.run_id, "loss") == [(0, 1.0)]


def test_a_failed_upload_fails_a_run_that_ends_first(uri, monkeypatch):
    def full_disk(self, *args, **kwargs):
        time.sleep(0.2)
        raise OSError("no space left on device")

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", full_disk)
    with pytest.raises(OSError, match="no space left"):
        with tracking.open_run(uri, "demo", "full disk at the end") as sink:
            sink.log_arrays({"W1": np.ones(4)}, "w.npz")
    assert get_run(uri, sink.run_id).info.status == "FAILED"


def test_a_job_stopped_at_slurm_s_time_limit_ends_killed_with_its_metrics(uri):
    """submitit's SIGUSR2 handler raises UncompletedJobError in the job once no requeue is left
    (conf/hydra/launcher/slurm.yaml: max_num_timeout 0): the scheduler stopped it, it did not fail."""
    utils = pytest.importorskip("submitit.core.utils")
    with pytest.raises(utils.UncompletedJobError):
        with tracking.open_run(uri, "demo", "time limit") as sink:
            sink.log_metrics({"loss": 1.0}, 0)
            raise utils.UncompletedJobError("Job not requeued because: timed-out too many times.")
    assert get_run(uri, sink.run_id).info.status == "KILLED"
    assert history(uri, sink.run_id, "loss") == [(0, 1.0)]
    assert not tracking.stopped_by_scheduler(RuntimeError("Job not requeued"))  # by its type, not its words


# --- batching -----------------------------------------------------------------------------------


@pytest.fixture
def metric_writes(monkeypatch) -> list[int]:
    """Counts the sink's writes of metrics to the store: one entry (number of metrics) per write."""
    calls: list[int] = []
    original = store_rows.write_metrics

    def counting(client, run_id, metrics):
        calls.append(len(metrics))
        return original(client, run_id, metrics)

    monkeypatch.setattr(store_rows, "write_metrics", counting)
    return calls


def test_metrics_are_sent_in_few_batches(uri, metric_writes):
    with tracking.open_run(uri, "demo", "batched", flush_every_s=3600) as sink:
        for epoch in range(100):
            sink.log_metrics({f"layer{i}/grad_norm": epoch + i / 100 for i in range(30)}, epoch)
    assert metric_writes == [1000, 1000, 1000]
    for i in (0, 17, 29):
        steps = history(uri, sink.run_id, f"layer{i}/grad_norm")
        assert steps == [(epoch, epoch + i / 100) for epoch in range(100)]


def test_old_buffer_is_sent_on_the_next_call(uri, metric_writes):
    with tracking.open_run(uri, "demo", "timed", flush_every_s=0.0) as sink:
        for epoch in range(5):
            sink.log_metrics({"a": 1.0, "b": 2.0}, epoch)
        assert metric_writes == [2] * 5


def test_what_a_kill_can_lose_is_under_1000_values_logged_in_the_last_flush_interval(uri, metric_writes, monkeypatch):
    """A process killed outright (joblib's workers at Ctrl-C) loses its unsent buffer and nothing else. After
    every `log_metrics` call, whatever the pace, the buffer holds fewer than 1000 values (MLflow's batch) and
    only values logged less than `flush_every_s` (2 s) before: the README's "at most their last 2 s or 1000
    metric values"."""
    clock = [0.0]
    monkeypatch.setattr(mlflow_sink.time, "monotonic", lambda: clock[0])
    rng = np.random.default_rng(0)
    logged: list[tuple[float, int]] = []  # (clock, values) of each call
    with tracking.open_run(uri, "demo", "paced") as sink:
        for step in range(400):
            clock[0] += float(rng.exponential(0.3))
            values = int(rng.integers(1, 80))
            sink.log_metrics({f"m{i}": 1.0 for i in range(values)}, step)
            logged.append((clock[0], values))
            unsent, calls = sink.unsent, 0
            while unsent > 0:  # the calls whose values are still buffered: the newest ones
                calls += 1
                unsent -= logged[-calls][1]
            assert sink.unsent < 1000
            assert calls == 0 or clock[0] - logged[-calls][0] < 2.0, (step, sink.unsent)
    assert sum(metric_writes) == sum(values for _, values in logged)


# --- nesting ------------------------------------------------------------------------------------


def test_children_nest_under_one_parent_per_sweep(uri):
    parent = tracking.open_parent_run(uri, "sweep", "2024-01-01/12-00", "depth-sweep")
    assert tracking.open_parent_run(uri, "sweep", "2024-01-01/12-00") == parent
    other = tracking.open_parent_run(uri, "sweep", "2024-01-02/09-30")
    assert other != parent
    parent_tags = get_run(uri, parent).data.tags
    assert (parent_tags["nnresearch.role"], parent_tags["nnresearch.sweep_id"]) == (
        "parent",
        "2024-01-01/12-00",
    )
    assert get_run(uri, parent).info.status == "RUNNING"
    with tracking.open_run(uri, "sweep", "child", parent_run_id=parent) as child:
        child.log_metrics({"loss": 1.0}, 0)
    assert get_run(uri, child.run_id).data.tags["mlflow.parentRunId"] == parent
    ended = get_run(uri, parent).info
    assert ended.status == "FINISHED"
    assert ended.end_time >= get_run(uri, child.run_id).info.end_time
    assert get_run(uri, other).info.status == "RUNNING"
    tracking.fail_parent_run(uri, other)  # a job failed before its run existed: a later child's end keeps it FAILED
    with tracking.open_run(uri, "sweep", "child", parent_run_id=other) as child:
        child.log_metrics({"loss": 1.0}, 0)
    assert get_run(uri, other).info.status == "FAILED"


def test_a_sweep_s_parent_ends_with_the_worst_status_of_its_children(uri):
    """One failed job fails the sweep and one killed job marks it KILLED, whichever job ends last;
    a child still running does not count, and an interrupted sweep is KILLED even if its last job finished."""
    def child(parent: str, outcome: type[BaseException] | None) -> None:
        with contextlib.suppress(BaseException), tracking.open_run(uri, "worst", "job", parent_run_id=parent):
            if outcome is not None:
                raise outcome

    expected = {(None, None): "FINISHED", (RuntimeError, None): "FAILED", (None, KeyboardInterrupt): "KILLED",
                (KeyboardInterrupt, RuntimeError): "FAILED", (RuntimeError, KeyboardInterrupt): "FAILED",
                (KeyboardInterrupt, None): "KILLED"}
    for number, (outcomes, status) in enumerate(expected.items()):
        parent = tracking.open_parent_run(uri, "worst", f"sweep{number}")
        for outcome in outcomes:
            child(parent, outcome)
        assert get_run(uri, parent).info.status == status, outcomes

    parent = tracking.open_parent_run(uri, "worst", "interrupted")
    child(parent, None)
    client = MlflowClient(stores.resolve_uri(uri))
    running = client.create_run(get_run(uri, parent).info.experiment_id, tags={"mlflow.parentRunId": parent})
    assert tracking.end_parent_run(uri, parent) == "FINISHED"  # the running child does not count
    assert set(tracking.end_running_runs(uri, parent)) == {running.info.run_id, parent}
    assert get_run(uri, parent).info.status == "KILLED"


def test_a_job_whose_last_writes_fail_still_ends_its_parent(uri, monkeypatch):
    """The server stops answering at the end of a job (its buffered metrics cannot be sent): the job
    ends FAILED, and its sweep's parent, which an earlier job ended FINISHED, must show that too."""
    parent = tracking.open_parent_run(uri, "late", "sweep")
    with tracking.open_run(uri, "late", "job0", parent_run_id=parent):
        pass
    assert get_run(uri, parent).info.status == "FINISHED"

    def server_gone(self):
        raise ConnectionError("the server stopped answering")

    with pytest.raises(ConnectionError), tracking.open_run(uri, "late", "job1", parent_run_id=parent) as sink:
        monkeypatch.setattr(MLflowSink, "flush", server_gone)
        sink.log_metrics({"loss": 1.0}, step=0)
    assert get_run(uri, sink.run_id).info.status == "FAILED"
    assert get_run(uri, parent).info.status == "FAILED"


def _job_killed_mid_run(uri: str, parent: str) -> None:
    """Child process: a sweep's job SIGKILLed while its run is open (the OOM killer, `kill -9`)."""
    with tracking.open_run(uri, "orphans", "killed-job", parent_run_id=parent) as sink:
        sink.log_metrics({"loss": 1.0}, step=0)
        sink.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def test_runs_left_running_by_a_killed_process_of_this_machine_are_ended_by_the_next_run(uri, caplog):
    """A SIGKILLed job cannot end its run; the next run of the experiment on this machine ends it KILLED
    (with what it logged), and its sweep's parent too, logging a warning that names it. A run whose
    process is alive, one of another machine, and a parent (ended by its jobs, whichever process made
    it) stay RUNNING, and the warning does not name them."""
    parent = tracking.open_parent_run(uri, "orphans", "sweep-k")
    killed = multiprocessing.get_context("spawn").Process(target=_job_killed_mid_run, args=(uri, parent))
    killed.start()
    killed.join(timeout=120)
    assert killed.exitcode == -9
    client = MlflowClient(stores.resolve_uri(uri))
    experiment = get_run(uri, parent).info.experiment_id
    orphan, = client.search_runs([experiment], filter_string="attributes.run_name = 'killed-job'")
    alive = client.create_run(experiment, tags={tracking.HOST_TAG: socket.gethostname(), tracking.PID_TAG: str(os.getpid())})
    elsewhere = client.create_run(experiment, tags={tracking.HOST_TAG: "another-machine", tracking.PID_TAG: "1"})
    assert orphan.info.status == "RUNNING" and get_run(uri, parent).info.status == "RUNNING"

    with caplog.at_level(logging.WARNING, logger=tracking.__name__), tracking.open_run(uri, "orphans", "next") as sink:
        pass
    assert get_run(uri, orphan.info.run_id).info.status == "KILLED"
    warned = [r.getMessage() for r in caplog.records if r.name == tracking.__name__ and r.levelno == logging.WARNING]
    assert len(warned) == 1 and "ended KILLED" in warned[0] and "gone" in warned[0] and orphan.info.run_id in warned[0], warned
    assert not [run_id for run_id in (alive.info.run_id, elsewhere.info.run_id, parent) if run_id in warned[0]], warned
    assert history(uri, orphan.info.run_id, "loss") == [(0, 1.0)]
    assert get_run(uri, parent).info.status == "KILLED"
    assert [get_run(uri, run.info.run_id).info.status for run in (alive, elsewhere)] == ["RUNNING", "RUNNING"]
    assert get_run(uri, sink.run_id).info.status == "FINISHED"
    assert tracking.end_orphaned_runs(uri, experiment) == []


def test_parent_must_be_in_the_same_experiment(uri):
    parent = tracking.open_parent_run(uri, "sweep-a", "s1")
    with pytest.raises(ValueError, match="experiment"):
        with tracking.open_run(uri, "sweep-b", "child", parent_run_id=parent):
            pass


def test_a_sweep_s_later_jobs_in_one_process_look_nothing_up(uri, monkeypatch):
    """The experiment's id, the sweep's parent and the parent's experiment are read once per process:
    the second job of a sweep opens its run without a lookup query."""
    def first_job() -> str:
        parent = tracking.open_parent_run(uri, "sweep-c", "s1", "parent")
        with tracking.open_run(uri, "sweep-c", "job", parent_run_id=parent):
            pass
        return parent

    parent = first_job()
    lookups: list[str] = []
    for name in ("get_experiment_by_name", "search_runs", "get_run"):
        original = getattr(MlflowClient, name)
        monkeypatch.setattr(MlflowClient, name, lambda self, *a, _name=name, _original=original, **k:
                            lookups.append(_name) or _original(self, *a, **k))
    with tracking.open_run(uri, "sweep-c", "job2", parent_run_id=tracking.open_parent_run(uri, "sweep-c", "s1")) as job:
        assert lookups == []  # ending it asks for the children's statuses (end_parent_run)
    assert tracking.find_parent_run(uri, "sweep-c", "s1") == parent
    assert get_run(uri, job.run_id).data.tags["mlflow.parentRunId"] == parent


def test_an_experiment_deleted_after_this_process_used_it_fails_naming_how_to_restore(uri):
    with tracking.open_run(uri, "short-lived", "first") as first:
        pass
    MlflowClient(stores.resolve_uri(uri)).delete_experiment(first.experiment_id)
    with pytest.raises(ValueError, match="restore"):
        with tracking.open_run(uri, "short-lived", "second"):
            pass
    with pytest.raises(ValueError, match="restore"):
        tracking.open_parent_run(uri, "short-lived", "s2")


# --- helpers ------------------------------------------------------------------------------------


def test_flatten_joins_nested_keys_and_stringifies():
    config = {"model": {"depth": 8, "act": {"name": "relu"}}, "lr": 0.1, "widths": [4, 4], "x": {}}
    assert mlflow_sink.flatten(config) == {
        "model.depth": "8",
        "model.act.name": "relu",
        "lr": "0.1",
        "widths": "[4, 4]",
        "x": "{}",
    }
    assert mlflow_sink.flatten({"a": {"b": 1}}, sep="/") == {"a/b": "1"}
    with pytest.raises(TypeError, match="mapping"):
        mlflow_sink.flatten([1, 2])


def test_null_sink_records_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default store (./mlflow.db) or artifacts would appear
    sink = sinks.NullSink()
    sink.log_metrics({"loss": 1.0}, 0)
    sink.log_params({"a": {"b": 1}})
    sink.set_tags({"t": 1})
    sink.log_arrays({"w": np.ones(2)}, "w.npz")
    sink.log_dict({"a": 1}, "config.yaml")
    sink.log_text("hello", "notes.txt")
    sink.log_table([{"a": 1}], "table.csv")
    sink.flush()
    assert (sink.run_id, sink.run_name, sink.experiment_id) == (None, None, None)
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_artifact_location_fails_the_run_instead_of_leaving_it_running(uri):
    """`mlflow-artifacts:` needs a tracking server; on a SQLite store the first artifact fails, inside the run."""
    client = MlflowClient(stores.ensure_store(uri))
    client.create_experiment("proxied", artifact_location="mlflow-artifacts:/proxied")
    with pytest.raises(Exception):
        with tracking.open_run(uri, "proxied", "r") as sink:
            sink.log_text("x", "notes.txt")
    assert get_run(uri, sink.run_id).info.status == "FAILED"


def test_a_file_store_where_no_folder_can_be_made_is_refused_before_use(tmp_path):
    """`file:` stores are checked as SQLite files are: a file on the path (or no write access) is refused
    by `check_store`, before a run's folder exists; it was an OSError traceback mid-run."""
    (tmp_path / "a_file").write_text("")
    with pytest.raises(PermissionError, match="a_file is not a directory"):
        stores.check_store((tmp_path / "a_file" / "mlruns").as_uri())
    assert stores.check_store((tmp_path / "mlruns").as_uri()) == (tmp_path / "mlruns").as_uri()


def test_a_database_store_without_its_driver_is_refused_before_use():
    """SQLAlchemy imports a database's driver when MLflow first connects, mid-run (a ModuleNotFoundError
    traceback after the run's folder existed): `check_store` imports it first, and hides the password."""
    with pytest.raises(stores.TrackingURIError, match=r"'mysql://u:\*\*\*@host/db' needs the database driver 'MySQLdb'"):
        stores.check_store("mysql://u:secret@host/db")
    pytest.importorskip("psycopg2")
    assert stores.check_store("postgresql+psycopg2://u@127.0.0.1:1/db") == "postgresql+psycopg2://u@127.0.0.1:1/db"


# --- the store's lock, the skip-finished look-up, long tags (found by a mutation audit) -----------


def _holding_the_store_lock(uri: str, monkeypatch) -> contextlib.AbstractContextManager:
    """The store's `<db>-lock` as another process (a sweep's other job) holds it; a waiter here gives up
    at once (filelock.Timeout) instead of after `LOCK_TIMEOUT_S`."""
    monkeypatch.setattr(stores, "LOCK_TIMEOUT_S", 0.01)
    return stores.store_lock(stores.resolve_uri(uri))


def test_a_fresh_store_is_created_only_under_its_lock(tmp_path, monkeypatch):
    """Parallel jobs racing in MLflow's migrations is what the lock prevents: while another process
    holds it, `ensure_store` waits and creates nothing."""
    import filelock

    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    with _holding_the_store_lock(uri, monkeypatch), pytest.raises(filelock.Timeout):
        stores.ensure_store(uri)
    assert not (tmp_path / "fresh" / "mlflow.db").exists()


def test_a_sweep_s_parent_is_looked_up_or_created_under_the_store_lock(uri, monkeypatch):
    """Two jobs starting a sweep together must not both create its parent: the look-up-or-create waits
    for the lock and creates nothing while another process holds it."""
    import filelock

    stores.ensure_store(uri)  # the store itself is ready: only the parent's creation is left to lock
    with _holding_the_store_lock(uri, monkeypatch), pytest.raises(filelock.Timeout):
        tracking.open_parent_run(uri, "locked", "sweep-L", "parent")
    client = MlflowClient(stores.resolve_uri(uri))
    assert client.search_runs([client.get_experiment_by_name("locked").experiment_id]) == []


def test_a_parent_s_status_is_set_under_the_store_lock(uri, monkeypatch):
    """Two children ending together could each read the other as RUNNING and leave the parent with the
    status of one of them: reading the children and setting the parent's status hold the lock."""
    import filelock

    parent = tracking.open_parent_run(uri, "locked", "sweep-E")
    with tracking.open_run(uri, "locked", "job", parent_run_id=parent):
        pass
    with _holding_the_store_lock(uri, monkeypatch), pytest.raises(filelock.Timeout):
        tracking.end_parent_run(uri, parent)


def test_the_finished_runs_of_a_config_are_its_finished_ones_of_that_code(uri):
    """What a sweep skips (`tracking.skip_finished`): only FINISHED runs with the config's hash, and
    with `code_version` only those of that code; failed and killed runs are run again."""
    client = MlflowClient(stores.resolve_uri(uri))
    with tracking.open_run(uri, "skips", "first"):
        pass
    experiment = client.get_experiment_by_name("skips").experiment_id

    def run(status: str, config: str, code: str) -> str:
        run_id = client.create_run(experiment, tags={tracking.CONFIG_HASH_TAG: config, tracking.CODE_VERSION_TAG: code}).info.run_id
        client.set_terminated(run_id, status)
        return run_id

    done_v1, done_v2 = run("FINISHED", "h1", "v1"), run("FINISHED", "h1", "v2")
    for status in ("FAILED", "KILLED"):
        run(status, "h1", "v1")
    run("FINISHED", "h2", "v1")

    def found(*code: str) -> set[str]:
        return {r.info.run_id for r in tracking.finished_runs_with_config(uri, "skips", "h1", *code, max_results=10)}

    assert found() == {done_v1, done_v2}
    assert found("v1") == {done_v1}
    assert found("v3") == set()


def test_a_long_tag_is_kept_whole_up_to_mlflow_s_limit_and_cut_there(uri):
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH  # the limit MLflow's store enforces

    with tracking.open_run(uri, "tags", "long") as sink:
        sink.set_tags({"note": "y" * 5000, "huge": "z" * (MAX_TAG_VAL_LENGTH + 10)})
    tags = get_run(uri, sink.run_id).data.tags
    assert tags["note"] == "y" * 5000
    assert tags["huge"] == "z" * MAX_TAG_VAL_LENGTH


def test_of_duplicate_parents_every_job_keeps_the_oldest(uri):
    """Creators racing on a store without a lock each make a parent, then all keep the oldest one (the
    same for every job) and delete their own: the look-up must agree on the oldest, not the newest."""
    client = MlflowClient(stores.resolve_uri(uri))
    with tracking.open_run(uri, "dups", "first"):
        pass
    experiment = client.get_experiment_by_name("dups").experiment_id
    tags = {tracking.SWEEP_ID_TAG: "sweep-D", tracking.ROLE_TAG: "parent"}
    newer = client.create_run(experiment, start_time=2_000_000, tags=tags).info.run_id
    older = client.create_run(experiment, start_time=1_000_000, tags=tags).info.run_id
    assert newer != older
    assert tracking.find_parent_run(uri, "dups", "sweep-D") == older
    assert tracking.open_parent_run(uri, "dups", "sweep-D") == older
