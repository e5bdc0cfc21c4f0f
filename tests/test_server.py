"""A real tracking server: PostgreSQL as the backend store, `mlflow server` in front of it, a parallel
sweep logging to it over HTTP, and the runs read back with `nnresearch.results`.

The test starts a throwaway PostgreSQL cluster (initdb into a temporary folder, a free port on
127.0.0.1, trust authentication, as the `postgres` user when this runs as root, since PostgreSQL
refuses root) and an MLflow server proxying artifacts into a temporary folder, the setup that
docs/scaling.md describes for a team. It skips only where the PostgreSQL server binaries are
absent; `.ci/services.sh` installs them on CI.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from test_cli import cli_env

from nnresearch import results

STUDY = "server_sweep"
pytestmark = pytest.mark.slow


def postgres_bin() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    candidates = ([Path(found).resolve().parent] if found else []) + sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """`test_cli.cli_env()` without PostgreSQL's PG* settings, in the C locale (for initdb)."""
    return {k: v for k, v in cli_env().items() if not k.startswith("PG")} | {"LC_ALL": "C"}


class Postgres:
    """A throwaway PostgreSQL cluster in a temporary folder, on 127.0.0.1:`port`."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="nnresearch-pg-"))
        self.data = self.base / "data"
        self.user = None
        if os.geteuid() == 0:  # postgres refuses to run as root: run it as the package's `postgres` user
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root and there is no `postgres` user to run PostgreSQL as "
                            "(the Debian postgresql package creates it; see .ci/services.sh)")
            self.user = "postgres"
            self.base.chmod(0o755)
            self.data.mkdir(mode=0o700)
            shutil.chown(self.data, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=clean_env(), cwd=self.base)
        if result.returncode != 0:
            log = self.data / "server.log"
            pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                        + (log.read_text()[-2000:] if log.exists() else ""))
        return result

    def start(self) -> str:
        self._run("initdb", "-D", str(self.data), "-U", "mlflow", "--auth=trust", "--no-locale", "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-w", "-t", "60",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.data} -F", "start")
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="mlflow", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE mlflow")
        connection.close()
        # the driver named explicitly: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3), not psycopg2
        return f"postgresql+psycopg2://mlflow@127.0.0.1:{self.port}/mlflow"

    def query(self, sql: str) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.port, user="mlflow", dbname="mlflow") as connection:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
            subprocess.run((["runuser", "-u", self.user, "--"] if self.user else []) + command,
                           capture_output=True, timeout=60, env=clean_env(), cwd=self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"mlflow server at {url} not healthy after {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(tracking URI, artifact folder, Postgres) of a running `mlflow server` backed by PostgreSQL."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: `sudo bash .ci/services.sh` "
                    "installs them (apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.fail("psycopg2 is missing: pip install '.[test]' (it brings psycopg2-binary)")
    folder = tmp_path_factory.mktemp("server")
    artifacts = folder / "artifacts"
    postgres = Postgres(bin_dir)
    try:
        with mlflow_server(folder, postgres.start(), "--artifacts-destination", str(artifacts)) as (uri, _):
            yield uri, artifacts, postgres
    finally:
        postgres.stop()


@pytest.fixture(scope="module")
def sweep(server, tmp_path_factory):
    """Four jobs on two joblib workers, logging to the server."""
    uri, _, _ = server
    folder = tmp_path_factory.mktemp("server_sweep")
    result = subprocess.run([sys.executable, "-m", "nnresearch.run", "-m", "trainer.seed=0,1", "model.width=4,8",
                             "trainer.epochs=2", "data.n_samples=120", "trainer.progress=false", f"study={STUDY}",
                             f"tracking.uri={uri}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             f"hydra.sweep.dir={folder / 'sweep'}"],
                            cwd=folder, capture_output=True, text=True, timeout=300, env=cli_env())
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return uri, folder


def test_parallel_sweep_logs_to_a_postgres_backed_server(server, sweep):
    uri, artifacts, postgres = server
    frame = results.runs(STUDY, uri=uri, include_parents=True)
    parents = frame[frame["tags.nnresearch.role"] == "parent"]
    children = frame[frame["tags.nnresearch.role"] != "parent"]
    assert len(parents) == 1 and len(children) == 4, frame[["run_name", "status"]]
    assert set(frame["status"]) == {"FINISHED"}
    assert set(children["tags.mlflow.parentRunId"]) == {parents["run_id"].iloc[0]}
    assert sorted(zip(children["params.trainer.seed"], children["params.model.width"])) == [(0, 4), (0, 8), (1, 4), (1, 8)]
    assert np.isfinite(children["metrics.val/loss"]).all()
    # the rows really are in PostgreSQL, not in some local file store
    (active,) = postgres.query("SELECT COUNT(*) FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
                               f"WHERE e.name = '{STUDY}' AND r.lifecycle_stage = 'active'")
    assert active[0] == 5


def test_histories_and_artifacts_come_back_through_the_server(server, sweep, tmp_path):
    uri, artifacts, _ = server
    histories = results.histories(STUDY, ["train/loss"], uri=uri, params=["model.width"])
    assert histories.groupby("run_id")["step"].apply(sorted).map(list).tolist() == [[0, 1, 2]] * 4
    run_id = results.runs(STUDY, uri=uri)["run_id"].iloc[0]
    assert MlflowClient(uri).get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    path = download_artifacts(run_id=run_id, artifact_path="params/final.npz", tracking_uri=uri, dst_path=str(tmp_path))
    with np.load(path, allow_pickle=False) as archive:
        assert {"W1", "b1"} <= set(archive.files)
    stored = list(artifacts.rglob("final.npz"))
    assert len(stored) == 4, "the server keeps every run's artifacts in --artifacts-destination"


@contextmanager
def mlflow_server(folder: Path, backend: str, *options: str, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """(URL, process) of an `mlflow server` of the store `backend` on `port` (a free one if None) of
    127.0.0.1, logging to `folder`/mlflow-server.log; stopped on exit, if still running."""
    port = port or free_port()
    log = folder / "mlflow-server.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    with open(log, "w") as out:
        process = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
                                    "--port", str(port), "--workers", "1", *options],
                                   cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=clean_env(),
                                   start_new_session=True)
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process, log)
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group `process` leads (a server and its workers: the group it started), SIGKILL
    after 10 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_server_s_allowed_hosts_and_a_mistyped_path_are_refused_before_any_run(tmp_path):
    """docs/scaling.md's `--allowed-hosts`, listing 127.0.0.1 but not `localhost`: MLflow answers /health to any
    host name, so the store check probes its API, where the refusal shows (403); a path that is not MLflow's
    answers 404. Both are refused by `stores.check_store`, which runs before a run or a sweep's first job."""
    from nnresearch import stores

    port = free_port()
    with mlflow_server(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", "--allowed-hosts",
                       f"mlflow.example.org,127.0.0.1:{port}", port=port) as (url, _):
        assert stores.check_store(url) == url
        with pytest.raises(ConnectionError, match="answers 403 .*refuses this host name"):
            stores.check_store(f"http://localhost:{port}")
        with pytest.raises(ConnectionError, match="answers 404 .*no MLflow server at that path"):
            stores.check_store(f"{url}/typo")


