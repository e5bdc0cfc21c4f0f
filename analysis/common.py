"""What every study script shares: loading its sweep, saving and logging the figure, printing the verdict.

A study script defines `analyse(study: Study) -> tuple[Figure, Verdict]` and ends with
`main = study_main("<name>", analyse)`. The verdict is computed from the runs, never written in,
and is "inconclusive" whatever the numbers when a configuration ran with fewer than `MIN_SEEDS`
seeds (`settle`): one seed has no seed band, so the quick profile decides nothing; so it is when
the runs lack values of the study's grid (`study_grid`), as after a sweep of part of the study.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

from nnresearch import dashboards, results  # noqa: E402
from nnresearch.config import HASH_EXCLUDED, within  # noqa: E402
from nnresearch.files import replaced_atomically  # noqa: E402
from nnresearch.mlflow_sink import artifact_repository  # noqa: E402
from nnresearch.stores import TrackingURIError, UnreadableStoreError, resolve_uri  # noqa: E402
from nnresearch.tracking import CONFIG_HASH_TAG, PARENT_RUN_TAG  # noqa: E402

FIGURE_DIR = Path("reports/figures")
MIN_SEEDS = 2  # the fewest seeds per configuration that give a seed band (a t-interval) to decide by
SEED_PARAM = "params.trainer.seed"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per downloaded artifact otherwise


# In the report's order: the chapter's, roughly.
STUDIES = (
    "vanishing_gradients", "initialization", "batch_size", "width_vs_depth", "dying_relu", "dead_at_birth",
    "linear_collapse", "bce_vs_mse", "softmax_stability", "mitigations", "multilabel_vs_multiclass",
    "one_neuron_images", "inductive_bias", "representation",
)


def available_studies() -> list[str]:
    """The studies that have both an experiment config and an analysis script."""
    root = Path(__file__).resolve().parent
    return [s for s in STUDIES if (root / f"{s}.py").is_file() and (root.parent / "experiments" / f"{s}.yaml").is_file()]


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader, ~15x faster than PyYAML's


@cache
def _config_schema() -> Any:
    """OmegaConf's structured schema of `nnresearch.config.Config`, built once (`merge` copies it)."""
    from nnresearch.config import Config

    return OmegaConf.structured(Config)


class StudyNotRun(ValueError):
    """The study has no experiment or no finished runs in the store: there is nothing to analyse yet.
    `command` runs it into that store and experiment."""

    def __init__(self, message: str, command: str) -> None:
        super().__init__(message)
        self.command = command


class LatestSweepEmpty(StudyNotRun):
    """The study's latest sweep has no finished run (stopped early, still running, or every job failed),
    while earlier sweeps have some (`--all-sweeps` reads them)."""


def part_word(held: bool | None) -> str:
    """How a verdict's evidence names the outcome of one of its parts: held, NOT held, or UNDECIDED (None)."""
    return "UNDECIDED" if held is None else "held" if held else "NOT held"


@dataclass(frozen=True)
class Verdict:
    """Whether the chapter's claim held in these runs (None: the runs cannot decide), and the numbers that decided it."""

    study: str
    claim: str
    held: bool | None
    evidence: str

    @property
    def outcome(self) -> str:
        """"held", "not held" or "inconclusive"."""
        return {True: "held", False: "not held", None: "inconclusive"}[self.held]

    def line(self) -> str:
        return f"[{self.outcome.upper()}] {self.study}: {self.claim} -- {self.evidence}"


