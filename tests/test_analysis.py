"""What every study script shares (analysis/common.py): the seed rule that makes a verdict inconclusive,
"not run" told apart from a failing analysis, and downloaded artifacts cleaned up.

The sweeps are synthetic, logged as tests/test_verdicts.py logs them; each study's own decision
logic is tested there.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import DatabaseError
from test_verdicts import (
    HELD,
    MITIGATION_ACC,
    PROBES_HELD,
    job_config,
    log_mitigations,
    network_of,
    representation_sweep,
    state_of,
)

from analysis import dead_at_birth, mitigations, representation
from analysis.common import (
    STUDIES,
    LatestSweepEmpty,
    Study,
    StudyNotRun,
    Verdict,
    fewest_seeds,
    from_shell,
    mean_band,
    missing_from_grid,
    settle,
    study_grid,
)


@pytest.fixture
def sweep(mlflow_uri, tmp_path):
    from test_verdicts import Sweep

    return lambda study: Sweep(mlflow_uri, study, tmp_path)


def runs_of(*configs: tuple[str, float | None, int]) -> pd.DataFrame:
    """A `Study.runs`-like frame: one run per (activation, lr, seed)."""
    return pd.DataFrame([{"run_name": f"{a}-{lr}-s{seed}", "params.model.activation": a, "params.optim.lr": lr,
                          "params.trainer.seed": seed} for a, lr, seed in configs])


def test_fewest_seeds_counts_seeds_per_configuration_not_per_study():
    runs = runs_of(("relu", 0.1, 0), ("relu", 0.1, 1), ("relu", 0.1, 2), ("tanh", 0.1, 0), ("tanh", 0.1, 1),
                   ("relu", None, 0), ("relu", None, 1), ("relu", 0.5, 0))
    assert fewest_seeds(runs) == (1, "relu-0.5-s0")
    assert fewest_seeds(runs.iloc[:-1]) == (2, "tanh-0.1-s0")


def test_settle_makes_a_one_seed_verdict_inconclusive_and_keeps_its_numbers():
    verdict = Verdict("study", "a claim", True, "a 0.900 [0.900, 0.900] vs b 0.400")
    settled = settle(verdict, runs_of(("relu", 0.1, 0), ("tanh", 0.1, 0), ("tanh", 0.1, 1)))
    assert settled.held is None and settled.outcome == "inconclusive"
    assert settled.line().startswith("[INCONCLUSIVE] study: a claim -- inconclusive: 1 seed(s) for the configuration "
                                     "of run relu-0.1-s0, a verdict needs at least 2 seeds")
    assert settled.evidence.endswith("; a 0.900 [0.900, 0.900] vs b 0.400")
    assert settle(verdict, runs_of(("relu", 0.1, 0), ("relu", 0.1, 1))) is verdict


def test_settle_makes_a_verdict_on_part_of_the_study_s_grid_inconclusive():
    """Re-running one activation of a study must not turn its verdict: the runs lack the others."""
    verdict = Verdict("study", "a claim", False, "relu 0.900")
    runs = runs_of(("relu", 0.1, 0), ("relu", 0.1, 1), ("relu", 1.0, 0), ("relu", 1.0, 1))
    grid = {"model.activation": ["sigmoid", "tanh", "relu"], "optim.lr": [0.1, 1]}
    assert missing_from_grid(runs, grid) == ["model.activation=sigmoid,tanh"]
    settled = settle(verdict, runs, grid)
    assert settled.held is None and settled.evidence == (
        "inconclusive: the runs lack part of the study's grid: model.activation=sigmoid,tanh; run the whole study, or "
        "add the runs of earlier sweeps with --all-sweeps; relu 0.900")
    whole = runs_of(*[(a, lr, seed) for a in ("sigmoid", "tanh", "relu") for lr in (0.1, 1.0) for seed in (0, 1)])
    assert settle(verdict, whole, grid) is verdict  # the logged "1.0" is the grid's 1
    assert missing_from_grid(whole, {"mitigation": ["residual"]}) == []  # runs that do not log the key at all
    alone = settle(verdict, runs, grid, earlier_sweeps=False)  # no earlier sweep, or --all-sweeps already given
    assert alone.evidence.endswith("model.activation=sigmoid,tanh; run the whole study; relu 0.900"), alone.evidence
    # every value, not every combination: two partial sweeps read together (--all-sweeps)
    halves = runs_of(*[(a, lr, seed) for a, lr in (("sigmoid", 0.1), ("tanh", 0.1), ("relu", 1.0)) for seed in (0, 1)])
    assert missing_from_grid(halves, grid) == ["3 of its 6 combinations, such as model.activation=sigmoid optim.lr=1"]
    # written as an override writes them, to paste back
    logged = pd.DataFrame({"params.optim.lr": ["None"], "params.model.activation": ["relu"]})  # as MLflow holds params
    assert missing_from_grid(logged, {"optim.lr": [None, 0.1], "model.activation": [True]}) == [
        "optim.lr=0.1", "model.activation=true"]
    assert missing_from_grid(pd.DataFrame({"params.model.widths": ["[80]"]}), {"model.widths": [[80], [14, 14]]}) == [
        "model.widths=[14,14]"]


def test_all_sweeps_count_a_config_run_again_once_by_its_newest_run(sweep):
    """A study run again after a code change keeps its old runs under the old sweep: read together
    (--all-sweeps), each config and seed counts once, so old numbers neither mix in nor narrow the bands."""
    s = sweep("representation")
    first = s.job(job_config("representation", trainer__seed=0), {"val/acc": [0.5]})
    s.parent = s.client.create_run(s.experiment_id, run_name="again", tags={"nnresearch.role": "parent"}).info.run_id
    again = s.job(job_config("representation", trainer__seed=0), {"val/acc": [0.6]})
    other = s.job(job_config("representation", trainer__seed=1), {"val/acc": [0.7]})
    assert first != again
    with Study("representation", s.uri, all_sweeps=True) as study:
        assert sorted(study.runs["run_id"]) == sorted([again, other])
    with Study("representation", s.uri) as study:
        assert sorted(study.runs["run_id"]) == sorted([again, other])  # the latest sweep: the same two


def test_a_study_s_grid_is_its_sweep_without_the_seeds():
    assert study_grid("vanishing_gradients") == {"act_init": ["sigmoid", "tanh", "relu"], "model.depth": [1, 2, 4, 8, 16]}
    assert study_grid("mitigations") == {"mitigation": ["vanishing_baseline", "residual", "batchnorm", "relu_he",
                                                        "exploding_baseline", "clip_norm", "weight_decay"]}
    assert study_grid("no_such_study") == {}


def test_a_band_of_accuracies_stays_within_0_and_1():
    accuracies = pd.DataFrame({"group": ["a", "a", "b", "b"], "acc": [0.98, 0.40, 0.01, 0.60]})
    wide = mean_band(accuracies, ["group"], "acc")
    assert wide["hi"].max() > 1 and wide["lo"].min() < 0  # two seeds: t(0.975, 1) = 12.7
    clipped = mean_band(accuracies, ["group"], "acc", fraction=True)
    assert clipped["hi"].max() == 1 and clipped["lo"].min() == 0
    assert clipped["mean"].tolist() == wide["mean"].tolist()


def test_main_with_one_seed_prints_and_logs_an_inconclusive_verdict(sweep, tmp_path, capsys):
    """The quick profile's one seed: the mitigations beat their baselines by a mile, yet decide nothing."""
    s = sweep("mitigations")
    log_mitigations(s, {name: accuracies[:1] for name, accuracies in MITIGATION_ACC[HELD].items()})
    s.client.set_terminated(s.parent, "FINISHED")
    verdict = mitigations.main(["--uri", s.uri, "--out", str(tmp_path / "figures")])
    assert verdict.held is None, verdict.line()
    assert verdict.line().startswith("[INCONCLUSIVE] mitigations:") and verdict.line() in capsys.readouterr().out
    assert "1 seed(s) for the configuration of run" in verdict.evidence and "(n=1 seeds" in verdict.evidence
    assert s.client.get_run(s.parent).data.tags["verdict"] == "inconclusive"