def test_a_server_lost_mid_sweep_is_given_up_after_one_call_s_retries(tmp_path):
    """The server is killed while a sweep's first job logs to it. MLflow retries the failing call (here twice,
    quickly), and then the job stops asking: not for its final flush, its status or the sweep's parent, and
    the next job fails at the store's quick probe (each would wait through the retries again: minutes by
    MLflow's defaults, per call, per job). The error names the run and the last step stored, which is what
    the store holds; the run stays RUNNING there, as nobody can end it. (tests/test_faults.py checks a
    single run's one-line error.)"""
    with mlflow_server(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}") as (url, server):
        env = cli_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1")
        sweep = subprocess.Popen([sys.executable, "-m", "nnresearch.run", "-m", "trainer.seed=0,1", f"tracking.uri={url}",
                                  f"hydra.sweep.dir={tmp_path / 'sweep'}", "trainer.epochs=100000", "data.n_samples=200",
                                  "model.width=8", "trainer.progress=false"],
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        store = sqlite3.connect(tmp_path / "mlflow.db")
        while not store.execute("SELECT count(*) FROM metrics").fetchone()[0]:
            assert sweep.poll() is None, sweep.communicate()
            time.sleep(0.2)
        stop_group(server)
        out, err = sweep.communicate(timeout=300)
    assert sweep.returncode != 0
    assert (out + err).count("Retrying (Retry(") == 2, out + err
    lost = [line for line in err.splitlines() if "lost the tracking server" in line]
    assert len(lost) == 1 and f"lost the tracking server {url} during run " in lost[0], err
    run_id, step = re.search(r"during run \S+ \((\w+)\), .* with its metrics up to step (\d+) ", lost[0]).groups()
    status, = store.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
    stored, = store.execute("SELECT max(step) FROM metrics WHERE run_uuid = ?", (run_id,)).fetchone()
    assert (status, stored) == ("RUNNING", int(step))
