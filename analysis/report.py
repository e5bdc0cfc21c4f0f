"""Every study's analysis over what is in the store, in one Markdown report (also logged to MLflow).

    python -m analysis.report [--uri sqlite:///mlflow.db] [--out reports]

Studies that have no runs yet are listed as "not run" with the command that runs them.
The report and its figures are logged as artifacts of a run in the MLflow experiment `report`.
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from mlflow import MlflowClient

from analysis.common import Verdict
from nnresearch import tracking

STUDIES = (
    "vanishing_gradients", "initialization", "batch_size", "width_vs_depth", "dying_relu", "dead_at_birth",
    "linear_collapse", "bce_vs_mse", "softmax_stability", "mitigations", "multilabel_vs_multiclass",
    "one_neuron_images", "inductive_bias", "representation",
)


def available_studies() -> list[str]:
    """The studies that have both an experiment config and an analysis script."""
    root = Path(__file__).resolve().parent
    return [s for s in STUDIES if (root / f"{s}.py").is_file() and (root.parent / "experiments" / f"{s}.yaml").is_file()]


def run_all(uri: str | None, out: Path) -> list[tuple[str, Verdict | str]]:
    """(study, verdict or the reason it has none) for every available study."""
    outcomes: list[tuple[str, Verdict | str]] = []
    for name in available_studies():
        module = importlib.import_module(f"analysis.{name}")
        try:
            outcomes.append((name, module.main(["--out", str(out / "figures"), *(["--uri", uri] if uri else [])])))
        except ValueError as error:  # no runs / no experiment for this study yet
            outcomes.append((name, f"not run: {error}"))
    return outcomes


def markdown(outcomes: list[tuple[str, Verdict | str]]) -> str:
    """The report: a summary table of verdicts, then one section per study with its figure."""
    held = sum(isinstance(v, Verdict) and v.held for _, v in outcomes)
    analysed = sum(isinstance(v, Verdict) for _, v in outcomes)
    lines = ["# nnresearch: the chapter's claims, measured", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}. {held} of {analysed} analysed claims held; "
             f"{len(outcomes) - analysed} studies not run.", "", "| study | verdict | claim |", "|---|---|---|"]
    for name, verdict in outcomes:
        if isinstance(verdict, Verdict):
            lines.append(f"| [{name}](#{name}) | {'held' if verdict.held else '**not held**'} | {verdict.claim} |")
        else:
            lines.append(f"| {name} | not run | `python -m nnresearch.run -m experiment={name}` |")
    for name, verdict in outcomes:
        if isinstance(verdict, Verdict):
            lines += ["", f"## {name}", "", f"**Claim:** {verdict.claim}", "",
                      f"**Verdict:** {'held' if verdict.held else 'not held'}. {verdict.evidence}", "",
                      f"![{name}](figures/{name}.png)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for report.md and figures/")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    outcomes = run_all(args.uri, args.out)
    path = args.out / "report.md"
    path.write_text(markdown(outcomes))
    client = MlflowClient(tracking.ensure_store(args.uri))
    experiment = client.get_experiment_by_name("report") or client.get_experiment(client.create_experiment("report"))
    run = client.create_run(experiment.experiment_id, run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}")
    client.log_artifact(run.info.run_id, str(path))
    client.log_artifacts(run.info.run_id, str(args.out / "figures"), "figures")
    client.set_terminated(run.info.run_id)
    print(f"report: {path} (MLflow run {run.info.run_id} in experiment 'report')")
    return path


if __name__ == "__main__":
    main()