def test_main_with_two_seeds_decides(sweep, tmp_path):
    s = sweep("mitigations")
    log_mitigations(s, MITIGATION_ACC[HELD])
    s.client.set_terminated(s.parent, "FINISHED")
    assert mitigations.main(["--uri", s.uri, "--out", str(tmp_path / "figures")]).outcome == "held"
    assert s.client.get_run(s.parent).data.tags["verdict"] == "held"


def test_a_store_that_takes_no_writes_still_gets_the_verdict_printed(sweep, tmp_path, capsys, monkeypatch):
    """A read-only (or locked) store: the verdict is printed, then one warning that it was not logged."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from nnresearch import results

    def read_only(*args, **kwargs):
        raise OperationalError("UPDATE tags", {}, sqlite3.OperationalError("attempt to write a readonly database"))

    s = sweep("mitigations")
    log_mitigations(s, MITIGATION_ACC[HELD])
    s.client.set_terminated(s.parent, "FINISHED")
    monkeypatch.setattr(results, "log_figure", read_only)
    verdict = mitigations.main(["--uri", s.uri, "--out", str(tmp_path / "figures")])
    out, err = capsys.readouterr()
    assert verdict.outcome == "held" and verdict.line() in out
    assert err.startswith(f"warning: the verdict and figure were not logged to {s.uri}: (sqlite3.OperationalError) "
                          "attempt to write a readonly database"), err
    assert "verdict" not in s.client.get_run(s.parent).data.tags


def test_a_study_never_run_or_without_finished_runs_is_study_not_run(mlflow_uri):
    with pytest.raises(StudyNotRun, match="no experiment 'mitigations' \\(its experiments: 'Default'\\).*experiment=mitigations"):
        Study("mitigations", mlflow_uri).runs
    client = MlflowClient(mlflow_uri)
    client.create_run(client.create_experiment("mitigations"))  # RUNNING, never finished
    with pytest.raises(StudyNotRun, match="no finished runs"):
        Study("mitigations", mlflow_uri).runs


def test_from_the_shell_a_study_not_run_or_a_missing_store_is_one_line(mlflow_uri, tmp_path, capsys):
    """`python -m analysis.<study>` goes through `from_shell`: exit status 2 and the reason, no traceback."""
    (tmp_path / "empty.db").touch()
    for argv, words in ((["--uri", mlflow_uri], "run it first"), (["--uri", f"sqlite:///{tmp_path / 'none.db'}"], "no MLflow store"),
                        (["--uri", f"sqlite:///{tmp_path / 'empty.db'}"], "is not an MLflow store (an empty file)"),
                        (["--uri", "none.db"], "has no scheme"), (["--uri", "htp://127.0.0.1:1"], "did you mean http://?")):
        with pytest.raises(SystemExit) as exit:
            from_shell(lambda: mitigations.main([*argv, "--out", str(tmp_path / "figures")]))
        assert exit.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "none.db").exists() and (tmp_path / "empty.db").stat().st_size == 0


def test_study_analysis_leaves_no_temporary_folder(sweep, tmp_path, monkeypatch):
    """representation downloads every run's config.yaml and params/*.npz; none may outlive the analysis."""
    s = sweep("representation")
    representation_sweep(s, monkeypatch, PROBES_HELD)
    s.client.set_terminated(s.parent, "FINISHED")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # every temporary file of this process goes here
    verdict = representation.main(["--uri", s.uri, "--out", str(tmp_path / "figures")])
    assert verdict.outcome == "held", verdict.line()
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_study_artifacts_are_gone_after_close(sweep):
    s = sweep("representation")
    cfg = job_config("representation", trainer__seed=0, trainer__epochs=1)
    run_id = s.job(cfg, {"val/acc": [0.1, 0.95]}, final=state_of(network_of(cfg)))
    with Study("representation", s.uri) as study:
        path = study.artifact(run_id, "params/final.npz")
        assert study.artifact(run_id, "params/final.npz") == path  # downloaded once
        assert np.load(path)["W1"].shape[1] == 40  # MNIST-1D's 40 positions
        config = study.config(run_id)
        assert config == cfg and config.trainer.seed == 0
        config.trainer.seed = 7  # each call has its own copy of the config read once
        assert study.config(run_id) == cfg
        folder = study.artifact(run_id, "params")  # after one file of it: the whole folder
        assert sorted(f.name for f in folder.iterdir()) == ["final.npz", "init.npz"]
        with pytest.raises(ValueError, match=f"run 'f00' is not a run of experiment 'representation' in {s.uri}"):
            study.artifact("f00", "config.yaml")
        root = Path(study._downloads.name)
    assert not path.exists() and not root.exists()


