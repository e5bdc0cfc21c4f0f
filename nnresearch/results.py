"""The MLflow store as tidy pandas DataFrames, for the analysis scripts.

Ground floor: reads what `nnresearch.tracking` wrote (and uses `nnresearch.stores`' URI rules and checks),
knows nothing of the network code or Hydra. Reading never creates a store: a missing SQLite file
is a FileNotFoundError, an empty or foreign one a `stores.UnreadableStoreError`, an unreachable server
a ConnectionError.

- `runs(...)`: one row per run. Columns `run_id`, `run_name`, `experiment_id`, `status`,
  `start_time`, `end_time` (UTC timestamps), `artifact_uri`, then MLflow's own prefixed names:
  `params.<name>`, `metrics.<name>` (the last value logged) and `tags.<name>`. A `params.` column
  whose every value reads as a number is numeric (`"0.01"` -> 0.01), otherwise it stays text.
- `histories(...)`: every logged value, long format: `run_id`, `metric`, `step`, `value`, plus
  the requested `params.<name>` columns.
- `aggregate(...)`: mean, std, count and a Student-t confidence band over repeats (seeds).
- `log_figure(...)`: put an analysis figure back into a run (typically the sweep's parent).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from scipy import stats

from nnresearch.stores import check_readable_store, ensure_store, resolve_uri, sqlite_path
from nnresearch.tracking import PARENT_RUN_TAG, ROLE_TAG, RUN_STATUSES

RUN_COLUMNS = ["run_id", "run_name", "experiment_id", "status", "start_time", "end_time", "artifact_uri"]
HISTORY_COLUMNS = ["run_id", "metric", "step", "value"]
AGGREGATE_COLUMNS = ["mean", "std", "count", "lo", "hi"]
PAGE_SIZE = 1000
FETCH_THREADS = 8


def existing_store(uri: str | None) -> str:
    """The resolved URI of a store to read: a SQLite file must exist (FileNotFoundError naming it) and
    be an MLflow database (`stores.UnreadableStoreError` for an empty or foreign file, which MLflow would
    turn into a store); it is opened as it is, even read-only, and never created. Other stores go
    through `ensure_store` (server check, file-store opt-in)."""
    uri = resolve_uri(uri)
    db = sqlite_path(uri)
    if db is None:
        return ensure_store(uri)
    if not db.exists():
        raise FileNotFoundError(
            f"no MLflow store at {db}; run an experiment first or name your store (--uri on the command line, "
            "uri= in Python), e.g. sqlite:////path/to/mlflow.db"
        )
    return check_readable_store(uri)


def _client(uri: str | None) -> MlflowClient:
    """A client for an existing store (`existing_store`)."""
    return MlflowClient(existing_store(uri))


class ExperimentNotFound(ValueError):
    """No active experiment of that name in the store (the message lists the `existing` ones)."""

    def __init__(self, message: str, existing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.existing = list(existing)


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the active experiment `name`; ExperimentNotFound listing the existing names if absent."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        names = sorted(e.name for e in _all_experiments(client))
        raise ExperimentNotFound(
            f"no experiment named {name!r} in {client.tracking_uri}; existing experiments: "
            f"{', '.join(map(repr, names)) or 'none'}", names
        )
    return experiment.experiment_id


def _all_experiments(client: MlflowClient) -> list[Any]:
    """Every active experiment in the store, following MLflow's pagination."""
    found, token = [], None
    while True:
        page = client.search_experiments(max_results=PAGE_SIZE, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _all_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """Every active run of an experiment, following MLflow's pagination."""
    found, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=PAGE_SIZE, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _run_row(run: Run) -> dict[str, Any]:
    """One run as a flat dict with MLflow's `params.` / `metrics.` / `tags.` prefixes."""
    info, data = run.info, run.data
    row = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "artifact_uri": info.artifact_uri,
    }
    row |= {f"params.{k}": v for k, v in data.params.items()}
    row |= {f"metrics.{k}": v for k, v in data.metrics.items()}
    row |= {f"tags.{k}": v for k, v in data.tags.items()}
    return row


def _runs_frame(found: Sequence[Run]) -> pd.DataFrame:
    """Runs as a DataFrame: fixed columns first, then sorted params, metrics and tags."""
    frame = pd.DataFrame([_run_row(run) for run in found])
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    prefixed = [c for c in frame.columns if c not in RUN_COLUMNS]
    order = {"params.": 0, "metrics.": 1, "tags.": 2}
    prefixed.sort(key=lambda c: (order[c[: c.index(".") + 1]], c))
    frame = frame[RUN_COLUMNS + prefixed].copy()
    for column in ("start_time", "end_time"):
        frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
    return frame.sort_values(["start_time", "run_id"], ignore_index=True)


