"""The writers behind an MLflow sink: the writer process keeps the inline writer's promises.

Writes reach the store in call order; a failed write is raised and retried, never dropped; the
writer process survives a Ctrl-C to its process group, is replaced by inline writes if it dies,
and finishes what it was handed if the training process is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from nnresearch import tracking, writers
from nnresearch.config import compose, validate


@pytest.fixture
def uri(tmp_path) -> str:
    return tracking.ensure_store(f"sqlite:///{tmp_path}/mlflow.db")


def history(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def the_writer(sink: tracking.MLflowSink) -> writers.ProcessWriter:
    writer = sink._writer
    assert isinstance(writer, writers.ProcessWriter), f"expected the writer process, got {type(writer).__name__}"
    return writer


def test_auto_is_the_process_for_sqlite_on_linux_and_inline_elsewhere(uri):
    expected = "process" if sys.platform == "linux" else "inline"
    assert writers.choose_writer("auto", uri) == expected
    assert writers.choose_writer("auto", "http://127.0.0.1:5000") == "inline"
    assert writers.choose_writer("inline", uri) == "inline"
    with pytest.raises(ValueError, match="SQLite stores only"):
        writers.choose_writer("process", "http://127.0.0.1:5000")
    with pytest.raises(ValueError, match="auto, process, inline"):
        writers.choose_writer("thread", uri)


def test_a_bad_writer_fails_validation_listing_the_valid_ones():
    with pytest.raises(ValueError, match="tracking.writer.*auto.*process.*inline"):
        validate(compose(["tracking.writer=thread"]))


@pytest.mark.skipif(sys.platform != "linux", reason="the writer process needs fork (Linux)")
def test_writes_reach_the_store_in_call_order(uri, tmp_path):
    with tracking.open_run(uri, "demo", "ordered", writer="process") as sink:
        the_writer(sink)
        for rows in ([{"step": 0, "loss": 1.0}], [{"step": 1, "loss": 0.5}], [{"step": 2, "loss": 0.25}]):
            sink.log_table(rows, "losses.json")  # MLflow appends to a .json table: order shows
        sink.log_params({"model": {"depth": 3}})
        sink.set_tags({"phase": "done"})
        sink.log_dict({"a": 1}, "config.yaml")
        for step in range(50):
            sink.log_metrics({"loss": 1.0 / (step + 1)}, step)
            sink.flush()
    run = MlflowClient(uri).get_run(sink.run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.params["model.depth"], run.data.tags["phase"]) == ("3", "done")
    assert history(uri, sink.run_id, "loss") == list(range(50))
    local = MlflowClient(uri).download_artifacts(sink.run_id, "losses.json", str(tmp_path))
    assert list(pd.read_json(local, orient="split")["step"]) == [0, 1, 2]


@pytest.mark.skipif(sys.platform != "linux", reason="the writer process needs fork (Linux)")
def test_training_process_and_writer_write_to_one_sqlite_store_at_once(uri):
    """The child drops the connections it inherited: both processes writing at once corrupt nothing."""
    client = MlflowClient(uri)
    with tracking.open_run(uri, "demo", "concurrent", writer="process", flush_every_s=0.0) as sink:
        for step in range(200):
            sink.log_metrics({f"m{i}": float(step) for i in range(20)}, step)
            client.set_tag(sink.run_id, f"from-training-{step % 10}", str(step))
    run = client.get_run(sink.run_id)
    assert run.info.status == "FINISHED"
    assert history(uri, sink.run_id, "m7") == list(range(200))
    assert run.data.tags["from-training-9"] == "199"


@pytest.mark.skipif(sys.platform != "linux", reason="the writer process needs fork (Linux)")
def test_a_write_failing_in_the_writer_is_raised_and_retried(uri, tmp_path, monkeypatch):
    failed = tmp_path / "failed"
    original = MlflowClient.log_dict

    def log_dict_failing_once(self, run_id, dictionary, artifact_file):
        if not failed.exists():
            failed.touch()
            raise ConnectionError("the store did not answer (injected)")
        return original(self, run_id, dictionary, artifact_file)

    monkeypatch.setattr(MlflowClient, "log_dict", log_dict_failing_once)
    with pytest.raises(ConnectionError, match="injected"):
        with tracking.open_run(uri, "demo", "retried", writer="process") as sink:
            sink.log_dict({"a": 1}, "config.yaml")
            deadline = time.monotonic() + 10
            step = 0
            while time.monotonic() < deadline:  # training goes on until it hears of the failure
                sink.log_metrics({"loss": 1.0}, step)
                step += 1
                time.sleep(0.001)
            pytest.fail("log_metrics never raised the failed write's error")
    client = MlflowClient(uri)
    assert client.get_run(sink.run_id).info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(sink.run_id)] == ["config.yaml"]  # the retry at the end
    assert history(uri, sink.run_id, "loss") == list(range(step + 1))


def test_an_unpicklable_error_arrives_as_its_type_and_message():
    class Local(Exception):
        pass

    error = writers._picklable(Local("disk on fire"))
    assert isinstance(error, RuntimeError) and str(error) == "Local: disk on fire"
    plain = ConnectionError("reset")
    assert writers._picklable(plain) is plain


@pytest.mark.skipif(sys.platform != "linux", reason="the writer process needs fork (Linux)")
def test_the_writer_ignores_ctrl_c_sent_to_the_process_group(uri):
    with tracking.open_run(uri, "demo", "ctrl-c", writer="process") as sink:
        sink.log_metrics({"loss": 1.0}, 0)
        os.kill(the_writer(sink)._process.pid, signal.SIGINT)
        os.kill(the_writer(sink)._process.pid, signal.SIGTERM)
        time.sleep(0.2)
        assert the_writer(sink)._process.is_alive()
        sink.log_metrics({"loss": 0.5}, 1)
    assert history(uri, sink.run_id, "loss") == [0, 1]
    assert the_writer(sink)._process.exitcode == 0


@pytest.mark.skipif(sys.platform != "linux", reason="the writer process needs fork (Linux)")
def test_if_the_writer_dies_the_training_process_writes_what_it_had_not_written(uri, capsys):
    with tracking.open_run(uri, "demo", "orphaned", writer="process", flush_every_s=0.0) as sink:
        writer = the_writer(sink)
        os.kill(writer._process.pid, signal.SIGSTOP)  # stalled: what follows waits in the pipe, unanswered
        for step in range(5):
            sink.log_metrics({"loss": float(step)}, step)
        sink.log_arrays({"W1": np.ones(3)}, "w.npz")
        os.kill(writer._process.pid, signal.SIGKILL)
        writer._process.join()
        for step in range(5, 10):
            sink.log_metrics({"loss": float(step)}, step)
        sink.log_params({"lr": 0.1})
    run = MlflowClient(uri).get_run(sink.run_id)
    assert run.info.status == "FINISHED"
    assert history(uri, sink.run_id, "loss") == list(range(10))
    assert run.data.params == {"lr": "0.1"}
    assert [a.path for a in MlflowClient(uri).list_artifacts(sink.run_id)] == ["w.npz"]
    assert "writer process ended unexpectedly" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform != "linux", reason="the writer process needs fork (Linux)")
def test_what_was_handed_to_the_writer_survives_a_sigkill_of_the_training_process(uri, tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, pandas
        from nnresearch import tracking
        with tracking.open_run({uri!r}, "demo", "killed", writer="process", flush_every_s=0.0) as sink:
            for step in range(300):
                sink.log_metrics({{f"m{{i}}": float(step) for i in range(30)}}, step)
            sink.log_table(pandas.DataFrame({{"step": [1, 2]}}), "last.csv")
            print(sink.run_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == -signal.SIGKILL, done.stderr
    run_id = done.stdout.split()[0]
    client = MlflowClient(uri)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the orphaned writer finishes on its own time
        artifacts = [a.path for a in client.list_artifacts(run_id)]
        if artifacts == ["last.csv"]:
            break
        time.sleep(0.1)
    assert artifacts == ["last.csv"]
    assert history(uri, run_id, "m29") == list(range(300))
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody was left to end it
    local = client.download_artifacts(run_id, "last.csv", str(tmp_path))
    assert list(pd.read_csv(local)["step"]) == [1, 2]
