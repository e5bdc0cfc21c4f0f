"""Faults injected into runs and sweeps: each fails with an error that names what is wrong, before
training where it can, and loses nothing that was logged: no run is left RUNNING (but where the
tracking server itself is gone, and the error says so), no metric logged before the fault goes
missing, no half-written file is left behind.

Faults: an unreachable tracking server, an unusable store location, a damaged or foreign checkpoint
given to `trainer.resume`, an artifact upload that breaks mid-run, a checkpoint write that breaks
mid-file, a metrics write that fails mid-run, a tracking server lost mid-run. (No data set reads a
user-given file, so there is no missing-data-file fault; `test_no_data_option_is_a_file_path` keeps it that way or asks for one.)
Each fault's test fails if a run is lost; the module also writes one line at its end (faults injected,
runs checked, runs lost), shown with `pytest -s` or in a failure's captured output.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import signal
import socket
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from nnresearch import experiment, store_rows, stores
from nnresearch.config import DataConfig, compose, validate

QUIET = ["trainer.progress=false"]
SMALL = ["data.n_samples=120", "model.width=8", *QUIET]
LEDGER: list[tuple[str, int, int]] = []  # (fault, runs checked, runs lost)


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    if LEDGER:
        checked, lost = sum(c for _, c, _ in LEDGER), sum(x for _, _, x in LEDGER)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        line = f"faults: {len(LEDGER)} injected, {checked} runs checked, {lost} runs lost (RUNNING or missing metrics)"
        if reporter is not None:
            reporter.write_line(f"\n{line}")


def record(fault: str, uri: str | None, expected_steps: dict[str, int] | None = None) -> None:
    """Count the fault and check its store, failing the test if a run was lost: none may be left
    RUNNING, and runs in `expected_steps` (run id -> last epoch logged before the fault) must still
    hold train/loss at every step 0..that epoch."""
    runs, lost = [], 0
    if uri is not None and stores.sqlite_path(stores.resolve_uri(uri)).exists():
        client = MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids) if ids else []
        lost += sum(r.info.status == "RUNNING" for r in runs)
        for run_id, last in (expected_steps or {}).items():
            logged = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
            lost += logged != list(range(last + 1))
    LEDGER.append((fault, len(runs), lost))
    assert lost == 0, f"{fault}: {lost} of {len(runs)} runs lost (left RUNNING, or missing metrics logged before the fault)"




def message(err: str) -> str:
    """The reason line: a refusal before any run (`refused, no run created: ...`, or a sweep's `sweep refused
    before any run started: job ...`) or the exception line as Hydra reports it (`ValueError: ...`),
    without its echo of the overrides or the traceback, both of which repeat values given on the
    command line."""
    found = [line for line in err.splitlines()
             if re.match(r"^(refused, no run created: |sweep refused before any run started: |[\w.]*(Error|Exception)\w*: )", line)]
    assert found, f"no exception message in:\n{err}"
    return found[-1]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts (a fault that can be seen before training must stop it there)."""
    def train(*args, **kwargs):
        raise AssertionError("training started although the fault was detectable before it")

    monkeypatch.setattr(experiment, "train", train)


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# The tracking store cannot be reached or written


UNREACHABLE_MODES = {  # a single run, and a sweep on this machine with the basic or the joblib launcher
    "run": [],
    "sweep": ["-m", "trainer.seed=0,1"],
    "joblib_sweep": ["-m", "trainer.seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}


@pytest.mark.parametrize("mode", UNREACHABLE_MODES)
def test_unreachable_tracking_server_fails_fast_naming_the_uri(tmp_path, monkeypatch, capsys, no_training, mode, main_in_process):
    """Fails before training (before a sweep's first job: no sweep folder, so no joblib worker trained
    where `no_training` cannot see), naming the URI, after one try to connect: one probe, bounded by
    its timeout (`stores.HTTP_TIMEOUT_S`), and no MLflow client call retrying for a minute."""
    monkeypatch.chdir(tmp_path)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"  # nothing listens there
    tries = []
    connect = socket.socket.connect

    def counted_connect(self, address):  # every client (urllib's probe, MLflow's requests) connects through it
        if isinstance(address, tuple) and address[1] == port:
            tries.append(address)
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", counted_connect)
    args = [*UNREACHABLE_MODES[mode], f"hydra.sweep.dir={tmp_path / 'sweep'}"] if mode != "run" else []
    code, out, err = main_in_process(*args, *SMALL, f"tracking.uri={uri}")
    assert code != 0
    assert uri in message(err) and "mlflow server" in message(err), err
    assert len(tries) == 1, f"{len(tries)} tries to connect to the unreachable server, not one"
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "outputs").exists(), "a job started"
    assert not list(tmp_path.glob("*.db")), "no local store may be created instead"
    record(f"unreachable server ({mode})", None)


def test_a_store_another_process_has_locked_is_refused_in_one_line(tmp_path, monkeypatch, capsys, no_training,
                                                                  main_in_process):
    """SQLite's "database is locked" (a DB browser's open transaction) after SQLAlchemy's wait: one line naming the store."""
    import sqlite3

    from mlflow import MlflowClient
    from sqlalchemy.exc import OperationalError

    def locked(self, *args, **kwargs):
        raise OperationalError("SELECT name FROM sqlite_master", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(MlflowClient, "search_experiments", locked)
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*SMALL, f"tracking.uri=sqlite:///{tmp_path / 'busy.db'}")
    assert code == 2, out + err
    assert err.splitlines()[-1].startswith(f"refused, no run created: the MLflow store {tmp_path / 'busy.db'} is locked "
                                           "by another process"), err
    assert "Traceback" not in err


@pytest.mark.parametrize("where", ["parent_is_a_file", "read_only_folder"])
def test_unusable_store_location_names_the_path(tmp_path, monkeypatch, capsys, no_training, where, main_in_process):
    if where == "parent_is_a_file":
        blocker = tmp_path / "results.txt"
        blocker.write_text("a file where the store's folder should be\n")
        db = blocker / "mlflow.db"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders; parent_is_a_file covers root")
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        db = folder / "mlflow.db"
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*SMALL, f"tracking.uri=sqlite:///{db}")
    assert code != 0
    assert str(db) in message(err) and "tracking.uri" in message(err), err
    assert not db.exists()
    record(f"unusable store ({where})", None)


# --------------------------------------------------------------------------------------------
# trainer.resume with a checkpoint that cannot be used


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A good checkpoint (after epoch 1) of `SMALL` with SGD, written through the command line's code path."""
    folder = tmp_path_factory.mktemp("checkpoint")
    cfg = validate(compose([*SMALL, "trainer.epochs=1", "trainer.checkpoint_every=1", "tracking=off"]))
    experiment.execute(cfg, output_dir=folder)
    return folder / "checkpoints" / "epoch00001.npz"


DAMAGE = {
    "truncated": lambda good, path: path.write_bytes(good.read_bytes()[:300]),
    "not_a_zip": lambda good, path: path.write_bytes(b"\x00garbage, not an npz archive"),
    "missing": lambda good, path: None,
    "other_width": lambda good, path: path.write_bytes(good.read_bytes()),       # resumed with model.width=16
    "other_optimizer": lambda good, path: path.write_bytes(good.read_bytes()),   # resumed with optim=adam
}
RESUMED_WITH = {"other_width": ["model.width=16"], "other_optimizer": ["optim=adam"]}


@pytest.mark.parametrize("damage", DAMAGE)
def test_unusable_checkpoint_fails_clearly_before_a_run_exists(checkpoint, tmp_path, monkeypatch, capsys, no_training,
                                                               mlflow_uri, damage, main_in_process):
    path = tmp_path / "epoch00001.npz"
    DAMAGE[damage](checkpoint, path)
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*SMALL, *RESUMED_WITH.get(damage, []), f"trainer.resume={path}",
                                     f"tracking.uri={mlflow_uri}", f"hydra.run.dir={tmp_path / 'run'}")
    record(f"checkpoint {damage}", mlflow_uri)
    assert code != 0
    assert str(path) in message(err), f"the error must name the checkpoint {path}:\n{err}"
    assert not all_runs(mlflow_uri), "a run was created for a job that could not start"


@pytest.mark.parametrize(("resumed_with", "expected"), [
    (["trainer.epochs=1"], "1 finished epochs and trainer.epochs=1: nothing left to train; set trainer.epochs above 1"),
    (["trainer.batch_size=16"], "trainer.batch_size=32 (this run: 16)"),
    (["optim.lr=0.05", "data.seed=3"], "data.seed=0 (this run: 3), optim.lr=0.1 (this run: 0.05)"),
], ids=["nothing_left", "other_batch_size", "other_lr_and_data"])
def test_resume_that_cannot_continue_the_checkpoint_fails_before_a_run_exists(checkpoint, tmp_path, monkeypatch, capsys,
                                                                             no_training, mlflow_uri, resumed_with,
                                                                             expected, main_in_process):
    """A checkpoint of epoch 1 resumed where it has nothing left to train, or with settings its
    numbers depend on changed: a ValueError naming the checkpoint and what differs, and no run."""
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*SMALL, *resumed_with, f"trainer.resume={checkpoint}",
                                     f"tracking.uri={mlflow_uri}", f"hydra.run.dir={tmp_path / 'run'}")
    record(f"resume {' '.join(resumed_with)}", mlflow_uri)
    assert code != 0
    assert str(checkpoint) in message(err) and expected in message(err), err
    assert not all_runs(mlflow_uri), "a run was created for a job that could not start"


def test_resume_may_extend_the_epochs_and_equals_an_uninterrupted_run(checkpoint, tmp_path):
    """trainer.epochs is free on resume (constant schedule): the checkpoint of epoch 1 continued to
    epoch 3 gives the numbers of a run of 3 epochs that never stopped, gradient-noise probe or not."""
    resumed = experiment.execute(validate(compose([*SMALL, "trainer.epochs=3", f"trainer.resume={checkpoint}",
                                                   "trainer.gradient_noise=true", "tracking=off"])), output_dir=tmp_path)
    straight = experiment.execute(validate(compose([*SMALL, "trainer.epochs=3", "tracking=off"])), output_dir=tmp_path)
    for key in ("train/loss", "val/loss", "test/loss"):
        assert resumed.metrics[key] == straight.metrics[key], key


def test_resume_may_change_how_often_it_evaluates_and_probes_and_where_it_logs(checkpoint, tmp_path, mlflow_uri):
    """docs/scaling.md: on resume, where the run is logged and how often it is evaluated or probed may
    change. The checkpoint (not tracked, evaluated and probed every epoch) continued to epoch 5 with
    both every 2 epochs, logged to a store: accepted, it logs what it evaluated (the last epoch kept)
    and ends with the numbers of the 5-epoch run that never stopped."""
    resumed = experiment.execute(validate(compose([*SMALL, "trainer.epochs=5", f"trainer.resume={checkpoint}",
                                                   "trainer.eval_every=2", "trainer.probe_every=2",
                                                   f"tracking.uri={mlflow_uri}", "study=resumed"])), output_dir=tmp_path)
    straight = experiment.execute(validate(compose([*SMALL, "trainer.epochs=5", "tracking=off"])), output_dir=tmp_path)
    for key in ("train/loss", "val/loss", "test/loss"):
        assert resumed.metrics[key] == straight.metrics[key], key
    (run,) = all_runs(mlflow_uri)
    client = MlflowClient(mlflow_uri)
    logged = {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) for key in ("train/loss", "val/loss")}
    assert run.info.status == "FINISHED" and logged["train/loss"] == [2, 3, 4, 5] and logged["val/loss"] == [2, 4, 5], logged
    record("resume with other eval/probe intervals and store", mlflow_uri)


def test_no_data_option_is_a_file_path():
    """Every data set is generated or ships with a package. If a data option ever names a file, add a
    missing-file fault test here (clear error naming the path, before any run exists)."""
    fields = [f.name for f in dataclasses.fields(DataConfig)]
    pathlike = [name for name in fields if any(word in name for word in ("path", "file", "dir", "root", "url"))]
    assert not pathlike, f"DataConfig has file-like options {pathlike}: test a missing file for them"


# --------------------------------------------------------------------------------------------
# Writes that break mid-run


def test_artifact_upload_failing_mid_run_keeps_metrics_and_leaves_no_partial_file(mlflow_uri, tmp_path, monkeypatch, capsys, main_in_process):
    """The upload of params/final.npz breaks (connection reset): the run ends FAILED with every metric."""
    real_log_artifact = LocalArtifactRepository.log_artifact

    def broken_upload(self, local_file, artifact_path=None):
        if str(local_file).endswith("final.npz"):
            raise ConnectionResetError(errno.ECONNRESET, "connection reset while uploading final.npz")
        return real_log_artifact(self, local_file, artifact_path)

    monkeypatch.setattr(LocalArtifactRepository, "log_artifact", broken_upload)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*SMALL, "trainer.epochs=3", f"tracking.uri={mlflow_uri}",
                                     f"hydra.run.dir={tmp_path / 'run'}")
    assert code != 0 and "connection reset" in err, err
    (run,) = all_runs(mlflow_uri)
    assert run.info.status == "FAILED"
    client = MlflowClient(mlflow_uri)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [0, 1, 2, 3]
    assert {"train/acc", "val/loss", "val/acc"} <= set(run.data.metrics)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "params")}
    assert logged == {"params/init.npz"}, logged
    artifact_root = Path(run.info.artifact_uri.removeprefix("file://"))
    partial = [p for p in artifact_root.rglob("*") if "final" in p.name]
    assert not partial, f"half-written artifact files: {partial}"
    assert not list(scratch.iterdir()), f"temporary files left behind: {list(scratch.iterdir())}"
    record("artifact upload reset", mlflow_uri, {run.info.run_id: 3})


class _NumpyWithFailingSavez:
    """numpy as nnresearch.nn.network sees it, except that the `fail_at`-th savez writes half a file and fails."""

    def __init__(self, fail_at: int) -> None:
        self.calls, self.fail_at = 0, fail_at

    def __getattr__(self, name):
        return getattr(np, name)

    def savez(self, file, **arrays):
        self.calls += 1
        if self.calls == self.fail_at:
            file.write(b"PK\x03\x04 half an archive")
            raise OSError(errno.ENOSPC, "No space left on device")
        return np.savez(file, **arrays)


def test_checkpoint_write_failing_mid_file_leaves_the_previous_checkpoint_usable(mlflow_uri, tmp_path, monkeypatch, capsys, main_in_process):
    from nnresearch.nn import network

    monkeypatch.setattr(network, "np", _NumpyWithFailingSavez(fail_at=2))  # epoch 1 written, epoch 2 breaks
    monkeypatch.chdir(tmp_path)
    common = [*SMALL, "trainer.epochs=3", f"tracking.uri={mlflow_uri}"]
    code, out, err = main_in_process(*common, "trainer.checkpoint_every=1",
                                     f"hydra.run.dir={tmp_path / 'run'}")
    assert code != 0 and "No space left on device" in err, err
    (run,) = all_runs(mlflow_uri)
    assert run.info.status == "FAILED"
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch00001.npz"], "a half-written checkpoint was left"
    monkeypatch.undo()
    record("checkpoint write ENOSPC", mlflow_uri, {run.info.run_id: 2})

    # nothing is lost: resuming from the checkpoint that was written finishes the run as if never stopped
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*common, f"trainer.resume={folder / 'epoch00001.npz'}",
                                     f"hydra.run.dir={tmp_path / 'resumed'}")
    assert code == 0, out + err
    straight = experiment.execute(validate(compose([*SMALL, "trainer.epochs=3", "tracking=off"])))
    resumed = [r for r in all_runs(mlflow_uri) if r.info.status == "FINISHED"]
    assert len(resumed) == 1
    for key in ("train/loss", "val/loss", "test/loss"):
        assert resumed[0].data.metrics[key] == straight.metrics[key], key


def test_metrics_write_failing_mid_run_loses_no_logged_metric(mlflow_uri, tmp_path, monkeypatch, capsys, main_in_process):
    """The first batch of metrics sent mid-run fails (a locked database, a server hiccup after MLflow's
    retries): the run ends FAILED, and every metric logged before the failure is still in the store."""
    real_write = store_rows.write_metrics
    failed = []

    def write_failing_once(client, run_id, metrics):
        if not failed:
            failed.append(max(m.step for m in metrics if m.key == "train/loss"))
            raise ConnectionError("the tracking store did not answer (injected)")
        return real_write(client, run_id, metrics)

    monkeypatch.setattr(store_rows, "write_metrics", write_failing_once)
    monkeypatch.chdir(tmp_path)
    # ~30 numbers per epoch: the first full batch (1000) is sent during training, around epoch 33
    code, out, err = main_in_process(*SMALL, "trainer.epochs=60", f"tracking.uri={mlflow_uri}",
                                     f"hydra.run.dir={tmp_path / 'run'}")
    assert failed, "no metrics batch was sent mid-run; raise trainer.epochs"
    assert code != 0 and "injected" in err, err
    (run,) = all_runs(mlflow_uri)
    assert run.info.status == "FAILED"
    logged = sorted(m.step for m in MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "train/loss"))
    record("metrics write failure", mlflow_uri, {run.info.run_id: failed[0]})
    assert logged[: failed[0] + 1] == list(range(failed[0] + 1)), (
        f"the write failed with train/loss logged up to step {failed[0]}, but the store has steps {logged}: "
        "the batch that failed was dropped instead of kept for the final flush")


def test_a_server_lost_mid_run_is_asked_nothing_more_and_named_in_one_line(mlflow_uri, tmp_path, monkeypatch, capsys,
                                                                         main_in_process):
    """Every write from a point on fails as MLflow reports a server gone after its retries (an MlflowException
    raised while handling requests' ConnectionError): the run stops at once and asks the store nothing more
    (no final flush, no status: each would wait through the retries again), and says in one line which run
    it was and the last step stored, which is what the store has. tests/test_server.py kills a real server."""
    import requests
    from mlflow.exceptions import MlflowException

    real_write = store_rows.write_metrics
    writes, ended = [], []

    def write_until_the_server_goes(client, run_id, metrics):
        writes.append(len(metrics))
        if len(writes) == 1:
            return real_write(client, run_id, metrics)
        try:
            raise requests.exceptions.ConnectionError("Max retries exceeded ([Errno 111] Connection refused)")
        except requests.exceptions.ConnectionError as error:
            raise MlflowException(f"API request to .../runs/log-batch failed with exception {error}")  # as MLflow does

    monkeypatch.setattr(store_rows, "write_metrics", write_until_the_server_goes)
    monkeypatch.setattr(MlflowClient, "set_terminated", lambda self, *args, **kwargs: ended.append(args))
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*SMALL, "trainer.epochs=100", f"tracking.uri={mlflow_uri}",
                                     f"hydra.run.dir={tmp_path / 'run'}")
    assert (code, len(writes), ended) == (1, 2, []), (code, writes, ended, err)
    line = err.splitlines()[-1]
    assert line.startswith(f"error: lost the tracking server {mlflow_uri} during run ") and "Traceback" not in err, err
    (run,) = all_runs(mlflow_uri)
    step = int(re.search(r"with its metrics up to step (\d+) ", line).group(1))
    assert max(m.step for m in MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "train/loss")) == step
    assert run.info.status == "RUNNING" and run.info.run_id in line
    record("server lost mid-run (left RUNNING, said so)", None)


def test_interrupt_while_the_run_is_being_ended_still_ends_it(mlflow_uri, tmp_path, monkeypatch, capsys, main_in_process):
    """Ctrl-C (or SIGTERM) arriving while the run writes its last metrics and status, e.g. a second
    Ctrl-C after the first started the clean-up: the run still gets its final status and metrics."""
    real_write = store_rows.write_metrics
    sent = []

    def write_metrics(client, run_id, metrics):
        if not sent and any(frame.name == "end" and frame.filename.endswith("mlflow_sink.py")
                            for frame in traceback.extract_stack()):
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)  # delivered while this write is in progress
        return real_write(client, run_id, metrics)

    monkeypatch.setattr(store_rows, "write_metrics", write_metrics)
    monkeypatch.chdir(tmp_path)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, also in a background job
    try:
        with pytest.raises(KeyboardInterrupt):  # the interrupt is not lost, only held until the run is ended
            main_in_process(*SMALL, "trainer.epochs=3", f"tracking.uri={mlflow_uri}",
                            f"hydra.run.dir={tmp_path / 'run'}")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sent
    (run,) = all_runs(mlflow_uri)
    record("interrupt during the final write", mlflow_uri, {run.info.run_id: 3})
    assert run.info.status != "RUNNING", "an interrupt during the final flush left the run RUNNING"
    steps = sorted(m.step for m in MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "train/loss"))
    assert steps == [0, 1, 2, 3]