def test_fewest_seeds_ignores_settings_that_do_not_change_the_numbers():
    """A resumed sweep adopts runs logged with another store or progress setting: still one configuration."""
    runs = runs_of(("relu", 0.1, 0), ("relu", 0.1, 1))
    runs["params.tracking.uri"] = ["sqlite:///a.db", "sqlite:///b.db"]
    runs["params.trainer.progress"] = ["True", "False"]
    runs["params.choice.tracking"] = ["mlflow", "off"]
    assert fewest_seeds(runs) == (2, "relu-0.1-s0")
    runs["params.model.depth"] = ["2", "3"]
    assert fewest_seeds(runs)[0] == 1


def interrupted_rerun(client: MlflowClient, experiment_id: str) -> str:
    """A sweep started after the experiment's other runs, whose one job is still RUNNING (a re-run
    stopped before any job finished); returns its parent run's id."""
    from nnresearch import tracking

    parent = client.create_run(experiment_id, tags={tracking.SWEEP_ID_TAG: "rerun", tracking.ROLE_TAG: "parent"})
    client.create_run(experiment_id, tags={tracking.PARENT_RUN_TAG: parent.info.run_id})
    return parent.info.run_id


def test_a_latest_sweep_without_finished_runs_says_so_and_names_all_sweeps(sweep, tmp_path, capsys):
    s = sweep("mitigations")
    log_mitigations(s, MITIGATION_ACC[HELD])
    s.client.set_terminated(s.parent, "FINISHED")
    rerun = interrupted_rerun(s.client, s.experiment_id)
    with pytest.raises(LatestSweepEmpty, match=f"latest sweep .*parent run {rerun}, still running.* earlier sweeps have 14.*--all-sweeps"):
        Study("mitigations", s.uri).runs
    with pytest.raises(SystemExit) as exit:
        from_shell(lambda: mitigations.main(["--uri", s.uri, "--out", str(tmp_path / "figures")]))
    assert exit.value.code == 2 and "--all-sweeps" in capsys.readouterr().err
    assert mitigations.main(["--uri", s.uri, "--out", str(tmp_path / "figures"), "--all-sweeps"]).outcome == "held"


