import fcntl
import os
import pickle
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
from omegaconf import OmegaConf
from test_cli import cli_env

from nnresearch.callbacks import SweepProgress, sweep_size


def test_sweep_size_multiplies_sweeps_and_command_line_wins():
    assert sweep_size(["model.depth=1,2,4", "trainer.epochs=2"], {"model.activation": "relu,tanh"}) == 6
    assert sweep_size(["trainer.seed=0"], {"trainer.seed": "0,1,2", "model.depth": "range(1,5)"}) == 4
    assert sweep_size([], {}) == 1


def sweep_config(tmp_path, launcher: str):
    return OmegaConf.create({"hydra": {"overrides": {"task": ["trainer.seed=0,1,2"]}, "sweeper": {"params": {}},
                                       "sweep": {"dir": str(tmp_path / "multirun")}, "launcher": {"_target_": launcher},
                                       "job": {"num": 0}}})


def test_the_corners_of_a_search_space_take_every_choice_and_the_values_at_each_end():
    """A float interval is open at its top (x <= value < y): its top corner is the largest float below y;
    an int interval and an unshuffled range (Optuna's IntUniformDistribution) include both ends."""
    from nnresearch.callbacks import search_corners

    corners = search_corners(["model.width=choice(8, 16, 32)", "trainer.epochs=3", "model.depth=range(1, 5)"],
                             {"optim.momentum": "interval(0.5, 1.0)", "data.n_samples": "int(interval(100, 200))"})
    assert corners == [
        ["trainer.epochs=3", "optim.momentum=0.5", "data.n_samples=100", "model.width=8", "model.depth=1"],
        ["trainer.epochs=3", "optim.momentum=0.9999999999999999", "data.n_samples=100", "model.width=8", "model.depth=1"],
        ["trainer.epochs=3", "optim.momentum=0.5", "data.n_samples=200", "model.width=8", "model.depth=1"],
        ["trainer.epochs=3", "optim.momentum=0.5", "data.n_samples=100", "model.width=16", "model.depth=1"],
        ["trainer.epochs=3", "optim.momentum=0.5", "data.n_samples=100", "model.width=32", "model.depth=1"],
        ["trainer.epochs=3", "optim.momentum=0.5", "data.n_samples=100", "model.width=8", "model.depth=5"]]


def test_a_sweep_refused_before_its_first_job_leaves_no_folder_for_the_bar_s_marks(tmp_path, monkeypatch):
    """From a terminal, with jobs in other processes, the bar's marks folder is made under the sweep dir
    before the grid sweeper checks the jobs; a refusal then leaves no empty sweep dir behind."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    config = sweep_config(tmp_path, "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")
    config.hydra.sweep.dir = str(tmp_path / "multirun" / "2026-01-01" / "12-00-00")
    progress = SweepProgress(poll_s=0.05)
    progress.on_multirun_start(config)
    assert progress.marks.is_dir()
    progress._finish()  # what the exit after a refusal runs (atexit)
    assert not (tmp_path / "multirun").exists()


def test_jobs_in_other_processes_advance_the_bar_of_the_launching_one(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # the bar shows, as in a terminal
    config = sweep_config(tmp_path, "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")
    progress = SweepProgress(poll_s=0.05)
    progress.on_multirun_start(config)
    assert progress.bar.total == 3 and progress.bar.n == 0

    worker = pickle.loads(pickle.dumps(progress))  # what Hydra hands a joblib or submitit job
    assert worker.bar is None and worker.marks == progress.marks
    for num in (0, 1):
        worker.on_job_end(OmegaConf.merge(config, {"hydra": {"job": {"num": num}}}), job_return=None)
    deadline = time.monotonic() + 10
    while progress.bar.n < 2 and time.monotonic() < deadline:  # counted while the sweep runs
        time.sleep(0.05)
    assert progress.bar.n == 2

    worker.on_job_end(OmegaConf.merge(config, {"hydra": {"job": {"num": 2}}}), job_return=None)
    progress.on_multirun_end(config)
    assert progress.bar.n == 3
    assert not progress.marks.exists()
    worker.on_job_end(config, job_return=None)  # a straggler after the end: ignored

    progress.on_multirun_start(config)  # the same callback, a second multirun: counts afresh, while it runs
    worker = pickle.loads(pickle.dumps(progress))
    worker.on_job_end(config, job_return=None)
    deadline = time.monotonic() + 10
    while progress.bar.n < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert progress.bar.n == 1
    progress.on_multirun_end(config)


def test_jobs_of_the_basic_launcher_advance_the_bar_directly(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    config = sweep_config(tmp_path, "hydra._internal.core_plugins.basic_launcher.BasicLauncher")
    progress = SweepProgress()
    progress.on_multirun_start(config)
    progress.on_job_end(config, job_return=None)
    assert progress.bar.n == 1 and progress.marks is None and not (tmp_path / "multirun").exists()
    progress.on_multirun_end(config)


@pytest.mark.slow
def test_failed_parallel_sweep_from_a_terminal_leaves_no_marks_behind(tmp_path):
    # a failing job ends the multirun without on_multirun_end: the marks go at exit, quietly
    # digits has 1,797 examples; under Hydra's basic sweeper (no check of the grid) a job learns it as it loads the data
    code, output = run_in_terminal(["-m", "trainer.seed=0,1", "data=digits", "data.n_samples=5000", "hydra/sweeper=basic",
                                    "hydra/launcher=joblib", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"], tmp_path)
    assert code == 1 and "n_samples=5000 for 'digits'" in output
    assert list(tmp_path.glob("multirun/*/*/0")) and not list(tmp_path.glob("multirun/*/*/.jobs_done"))
    assert "sweep-progress" not in output  # no traceback from the counting thread


def run_in_terminal(args: list[str], cwd, timeout: float = 240) -> tuple[int, str]:
    """`python -m nnresearch.run *args` with a pseudo-terminal as stdin, stdout and stderr, as from a shell."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a fresh pty is 0 x 0
    process = subprocess.Popen([sys.executable, "-m", "nnresearch.run", *args], cwd=cwd, env=cli_env(),
                               stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    output, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 1.0)[0]:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: every process holding the terminal has exited
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        os.close(leader)
    return process.returncode, output.decode(errors="replace")


