"""Every study's analysis over what is in the store, in one Markdown report (also logged to MLflow).

    python -m analysis.report [--uri sqlite:///mlflow.db] [--out reports] [--all-sweeps]

Studies that have no runs yet are listed as "not run" with the command that runs them, those whose
latest sweep has no finished run (a re-run stopped early or failed) as "latest sweep: no finished run"; any other
error of an analysis stops the report. The report and the figures this invocation made are logged
as artifacts of a run in the MLflow experiment `report` (created next to the store like every
study's), which ends FAILED if the report fails.
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from analysis.common import (
    URI_HELP,
    LatestSweepEmpty,
    StudyNotRun,
    Verdict,
    available_studies,
    check_folder,
    from_shell,
)
from nnresearch import results, tracking
from nnresearch.files import replaced_atomically


def run_all(uri: str | None, out: Path, all_sweeps: bool = False) -> list[tuple[str, Verdict | StudyNotRun]]:
    """(study, its verdict or why it has none) for every available study."""
    outcomes: list[tuple[str, Verdict | StudyNotRun]] = []
    options = ["--out", str(out / "figures"), *(["--uri", uri] if uri else []), *(["--all-sweeps"] if all_sweeps else [])]
    for name in available_studies():
        module = importlib.import_module(f"analysis.{name}")
        try:
            outcomes.append((name, module.main(options)))
        except StudyNotRun as error:
            outcomes.append((name, error))
    return outcomes


def markdown(outcomes: list[tuple[str, Verdict | StudyNotRun]]) -> str:
    """The report: a summary table of verdicts, then one section per study with its figure."""
    verdicts = [v for _, v in outcomes if isinstance(v, Verdict)]
    empty = [name for name, v in outcomes if isinstance(v, LatestSweepEmpty)]
    held = sum(v.held is True for v in verdicts)
    decided = sum(v.held is not None for v in verdicts)
    not_run = len(outcomes) - len(verdicts) - len(empty)
    lines = ["# nnresearch: the chapter's claims, measured", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}. {held} of {decided} decided claims held; "
             f"{len(verdicts) - decided} inconclusive; {not_run} studies not run"
             + (f"; {len(empty)} with no finished run in their latest sweep." if empty else "."), "",
             "| study | verdict | claim |", "|---|---|---|"]
    for name, verdict in outcomes:
        if isinstance(verdict, Verdict):
            lines.append(f"| [{name}](#{name}) | {'**not held**' if verdict.held is False else verdict.outcome} | {verdict.claim} |")
        elif isinstance(verdict, LatestSweepEmpty):
            lines.append(f"| {name} | latest sweep: no finished run | run it again: `{verdict.command}`, or report "
                         "every sweep: `--all-sweeps` |")
        else:
            lines.append(f"| {name} | not run | `{verdict.command}` |")
    for name, verdict in outcomes:
        if isinstance(verdict, Verdict):
            lines += ["", f"## {name}", "", f"**Claim:** {verdict.claim}", "",
                      f"**Verdict:** {verdict.outcome}. {verdict.evidence}", "",
                      f"![{name}](figures/{name}.png)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=None, help=URI_HELP)
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for report.md and figures/ (default: reports)")
    parser.add_argument("--all-sweeps", action="store_true", help="analyse every sweep of each study, not only its latest")
    args = parser.parse_args(argv)
    check_folder(parser, args.out)
    uri = results.existing_store(args.uri)  # a mistyped path is refused, not created as an empty store
    name = f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    with tracking.open_run(uri, "report", name) as run:
        outcomes = run_all(uri, args.out, args.all_sweeps)
        path = args.out / "report.md"
        with replaced_atomically(path) as tmp:
            tmp.write_text(markdown(outcomes))
        run.log_artifact(path)
        for study, verdict in outcomes:  # only this invocation's figures, not those left from earlier ones
            if isinstance(verdict, Verdict):
                run.log_artifact(args.out / "figures" / f"{study}.png", "figures")
    print(f"report: {path} (MLflow run {run.run_id} in experiment 'report')")
    return path


if __name__ == "__main__":
    from_shell(main)