def test_a_latest_sweep_whose_jobs_all_failed_says_it_ended_and_single_runs_are_no_earlier_sweep(sweep, mlflow_uri):
    s = sweep("mitigations")
    log_mitigations(s, MITIGATION_ACC[HELD])
    s.client.set_terminated(s.parent, "FINISHED")
    rerun = interrupted_rerun(s.client, s.experiment_id)
    for run in s.client.search_runs([s.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{rerun}'"):
        s.client.set_terminated(run.info.run_id, "FAILED")
    s.client.set_terminated(rerun, "FAILED")
    with pytest.raises(LatestSweepEmpty, match=f"parent run {rerun}, ended FAILED"):
        Study("mitigations", s.uri).runs

    client = MlflowClient(mlflow_uri)  # a single run (no sweep), then a sweep stopped before its first job ended
    experiment_id = client.create_experiment("vanishing_gradients")
    client.set_terminated(client.create_run(experiment_id).info.run_id, "FINISHED")
    interrupted_rerun(client, experiment_id)
    with pytest.raises(StudyNotRun, match="no finished runs") as refused:
        Study("vanishing_gradients", mlflow_uri).runs
    assert not isinstance(refused.value, LatestSweepEmpty)


@pytest.mark.parametrize("out", ["a_file", "figure.png", "a_file/figures"])
def test_an_out_folder_that_is_a_file_is_refused_before_the_analysis(sweep, tmp_path, capsys, out, monkeypatch):
    s = sweep("mitigations")
    log_mitigations(s, MITIGATION_ACC[HELD])
    (tmp_path / "a_file").write_text("mine")
    monkeypatch.setattr(mitigations, "analyse", lambda study: pytest.fail("analysed before refusing --out"))
    with pytest.raises(SystemExit) as exit:
        mitigations.main(["--uri", s.uri, "--out", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and ("--out names a folder" in err or "a_file is a file" in err), err
    assert (tmp_path / "a_file").read_text() == "mine" and not (tmp_path / "figure.png").exists()


def test_a_figure_that_fails_mid_write_leaves_the_previous_one(sweep, tmp_path, monkeypatch):
    s = sweep("mitigations")
    log_mitigations(s, MITIGATION_ACC[HELD])
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "mitigations.png").write_bytes(b"the previous figure")

    def half_then_full_disk(self, path, **options):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plt.Figure, "savefig", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        mitigations.main(["--uri", s.uri, "--out", str(figures)])
    assert [p.name for p in figures.iterdir()] == ["mitigations.png"]
    assert (figures / "mitigations.png").read_bytes() == b"the previous figure"


def test_an_experiment_of_another_study_is_refused_and_left_as_it_was(sweep, tmp_path):
    """`--experiment` naming another study's experiment: its runs would make a nonsense verdict, logged over
    that study's own. Refused, naming the study its runs are of, and nothing is logged to its parent."""
    s = sweep("mitigations")
    log_mitigations(s, MITIGATION_ACC[HELD])
    s.client.set_terminated(s.parent, "FINISHED")
    with pytest.raises(StudyNotRun, match="experiment 'mitigations' in .* holds runs of study 'mitigations', not of "
                                          "'dead_at_birth'; python -m analysis.mitigations --experiment mitigations analyses them"):
        dead_at_birth.main(["--uri", s.uri, "--experiment", "mitigations", "--out", str(tmp_path / "figures")])
    parent = s.client.get_run(s.parent)
    assert "verdict" not in parent.data.tags and s.client.list_artifacts(s.parent) == []
    assert not (tmp_path / "figures").exists()
    other = s.client.create_experiment("report")  # runs no study made
    s.client.set_terminated(s.client.create_run(other).info.run_id, "FINISHED")
    with pytest.raises(StudyNotRun, match="experiment 'report' in .* holds runs of no study, not of 'mitigations'$"):
        Study("mitigations", s.uri, "report").runs


def test_the_run_command_a_study_suggests_names_the_store_and_experiment_unless_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert Study("mitigations").run_command == "python -m nnresearch.run -m experiment=mitigations"
    other = f"sqlite:///{tmp_path / 'my store.db'}"
    assert Study("mitigations", other, "mine").run_command == (
        f"python -m nnresearch.run -m experiment=mitigations 'tracking.uri={other}' tracking.experiment=mine")


@pytest.mark.parametrize(("raised", "status", "line"), [
    (MlflowException("Failed to download artifacts from path 'config.yaml'\nmore"), 2,
     "error: cannot read the store: Failed to download artifacts from path 'config.yaml'"),
    (DatabaseError("SELECT", {}, Exception("file is not a database")), 2, "error: cannot read the store: "),
    (KeyboardInterrupt(), 130, "interrupted: nothing half-written is left"),
], ids=["artifact missing", "not a database", "ctrl-c"])
def test_from_the_shell_a_store_error_or_ctrl_c_is_one_line(capsys, raised, status, line):
    def main():
        raise raised

    with pytest.raises(SystemExit) as exit:
        from_shell(main)
    err = capsys.readouterr().err
    assert exit.value.code == status and err.count("\n") == 1 and err.startswith(line), err


def test_python_m_analysis_lists_the_studies():
    """`python -m analysis.<typo>` can only say that no such module exists; `python -m analysis` lists them."""
    listed = subprocess.run([sys.executable, "-m", "analysis"], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout
    assert listed.splitlines()[-1] == f"studies: {', '.join(STUDIES)}"


def test_jobs_still_running_are_left_out_and_said_to_be(sweep, tmp_path, capsys):
    """Analysing a sweep in progress: the verdict is of its finished jobs, and a note says how many are not."""
    from nnresearch import tracking

    s = sweep("mitigations")
    log_mitigations(s, MITIGATION_ACC[HELD])
    s.client.create_run(s.experiment_id, tags={tracking.PARENT_RUN_TAG: s.parent})  # a job in progress
    assert mitigations.main(["--uri", s.uri, "--out", str(tmp_path / "figures")]).outcome == "held"
    assert capsys.readouterr().err.splitlines()[-1] == "note: 1 job(s) still running, left out of this verdict"
    s.client.set_terminated(s.parent, "FINISHED")
    interrupted_rerun(s.client, s.experiment_id)  # a later sweep, its one job running too
    mitigations.main(["--uri", s.uri, "--out", str(tmp_path / "figures"), "--all-sweeps"])
    assert capsys.readouterr().err.splitlines()[-1] == "note: 2 job(s) still running, left out of this verdict"