class Study:
    """The finished runs of one study's latest sweep (or of all its sweeps), read from MLflow.

    Artifacts are downloaded into one temporary folder owned by the study and removed by `close()`
    (or on leaving `with Study(...) as study:`).
    """

    def __init__(self, name: str, uri: str | None = None, experiment: str | None = None, all_sweeps: bool = False) -> None:
        self.name = name
        self.uri = resolve_uri(uri)
        self.experiment = experiment or name
        self.all_sweeps = all_sweeps
        self._downloads: tempfile.TemporaryDirectory[str] | None = None
        self._downloaded: dict[tuple[str, str], Path] = {}
        self._configs: dict[str, Any] = {}

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the downloaded artifacts (paths `artifact` returned are gone afterwards)."""
        if self._downloads is not None:
            self._downloads.cleanup()
            self._downloads = None
            self._downloaded.clear()

    @property
    def run_command(self) -> str:
        """The command that runs this study into this store and experiment (the defaults left out)."""
        [command] = dashboards.commands_for_store([f"python -m nnresearch.run -m experiment={self.name}"], self.uri,
                                                  self.experiment, self.name)
        return command

    def _not_run(self, what: str) -> StudyNotRun:
        return StudyNotRun(f"study {self.name!r} has {what} in {self.uri}; run it first: {self.run_command}",
                           self.run_command)

    def _check_runs_are_this_study(self, frame: pd.DataFrame) -> None:
        """Refuse an experiment (`--experiment`) whose runs are another study's, or no study's: its
        verdict would be nonsense, logged over that study's own."""
        logged = frame["params.study"].dropna().unique() if "params.study" in frame else []
        others = sorted(set(map(str, logged)) - {self.name})
        if others or len(logged) == 0:
            held = f"runs of study {', '.join(map(repr, others))}" if others else "runs of no study"
            hint = "".join(f"; python -m analysis.{other} --experiment {shlex.quote(self.experiment)} analyses them"
                           for other in others if other in available_studies())
            raise StudyNotRun(f"experiment {self.experiment!r} in {self.uri} holds {held}, not of {self.name!r}{hint}",
                              self.run_command)

    @cached_property
    def _all(self) -> pd.DataFrame:
        try:
            return results.runs(self.experiment, self.uri, include_parents=True)
        except results.ExperimentNotFound as error:
            existing = ", ".join(map(repr, error.existing)) or "none"
            raise self._not_run(f"no experiment {self.experiment!r} (its experiments: {existing})") from error

    @cached_property
    def parent_run_id(self) -> str | None:
        """The latest sweep's parent run: figures and verdicts are logged there."""
        parents = self._all[results.is_parent(self._all)]
        if parents.empty:
            return None
        return str(parents.sort_values("start_time").iloc[-1]["run_id"])

    @property
    def has_earlier_sweeps(self) -> bool:
        """Whether sweeps before the latest exist that `runs` leaves out (without `all_sweeps`)."""
        return not self.all_sweeps and int(results.is_parent(self._all).sum()) > 1

    @property
    def unfinished(self) -> int:
        """How many jobs of the sweeps read (the latest, or all with `all_sweeps`) are still RUNNING: `runs` leaves them out."""
        column = f"tags.{PARENT_RUN_TAG}"
        if not self.parent_run_id or column not in self._all:
            return 0
        jobs = self._all[column].notna() if self.all_sweeps else self._all[column] == self.parent_run_id
        return int((jobs & (self._all["status"] == "RUNNING")).sum())

    @cached_property
    def runs(self) -> pd.DataFrame:
        """One row per finished job: params.*, metrics.* (last values), tags.*; of every sweep with
        `all_sweeps`, where a config (and seed) that ran more than once counts once, by its newest run."""
        frame = self._all[self._all["status"] == "FINISHED"]
        column = f"tags.{PARENT_RUN_TAG}"
        in_sweeps = frame[frame[column].notna()] if column in frame else frame.iloc[:0]
        if column in frame and self.parent_run_id:
            frame = in_sweeps if self.all_sweeps else in_sweeps[in_sweeps[column] == self.parent_run_id]
        hashes = f"tags.{CONFIG_HASH_TAG}"
        if self.all_sweeps and hashes in frame:  # a config run again (after a code change) counts once: its newest run
            newest_first = frame.sort_values("start_time", ascending=False)[hashes]
            frame = frame[(newest_first.isna() | ~newest_first.duplicated()).reindex(frame.index)]
        if frame.empty:
            if self.all_sweeps or not self.parent_run_id or in_sweeps.empty:
                raise self._not_run("no finished runs")
            status = self._all.loc[self._all["run_id"] == self.parent_run_id, "status"].iloc[0]
            state = "still running" if status == "RUNNING" else f"ended {status}"
            raise LatestSweepEmpty(
                f"the latest sweep of study {self.name!r} in {self.uri} (parent run {self.parent_run_id}, {state}) has "
                f"no finished run, earlier sweeps have {len(in_sweeps)}: run it again (its finished jobs are skipped): "
                f"{self.run_command}, or analyse every sweep with --all-sweeps", self.run_command)
        self._check_runs_are_this_study(frame)
        return frame.reset_index(drop=True)

    def histories(self, metrics: Sequence[str], params: Sequence[str]) -> pd.DataFrame:
        """Per-step values of `metrics` for this study's runs, with `params.<name>` columns joined."""
        return results.histories(list(self.runs["run_id"]), metrics, self.uri, params=params)

    @cached_property
    def _artifact_uris(self) -> dict[str, str]:
        return dict(zip(self._all["run_id"], self._all["artifact_uri"]))

    def artifact(self, run_id: str, path: str) -> Path:
        """A local copy of one artifact of a run of this study's experiment, downloaded once straight
        from the run's artifact location; it lives until `close()`."""
        if run_id not in self._artifact_uris:
            raise ValueError(f"run {run_id!r} is not a run of experiment {self.experiment!r} in {self.uri}")
        if self._downloads is None:
            self._downloads = tempfile.TemporaryDirectory(prefix="nnresearch-artifact-")
        if (run_id, path) not in self._downloaded:  # each in its own folder: a directory is never half there
            target = Path(self._downloads.name, str(len(self._downloaded)))
            target.mkdir()
            repository = artifact_repository(self._artifact_uris[run_id], self.uri)
            self._downloaded[(run_id, path)] = Path(repository.download_artifacts(path, str(target)))
        return self._downloaded[(run_id, path)]

    def final_params(self, run_id: str, which: str = "final") -> dict[str, np.ndarray]:
        """The run's parameters at `init` or `final` as a mapping W1, b1, ... (loaded without pickle)."""
        with np.load(self.artifact(run_id, f"params/{which}.npz"), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def config(self, run_id: str) -> Any:
        """The run's validated config (`nnresearch.config.Config`), from its `config.yaml` artifact; read
        once per run, each call gets its own copy. The YAML is parsed by libyaml (the sink writes plain
        block YAML, floats with a point) and merged onto the schema as the CLI merges a composed config."""
        from nnresearch.config import validate

        if run_id not in self._configs:
            with open(self.artifact(run_id, "config.yaml"), encoding="utf-8") as file:
                logged = yaml.load(file, Loader=_YAML_LOADER)
            self._configs[run_id] = validate(OmegaConf.merge(_config_schema(), logged))
        return copy.deepcopy(self._configs[run_id])

    def dataset(self, run_id: str) -> Any:
        """The data set the run trained on, rebuilt exactly as the run built it."""
        from nnresearch.experiment import load_data

        return load_data(self.config(run_id))

    def network(self, run_id: str, which: str = "final") -> Any:
        """The run's trained network, rebuilt from its logged config and parameters."""
        from nnresearch import backend
        from nnresearch.experiment import build_network, load_data

        cfg = self.config(run_id)
        network = build_network(cfg, load_data(cfg), np, backend.make_rng(0))
        network.load_state(self.final_params(run_id, which))
        return network


def mean_band(frame: pd.DataFrame, by: Sequence[str], value: str, log: bool = False,
              fraction: bool = False) -> pd.DataFrame:
    """Mean and 95% t-interval of `value` over seeds, per group `by` (a thin wrapper over results.aggregate).

    `log=True` averages log10 of the values (a geometric mean and band), for quantities plotted
    on a log axis, whose arithmetic band would reach below zero. `fraction=True`, for accuracies
    and fractions, clips the band to [0, 1]: from two or three seeds a t-interval easily reaches
    past what the quantity can take.
    """
    if not log:
        band = results.aggregate(frame, list(by), value=value)
    else:
        logged = frame.assign(**{value: np.log10(frame[value])})
        band = results.aggregate(logged, list(by), value=value)
        band = band.assign(**{column: 10 ** band[column] for column in ("mean", "lo", "hi")})
    if fraction:
        band = band.assign(lo=band["lo"].clip(0.0, 1.0), hi=band["hi"].clip(0.0, 1.0))
    return band


def plot_band(ax: Any, frame: pd.DataFrame, x: str, label: str, **style: Any) -> None:
    """A mean line with its confidence band, from a `mean_band` frame sorted by `x`."""
    frame = frame.sort_values(x)
    line, = ax.plot(frame[x], frame["mean"], label=label, **({"marker": "o"} | style))
    ax.fill_between(frame[x], frame["lo"], frame["hi"], alpha=0.2, color=line.get_color())


def fewest_seeds(runs: pd.DataFrame) -> tuple[int, str]:
    """The fewest seeds any one configuration ran with, and a run of that configuration (its name).

    A configuration is a set of runs whose logged params are all equal but for `trainer.seed` and
    those that do not change a run's numbers (`nnresearch.config.HASH_EXCLUDED`: where it was logged,
    progress bars, checkpoints), so runs adopted from an earlier sweep count with the new ones.
    """
    free = (*HASH_EXCLUDED, "choice.tracking")
    keys = [column for column in runs.columns if column.startswith("params.") and column != SEED_PARAM
            and not within(column.removeprefix("params."), free)]
    seeds = runs[SEED_PARAM] if SEED_PARAM in runs else pd.Series(range(len(runs)), index=runs.index)
    per_run = seeds.groupby([runs[key].astype(str) for key in keys] or np.zeros(len(runs))).transform("nunique")
    return int(per_run.min()), str(runs.loc[per_run.idxmin(), "run_name"])


def study_grid(name: str) -> dict[str, list[Any]]:
    """The values `experiments/<name>.yaml` sweeps (`hydra.sweeper.params`, parsed as Hydra parses
    them) per key, seeds left out: {"model.activation": ["sigmoid", "tanh", "relu"], "mitigation": [...]}."""
    from nnresearch.callbacks import sweep_overrides
    from nnresearch.paths import study_file

    path = study_file(name)
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") if path.is_file() else None
    grid = {}
    for override in sweep_overrides([], OmegaConf.to_container(params) if params else {}):
        if override.key_or_group == SEED_PARAM.removeprefix("params.") or (
                override.is_sweep_override() and not override.is_discrete_sweep()):
            continue  # seeds are `fewest_seeds`'s; a search's interval has no values to cover
        grid[override.key_or_group] = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    return grid


def _as_logged(value: Any) -> Any:
    """A grid value or a logged param, comparable with the other: numbers as floats (`1` == `1.0`), the rest as text."""
    if isinstance(value, bool):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _as_override(value: Any) -> str:
    """A grid value as an override writes it (`null`, `true`, `[14,14]`), to paste back into a sweep."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"[{','.join(map(_as_override, value))}]"
    return str(value)


def missing_from_grid(runs: pd.DataFrame, grid: dict[str, list[Any]]) -> list[str]:
    """What of `grid` no run of `runs` has: the `key=value`s of values missing altogether, else how
    many of the grid's combinations are missing, with one (a config group's choice is its
    `choice.<group>` param; a key the runs do not log at all, as runs logged before choices were,
    is not checked)."""
    columns = {key: column for key in grid
               if (column := next((c for c in (f"params.{key}", f"params.choice.{key}") if c in runs), None))}
    missing = []
    for key, column in columns.items():
        logged = {_as_logged(value) for value in runs[column].dropna()}
        absent = [value for value in grid[key] if _as_logged(value) not in logged]
        if absent:
            missing.append(f"{key}={','.join(map(_as_override, absent))}")
    if missing or not columns:
        return missing
    logged = set(zip(*(runs[column].map(_as_logged) for column in columns.values())))
    combinations = list(itertools.product(*(grid[key] for key in columns)))
    absent = [combination for combination in combinations if tuple(map(_as_logged, combination)) not in logged]
    if absent:
        example = " ".join(f"{key}={_as_override(value)}" for key, value in zip(columns, absent[0]))
        missing.append(f"{len(absent)} of its {len(combinations)} combinations, such as {example}")
    return missing


def settle(verdict: Verdict, runs: pd.DataFrame, grid: dict[str, list[Any]] | None = None,
           earlier_sweeps: bool = True) -> Verdict:
    """`verdict`, or the same numbers as an inconclusive verdict if a configuration of `runs` has fewer than
    `MIN_SEEDS` seeds (without a seed band no difference can be told from seed noise), or if the runs
    lack values of the study's `grid` (a sweep of part of the study, say one activation, decides
    nothing about the claim on all of them). A verdict the study itself left inconclusive gets these reasons too.
    `earlier_sweeps`: whether the study has sweeps the runs leave out, which `--all-sweeps` would add."""
    reasons = []
    seeds, example = fewest_seeds(runs)
    if seeds < MIN_SEEDS:
        reasons.append(f"{seeds} seed(s) for the configuration of run {example}, a verdict needs at least "
                       f"{MIN_SEEDS} seeds per configuration (the quick profile runs one)")
    missing = missing_from_grid(runs, grid or {})
    if missing:
        remedy = ", or add the runs of earlier sweeps with --all-sweeps" if earlier_sweeps else ""
        reasons.append(f"the runs lack part of the study's grid: {'; '.join(missing)}; run the whole study{remedy}")
    if not reasons:
        return verdict
    return replace(verdict, held=None, evidence=f"inconclusive: {'; '.join(reasons)}; {verdict.evidence}")


def from_shell(main: Callable[[], Any]) -> None:
    """`python -m analysis.<script>`: run `main`. A study not run yet, a tracking URI no store can have,
    a store that cannot be read (or an artifact missing from it) is one line on stderr and exit status
    2, Ctrl-C one line and 130, not a traceback (callers of `main` get the exception). No file is left
    half-written either way: every output is replaced atomically."""
    try:
        main()
    except (StudyNotRun, TrackingURIError, UnreadableStoreError, OSError) as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    except (MlflowException, SQLAlchemyError) as error:
        print(f"error: cannot read the store: {str(error).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: nothing half-written is left", file=sys.stderr)
        raise SystemExit(130) from None


URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db)"


def check_folder(parser: argparse.ArgumentParser, folder: Path) -> None:
    """Refuse (exit 2, before any analysis) an output folder that exists as something else, that has a
    suffix a file would have (`--out fig.png`: the figure goes to `<folder>/<study>.png`), or that could
    not be made: a file on its path, or its nearest existing folder not writable."""
    if folder.exists() and not folder.is_dir():
        parser.error(f"--out {folder} is a file; --out names a folder")
    if folder.suffix.lower() in (".png", ".pdf", ".svg", ".md"):
        parser.error(f"--out {folder} looks like a file name; --out names a folder (the files get their own names in it)")
    existing = next(path for path in (folder.absolute(), *folder.absolute().parents) if path.exists())
    if not existing.is_dir():
        parser.error(f"--out {folder} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out {folder} cannot be written: {existing} is not writable")


def log_verdict(study: Study, verdict: Verdict, figure: Path) -> None:
    """Log the figure and the verdict to the sweep's parent run and refresh the experiment's dashboard;
    a store that takes no writes (read-only, locked) is a warning on stderr: the verdict was printed."""
    try:
        results.log_figure(study.parent_run_id, figure, f"figures/{study.name}.png", study.uri)
        client = MlflowClient(study.uri)
        client.log_text(study.parent_run_id, json.dumps(asdict(verdict), indent=2), "verdict.json")
        client.set_tag(study.parent_run_id, "verdict", verdict.outcome)
        dashboards.refresh_dashboard(study.uri, study.experiment)
    except (OSError, SQLAlchemyError, MlflowException) as error:
        print(f"warning: the verdict and figure were not logged to {study.uri}: {str(error).splitlines()[0]}",
              file=sys.stderr)


def study_main(name: str, analyse: Callable[[Study], tuple[Any, Verdict]]) -> Callable[[Sequence[str] | None], Verdict]:
    """The `main(argv)` of a study script: analyse, save the figure, log it to the sweep's parent run, print the verdict.

    The verdict is `analyse`'s, made inconclusive by `settle` when a configuration has too few seeds
    or the runs lack part of the study's grid.
    """

    def main(argv: Sequence[str] | None = None) -> Verdict:
        parser = argparse.ArgumentParser(prog=f"python -m analysis.{name}", description=f"Analyse the {name} study.")
        parser.add_argument("--uri", default=None, help=URI_HELP)
        parser.add_argument("--experiment", default=None, help=f"MLflow experiment (default: {name})")
        parser.add_argument("--all-sweeps", action="store_true", help="use every sweep of the study, not only the latest")
        parser.add_argument("--out", type=Path, default=FIGURE_DIR,
                            help=f"folder for the figure, saved as <folder>/{name}.png (default: {FIGURE_DIR})")
        args = parser.parse_args(argv)
        check_folder(parser, args.out)
        with Study(name, args.uri, args.experiment, args.all_sweeps) as study:
            figure, verdict = analyse(study)
            verdict = settle(verdict, study.runs, study_grid(name), study.has_earlier_sweeps)
            unfinished = study.unfinished
        path = args.out / f"{name}.png"
        with replaced_atomically(path) as tmp:
            figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        print(verdict.line())
        print(f"figure: {path}")
        if unfinished:
            print(f"note: {unfinished} job(s) still running, left out of this verdict", file=sys.stderr)
        if study.parent_run_id is not None:
            log_verdict(study, verdict, path)
        return verdict

    return main
