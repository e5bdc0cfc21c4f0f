"""Every study, end to end on its quick profile: sweep -> MLflow -> analysis -> figure + verdict.

The verdict's truth is not asserted (two epochs prove nothing): one seed per configuration makes it
inconclusive, computed, logged to the sweep's parent run and printed with its numbers.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import hydra
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from analysis.common import STUDIES, Verdict, available_studies
from nnresearch.callbacks import sweep_size
from nnresearch.config import register
from nnresearch.paths import CONFIG_DIR

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def quick_sweep(main_in_process, monkeypatch, mlflow_uri, tmp_path):
    """`quick_sweep(name, *overrides)`: `python -m nnresearch.run -m experiment=<name> profile=quick`, run in
    this process (Hydra's basic launcher) into a fresh store in `tmp_path`; returns the store's URI."""
    monkeypatch.chdir(tmp_path)

    def run(name: str, *overrides: str) -> str:
        code, out, err = main_in_process("-m", f"experiment={name}", "profile=quick", f"tracking.uri={mlflow_uri}", *overrides)
        assert code == 0, (out + err)[-3000:]
        return mlflow_uri

    return run


def planned_jobs(name: str) -> int:
    """How many jobs `-m experiment=<name> profile=quick` makes: its grid with one seed."""
    register()
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra.compose("config", overrides=[f"experiment={name}", "profile=quick"], return_hydra_config=True)
    return sweep_size([], OmegaConf.to_container(cfg.hydra.sweeper.params))


def test_every_experiment_has_an_analysis():
    experiments = {p.stem for p in (ROOT / "experiments").glob("*.yaml")}
    assert experiments == set(available_studies()), "each experiments/<name>.yaml needs analysis/<name>.py and a STUDIES entry"
    assert experiments <= set(STUDIES)


@pytest.mark.parametrize("name", available_studies())
def test_quick_profile_runs_study_to_figure(name, quick_sweep, tmp_path, capsys):
    uri = quick_sweep(name)
    module = importlib.import_module(f"analysis.{name}")
    verdict = module.main(["--uri", uri, "--out", str(tmp_path / "figures")])
    assert isinstance(verdict, Verdict) and verdict.evidence
    assert verdict.held is None and verdict.evidence.startswith("inconclusive: 1 seed(s)"), verdict.line()
    assert "the study's grid" not in verdict.evidence, verdict.line()  # the quick profile runs the whole grid
    assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    assert verdict.line() in capsys.readouterr().out
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name(name).experiment_id],
                                filter_string="tags.`nnresearch.role` = 'parent'")[0]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert f"figures/{name}.png" in artifacts
    assert parent.data.tags["verdict"] == "inconclusive"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000)
    assert len(children) == planned_jobs(name)  # the whole grid, one seed
    assert {(r.info.status, r.data.params["trainer.epochs"], r.data.params["trainer.seed"]) for r in children} == {
        ("FINISHED", "2", "0")}


def test_a_sweep_of_part_of_a_study_is_told_so_by_its_verdict(quick_sweep, tmp_path):
    uri = quick_sweep("one_neuron_images", "data=digits")
    verdict = importlib.import_module("analysis.one_neuron_images").main(["--uri", uri, "--out", str(tmp_path / "figures")])
    assert verdict.held is None and "the runs lack part of the study's grid: data=images64;" in verdict.evidence, \
        verdict.line()


def test_report_collects_verdicts_and_lists_studies_not_run(quick_sweep, tmp_path):
    from analysis import report

    study = "multilabel_vs_multiclass"  # the quickest study to run
    uri = quick_sweep(study)
    path = report.main(["--uri", uri, "--out", str(tmp_path / "reports")])
    text = path.read_text()
    assert f"| [{study}](#{study}) |" in text and f"![{study}](figures/{study}.png)" in text
    assert "| vanishing_gradients | not run |" in text
    assert (tmp_path / "reports" / "figures" / f"{study}.png").is_file()
    client = MlflowClient(uri)
    logged = client.search_runs([client.get_experiment_by_name("report").experiment_id])[0]
    assert "report.md" in {a.path for a in client.list_artifacts(logged.info.run_id)}
