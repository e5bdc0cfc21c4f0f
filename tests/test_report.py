"""analysis/report.py on synthetic sweeps: where its run goes, how it ends, what it calls "not run" and
which figures it logs. tests/test_studies.py runs it once on a real quick sweep."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from test_verdicts import HELD, MITIGATION_ACC, Sweep, job_config, log_mitigations

from analysis import report


def report_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("report").experiment_id])


def test_report_experiment_keeps_its_artifacts_next_to_the_store(mlflow_uri, tmp_path, monkeypatch):
    """`MLFLOW_TRACKING_URI=sqlite:////x/study.db python -m analysis.report` run from elsewhere: like every
    study's experiment, `report` puts artifacts in /x/mlruns/report, not in <cwd>/mlruns."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    path = report.main(["--out", str(tmp_path / "reports")])
    assert "| vanishing_gradients | not run |" in path.read_text()
    experiment = MlflowClient(mlflow_uri).get_experiment_by_name("report")
    assert experiment.artifact_location == (tmp_path / "mlruns" / "report").as_uri()
    [run] = report_runs(mlflow_uri)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith(experiment.artifact_location)
    assert not (elsewhere / "mlruns").exists()


def test_report_stops_on_an_analysis_error_and_its_run_ends_failed(mlflow_uri, tmp_path):
    """A sweep whose runs lack the metric the analysis reads is a real error (ValueError from results.histories),
    not a study that was never run: the report must not list it as "not run"."""
    s = Sweep(mlflow_uri, "vanishing_gradients", tmp_path)
    for seed in (0, 1):
        s.job(job_config("vanishing_gradients", trainer__seed=seed, trainer__epochs=1), {"val/acc": [0.5, 0.9]})
    s.client.set_terminated(s.parent, "FINISHED")
    with pytest.raises(ValueError, match="no run logged metric"):
        report.main(["--uri", mlflow_uri, "--out", str(tmp_path / "reports")])
    [run] = report_runs(mlflow_uri)
    assert run.info.status == "FAILED"


def test_report_logs_only_the_figures_this_invocation_made(mlflow_uri, tmp_path):
    figures = tmp_path / "reports" / "figures"
    figures.mkdir(parents=True)
    for stale in ("vanishing_gradients.png", "a_study_since_removed.png"):  # left by earlier reports
        (figures / stale).write_bytes(b"\x89PNG stale")
    s = Sweep(mlflow_uri, "mitigations", tmp_path)
    log_mitigations(s, MITIGATION_ACC[HELD])
    s.client.set_terminated(s.parent, "FINISHED")
    report.main(["--uri", mlflow_uri, "--out", str(tmp_path / "reports")])
    [run] = report_runs(mlflow_uri)
    client = MlflowClient(mlflow_uri)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"figures", "report.md"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {"figures/mitigations.png"}


def test_report_refuses_a_store_that_does_not_exist_and_creates_nothing(tmp_path):
    """A mistyped path must not become a new, empty store with a report of 14 studies "not run"."""
    missing = tmp_path / "typo" / "mlflow.db"
    with pytest.raises(FileNotFoundError, match=f"no MLflow store at {missing}"):
        report.main(["--uri", f"sqlite:///{missing}", "--out", str(tmp_path / "reports")])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_report_tells_a_latest_sweep_without_finished_runs_from_a_study_not_run(mlflow_uri, tmp_path):
    from test_analysis import interrupted_rerun

    s = Sweep(mlflow_uri, "mitigations", tmp_path)
    log_mitigations(s, MITIGATION_ACC[HELD])
    s.client.set_terminated(s.parent, "FINISHED")
    interrupted_rerun(s.client, s.experiment_id)
    text = report.main(["--uri", mlflow_uri, "--out", str(tmp_path / "reports")]).read_text()
    assert "| mitigations | latest sweep: no finished run |" in text and "| vanishing_gradients | not run |" in text
    assert "13 studies not run; 1 with no finished run in their latest sweep." in text
    # the commands name this store: pasted, they run into it, not into ./mlflow.db
    assert f"| vanishing_gradients | not run | `python -m nnresearch.run -m experiment=vanishing_gradients tracking.uri={mlflow_uri}` |" in text
    assert f"run it again: `python -m nnresearch.run -m experiment=mitigations tracking.uri={mlflow_uri}`" in text
    text = report.main(["--uri", mlflow_uri, "--out", str(tmp_path / "reports"), "--all-sweeps"]).read_text()
    assert "| [mitigations](#mitigations) | held |" in text and "13 studies not run." in text


def test_report_summary_and_table_count_inconclusive_and_not_held_apart():
    """One study of each outcome: the summary counts only held claims as held and only decided ones as decided,
    and the table marks "not held" (bold) apart from "inconclusive" (a verdict with held None)."""
    from analysis.common import StudyNotRun, Verdict

    outcomes = [("a", Verdict("a", "claim a", True, "numbers a")), ("b", Verdict("b", "claim b", False, "numbers b")),
                ("c", Verdict("c", "claim c", None, "numbers c")), ("d", StudyNotRun("not run", "python -m run d"))]
    text = report.markdown(outcomes)
    assert "1 of 2 decided claims held; 1 inconclusive; 1 studies not run." in text, text
    assert "| [a](#a) | held | claim a |" in text
    assert "| [b](#b) | **not held** | claim b |" in text
    assert "| [c](#c) | inconclusive | claim c |" in text
    assert "| d | not run | `python -m run d` |" in text
    assert "**Verdict:** inconclusive. numbers c" in text and "## d" not in text