@pytest.mark.slow
def test_parallel_sweep_from_a_terminal_finishes_and_counts_every_job(tmp_path):
    # the bar used to travel to the joblib workers with the callback and fail to unpickle there
    code, output = run_in_terminal(["-m", "trainer.seed=0,1,2,3", "trainer.epochs=2", "hydra/launcher=joblib",
                                    "hydra.launcher.n_jobs=2", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"], tmp_path)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output
    assert not list(tmp_path.glob("multirun/*/*/.jobs_done"))  # the marks are gone with the sweep
    assert re.search(r"sweep: 100%\S* *\| *4/4", output), output[-3000:]


def test_the_sweep_guard_pickles_while_it_guards(tmp_path):
    """Submitit pickles the launcher with its callbacks: a guard holding the launching process's
    handlers (one of them may be an earlier sweep's, with its lock and import thread) must pickle."""
    import signal

    from hydra.types import RunMode

    from nnresearch.callbacks import SweepGuard

    config = OmegaConf.merge(sweep_config(tmp_path, "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
                             {"tracking": {"enabled": True, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, "study": "s",
                              "hydra": {"mode": RunMode.MULTIRUN}})
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    first, second = SweepGuard(), SweepGuard()
    try:
        first.on_multirun_start(config)
        second.on_multirun_start(config)  # its previous handlers are the first guard's
        assert second._previous
        copy = pickle.loads(pickle.dumps(second))
        assert copy._previous == {}
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("first", ["SIGINT", "SIGTERM"])
def test_a_second_signal_while_the_sweep_stops_is_ignored_saying_so(tmp_path, capsys, first):
    """The guard's handler: the first Ctrl-C (KeyboardInterrupt) or SIGTERM (exit 128 + 15) stops the
    sweep; a later Ctrl-C or SIGTERM is ignored with "already stopping the sweep" (docs/scaling.md),
    so it cannot cut the clean-up short. Real signals, raised in this process."""
    import signal

    from nnresearch.callbacks import SweepGuard

    signum = getattr(signal, first)
    config = sweep_config(tmp_path, "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")  # tracking off
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    guard = SweepGuard()
    try:
        guard.on_multirun_start(config)
        with pytest.raises(KeyboardInterrupt if signum == signal.SIGINT else SystemExit) as stopped:
            signal.raise_signal(signum)
        if signum == signal.SIGTERM:
            assert stopped.value.code == 128 + signal.SIGTERM
        capsys.readouterr()
        for again in (signal.SIGINT, signal.SIGTERM):  # neither raises: the sweep goes on stopping
            try:
                signal.raise_signal(again)
            except (KeyboardInterrupt, SystemExit) as error:  # a failure, not pytest's own Ctrl-C
                pytest.fail(f"a second signal ({again.name}) cut the stopping sweep short: {error!r}")
        assert capsys.readouterr().err == "already stopping the sweep\n" * 2
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


@pytest.mark.parametrize(("objective", "direction", "refused"), [
    ("val/acc", "minimize", True), ("val/loss", "maximize", True),
    ("val/acc", "maximize", False), ("val/loss", "minimize", False),
])
def test_a_search_told_to_go_against_its_objective_is_refused_naming_the_right_direction(objective, direction, refused, capsys):
    """Maximizing a loss (or minimizing an accuracy) finds the worst config: refused before any trial."""
    from nnresearch.callbacks import _check_search_direction

    config = OmegaConf.create({"objective": objective, "hydra": {"sweeper": {"direction": direction}}})
    if not refused:
        _check_search_direction(config)
        return
    with pytest.raises(SystemExit) as stopped:
        _check_search_direction(config)
    assert stopped.value.code == 2
    right = {"minimize": "maximize", "maximize": "minimize"}[direction]
    assert f"set hydra.sweeper.direction={right}" in capsys.readouterr().err


def test_the_runs_an_interrupted_sweep_leaves_running_are_ended_killed(tmp_path, mlflow_uri):
    """`SweepGuard`'s clean-up at exit: the jobs its killed workers left RUNNING, and the sweep's parent,
    end KILLED (not FAILED: nothing in them failed); a job that finished stays FINISHED."""
    import signal
    import threading

    from mlflow import MlflowClient

    from nnresearch import stores, tracking
    from nnresearch.callbacks import _end_interrupted_sweep

    parent = tracking.open_parent_run(mlflow_uri, "guarded", "sweep-G")
    with tracking.open_run(mlflow_uri, "guarded", "done", parent_run_id=parent) as done:
        pass
    client = MlflowClient(stores.resolve_uri(mlflow_uri))
    experiment = client.get_experiment_by_name("guarded").experiment_id
    left = client.create_run(experiment, tags={tracking.PARENT_RUN_TAG: parent}).info.run_id
    preload = threading.Thread(target=lambda: None)
    preload.start()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _end_interrupted_sweep(preload, mlflow_uri, "guarded", "sweep-G")
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    status = {run_id: client.get_run(run_id).info.status for run_id in (left, parent, done.run_id)}
    assert status == {left: "KILLED", parent: "KILLED", done.run_id: "FINISHED"}
