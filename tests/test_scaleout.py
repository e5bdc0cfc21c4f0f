"""Sweeps that scale out and survive faults, through the real command line.

1. A parallel sweep (joblib, 2 workers, 8 jobs) on a fresh SQLite store: every job FINISHED with
   every metric step, one parent, and no state carried from one job to the next in a reused worker.
2. Resume: a sweep interrupted mid-way and started again skips what FINISHED (adopting it under the
   new parent) and re-runs the rest; `tracking.skip_finished=never` runs finished configs again.
3. Crash safety at the sweep level: a failing job ends FAILED without stopping the others (and fails
   the parent, in joblib's workers too); Ctrl-C or SIGTERM on a parallel sweep leaves no run RUNNING
   and no worker process behind.
4. Checkpoints from the command line: `trainer.checkpoint_every` / `trainer.resume` continue a run
   bit for bit.
6. Launchers: submitit (Slurm config composes, renders and asks for what docs/scaling.md says;
   `submitit_local` runs), Ray (its config; a sweep if installed).
7. Optuna search over learning rate and width, with the validation metric as its objective: 20
   trials by default, its TPE sampler seeded (the same search twice tries the same trials).

(5, the tracking server, is tests/test_server.py; 8, injected faults, is tests/test_faults.py.)
Every job is tiny (a few epochs on 120 samples); subprocesses only where a real process matters
(signals, worker processes), everything else runs `nnresearch.run.main` in this process.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from test_cli import cli_env, interruptible

from nnresearch import experiment, tracking
from nnresearch.config import config_hash, validate

TESTS = Path(__file__).resolve().parent
SCALING_MD = TESTS.parent / "docs" / "scaling.md"
QUIET = ["trainer.progress=false"]
TINY = ["trainer.epochs=3", "data.n_samples=120", *QUIET]
# Metrics that must agree to the last bit between two runs of one config (time_s is wall-clock).
COMPARED = ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc")


# --------------------------------------------------------------------------------------------
# Helpers: the command line as a subprocess or in this process, and the store read back


def scaleout_env() -> dict[str, str]:
    """`test_cli.cli_env()` with tests/ importable (for RecordJobs)."""
    return cli_env(PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def popen(*args: str, cwd: Path, log: Path, new_session: bool = False) -> subprocess.Popen:
    """`python -m nnresearch.run *args`, output to `log` (a pipe would keep orphaned workers' output waiting)."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "nnresearch.run", *args], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, text=True, env=scaleout_env(), start_new_session=new_session,
                                preexec_fn=interruptible)


def run_cli(*args: str, cwd: Path, timeout: float = 240) -> tuple[int, str]:
    log = cwd / "cli.log"
    process = popen(*args, cwd=cwd, log=log)
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, log.read_text()




