"""The command line end to end: `python -m nnresearch.run ...` as a subprocess in a temporary working
directory (so it proves the configs are found from anywhere), into a temporary MLflow store.

Covers the default run, a multirun grouped under one parent run, bad configs failing before any run
exists, runs interrupted by SIGINT / SIGTERM, a sweep continuing past a diverged job, and the wheel.
Each process start costs seconds of imports, so the many bad configs and the diverging sweep call
`nnresearch.run.main()` in-process with a patched `sys.argv` (one bad config also runs as a process).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from mlflow import MlflowClient


REPO = Path(__file__).resolve().parents[1]
QUICK = ["trainer.progress=false"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    return env | extra


def cli(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnresearch.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env or cli_env())


def interruptible() -> None:
    """In a child before it starts: SIGINT acts as for a command typed at a terminal, also when the tests
    themselves run in the background (a shell starts background jobs with SIGINT ignored, and children
    inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen(*args: str, cwd: Path) -> subprocess.Popen:
    # PYTHONFAULTHANDLER: a SIGABRT makes a stuck process print every thread's stack before it dies.
    return subprocess.Popen([sys.executable, "-m", "nnresearch.run", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(PYTHONFAULTHANDLER="1"),
                            preexec_fn=interruptible)


def store_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def count_runs(db: Path) -> int:
    """Runs in a SQLite store, read without MLflow (which would create the store if it is missing)."""
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0


def failure_report(result) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


# --------------------------------------------------------------------------------------------
# 3. The default run


def test_default_run_from_another_directory(tmp_path, mlflow_uri):
    """The default config from a directory that is not the checkout: trained, logged, and where to browse it."""
    uri = mlflow_uri
    result = cli(f"tracking.uri={uri}", cwd=tmp_path)
    assert result.returncode == 0, failure_report(result)
    match = re.search(r"run (mlp-relu-d2-w64-he-s0) \(([0-9a-f]{32})\): (.+)", result.stdout)
    assert match, result.stdout
    summary = match.group(3)
    for metric in ("train/loss=", "val/loss=", "val/acc=", "test/loss="):
        assert metric in summary, summary
    assert f"python -m nnresearch.ui --uri sqlite:///{tmp_path / 'mlflow.db'}" in result.stdout
    run = MlflowClient(uri).get_run(match.group(2))
    assert run.info.status == "FINISHED"
    assert run.info.run_name == match.group(1)
    assert run.info.artifact_uri.startswith(tmp_path.as_uri()), run.info.artifact_uri


def test_mlflow_tracking_uri_chooses_the_store_when_no_uri_is_given(tmp_path, monkeypatch, main_in_process,
                                                                    mlflow_template_db):
    db = tmp_path / "team.db"
    shutil.copyfile(mlflow_template_db, db)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    code, out, err = main_in_process(*QUICK, "trainer.epochs=1")
    assert code == 0, err
    assert f"--uri sqlite:///{db}" in out
    assert count_runs(db) == 1 and not (tmp_path / "mlflow.db").exists()


# --------------------------------------------------------------------------------------------
# 4. A multirun: one parent run, one child per job


@pytest.fixture(scope="module")
def multirun(tmp_path_factory, mlflow_template_db):
    folder = tmp_path_factory.mktemp("multirun")
    shutil.copyfile(mlflow_template_db, folder / "mlflow.db")
    uri = store_uri(folder)
    result = cli("-m", "model.activation=sigmoid,relu", "model.depth=1,2", "trainer.epochs=1", *QUICK,
                 f"tracking.uri={uri}", cwd=folder)
    return result, uri


def test_multirun_children_share_one_parent(multirun):
    result, uri = multirun
    assert result.returncode == 0, failure_report(result)
    runs = all_runs(uri)
    parents = [r for r in runs if r.data.tags.get("nnresearch.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, [r.data.tags for r in runs]
    assert len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in children), [r.info.status for r in children]
    names = sorted(r.info.run_name for r in children)
    assert len(set(names)) == 4, names
    assert names == sorted(f"mlp-{g}-d{d}-w64-he-s0" for g in ("sigmoid", "relu") for d in (1, 2))
    assert {(r.data.params["model.activation"], r.data.params["model.depth"]) for r in children} == {
        (g, d) for g in ("sigmoid", "relu") for d in ("1", "2")}


def test_multirun_parent_run_is_ended(multirun):
    """After the sweep the parent run is not left RUNNING (the UI shows a sweep that never ends)."""
    result, uri = multirun
    assert result.returncode == 0, failure_report(result)
    (parent,) = [r for r in all_runs(uri) if r.data.tags.get("nnresearch.role") == "parent"]
    assert parent.info.status == "FINISHED"


# --------------------------------------------------------------------------------------------
# 5. Bad configs fail before any run exists

BAD_CONFIGS = {
    # id: (overrides, what stderr must mention)
    "unknown_key": (["model.depht=3"], ["depht"]),
    "unknown_activation": (["model.activation=swish"], ["model.activation", "swish", "relu", "sigmoid", "tanh"]),
    "negative_lr": (["optim.lr=-0.1"], ["optim.lr", "-0.1"]),
    "batch_size_0": (["trainer.batch_size=0"], ["trainer.batch_size", "0"]),
    "unknown_dataset_name": (["data.name=imagenet"], ["data.name", "imagenet", "moons"]),
    "unknown_dataset_option": (["data=imagenet"], ["imagenet", "moons"]),
    "unknown_optimizer": (["optim.name=rmsprop"], ["optim.name", "rmsprop", "sgd", "adam"]),
    # a misspelt study must not quietly run the default experiment
    "unknown_experiment": (["experiment=vanishing_gradient"], ["vanishing_gradient", "vanishing_gradients", "mitigations"]),
}
# Also as a real process (exit status through Hydra, message from nnresearch.config.validate).
BAD_CONFIGS_AS_PROCESSES = ("unknown_activation",)


def main_in_process(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`python -m nnresearch.run *args` inside this process: (exit code, stdout, stderr).

    Much cheaper than a subprocess (no imports); Hydra's logging setup is left alone.
    """
    from nnresearch import run

    monkeypatch.setattr(sys, "argv", ["nnresearch.run", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"])
    code, sigterm = 0, signal.getsignal(signal.SIGTERM)
    try:
        run.main()
    except SystemExit as exit:
        code = exit.code
    finally:
        signal.signal(signal.SIGTERM, sigterm)  # run.main installs its own handler; leave pytest's alone
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_fails_before_a_run_exists(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    overrides, words = BAD_CONFIGS[case]
    code, out, err = main_in_process(monkeypatch, capsys, *overrides, *QUICK, f"tracking.uri={store_uri(tmp_path)}")
    assert code != 0, out + err  # 2 from validate; 1 from Hydra for keys or options that do not exist
    for word in words:
        assert word in err, f"stderr does not mention {word!r}:\n{err}"
    assert "Traceback" not in err
    assert count_runs(tmp_path / "mlflow.db") == 0
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "sqlite:///{tmp}/file/mlflow.db"])
def test_an_unusable_store_is_refused_in_one_line(tmp_path, monkeypatch, capsys, uri):
    """No server at the URI, or a store path under a file: exit status 2 and the reason, no traceback."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(monkeypatch, capsys, *QUICK, f"tracking.uri={uri.format(port=port, tmp=tmp_path)}")
    assert code == 2, out + err
    assert err.startswith("refused, no run created:") and "Traceback" not in err, err
    assert not (tmp_path / "outputs").exists()


BAD_SWEEPS = {
    # id: (sweep overrides, the job's overrides and reason that stderr must show)
    "one_bad_value": (["optim.lr=0.1,-1"], ["job 1 of 2 (optim.lr=-1)", "optim.lr=-1.0 is out of range"]),
    "model_unfit_for_a_data_set": (["model=logistic", "data=moons,spirals"],
                                   ["job 1 of 2 (data=spirals)", "model=logistic needs a binary data set"]),
    "head_unfit_for_a_data_set": (["model.head=softmax_ce", "data=spirals,moons"],
                                  ["job 1 of 2 (data=moons)", "model.head=softmax_ce needs one-hot targets"]),
    "bad_value_in_an_experiment_grid": (["experiment=width_vs_depth", "optim.lr=-1"], ["job 0 of", "optim.lr"]),
}


@pytest.mark.parametrize("case", BAD_SWEEPS)
def test_a_sweep_with_one_bad_job_fails_before_any_run_exists(tmp_path, monkeypatch, capsys, case):
    """Every job of a grid sweep is validated up front (the grid sweeper, `callbacks.refuse_bad_jobs`): no job trains and
    no run, not even the sweep's parent, is created when any of them is refused."""
    monkeypatch.chdir(tmp_path)
    overrides, words = BAD_SWEEPS[case]
    code, out, err = main_in_process(monkeypatch, capsys, "-m", *overrides, "trainer.epochs=1", *QUICK,
                                     f"tracking.uri={store_uri(tmp_path)}")
    assert code != 0, out + err
    assert "sweep refused before any run started" in err, err
    for word in words:
        assert word in err, f"stderr does not mention {word!r}:\n{err}"
    assert count_runs(tmp_path / "mlflow.db") == 0
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "multirun").exists()


def test_the_grid_sweeper_composes_each_choice_of_config_groups_once(tmp_path, monkeypatch, capsys):
    """Hydra's basic sweeper composes every job's config to check the batch, then the launcher
    composes each again; the grid sweeper (the default) composes each choice of groups once, for
    its check and its launcher (`composition.ComposeOncePerChoice`): here 2 choices of `optim` for
    6 jobs, so 2 compositions instead of 6 + 6."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    composed = []
    real = ConfigLoaderImpl.load_sweep_config
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config",
                        lambda self, master, overrides: composed.append(list(overrides)) or real(self, master, overrides))
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(monkeypatch, capsys, "-m", "optim=sgd,adam", "optim.lr=0.1,0.01,0.001",
                                     "trainer.epochs=1", "data.n_samples=60", "tracking=off", *QUICK)
    assert code == 0, out + err
    assert out.count("tracking off") == 6
    assert len(composed) == 2, composed


def test_bad_configs_fail_from_the_command_line(tmp_path_factory):
    """The same, as processes: non-zero exit status, the reason in stderr, no store."""
    started = {}
    for case in BAD_CONFIGS_AS_PROCESSES:
        overrides, _ = BAD_CONFIGS[case]
        folder = tmp_path_factory.mktemp(case)
        started[case] = (folder, popen(*overrides, *QUICK, f"tracking.uri={store_uri(folder)}", cwd=folder))
    for case, (folder, process) in started.items():
        stdout, stderr = process.communicate(timeout=120)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        assert result.returncode == 2 and "Traceback" not in stderr, failure_report(result)
        for word in BAD_CONFIGS[case][1]:
            assert word in stderr, f"{case}: stderr does not mention {word!r}\n{failure_report(result)}"
        assert count_runs(folder / "mlflow.db") == 0


# --------------------------------------------------------------------------------------------
# 6. An interrupted run is KILLED (or FAILED), never left RUNNING


def wait_for_steps(db: Path, process: subprocess.Popen, min_steps: int = 2, timeout: float = 180) -> tuple[str, int]:
    """Poll the store (read-only) until one run has `min_steps` train/loss steps; (run id, steps seen)."""
    deadline = time.monotonic() + timeout
    query = ("SELECT r.run_uuid, COUNT(m.step) FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid "
             "WHERE m.key = 'train/loss' GROUP BY r.run_uuid")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it was interrupted:\n{process.communicate()}")
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
                rows = connection.execute(query).fetchall()
        except sqlite3.OperationalError:
            rows = []
        if rows and rows[0][1] >= min_steps:
            return rows[0]
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"no run with {min_steps} train/loss steps after {timeout}s:\n{process.communicate()}")


STOP_TIMEOUT_S = 150  # generous: a loaded 2-core CI machine can take a while to flush and close the store


@pytest.mark.parametrize(("signum", "status", "last_line"), [
    (signal.SIGINT, 130, "interrupted: a tracked run in progress ends KILLED, with what it had logged"),
    (signal.SIGTERM, 143, "terminated: a tracked run in progress ends KILLED, with what it had logged"),
], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_is_not_left_running(mlflow_uri, tmp_path, signum, status, last_line):
    process = popen("trainer.epochs=100000", *QUICK, f"tracking.uri={mlflow_uri}", cwd=tmp_path)
    try:
        run_id, seen = wait_for_steps(tmp_path / "mlflow.db", process)
        process.send_signal(signum)
        try:
            stdout, stderr = process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            stdout, stderr = process.communicate(timeout=30)
            pytest.fail(f"still running {STOP_TIMEOUT_S} s after {signal.Signals(signum).name}; its stacks:\n{stderr[-20000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, stderr.strip().splitlines()[-1]) == (status, last_line), stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    client = MlflowClient(mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED", f"{signal.Signals(signum).name} left the run {run.info.status}\n{stderr[-2000:]}"
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert len(steps) >= seen and steps[:2] == [0, 1], steps


# --------------------------------------------------------------------------------------------
# 8. A sweep continues past a diverged job


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on the way to NaN is the point
def test_multirun_continues_past_a_diverged_job(mlflow_uri, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(monkeypatch, capsys, "-m", "optim.lr=1e6,0.1", "trainer.epochs=3", "data.n_samples=200",
                                     *QUICK, f"tracking.uri={mlflow_uri}", "study=diverging_sweep")
    assert code == 0, out + err
    assert "diverged at step" in out
    children = [r for r in all_runs(mlflow_uri) if "mlflow.parentRunId" in r.data.tags]
    by_lr = {r.data.params["optim.lr"]: r for r in children}
    assert set(by_lr) == {"1000000.0", "0.1"}, sorted(by_lr)
    assert all(r.info.status == "FINISHED" for r in children)
    assert by_lr["1000000.0"].data.tags.get("diverged") == "true"
    assert by_lr["1000000.0"].data.tags.get("diverged_at_step")
    assert "diverged" not in by_lr["0.1"].data.tags
    assert "val/loss" in by_lr["0.1"].data.metrics


def test_a_sweep_with_a_failed_job_ends_its_parent_failed(mlflow_uri, tmp_path, monkeypatch, capsys):
    """The second job raises mid-run: it ends FAILED, and so does the sweep's parent (not FINISHED
    because the first job finished)."""
    from nnresearch import experiment

    def train_or_fail(network, data, optimizer, schedule, options, *args, **kwargs):
        if schedule(0) == 0.01:
            raise RuntimeError("a bug in the second job")
        return real_train(network, data, optimizer, schedule, options, *args, **kwargs)

    real_train = experiment.train
    monkeypatch.setattr(experiment, "train", train_or_fail)
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(monkeypatch, capsys, "-m", "optim.lr=0.1,0.01", "trainer.epochs=1", *QUICK,
                                     f"tracking.uri={mlflow_uri}", "study=failing_sweep")
    assert code != 0 and "a bug in the second job" in err, out + err
    runs = all_runs(mlflow_uri)
    (parent,) = [r for r in runs if r.data.tags.get("nnresearch.role") == "parent"]
    statuses = {r.data.params["optim.lr"]: r.info.status for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert statuses == {"0.1": "FINISHED", "0.01": "FAILED"}
    assert parent.info.status == "FAILED"


def test_a_study_without_multirun_says_it_runs_one_job(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(monkeypatch, capsys, "experiment=linear_collapse", "trainer.epochs=1", *QUICK,
                                     "tracking=off")
    assert code == 0, out + err
    assert ("note: experiment=linear_collapse is a sweep; without -m this is one run of its defaults "
            "(python -m nnresearch.run -m experiment=linear_collapse runs its grid)") in err
    assert out.count("tracking off") == 1


def test_a_job_refused_before_its_run_existed_keeps_the_parent_failed_after_a_later_job_finishes(
        mlflow_uri, tmp_path, monkeypatch, capsys):
    """Job 0 asks digits for more examples than it has (under Hydra's basic sweeper, told only once loaded: no run), job 1 then
    finishes: the parent stays FAILED (it took its children's worst status, and job 0 left no child)."""
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(monkeypatch, capsys, "-m", "data=digits", "data.n_samples=5000,100", "hydra/sweeper=basic", "trainer.epochs=1",
                                     *QUICK, f"tracking.uri={mlflow_uri}", "study=half_refused")
    assert code != 0 and "n_samples=5000 for 'digits'" in err, out + err
    runs = all_runs(mlflow_uri)
    (parent,) = [r for r in runs if r.data.tags.get("nnresearch.role") == "parent"]
    assert [(r.data.params["data.n_samples"], r.info.status) for r in runs if "mlflow.parentRunId" in r.data.tags] == [
        ("100", "FINISHED")]
    assert parent.info.status == "FAILED"


# --------------------------------------------------------------------------------------------
# 10. A wheel carries the configs and runs without the checkout


@pytest.mark.slow
def test_wheel_carries_configs_and_runs(tmp_path):
    """Build a wheel from a copy of the checkout (plus one probe experiment), check it holds every
    config (experiments through the conf/experiment -> ../experiments symlink), then run the CLI
    from the unpacked wheel in another directory."""
    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "LICENSE", "conf", "experiments", "nnresearch", "hydra_plugins"):
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, source / name)
    probe = "zz_wheel_probe"
    (source / "experiments" / f"{probe}.yaml").write_text("# @package _global_\nstudy: wheel_probe\n")
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(dist), str(source)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("nnresearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    expected = {f"nnresearch/conf/{p.relative_to(source / 'conf').as_posix()}"
                for p in (source / "conf").glob("**/*.yaml")}
    expected |= {f"nnresearch/conf/experiment/{p.name}" for p in (source / "experiments").glob("*.yaml")}
    assert "nnresearch/conf/config.yaml" in names
    assert f"nnresearch/conf/experiment/{probe}.yaml" in names
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert "hydra_plugins/nnresearch_sweeper/__init__.py" in names  # the grid sweeper, the default for -m

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env(PYTHONPATH=str(site))
    show = "import nnresearch.paths as p; print(p.__file__); print(p.CONFIG_DIR)"
    where = subprocess.run([sys.executable, "-c", show], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=60)
    assert where.returncode == 0, where.stderr
    module, config_dir = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(config_dir) == site / "nnresearch" / "conf", where.stdout
    result = cli(f"experiment={probe}", "tracking=off", "trainer.epochs=1", "data.n_samples=60", *QUICK,
                 cwd=elsewhere, env=env)
    assert result.returncode == 0, failure_report(result)
    assert "tracking off" in result.stdout
    sweep = cli("-m", "trainer.seed=0,1", "tracking=off", "trainer.epochs=1", "data.n_samples=60", *QUICK,
                cwd=elsewhere, env=env)
    assert sweep.returncode == 0 and sweep.stdout.count("tracking off") == 2, failure_report(sweep)
    assert not (elsewhere / "mlflow.db").exists()


HIDDEN_FROM_HYDRAS_SCAN = """
import pkgutil, runpy, sys
walk_packages = pkgutil.walk_packages
def without_the_grid_sweeper(*args, **kwargs):
    return (found for found in walk_packages(*args, **kwargs) if found.name != "hydra_plugins.nnresearch_sweeper")
pkgutil.walk_packages = without_the_grid_sweeper
sys.argv = ["nnresearch.run", *sys.argv[1:]]
runpy.run_module("nnresearch.run", run_name="__main__", alter_sys=True)
"""


def test_the_grid_sweeper_is_found_where_hydras_scan_cannot_see_it(tmp_path):
    """setuptools' default editable install (`pip install -e .`) hides hydra_plugins/ from the scan by
    which Hydra finds plugins, while its import hook still imports them; the scan is made blind to the
    grid sweeper here. A sweep still runs, and the refusal of a bad job comes from the grid sweeper."""
    def sweep(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", HIDDEN_FROM_HYDRAS_SCAN, "-m", "tracking=off", "trainer.epochs=1",
                               "data.n_samples=60", *QUICK, *overrides], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env=cli_env())

    ran = sweep("trainer.seed=0,1")
    assert ran.returncode == 0 and ran.stdout.count("tracking off") == 2, failure_report(ran)
    refused = sweep("optim.lr=0.1,-1")
    assert refused.returncode == 2, failure_report(refused)
    assert "sweep refused before any run started: job 1 of 2 (optim.lr=-1)" in refused.stderr, failure_report(refused)


def test_a_run_name_adds_only_what_its_architecture_part_does_not_already_say():
    from nnresearch.run import swept_values

    overrides = ["optim.lr=0.1", "optim=adam", "model.depth=4", "model.kernel_size=3", "model.channels=[4,4]",
                 "model.widths=[8,4]", "trainer.batch_size=8", "+data.noise=0.2"]
    assert swept_values(overrides) == ["lr0.1", "adam", "bs8", "noise0.2"]


@pytest.mark.parametrize(("overrides", "name"), [
    ([], "mlp-relu-d2-w64-he-s0"),
    (["model.widths=[8,4]"], "mlp-relu-d2-w8x4-he-s0"),
    (["model.widths=[]"], "mlp-relu-d0-he-s0"),
    (["model.depth=0"], "mlp-relu-d0-he-s0"),
    (["model=cnn1d", "model.kernel_size=3", "data=mnist1d"], "cnn1d-relu-c16x16-k3-he-s0"),
])
def test_a_run_name_describes_the_architecture(compose, overrides, name):
    from nnresearch.config import validate
    from nnresearch.experiment import run_name

    assert run_name(validate(compose(overrides))) == name


def test_help_lists_every_config_group_and_cfg_job_prints_the_composed_config(tmp_path):
    """`--help` names each group of conf/ with its options; `--cfg job` prints the config the overrides
    compose and runs nothing (no store, no outputs/ folder)."""
    from nnresearch.paths import CONFIG_DIR

    shown = cli("--help", cwd=tmp_path)
    assert shown.returncode == 0, failure_report(shown)
    for group in sorted(folder for folder in CONFIG_DIR.iterdir() if folder.is_dir() and folder.name != "hydra"):
        options = ", ".join(sorted(path.stem for path in group.glob("*.yaml")))
        assert f"\n{group.name}: {options}\n" in shown.stdout, (group.name, shown.stdout)
    printed = cli("--cfg", "job", "model.depth=3", "optim=adam", cwd=tmp_path)
    assert printed.returncode == 0, failure_report(printed)
    assert "  depth: 3\n" in printed.stdout and "  name: adam\n" in printed.stdout, printed.stdout
    assert list(tmp_path.iterdir()) == [], "--cfg job ran something"


@pytest.mark.parametrize("override", ["trainer.epoch=3", "trainer.epochs=2.5", "model=mpl"])
def test_a_wrong_type_or_a_misspelled_key_or_option_is_hydra_s_own_error(override, tmp_path, monkeypatch, capsys):
    """README: without `+`, these never reach `validate`: Hydra refuses them in several lines, exit
    status 1, and nothing is created."""
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(monkeypatch, capsys, override, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    assert code == 1 and len(err.strip().splitlines()) > 1, (code, err)
    assert list(tmp_path.iterdir()) == []


def test_a_run_name_ends_with_every_swept_value_then_the_training_seed(compose):
    """Each swept value a person compares runs by shows in the name, in the order given, and the
    trailing `s<N>` is trainer.seed (the one that draws weights and batches), not data.seed."""
    from nnresearch.config import validate
    from nnresearch.experiment import run_name
    from nnresearch.run import swept_values

    overrides = ["optim.lr=0.05", "optim.weight_decay=0.001", "data.train_size=90", "data.permute_features=true",
                 "data.seed=5", "trainer.seed=3"]
    name = run_name(validate(compose(overrides)), swept_values(overrides))
    assert name == "mlp-relu-d2-w64-he-lr0.05-wd0.001-n90-permtrue-seed5-s3"