def _numeric_params(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each `params.` column numeric if every value in it reads as a number."""
    frame = frame.reset_index(drop=True)
    for column in frame.columns:
        if column.startswith("params."):
            frame[column] = _numeric_if_possible(frame[column])
    return frame


def _numeric_if_possible(column: pd.Series) -> pd.Series:
    """`column` as numbers if every value reads as one; text params ("relu", "True") unchanged."""
    try:
        return pd.to_numeric(column)
    except (ValueError, TypeError):
        return column


def is_parent(frame: pd.DataFrame) -> pd.Series:
    """Rows of sweep parents: tagged `nnresearch.role=parent` or named as some run's parent."""
    role = frame.get(f"tags.{ROLE_TAG}", pd.Series(index=frame.index, dtype=object))
    parents = frame.get(f"tags.{PARENT_RUN_TAG}", pd.Series(dtype=object)).dropna()
    return (role == "parent") | frame["run_id"].isin(set(parents))


def _status_filter(status: str | Iterable[str] | None) -> set[str] | None:
    """The set of wanted statuses, checked against MLflow's names."""
    if status is None:
        return None
    wanted = {status} if isinstance(status, str) else set(status)
    unknown = wanted - set(RUN_STATUSES)
    if unknown:
        raise ValueError(f"unknown run status {sorted(unknown)}; use some of {RUN_STATUSES}")
    return wanted


def runs(
    experiment_name: str,
    uri: str | None = None,
    *,
    include_parents: bool = False,
    status: str | Iterable[str] | None = None,
) -> pd.DataFrame:
    """One row per active run of `experiment_name`, oldest first (see the module docstring).

    Sweep parents are left out unless `include_parents`; `status` keeps only runs with that
    status (or one of those statuses), e.g. `status="FINISHED"`.
    """
    wanted = _status_filter(status)
    client = _client(uri)
    frame = _runs_frame(_all_runs(client, _experiment_id(client, experiment_name)))
    if frame.empty:
        return frame
    if not include_parents:
        frame = frame[~is_parent(frame)]
    if wanted is not None:
        frame = frame[frame["status"].isin(wanted)]
    return _numeric_params(frame)


def _runs_by_id(client: MlflowClient, run_ids: Sequence[str]) -> list[Run]:
    """The runs `run_ids`; ValueError naming an unknown id."""
    found = []
    for run_id in run_ids:
        try:
            found.append(client.get_run(run_id))
        except MlflowException as err:
            raise ValueError(f"no run with id {run_id!r} in {client.tracking_uri}") from err
    return found


def _metric_pairs(
    run_ids: Sequence[str], logged: dict[str, set[str]], metrics: Sequence[str] | None
) -> list[tuple[str, str]]:
    """(run_id, metric) for each wanted metric that each run logged (even if its last value is
    NaN); ValueError for a metric no run logged."""
    available = sorted(set().union(*(logged[run_id] for run_id in run_ids)))
    wanted = available if metrics is None else list(metrics)
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ValueError(f"no run logged metric(s) {unknown}; logged metrics: {available}")
    return [(run_id, name) for run_id in run_ids for name in wanted if name in logged[run_id]]


def _param_columns(frame: pd.DataFrame, params: Sequence[str]) -> list[str]:
    """`params.<name>` for each of `params`; ValueError naming an unknown one."""
    columns = [f"params.{p}" for p in params]
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        logged = sorted(c.removeprefix("params.") for c in frame.columns if c.startswith("params."))
        raise ValueError(f"no run has param(s) {unknown}; logged params: {logged}")
    return columns


def histories(
    source: str | Sequence[str],
    metrics: Sequence[str] | None = None,
    uri: str | None = None,
    *,
    params: Sequence[str] = (),
) -> pd.DataFrame:
    """Every logged value of `metrics` (default: all) as rows `run_id, metric, step, value`.

    `source` is an experiment name (its runs, sweep parents left out) or a list of run ids.
    `params` names params to join as `params.<name>` columns. Rows are sorted by run, metric and
    step. Histories are fetched with `MlflowClient.get_metric_history`, several at a time.
    """
    client = _client(uri)
    if isinstance(source, str):
        found = _all_runs(client, _experiment_id(client, source))
    else:
        found = _runs_by_id(client, list(source))
    frame = _runs_frame(found)
    if isinstance(source, str) and not frame.empty:
        frame = frame[~is_parent(frame)]
    frame = _numeric_params(frame)
    param_columns = _param_columns(frame, params)
    logged = {run.info.run_id: set(run.data.metrics) for run in found}
    pairs = _metric_pairs(list(frame["run_id"]), logged, metrics)
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        fetched = list(pool.map(lambda pair: client.get_metric_history(*pair), pairs))
    rows = [
        (run_id, m.key, m.step, m.value) for (run_id, _), hist in zip(pairs, fetched) for m in hist
    ]
    long = pd.DataFrame(rows, columns=HISTORY_COLUMNS).astype({"step": "int64", "value": "float64"})
    long = long.sort_values(["run_id", "metric", "step"], kind="stable", ignore_index=True)
    return long.merge(frame[["run_id", *param_columns]], on="run_id", how="left")


def aggregate(
    df: pd.DataFrame, by: str | Sequence[str], value: str = "value", ci: float = 0.95
) -> pd.DataFrame:
    """Mean, std, count and a Student-t `ci` confidence band of `value` within each `by` group.

    With n non-NaN values: `lo, hi = mean -/+ t_{(1+ci)/2, n-1} * std / sqrt(n)` (std with
    ddof=1). A group of one has std NaN and `lo == hi == mean`. NaN values are not counted
    (a diverged seed lowers `count`). Groups keep NaN keys (a param some runs lack).
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [*by, value] if c not in df.columns]
    if missing:
        raise ValueError(f"aggregate: no column(s) {missing}; columns are {list(df.columns)}")
    if not pd.api.types.is_numeric_dtype(df[value]):
        raise TypeError(
            f"aggregate: column {value!r} must be numeric, its dtype is {df[value].dtype}"
        )
    if not 0 < ci < 1:
        raise ValueError(f"aggregate: ci must be in (0, 1), e.g. 0.95, got {ci!r}")
    out = df.groupby(by, dropna=False, sort=True)[value].agg(["mean", "std", "count"]).reset_index()
    half = _t_half_width(out["std"].to_numpy(), out["count"].to_numpy(), ci)
    out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out[[*by, *AGGREGATE_COLUMNS]]


def _t_half_width(std: np.ndarray, count: np.ndarray, ci: float) -> np.ndarray:
    """`t_{(1+ci)/2, n-1} * std / sqrt(n)`; 0 where n == 1, NaN where n == 0."""
    n = count.astype(float)
    several = n >= 2
    t = stats.t.ppf((1 + ci) / 2, np.where(several, n - 1, 1.0))
    half = t * np.where(several, std, 0.0) / np.sqrt(np.where(n > 0, n, 1.0))
    return np.where(n > 0, half, np.nan)


def log_figure(
    parent_run_id: str,
    fig_or_path: Any,
    artifact_file: str,
    uri: str | None = None,
) -> None:
    """Store a figure as artifact `artifact_file` (e.g. `"figures/depth.png"`) of a run.

    `fig_or_path` is a matplotlib (or plotly) figure, saved by MLflow in the format of the
    extension, or the path of an image file already written, uploaded under that name.
    """
    client = _client(uri)
    try:
        client.get_run(parent_run_id)
    except MlflowException as err:
        raise ValueError(f"no run with id {parent_run_id!r} in {client.tracking_uri}") from err
    if isinstance(fig_or_path, (str, os.PathLike)):
        _log_file_as(client, parent_run_id, Path(fig_or_path), artifact_file)
    elif hasattr(fig_or_path, "savefig") or hasattr(fig_or_path, "write_image"):
        client.log_figure(parent_run_id, fig_or_path, artifact_file)
    else:
        raise TypeError(
            "log_figure expects a matplotlib/plotly figure or an image path, got "
            f"{type(fig_or_path).__name__}"
        )


def _log_file_as(client: MlflowClient, run_id: str, path: Path, artifact_file: str) -> None:
    """Upload the file `path` to the run as `artifact_file` (renamed if need be)."""
    if not path.is_file():
        raise FileNotFoundError(f"log_figure: no figure file at {path}")
    directory, name = posixpath.split(artifact_file)
    if not name:
        raise ValueError(f"artifact_file {artifact_file!r} must name a file, e.g. 'figures/a.png'")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp, name)
        shutil.copyfile(path, copy)
        client.log_artifact(run_id, str(copy), artifact_path=directory or None)