class RecordJobs(Callback):
    """A Hydra callback for these tests: one JSON line per finished job, written where the job ran
    (a joblib worker, a submitit process or this process): pid, job number, status, return value."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_job_end(self, config, job_return, **kwargs) -> None:
        completed = job_return.status == JobStatus.COMPLETED
        line = {"pid": os.getpid(), "num": int(config.hydra.job.num), "status": job_return.status.name,
                "value": float(job_return._return_value) if completed else None,
                "overrides": list(job_return.overrides or [])}
        with open(self.path, "a") as file:
            file.write(json.dumps(line) + "\n")


class ReplaceTrain(Callback):
    """A Hydra callback for these tests: job `num` runs `self.train(real_train, *args, **kwargs)` in place of
    `experiment.train` (in whichever process runs it); a reused worker runs its next job with the real one."""

    def __init__(self, num: int) -> None:
        self.num = num
        self.real_train = None

    def train(self, real_train, *args, **kwargs):
        raise NotImplementedError

    def on_job_start(self, config, **kwargs) -> None:
        if int(config.hydra.job.num) == self.num:
            real_train = experiment.train
            self.real_train, experiment.train = real_train, lambda *args, **kwargs: self.train(real_train, *args, **kwargs)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if self.real_train is not None:
            experiment.train, self.real_train = self.real_train, None


class FailJob(ReplaceTrain):
    """Job `num` raises once its run exists: a bug in the middle of a run."""

    def train(self, real_train, *args, **kwargs):
        raise RuntimeError(f"a bug in job {self.num}")


class HoldJob(ReplaceTrain):
    """Job `num` stops after epoch `epoch` (its earlier metrics in the store, its run RUNNING) and waits there
    for the test's signal, at most `hold_s` (a bound against a hung test, not a timing). An interrupt then
    lands mid-training however fast or loaded the machine is: without it a job of ~1 s had to be caught by
    polling between its first stored metrics and its end."""

    def __init__(self, num: int, epoch: int, hold_s: float = 600) -> None:
        super().__init__(num)
        self.epoch, self.hold_s = epoch, hold_s

    def train(self, real_train, *args, on_epoch_end=None, **kwargs):
        def on_epoch(epoch):
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            if epoch == self.epoch:
                deadline = time.monotonic() + self.hold_s
                while time.monotonic() < deadline:  # SIGINT's KeyboardInterrupt ends the wait
                    time.sleep(0.05)

        return real_train(*args, on_epoch_end=on_epoch, **kwargs)


def record_jobs(path: Path) -> list[str]:
    """Overrides that attach RecordJobs to a sweep."""
    return [f"+hydra.callbacks.record._target_={__name__}.RecordJobs", f"+hydra.callbacks.record.path={path}"]


def recorded(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def parents_and_children(uri: str) -> tuple[list, list]:
    runs = all_runs(uri)
    parents = [r for r in runs if r.data.tags.get("nnresearch.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def store_rows(db: Path) -> list[tuple[str, str, str, int, bool]]:
    """(run id, name, status, train/loss steps, is child) of every active run, read without MLflow."""
    query = ("SELECT r.run_uuid, r.name, r.status, "
             "(SELECT COUNT(*) FROM metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'train/loss'), "
             "EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'mlflow.parentRunId') "
             "FROM runs r WHERE r.lifecycle_stage = 'active'")
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return [(a, b, c, int(d), bool(e)) for a, b, c, d, e in connection.execute(query).fetchall()]
    except sqlite3.OperationalError:  # not created or migrated yet, or locked for a moment
        return []


def wait_for(db: Path, process: subprocess.Popen, log: Path, ready, what: str, timeout: float = 120) -> list:
    """Poll the store until `ready(rows)`; fail (with the process output) if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store_rows(db)
        if ready(rows):
            return rows
        if process.poll() is not None:
            pytest.fail(f"the sweep ended (exit {process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"no {what} after {timeout}s:\n{log.read_text()[-3000:]}")


def live_processes_in_group(pgid: int) -> list[str]:
    """Processes of group `pgid` that are not zombies, as 'pid cmdline' (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command[:120]}")
        except (OSError, ValueError, IndexError):
            continue
    return found


def scaling_doc() -> str:
    """docs/scaling.md as one line (its sentences wrap anywhere), for the tests that read its numbers."""
    return " ".join(SCALING_MD.read_text().split())


def composed_hydra(main_in_process, *overrides: str) -> dict:
    """The `hydra` node that `python -m nnresearch.run --cfg hydra --resolve *overrides` prints."""
    code, out, err = main_in_process("--cfg", "hydra", "--resolve", *overrides)
    assert code == 0, out + err
    return yaml.safe_load(out)["hydra"]


def final_params(uri: str, run_id: str, dst: Path) -> dict[str, np.ndarray]:
    path = download_artifacts(run_id=run_id, artifact_path="params/final.npz", tracking_uri=uri, dst_path=str(dst))
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


# --------------------------------------------------------------------------------------------
# 1. Parallel sweep on a fresh store; no state leaks between jobs in a reused worker

GRID = ["trainer.seed=0,1", "model.width=4,8", "trainer.dtype=float32,float64"]  # 8 jobs
EPOCHS = 3


@pytest.fixture(scope="module")
def parallel_sweep(tmp_path_factory):
    """8 jobs on 2 joblib workers into a store that does not exist yet (both workers create it)."""
    folder = tmp_path_factory.mktemp("parallel")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    jobs = folder / "jobs.jsonl"
    started = time.monotonic()
    code, output = run_cli("-m", *GRID, f"trainer.epochs={EPOCHS}", "data.n_samples=120", *QUIET, "study=parallel",
                           f"tracking.uri={uri}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           f"hydra.sweep.dir={folder / 'sweep'}", *record_jobs(jobs), cwd=folder)
    print(f"parallel sweep: 8 jobs on 2 workers in {time.monotonic() - started:.1f}s")
    assert code == 0, output[-4000:]
    return uri, recorded(jobs)


@pytest.mark.slow
def test_parallel_sweep_on_a_fresh_store_finishes_every_job(parallel_sweep):
    uri, jobs = parallel_sweep
    parents, children = parents_and_children(uri)
    assert len(parents) == 1, [p.info.run_name for p in parents]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == 8, [c.info.run_name for c in children]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.info.status == "FINISHED" for c in children), [c.info.status for c in children]
    combos = {(c.data.params["trainer.seed"], c.data.params["model.width"], c.data.params["trainer.dtype"]) for c in children}
    assert len(combos) == 8, combos
    client = MlflowClient(uri)
    keys = set(children[0].data.metrics)
    for child in children:
        assert set(child.data.metrics) == keys, f"{child.info.run_name} logged other metrics"
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert steps(client, child.info.run_id, key) == list(range(EPOCHS + 1)), (child.info.run_name, key)
        for key in keys:
            logged = steps(client, child.info.run_id, key)
            assert len(logged) == len(set(logged)), f"{child.info.run_name}: {key} logged twice at one step: {logged}"
            assert logged[-1] == EPOCHS, f"{child.info.run_name}: {key} stops at step {logged[-1]}"
    # the jobs really ran in 2 reused worker processes, not in the launching process
    assert len(jobs) == 8 and all(j["status"] == "COMPLETED" for j in jobs), jobs
    pids = [j["pid"] for j in jobs]
    assert len(set(pids)) <= 2, f"more worker processes than n_jobs=2: {sorted(set(pids))}"
    assert max(pids.count(pid) for pid in pids) >= 2, "no worker ran two jobs: reuse was not exercised"


@pytest.mark.slow
def test_reused_workers_leak_no_state_between_jobs(parallel_sweep, compose):
    """Each job's numbers equal those of the same config run alone in a fresh context."""
    uri, jobs = parallel_sweep
    _, children = parents_and_children(uri)
    by_worker = {}
    for job in jobs:
        by_worker.setdefault(job["pid"], []).append(job["num"])
    assert any(len(nums) >= 2 for nums in by_worker.values()), by_worker
    for child in children:
        p = child.data.params
        alone = experiment.execute(validate(compose([
            f"trainer.seed={p['trainer.seed']}", f"model.width={p['model.width']}", f"trainer.dtype={p['trainer.dtype']}",
            f"trainer.epochs={EPOCHS}", "data.n_samples=120", *QUIET, "tracking=off"]))).metrics
        for key in COMPARED:
            assert child.data.metrics[key] == alone[key], (
                f"{child.info.run_name}: {key} = {child.data.metrics[key]!r} in the sweep, {alone[key]!r} alone")
    values = {j["num"]: j["value"] for j in jobs}
    assert all(math.isfinite(v) for v in values.values()), values


# --------------------------------------------------------------------------------------------
# 2. Resume: kill a sweep mid-way, start it again

# Three jobs of 200 epochs (~30 metric values each: a full batch of 1000 reaches the store every ~34 epochs).
# The second job holds after epoch HOLD_EPOCH (`HoldJob`, in the first sweep only) until the test's SIGINT, so
# the interrupt lands mid-training, not after the job ended or in the first writes of the next one.
HOLD_EPOCH = 120
RESUME = ["trainer.seed=0,1,2", "trainer.epochs=200", "data.n_samples=200", "trainer.batch_size=8", "model.width=8",
          *QUIET, "study=resume"]
SEEDS = {"0", "1", "2"}


def hashes_by_seed(compose, seeds) -> dict[str, str]:
    fixed = [o for o in RESUME if not o.startswith("trainer.seed=")]
    return {str(s): config_hash(validate(compose([*fixed, f"trainer.seed={s}"]))) for s in seeds}


@pytest.mark.slow
def test_killed_sweep_resumes_skipping_finished_jobs(mlflow_uri, tmp_path, monkeypatch, capsys, compose, main_in_process):
    db = tmp_path / "mlflow.db"
    log = tmp_path / "sweep1.log"
    process = popen("-m", *RESUME, f"tracking.uri={mlflow_uri}", f"hydra.sweep.dir={tmp_path / 'sweep1'}",
                    f"+hydra.callbacks.hold._target_={__name__}.HoldJob", "+hydra.callbacks.hold.num=1",
                    f"+hydra.callbacks.hold.epoch={HOLD_EPOCH}", cwd=tmp_path, log=log)
    try:
        def one_done_next_training(rows):
            children = [r for r in rows if r[4]]
            return any(r[2] == "FINISHED" for r in children) and any(r[2] == "RUNNING" and r[3] > 0 for r in children)

        wait_for(db, process, log, one_done_next_training, "a finished job and the next one training")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0, log.read_text()[-3000:]
    first = {r.info.run_id: r for r in parents_and_children(mlflow_uri)[1]}
    finished_before = {r.data.params["trainer.seed"] for r in first.values() if r.info.status == "FINISHED"}
    interrupted = [r for r in first.values() if r.info.status != "FINISHED"]
    assert 1 <= len(finished_before) < len(SEEDS) and interrupted, [(r.info.run_name, r.info.status) for r in first.values()]
    assert all(r.info.status == "KILLED" for r in interrupted), [(r.info.run_name, r.info.status) for r in interrupted]

    # the same sweep again (its own sweep directory, so its own parent)
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process("-m", *RESUME, f"tracking.uri={mlflow_uri}",
                                     f"hydra.sweep.dir={tmp_path / 'sweep2'}")
    assert code == 0, out + err
    skipped_names = re.findall(r"^skipped (\S+): .*already finished as run ([0-9a-f]{32})", out, flags=re.MULTILINE)
    skipped = {run_id for _, run_id in skipped_names}
    assert skipped == {r.info.run_id for r in first.values() if r.info.status == "FINISHED"}, out
    parents, children = parents_and_children(mlflow_uri)
    newest = max(parents, key=lambda r: r.info.start_time).info.run_id
    hashes = hashes_by_seed(compose, sorted(SEEDS))
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(c.data.tags["nnresearch.config_hash"] for c in finished) == sorted(hashes.values()), \
        "each config must be FINISHED exactly once"
    assert {c.data.tags["mlflow.parentRunId"] for c in finished} == {newest}, "skipped runs are adopted by the new parent"
    assert not [r for r in all_runs(mlflow_uri) if r.info.status == "RUNNING"]
    rerun = {c.data.params["trainer.seed"] for c in finished if c.info.run_id not in first}
    assert rerun == SEEDS - finished_before
    client = MlflowClient(mlflow_uri)
    for run in interrupted:  # the killed attempt stays, KILLED, with what it logged
        assert client.get_run(run.info.run_id).info.status == "KILLED"

    # tracking.skip_finished=never runs a finished config again
    code, out, err = main_in_process("-m", *[o for o in RESUME if not o.startswith("trainer.seed")],
                                     "trainer.seed=0", "tracking.skip_finished=never", f"tracking.uri={mlflow_uri}",
                                     f"hydra.sweep.dir={tmp_path / 'sweep3'}")
    assert code == 0, out + err
    assert "skipped" not in out
    finished = [c for c in parents_and_children(mlflow_uri)[1] if c.info.status == "FINISHED"]
    per_hash = {seed: sum(c.data.tags["nnresearch.config_hash"] == h for c in finished) for seed, h in hashes.items()}
    assert per_hash == {"0": 2, "1": 1, "2": 1}
    # last, the wording: each "skipped" line names the run it skipped, as the store and the UI show it
    assert {run_id: name for name, run_id in skipped_names} == {run_id: first[run_id].info.run_name for run_id in skipped}, \
        "the skipped lines name other runs than the ones they skipped"


# --------------------------------------------------------------------------------------------
# 3. Crash safety at the sweep level


def test_failing_job_ends_failed_and_the_sweep_goes_on(mlflow_uri, tmp_path, monkeypatch, capsys, main_in_process):
    """An exception in the second of three jobs: that run FAILED with its metrics so far, the others FINISHED."""
    real_train = experiment.train
    calls = []

    def train_failing_in_second_job(*args, on_epoch_end=None, **kwargs):
        calls.append(1)

        def on_epoch(epoch):
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            if len(calls) == 2 and epoch == 2:
                raise RuntimeError("injected failure after epoch 2")

        return real_train(*args, on_epoch_end=on_epoch, **kwargs)

    monkeypatch.setattr(experiment, "train", train_failing_in_second_job)
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process("-m", "trainer.seed=0,1,2", "trainer.epochs=4", "data.n_samples=120",
                                     *QUIET, "study=failing_sweep", f"tracking.uri={mlflow_uri}",
                                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code != 0, "a sweep with a failed job must exit non-zero"
    assert "injected failure" in err
    parents, children = parents_and_children(mlflow_uri)
    status = {c.data.params["trainer.seed"]: c for c in children}
    assert {s: c.info.status for s, c in status.items()} == {"0": "FINISHED", "1": "FAILED", "2": "FINISHED"}
    assert steps(MlflowClient(mlflow_uri), status["1"].info.run_id, "train/loss") == [0, 1, 2]
    assert all(p.info.status != "RUNNING" for p in parents)


@pytest.mark.slow
def test_a_failed_job_in_a_joblib_worker_fails_the_parent(mlflow_uri, tmp_path, monkeypatch, main_in_process):
    """The parent takes the worst status of its jobs with every launcher: here jobs in joblib's worker
    processes, one of them failing mid-run, the other finishing (in either order)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))  # FailJob
    code, out, err = main_in_process("-m", "trainer.seed=0,1", *TINY, "study=failing_parallel_sweep",
                                     f"tracking.uri={mlflow_uri}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                     f"hydra.sweep.dir={tmp_path / 'sweep'}", f"+hydra.callbacks.fail._target_={__name__}.FailJob",
                                     "+hydra.callbacks.fail.num=0")
    assert code != 0 and "a bug in job 0" in out + err, out + err
    parents, children = parents_and_children(mlflow_uri)
    assert sorted((c.data.params["trainer.seed"], c.info.status) for c in children) == [("0", "FAILED"), ("1", "FINISHED")]
    assert [p.info.status for p in parents] == ["FAILED"]


def test_a_resumed_sweep_that_skips_every_job_ends_its_parent(mlflow_uri, tmp_path, monkeypatch, main_in_process):
    monkeypatch.chdir(tmp_path)
    sweep = ["-m", "trainer.seed=0,1", "trainer.epochs=2", "data.n_samples=120", *QUIET, "study=resumed_sweep",
             f"tracking.uri={mlflow_uri}"]
    for attempt in ("first", "again"):
        code, out, err = main_in_process(*sweep, f"hydra.sweep.dir={tmp_path / attempt}")
        assert code == 0, out + err
    assert out.count("skipped ") == 2, out
    parents, children = parents_and_children(mlflow_uri)
    newest = max(parents, key=lambda r: r.info.start_time)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {newest.info.run_id}
    assert [p.info.status for p in parents] == ["FINISHED", "FINISHED"]
    assert newest.info.end_time is not None


def test_a_finished_run_stands_in_for_a_job_only_under_the_same_code(mlflow_uri, tmp_path, monkeypatch, main_in_process):
    """After a fix in the core, running a study again trains it again instead of keeping the old numbers."""
    monkeypatch.chdir(tmp_path)
    sweep = ["-m", "trainer.seed=0,1", "trainer.epochs=2", "data.n_samples=120", *QUIET, "study=code_sweep",
             f"tracking.uri={mlflow_uri}"]
    code, out, err = main_in_process(*sweep, f"hydra.sweep.dir={tmp_path / 'first'}")
    assert code == 0, out + err
    client = MlflowClient(mlflow_uri)
    first = parents_and_children(mlflow_uri)[1]
    assert {run.data.tags[tracking.CODE_VERSION_TAG] for run in first} == {experiment.code_version()}
    for run in first:  # as if another nnresearch (or numpy, scikit-learn, mnist1d) had trained them
        client.set_tag(run.info.run_id, tracking.CODE_VERSION_TAG, "0" * 16)

    code, out, err = main_in_process(*sweep, f"hydra.sweep.dir={tmp_path / 'after_a_fix'}")
    assert code == 0, out + err
    assert "skipped" not in out
    assert sorted(re.findall(r"^running again: this config finished as run \S+ \(([0-9a-f]{32})\) under other code", out,
                             flags=re.MULTILINE)) == sorted(run.info.run_id for run in first), out
    finished = [c for c in parents_and_children(mlflow_uri)[1] if c.info.status == "FINISHED"]
    assert len(finished) == 4

    # the newest run of each config now under other code, the older one under this code: the older one stands in
    for run in finished:
        retrained = run.info.run_id not in {r.info.run_id for r in first}
        client.set_tag(run.info.run_id, tracking.CODE_VERSION_TAG, "1" * 16 if retrained else experiment.code_version())
    code, out, err = main_in_process(*sweep, f"hydra.sweep.dir={tmp_path / 'resumed'}")
    assert code == 0, out + err
    skipped = re.findall(r"^skipped \S+: this exact config already finished as run ([0-9a-f]{32}), with this code", out,
                         flags=re.MULTILINE)
    assert sorted(skipped) == sorted(run.info.run_id for run in first) and "running again" not in out, out

    monkeypatch.setattr(experiment, "NEWEST_RUNS", 1)  # this code's run beyond the first look: asked for alone
    code, out, err = main_in_process(*sweep, f"hydra.sweep.dir={tmp_path / 'resumed_again'}")
    assert code == 0, out + err
    assert sorted(re.findall(r"^skipped \S+: .* as run ([0-9a-f]{32}), with this code", out, flags=re.MULTILINE)) == \
        sorted(skipped), out


def test_the_code_version_follows_the_package_source_not_other_files(tmp_path):
    package = tmp_path / "package"
    (package / "nn").mkdir(parents=True)
    (package / "nn" / "layers.py").write_text("Z = W @ A + b\n")
    (package / "notes.md").write_text("a note\n")
    before = experiment.source_digest(package)
    (package / "notes.md").write_text("another note\n")
    assert experiment.source_digest(package) == before
    (package / "nn" / "layers.py").write_text("Z = W @ A\n")
    assert experiment.source_digest(package) != before
    (package / "nn" / "layers.py").write_text("Z = W @ A + b\n")
    assert experiment.source_digest(package) == before
    (package / "nn" / "layers.py").rename(package / "nn" / "dense.py")
    assert experiment.source_digest(package) != before
    renamed = experiment.source_digest(package)
    (package / "nn" / ".#dense.py").symlink_to(package / "gone.py")  # an editor's lock link: not source, and dangling
    assert experiment.source_digest(package) == renamed != before and len(experiment.code_version()) == 16


@pytest.mark.parametrize("library", experiment.CODE_LIBRARIES)
def test_the_code_version_changes_with_each_library_that_makes_the_numbers(library, monkeypatch):
    before = experiment.code_version.__wrapped__()
    real = experiment._installed_version
    monkeypatch.setattr(experiment, "_installed_version", lambda name: "9.9.9" if name == library else real(name))
    assert experiment.code_version.__wrapped__() != before


def test_the_code_version_is_the_same_in_every_process(tmp_path):
    """A sweep's jobs in joblib workers or on other nodes tag their runs as the launching process would."""
    ask = [sys.executable, "-c", "from nnresearch.experiment import code_version; print(code_version())"]
    versions = {subprocess.run(ask, cwd=cwd, capture_output=True, text=True, check=True, env=cli_env()).stdout.strip()
                for cwd in (tmp_path, Path("/"))}
    assert versions == {experiment.code_version()}


def test_a_sweep_whose_jobs_are_refused_before_their_runs_exist_ends_its_parent(mlflow_uri, tmp_path, monkeypatch, main_in_process):
    monkeypatch.chdir(tmp_path)
    # digits has 1,797 examples; Hydra's basic sweeper checks no job up front, so each is refused as it runs
    code, out, err = main_in_process("-m", "data=digits", "data.n_samples=5000,6000", "hydra/sweeper=basic", "trainer.epochs=2", *QUIET,
                                     "study=refused_sweep", f"tracking.uri={mlflow_uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code != 0 and "n_samples=5000 for 'digits'" in err, out + err
    parents, children = parents_and_children(mlflow_uri)
    assert ([p.info.status for p in parents], children) == (["FAILED"], [])  # its jobs failed: so did the sweep


SIGNALS = {
    # how: (signal, sent to the whole process group as a terminal's Ctrl-C does or to the main process only, times)
    "ctrl-c": (signal.SIGINT, True, 1),
    "sigterm": (signal.SIGTERM, False, 1),  # kill <pid>, docker stop, a scheduler ending the launching process
    "ctrl-c-twice": (signal.SIGINT, True, 2),  # an impatient user: the second arrives while the sweep is stopping
    "sigterm-twice": (signal.SIGTERM, False, 2),
}


LAUNCHERS = {
    # launcher: (its overrides, how many jobs run at once, seconds between two signals)
    "joblib": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 2, 0.3),
    # jobs in the launching process: the second signal lands while the run and its parent end (a gap of
    # 0.05-0.3 s left the parent RUNNING before aa56607)
    "basic": ([], 1, 0.05),
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("how", SIGNALS)
def test_interrupted_sweep_leaves_nothing_running(mlflow_uri, tmp_path, how, launcher):
    """Ctrl-C / SIGTERM on a joblib or a sequential sweep: every started run ends KILLED (with what it
    logged) and the parent is not left RUNNING; no worker process outlives the sweep."""
    signum, to_group, times = SIGNALS[how]
    overrides, at_once, gap_s = LAUNCHERS[launcher]
    db, log = tmp_path / "mlflow.db", tmp_path / "sweep.log"
    process = popen("-m", "trainer.seed=0,1,2,3", "trainer.epochs=100000", "data.n_samples=120", *QUIET, "study=interrupted",
                    f"tracking.uri={mlflow_uri}", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}",
                    cwd=tmp_path, log=log, new_session=True)
    leaked: list[str] = []
    try:
        rows = wait_for(db, process, log, lambda rows: sum(r[4] and r[3] >= 2 for r in rows) >= at_once,
                        f"{at_once} running job(s) with logged steps")
        seen = {r[0]: r[3] for r in rows if r[4]}
        for _ in range(times):
            if to_group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
            time.sleep(gap_s)
        process.wait(timeout=60)
        deadline = time.monotonic() + 15
        while (leaked := live_processes_in_group(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if live_processes_in_group(process.pid):
            os.killpg(process.pid, signal.SIGKILL)  # only the processes this test started
    assert process.returncode != 0
    runs = all_runs(mlflow_uri)
    running = [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert not running, f"{how} left runs RUNNING: {running}\n{log.read_text()[-2000:]}"
    client = MlflowClient(mlflow_uri)
    for run_id, count in seen.items():
        run = client.get_run(run_id)
        assert run.info.status == "KILLED", (run.info.run_name, run.info.status)
        assert len(steps(client, run_id, "train/loss")) >= count, f"{run.info.run_name} lost metrics it had logged"
    assert not leaked, f"{how}: worker processes outlived the sweep: {leaked}"


# --------------------------------------------------------------------------------------------
# 4. Checkpoints through the command line

CKPT = ["optim=adam", "optim.lr=0.01", "model.batchnorm=true", "model.width=8", "trainer.epochs=4", "trainer.batch_size=16",
        "data.n_samples=200", *QUIET, "study=checkpoints"]


def test_checkpoint_and_resume_from_the_command_line_is_bit_identical(mlflow_uri, tmp_path, monkeypatch, capsys, main_in_process):
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*CKPT, "trainer.checkpoint_every=2", f"tracking.uri={mlflow_uri}",
                                     f"hydra.run.dir={tmp_path / 'straight'}")
    assert code == 0, out + err
    folder = tmp_path / "straight" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch00002.npz", "epoch00004.npz"]
    with np.load(folder / "epoch00002.npz", allow_pickle=False) as archive:
        assert int(archive["epoch"]) == 2 and any(k.startswith("optim/") for k in archive.files)

    code, out2, err = main_in_process(*CKPT, f"trainer.resume={folder / 'epoch00002.npz'}",
                                      f"tracking.uri={mlflow_uri}", f"hydra.run.dir={tmp_path / 'resumed'}")
    assert code == 0, out2 + err
    assert not (tmp_path / "resumed" / "checkpoints").exists(), "no checkpoints were asked for"
    straight_id, resumed_id = (line.split("(")[1].split(")")[0] for line in (out, out2) for line in line.splitlines()
                               if line.startswith("run "))
    client = MlflowClient(mlflow_uri)
    straight, resumed = client.get_run(straight_id), client.get_run(resumed_id)
    assert resumed.info.status == "FINISHED"
    for key in COMPARED:
        assert resumed.data.metrics[key] == straight.data.metrics[key], key
    assert steps(client, resumed_id, "train/loss") == [3, 4], "the resumed run logs the epochs it trained"
    a = final_params(mlflow_uri, straight_id, tmp_path / "a")
    b = final_params(mlflow_uri, resumed_id, tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)


# --------------------------------------------------------------------------------------------
# 6. Cluster launchers


def test_slurm_launcher_config_composes_and_renders_an_sbatch_script(monkeypatch, capsys, tmp_path, main_in_process):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
    import submitit

    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process("--cfg", "hydra", "--resolve", "hydra/launcher=slurm",
                                     "hydra.launcher.partition=cpu", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 0, out + err
    launcher = yaml.safe_load(out)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "cpu" and launcher["cpus_per_task"] == 2
    assert "export OMP_NUM_THREADS=2" in launcher["setup"]
    # what SlurmLauncher.launch hands to submitit (its own key mapping), rendered without a cluster
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {k: v for k, v in launcher.items() if k != "_target_"}
    fake_bin = tmp_path / "bin"  # submitit refuses to build a Slurm executor where no `srun` is on PATH
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})  # refuses unknown keys
    script = executor._executor._make_submission_file_text("python -m nnresearch.run", "uid")
    for line in ("#SBATCH --partition=cpu", "#SBATCH --cpus-per-task=2", "#SBATCH --signal=USR2@120", "export OMP_NUM_THREADS=2"):
        assert line in script, f"{line!r} not in the sbatch script:\n{script}"


def test_the_slurm_launcher_asks_for_what_docs_scaling_md_says(monkeypatch, tmp_path, main_in_process):
    """conf/hydra/launcher/slurm.yaml against the numbers docs/scaling.md gives (read from its text):
    CPUs, memory, time limit and array parallelism per job, OMP_NUM_THREADS following cpus_per_task
    (also when overridden), SIGUSR2 that long before the limit, and no automatic requeue."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
    doc = scaling_doc()
    asked = re.search(r"asks for one Slurm array task per job \((\d+) CPUs, (\d+) GB, (\d+) min, at most (\d+) at a time; "
                      r"`OMP_NUM_THREADS` follows `cpus_per_task`\)", doc)
    stopped = re.search(r"submitit's SIGUSR2 handler \((\d+) s before it\).*?\(`max_num_timeout: (\d+)`", doc)
    assert asked and stopped, "docs/scaling.md no longer words the Slurm defaults as this test reads them"
    cpus, mem_gb, minutes, at_once = map(int, asked.groups())
    signal_s, requeues = map(int, stopped.groups())
    monkeypatch.chdir(tmp_path)
    sweep_dir = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    launcher = composed_hydra(main_in_process, "hydra/launcher=slurm", sweep_dir)["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert {key: launcher[key] for key in ("cpus_per_task", "mem_gb", "timeout_min", "array_parallelism", "signal_delay_s",
                                           "max_num_timeout", "nodes", "tasks_per_node")} == {
        "cpus_per_task": cpus, "mem_gb": mem_gb, "timeout_min": minutes, "array_parallelism": at_once,
        "signal_delay_s": signal_s, "max_num_timeout": requeues, "nodes": 1, "tasks_per_node": 1}  # one array task per job
    assert f"export OMP_NUM_THREADS={cpus}" in launcher["setup"], launcher["setup"]
    assert launcher["submitit_folder"] == f"{tmp_path / 'sweep'}/.submitit/%j", "job logs land in <sweep dir>/.submitit/"
    wider = composed_hydra(main_in_process, "hydra/launcher=slurm", f"hydra.launcher.cpus_per_task={3 * cpus}",
                           sweep_dir)["launcher"]
    assert f"export OMP_NUM_THREADS={3 * cpus}" in wider["setup"], "OMP_NUM_THREADS must follow cpus_per_task"


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(mlflow_uri, tmp_path, monkeypatch, capsys, main_in_process):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process("-m", "trainer.seed=0,1", *TINY, "study=submitit",
                                     f"tracking.uri={mlflow_uri}", "hydra/launcher=submitit_local",
                                     "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 0, out + err
    parents, children = parents_and_children(mlflow_uri)
    assert len(parents) == 1 and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}


def test_the_ray_launcher_runs_each_job_on_one_cpu_in_a_fresh_worker():
    """docs/scaling.md: conf/hydra/launcher/ray_local.yaml runs each job as a Ray task on one CPU in a fresh
    worker (`max_calls: 1`) and starts Ray on this machine unless told an address. Read from the file: it
    composes only where hydra-ray-launcher is installed (not in the test extra)."""
    ray = yaml.safe_load((TESTS.parent / "conf" / "hydra" / "launcher" / "ray_local.yaml").read_text())["ray"]
    assert (ray["remote"]["num_cpus"], ray["remote"]["max_calls"], ray["init"]["address"]) == (1, 1, None), ray


@pytest.mark.slow
def test_ray_launcher_runs_a_sweep_on_a_local_ray(mlflow_uri, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher",
                        reason="hydra-ray-launcher is not in the test extra (it pins cloudpickle<3; joblib>=1.6 needs "
                               "cloudpickle>=3); see docs/scaling.md")
    code, output = run_cli("-m", "trainer.seed=0,1", *TINY, "study=ray", f"tracking.uri={mlflow_uri}",
                           "hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=400)
    assert code == 0, output[-4000:]
    parents, children = parents_and_children(mlflow_uri)
    assert len(parents) == 1 and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)


# --------------------------------------------------------------------------------------------
# 7. Hyper-parameter search with Optuna


@pytest.mark.filterwarnings("ignore::DeprecationWarning:optuna.*")  # optuna 2.x on SQLAlchemy 2
def test_optuna_search_over_lr_and_width_gets_the_validation_objective(mlflow_uri, tmp_path, monkeypatch, capsys, recwarn, main_in_process):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install hydra-optuna-sweeper")
    monkeypatch.chdir(tmp_path)
    jobs = tmp_path / "jobs.jsonl"
    code, out, err = main_in_process("-m", "hydra/sweeper=optuna_lr_width", "hydra.sweeper.n_trials=4",
                                     "trainer.epochs=1", "data.n_samples=120", *QUIET, "study=search",
                                     f"tracking.uri={mlflow_uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *record_jobs(jobs))
    assert code == 0, out + err
    trials = recorded(jobs)
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials), trials
    values = [t["value"] for t in trials]
    assert all(math.isfinite(v) for v in values), values
    parents, children = parents_and_children(mlflow_uri)
    assert len(parents) == 1 and len(children) == 4
    assert all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.metrics["val/loss"] for c in children) == sorted(values), "the objective is the final val/loss"
    for child in children:
        assert 0.001 <= float(child.data.params["optim.lr"]) <= 1.0
        assert child.data.params["model.width"] in {"8", "16", "32", "64", "128"}
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(values)
    assert set(best["best_params"]) == {"optim.lr", "model.width"}
    broken = [str(w.message) for w in recwarn if "Callback" in str(w.message)]
    assert not broken, f"a Hydra callback failed under the Optuna sweeper: {broken}"


def test_the_optuna_search_runs_the_trials_docs_scaling_md_says_with_a_seeded_tpe_sampler(monkeypatch, tmp_path,
                                                                                           main_in_process):
    """hydra/sweeper=optuna_lr_width as composed: as many trials as docs/scaling.md's example says (20),
    minimising, TPE with a fixed seed, over optim.lr (log-uniform in [0.001, 1]) and model.width (8 ... 128)."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install hydra-optuna-sweeper")
    doc = scaling_doc()
    trials = re.search(r"python -m nnresearch\.run -m hydra/sweeper=optuna_lr_width # (\d+) trials, minimise val/loss", doc)
    assert trials and "with a seeded TPE sampler" in doc, "docs/scaling.md no longer words the search as this test reads it"
    monkeypatch.chdir(tmp_path)
    sweeper = composed_hydra(main_in_process, "hydra/sweeper=optuna_lr_width")["sweeper"]
    assert sweeper["_target_"].endswith("optuna_sweeper.OptunaSweeper")
    assert (sweeper["n_trials"], sweeper["direction"]) == (int(trials[1]), "minimize")
    assert sweeper["sampler"]["_target_"] == "optuna.samplers.TPESampler"
    assert isinstance(sweeper["sampler"]["seed"], int), f"the TPE sampler is not seeded: {sweeper['sampler']}"
    assert sweeper["params"] == {"optim.lr": "tag(log, interval(0.001, 1.0))", "model.width": "choice(8, 16, 32, 64, 128)"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning:optuna.*")
def test_the_same_search_twice_tries_the_same_trials(mlflow_uri, tmp_path, monkeypatch, main_in_process):
    """The seeded sampler: the same command run twice (3 trials, every trial trained again) logs runs
    with the same optim.lr and model.width."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install hydra-optuna-sweeper")
    monkeypatch.chdir(tmp_path)
    for attempt in ("first", "again"):
        code, out, err = main_in_process("-m", "hydra/sweeper=optuna_lr_width", "hydra.sweeper.n_trials=3",
                                         "trainer.epochs=1", "data.n_samples=60", *QUIET, "study=seeded_search",
                                         "tracking.skip_finished=never", f"tracking.uri={mlflow_uri}",
                                         f"hydra.sweep.dir={tmp_path / attempt}")
        assert code == 0, out + err
    parents, children = parents_and_children(mlflow_uri)
    assert len(parents) == 2 and len(children) == 6
    trials: dict[str, list[tuple[str, str]]] = {parent.info.run_id: [] for parent in parents}
    for child in children:
        trials[child.data.tags["mlflow.parentRunId"]].append((child.data.params["optim.lr"], child.data.params["model.width"]))
    first, again = (sorted(points) for points in trials.values())
    assert first == again, "the same search drew other trials"
    assert len(set(first)) == 3, f"three trials, three points: {first}"


@pytest.mark.filterwarnings("ignore::DeprecationWarning:optuna.*")
def test_a_diverged_trial_is_the_worst_value_and_the_search_goes_on(mlflow_uri, tmp_path, monkeypatch, main_in_process):
    """Optuna fails a trial that returns NaN, and its Hydra sweeper then stops the whole search: a diverged
    run returns +inf (the worst val/loss), a finished trial the search learns to avoid."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install hydra-optuna-sweeper")
    monkeypatch.chdir(tmp_path)
    jobs = tmp_path / "jobs.jsonl"
    code, out, err = main_in_process("-m", "hydra/sweeper=optuna_lr_width", "hydra.sweeper.n_trials=2",
                                     "optim.lr=tag(log, interval(10000, 1000000))", "model.init=normal", "model.depth=6",
                                     "trainer.epochs=1", "data.n_samples=120", *QUIET, f"tracking.uri={mlflow_uri}",
                                     f"hydra.sweep.dir={tmp_path / 'sweep'}", *record_jobs(jobs))
    assert code == 0, out + err
    assert out.count("diverged at step") == 2, out
    assert [(t["status"], t["value"]) for t in recorded(jobs)] == [("COMPLETED", math.inf)] * 2
    parents, children = parents_and_children(mlflow_uri)
    assert [c.data.tags.get("diverged") for c in children] == ["true", "true"]
    assert parents[0].info.status == "FINISHED"


@pytest.mark.parametrize(("override", "words"), [
    ("trainer.batch_size=0", "search point 0 of 6 (optim.lr=0.001 model.width=8): trainer.batch_size=0 is out of range"),
    ("model.width=choice(8, 0)", "search point 2 of 3 (optim.lr=0.001 model.width=0): model.width=0 is out of range"),
])
def test_a_search_with_a_bad_value_or_choice_is_refused_before_any_trial(mlflow_uri, tmp_path, monkeypatch, main_in_process,
                                                                         override, words):
    """The corners of the search space (every choice, an interval's ends) are checked as a grid's jobs are."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install hydra-optuna-sweeper")
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process("-m", "hydra/sweeper=optuna_lr_width", override, *QUIET, f"tracking.uri={mlflow_uri}",
                                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 2, out + err
    assert err.startswith(f"sweep refused before any run started: {words}") and "Traceback" not in err, err
    assert all_runs(mlflow_uri) == [] and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(("objective", "direction"), [("val/acc", "minimize"), ("val/loss", "maximize")])
def test_a_search_told_to_find_the_worst_objective_is_refused(mlflow_uri, tmp_path, monkeypatch, main_in_process,
                                                              objective, direction):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install hydra-optuna-sweeper")
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process("-m", "hydra/sweeper=optuna_lr_width", f"objective={objective}",
                                     f"hydra.sweeper.direction={direction}", *QUIET, f"tracking.uri={mlflow_uri}",
                                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 2, out + err
    assert f"objective={objective} with hydra.sweeper.direction={direction} would search for the worst config" in err
    assert all_runs(mlflow_uri) == []


@pytest.mark.parametrize(("policy", "skips_single_run"), [("sweeps", False), ("always", True), ("never", False)])
def test_skip_finished_decides_whether_a_single_run_stands_in_for_itself(policy, skips_single_run, mlflow_uri, tmp_path,
                                                                        monkeypatch, main_in_process):
    """`sweeps` (the default) skips finished configs in -m runs only, `always` outside sweeps too; a
    FAILED attempt never stands in (only FINISHED runs do)."""
    monkeypatch.chdir(tmp_path)
    single = ["trainer.epochs=1", "data.n_samples=60", "model.width=8", *QUIET, "study=skipping",
              f"tracking.uri={mlflow_uri}", f"tracking.skip_finished={policy}"]
    for attempt in range(2):
        code, out, err = main_in_process(*single, f"hydra.run.dir={tmp_path / f'run{attempt}'}")
        assert code == 0, out + err
    assert ("skipped mlp-" in out) == skips_single_run, out
    assert len(all_runs(mlflow_uri)) == (1 if skips_single_run else 2)
    client = MlflowClient(mlflow_uri)
    for run in all_runs(mlflow_uri):
        client.set_terminated(run.info.run_id, "FAILED")
    code, out, err = main_in_process(*single, f"hydra.run.dir={tmp_path / 'again'}")
    assert code == 0 and "skipped" not in out, out + err
    assert [r.info.status for r in all_runs(mlflow_uri)].count("FINISHED") == 1


@pytest.mark.parametrize(("objective", "worst"), [("val/loss", math.inf), ("val/acc", -math.inf)])
def test_a_diverged_run_tells_the_sweeper_the_worst_value_of_its_objective_s_direction(objective, worst, compose):
    from nnresearch.run import sweeper_value

    cfg = validate(compose([f"objective={objective}"]))
    assert sweeper_value(cfg, math.nan) == worst
    assert sweeper_value(cfg, 0.75) == 0.75
