"""Each study's MLflow experiment as a ready dashboard: its description and a saved chart view.

Called by the harness when a sweep gets its parent run (`prepare_sweep_dashboard`) and by
`python -m nnresearch.ui` before it starts the server (`refresh_dashboards`). Ground floor, beside
`tracking.py`: knows MLflow and the store's URI rules (`stores.py`), nothing of Hydra or of the network code.

What MLflow 3 (read off 3.17's UI bundle) lets a project preset for an experiment, all as
experiment tags, and what `prepare_dashboard` sets:

- `mlflow.note.content`: the experiment's description, markdown, shown above its runs: the study's
  claim, the commands that run and analyse it, links to the dashboard and to the sweep's parent run
  (whose artifacts hold the study's figure and verdict).
- `mlflow.experimentKind` = `custom_model_development`: a model-training experiment, so the UI
  opens it on its runs rather than on GenAI traces (the UI would otherwise guess and write it).
- `mlflow.sharedViewState.<key>`: a saved view, listed in the experiment page's "Views" menu and
  opened by `?viewStateShareKey=<key>`. Its value is `{"name", "createdAt", "updatedAt", "state"}`
  where `state` is the page's serialized state (JSON, or `deflate;` + base64 of it): the run
  filter, table columns, charts and their sections, grouping. This is how charts are preset.

What a view cannot preset: which parent runs are expanded (MLflow drops `runsExpanded` from
shared views), so a sweep's view groups its jobs by the swept params instead (every group opens
expanded; seeds are averaged); the runs/charts toggle and the GenAI/model-training switch are URL
parameters, which `dashboard_path` puts in the link. These keys are the UI's own, not a public API:
with another MLflow the view may not load, and the description still does.

A description or view edited in the UI is the person's: what this module writes is signed (an
invisible markdown comment with the text's hash; a `writtenBy` field in the view), and it never
overwrites what no longer carries its signature. A description cleared in the UI (left empty) or a
view deleted there is written again.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import shlex
import sys
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from mlflow import MlflowClient
from mlflow.entities import Run

from nnresearch import stores, tracking

VIEW_KEY = "nnresearch"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_TAG = VIEW_TAG_PREFIX + VIEW_KEY
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
DESCRIPTION_TAG = tracking.DESCRIPTION_TAG
WRITER = "nnresearch.ui"  # signs what is written here, vs a person's edit in the UI (the name stores already carry)
MAX_TAG_CHARS = 20_000  # MLflow's limit on an experiment tag's value
COMPRESS_ABOVE_CHARS = 16_000

DEFAULT_METRICS = ("train/loss", "val/loss", "train/acc", "val/acc", "grad_norm/layer*")
LOG_SCALE_PREFIXES = ("grad_norm", "delta_norm", "update_ratio")
SEED_PARAM = "trainer.seed"
# Overrides that say where or how a job runs, not what it is: never a dashboard column.
NOT_SWEPT = ("tracking", "hydra", "experiment", "profile", "study", "objective", "trainer.progress",
             "trainer.device", "trainer.checkpoint_every", "trainer.resume")
# Params logged as facts about a run, not chosen: they follow the config, so never group by them.
DERIVED = ("model.parameters", "dataset.")
# Per-epoch metric families the runs also log: their sections start folded.
FOLDED_SECTIONS = ("train", "val", "test", "grad_norm", "act_mean", "act_std", "dead", "saturated",
                   "delta_norm", "weight_norm", "update_ratio", "unit_spread", "Model metrics")
CURVES_SECTION = "Learning curves"
MAX_COLUMNS = 12


# --------------------------------------------------------------------------------------------
# Dashboards: the saved view


def swept_params_from_overrides(task_overrides: Sequence[str]) -> list[str]:
    """The params a job's Hydra overrides set, minus where/how it runs (tracking.*, hydra.*, ...).

    `["model.depth=2", "trainer.seed=0", "tracking.uri=sqlite:///x.db"]` -> `["model.depth", "trainer.seed"]`.
    """
    keys = []
    for override in task_overrides:
        key = override.lstrip("+~").partition("=")[0]
        if key and not key.startswith(NOT_SWEPT) and key not in keys:
            keys.append(key)
    return keys


def _uuid(*parts: str) -> str:
    """A stable id for a chart or section, so the same dashboard serializes the same way."""
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def _section(name: str, display: bool = True) -> dict[str, Any]:
    return {"uuid": _uuid("section", name), "name": name, "display": display, "isReordered": True,
            "deleted": False, "isGenerated": False}


def _line_chart(keys: Sequence[str], section: str, log_scale: bool = False) -> dict[str, Any]:
    return {"uuid": _uuid("line", section, *keys), "type": "LINE", "runsCountToCompare": 100,
            "metricSectionId": _uuid("section", section), "deleted": False, "isGenerated": False,
            "metricKey": keys[0], "selectedMetricKeys": list(keys), "lineSmoothness": 0,
            "xAxisScaleType": "linear", "scaleType": "log" if log_scale else "linear", "range": {},
            "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric",
            "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": True,
            "useGlobalLineSmoothing": True}


def _bar_chart(key: str, section: str) -> dict[str, Any]:
    return {"uuid": _uuid("bar", section, key), "type": "BAR", "runsCountToCompare": 100,
            "metricSectionId": _uuid("section", section), "deleted": False, "isGenerated": False,
            "metricKey": key}


def _split(metrics: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Curve metrics (train/X, val/X, lr, ...) and per-layer families `{"grad_norm": [keys or patterns]}`."""
    curves: list[str] = []
    families: dict[str, list[str]] = {}
    for key in metrics:
        prefix, _, rest = key.rpartition("/")
        if prefix and rest.startswith("layer"):
            families.setdefault(prefix, []).append(key)
        elif key not in curves:
            curves.append(key)
    return curves, families


def _curve_charts(curves: Sequence[str]) -> list[dict[str, Any]]:
    """`train/X` with `val/X` on one chart, each other curve on its own."""
    charts, done = [], set()
    for key in curves:
        if key in done or "*" in key:
            continue
        split, name = key.split("/", 1) if "/" in key else ("", key)
        pair = f"val/{name}" if split == "train" else f"train/{name}" if split == "val" else None
        keys = [key] if pair not in curves else sorted([key, pair], key=lambda k: not k.startswith("train"))
        done.update(keys)
        charts.append(_line_chart(keys, CURVES_SECTION))
    return charts


def _layer_number(key: str) -> int:
    digits = key.rpartition("layer")[2]
    return int(digits) if digits.isdigit() else 0


def dashboard_state(swept_params: Sequence[str], metrics: Sequence[str], *,
                    parent_run_id: str | None = None, objective: str | None = None,
                    known_metrics: Sequence[str] = ()) -> dict[str, Any]:
    """The experiment page's state for a study: filter, columns, grouping, chart sections.

    - Runs: the jobs of `parent_run_id`'s sweep (all runs without one), grouped by the swept
      params other than the seed (seeds are averaged), every group open.
    - Columns: the swept params, then `objective` and the concrete curve metrics.
    - Charts, section by section: "Learning curves" (`train/X` and `val/X` together, a bar chart of
      `objective` last), then one section per per-layer family (`grad_norm/layer*`: one chart per
      layer, log scale for norms and ratios); patterns are expanded against `known_metrics`, and
      the UI fills a family's section with any layer it finds later. Other metric families get
      folded sections.
    """
    curves, families = _split(list(metrics))
    swept = list(dict.fromkeys(swept_params))
    sections = [_section(CURVES_SECTION)]
    charts = _curve_charts(curves)
    if objective:
        charts.append(_bar_chart(objective, CURVES_SECTION))
    for family, keys in families.items():
        sections.append(_section(family))
        present = sorted({name for pattern in keys for name in known_metrics if fnmatch.fnmatchcase(name, pattern)}
                         | {key for key in keys if "*" not in key}, key=_layer_number)
        charts += [_line_chart([key], family, family.startswith(LOG_SCALE_PREFIXES)) for key in present]
    sections += [_section(name, display=False) for name in FOLDED_SECTIONS if name not in families]
    columns = [f"params.`{name}`" for name in swept]
    columns += [f"metrics.`{name}`" for name in dict.fromkeys([objective, *curves]) if name and "*" not in name]
    group = [name for name in swept if name != SEED_PARAM] or ([SEED_PARAM] if parent_run_id else [])
    return {
        "searchFilter": f"tags.`{tracking.PARENT_RUN_TAG}` = '{parent_run_id}'" if parent_run_id else "",
        "selectedColumns": columns[:MAX_COLUMNS],
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": sections,
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
        "useGroupedValuesInCharts": True,
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "param", "groupByData": name} for name in group]} if group else None,
        "groupsExpanded": {},
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def encode_state(state: Mapping[str, Any]) -> str:
    """The view's `state` string: JSON, or `deflate;<base64 zlib>` (what the UI inflates) when long."""
    text = json.dumps(state, separators=(",", ":"), sort_keys=True)
    if len(text) <= COMPRESS_ABOVE_CHARS:
        return text
    return "deflate;" + base64.b64encode(zlib.compress(text.encode(), 9)).decode()


def decode_state(text: str) -> dict[str, Any]:
    """The inverse of `encode_state`."""
    if text.startswith("deflate;"):
        text = zlib.decompress(base64.b64decode(text[len("deflate;"):])).decode()
    return json.loads(text)


def dashboard_path(experiment_id: str, view: str = VIEW_KEY, mode: str = "CHART") -> str:
    """The UI route (after the server's base URL) that opens an experiment's saved view."""
    query = urlencode({"viewStateShareKey": view, "compareRunsMode": mode, "workflowType": "machine_learning"})
    return f"/#/experiments/{experiment_id}/runs?{query}"


# --------------------------------------------------------------------------------------------
# Dashboards: the description


def study_text(study: str) -> tuple[str | None, list[str]]:
    """The claim (the leading comment of `experiments/<study>.yaml`) and its `Run:`/`Analyse:` commands."""
    from nnresearch.paths import study_file

    path = study_file(study)
    if not path.is_file():
        return None, []
    claim, commands = [], []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        label, _, command = text.partition(":")
        if text.startswith("@package"):
            continue
        if label in ("Run", "Analyse", "Analyze") and command.strip().startswith("python"):
            commands.append(command.strip())
        else:
            claim.append(text)
    return (" ".join(claim) or None), commands


def commands_for_store(commands: Sequence[str], uri: str | None, experiment_name: str, study: str) -> list[str]:
    """The study's `Run:`/`Analyse:` commands made to use this store and experiment where they are not
    the defaults (`tracking.uri=` / `tracking.experiment=` for a run, `--uri` / `--experiment` for an
    analysis), so that pasted they run into and read from what the UI shows."""
    resolved = stores.resolve_uri(uri)
    run_options: list[str] = []
    analysis_options: list[str] = []
    if resolved != stores.resolve_uri(None):
        run_options.append(f"tracking.uri={resolved}")
        analysis_options += ["--uri", resolved]
    if experiment_name != study:
        run_options.append(f"tracking.experiment={experiment_name}")
        analysis_options += ["--experiment", experiment_name]

    def options(command: str) -> list[str]:
        if command.startswith("python -m nnresearch.run"):
            return run_options
        return analysis_options if command.startswith("python -m analysis.") else []

    return [" ".join([command, *map(shlex.quote, options(command))]) for command in commands]


def description_markdown(experiment_name: str, experiment_id: str, *, claim: str | None,
                         commands: Sequence[str], swept_params: Sequence[str],
                         parent: Run | None = None, figure: str | None = None) -> str:
    """The experiment's description: claim, links to the dashboard and the sweep's parent run,
    the latest verdict and figure (once the analysis has logged them), the commands."""
    grouped = ", ".join(f"`{name}`" for name in swept_params if name != SEED_PARAM)
    analysed = any(" analysis." in command for command in commands)
    lines = [f"**{'Study' if claim else 'Experiment'} `{experiment_name}`.** {claim or ''}".rstrip(), "",
             f"[Open the dashboard]({dashboard_path(experiment_id).lstrip('/')}) (view **{VIEW_KEY}** under "
             "*Views*): learning curves and per-layer gradient norms of the latest sweep"
             + (f", its jobs grouped by {grouped}." if grouped else ".")]
    if parent is not None:
        page = f"#/experiments/{experiment_id}/runs/{parent.info.run_id}"
        verdict = parent.data.tags.get("verdict")
        lines += ["", f"Latest sweep: [{parent.info.run_name}]({page})"
                  + (f"; verdict **{verdict}** ([verdict.json]({page}/artifacts/verdict.json))" if verdict else "")
                  + (f"; [figure]({page}/artifacts/{figure})" if figure else "")
                  + ("; its artifacts will hold the figure and verdict once the analysis has run"
                     if analysed and not figure and not verdict else "") + "."]
        if figure:
            lines += ["", f"![{experiment_name}](get-artifact?{urlencode({'path': figure, 'run_uuid': parent.info.run_id})})"]
    if commands:
        lines += ["", "```bash", *commands, "```"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Dashboards: writing them


def _envelope(name: str, state: Mapping[str, Any], created_at: int, updated_at: int) -> str:
    return json.dumps({"name": name, "createdAt": created_at, "updatedAt": updated_at,
                       "state": encode_state(state), "writtenBy": WRITER})


def _existing_view(tags: Mapping[str, str]) -> tuple[int | None, dict[str, Any] | None]:
    """(createdAt, state) of the saved view in `tags`, or (None, None)."""
    try:
        envelope = json.loads(tags[VIEW_TAG])
        return int(envelope["createdAt"]), decode_state(envelope["state"])
    except (KeyError, ValueError, TypeError, zlib.error):
        return None, None


def _known_metrics(client: MlflowClient, experiment_id: str, parent_run_id: str | None) -> list[str]:
    """Metric names logged by the sweep's jobs so far (all runs of the experiment without a parent)."""
    query = f"tags.`{tracking.PARENT_RUN_TAG}` = '{parent_run_id}'" if parent_run_id else ""
    runs = client.search_runs([experiment_id], query, max_results=1000)
    return sorted({name for run in runs for name in run.data.metrics})


def _latest_figure(client: MlflowClient, parent_run_id: str) -> str | None:
    """The run-relative path of the first `figures/*.png` artifact of the parent run, if any."""
    try:
        found = client.list_artifacts(parent_run_id, "figures")
    except Exception:  # noqa: BLE001 - an unreadable artifact store only costs the link
        return None
    return next((item.path for item in found if item.path.endswith(".png")), None)


def prepare_dashboard(uri: str | None, experiment_name: str, swept_params: Sequence[str] = (),
                      metrics: Sequence[str] = DEFAULT_METRICS, *, parent_run_id: str | None = None,
                      objective: str | None = None, study: str | None = None, claim: str | None = None,
                      commands: Sequence[str] | None = None) -> str:
    """Make experiment `experiment_name` open as a ready dashboard; returns its experiment id.

    Sets its description (`claim` and `commands`, read from `experiments/<study>.yaml` when not
    given; `description_markdown`), its kind (model training, unless already set) and the saved
    view `nnresearch` (`dashboard_state`). A description or view that was edited in the UI since
    this function last wrote it is left as it is. Idempotent: tags whose content would not change
    are not written again, so every job of a sweep may call it. `metrics` may hold patterns
    (`grad_norm/layer*`).
    """
    client = MlflowClient(stores.ensure_store(uri))
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ValueError(f"no experiment {experiment_name!r} in {stores.resolve_uri(uri)}; "
                         "prepare its dashboard once it has a run")
    experiment_id = experiment.experiment_id
    parent = client.get_run(parent_run_id) if parent_run_id else None
    study_claim, study_commands = study_text(study or experiment_name)
    state = dashboard_state(swept_params, metrics, parent_run_id=parent_run_id, objective=objective,
                            known_metrics=_known_metrics(client, experiment_id, parent_run_id))
    description = description_markdown(
        experiment_name, experiment_id, claim=claim or study_claim,
        commands=list(commands) if commands is not None else commands_for_store(
            study_commands, uri, experiment_name, study or experiment_name), swept_params=swept_params,
        parent=parent, figure=_latest_figure(client, parent_run_id) if parent_run_id else None)
    tags = dict(experiment.tags)
    created_at, old_state = _existing_view(tags)
    now = int(time.time() * 1000)
    wanted = {DESCRIPTION_TAG: signed_description(description)}
    if old_state != state:
        wanted[VIEW_TAG] = _envelope(f"{VIEW_KEY}: {experiment_name}", state, created_at or now, now)
    if EXPERIMENT_KIND_TAG not in tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    for key, value in wanted.items():
        if tags.get(key) != value and _ours(tags, key):
            client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def signed_description(markdown: str) -> str:
    """`markdown` and an invisible line (a markdown comment) with its hash, cut to MLflow's limit."""
    markdown = markdown[: MAX_TAG_CHARS - 100]
    return f"{markdown}\n\n[//]: # ({WRITER} sha1 {_sha1(markdown)})"


def _ours(tags: Mapping[str, str], key: str) -> bool:
    """Whether tag `key` is absent or still holds what this module wrote: a description or view
    that someone edited (or saved over) in the UI is theirs, and is left alone. A description
    cleared in the UI (empty, or only blanks) is no one's: it is written again."""
    value = tags.get(key)
    if value is None or (key == DESCRIPTION_TAG and not value.strip()):
        return True
    if key == VIEW_TAG:
        with contextlib.suppress(ValueError, AttributeError):
            return json.loads(value).get("writtenBy") == WRITER
        return False
    markdown, _, signature = value.rpartition(f"\n\n[//]: # ({WRITER} sha1 ")
    return signature == f"{_sha1(markdown)})"


_sweep_metrics_shown: dict[tuple[str, str, str], frozenset[str]] = {}


def prepare_sweep_dashboard(uri: str | None, experiment_name: str, task_overrides: Sequence[str],
                            parent_run_id: str, *, objective: str | None = None, study: str | None = None,
                            job_metrics: Iterable[str] = ()) -> str | None:
    """The harness's call after each job of a sweep: `prepare_dashboard` with the params the job's
    Hydra overrides set, or nothing when this process already prepared the sweep's dashboard with
    every metric name the job logged (`job_metrics`).

    Preparing reads all of the sweep's runs, a cost that grows with the sweep (about 1 s per job
    at 400 runs), so each process does it for its first job and again only when a job brings
    metric names it has not shown yet (a deeper model's layers). A failure only warns and is
    retried by the next job: a dashboard never costs a run. Returns the experiment id if it prepared.
    """
    key = (stores.resolve_uri(uri), experiment_name, parent_run_id)
    names = frozenset(job_metrics)
    shown = _sweep_metrics_shown.get(key)
    if shown is not None and names <= shown:
        return None
    try:
        experiment_id = prepare_dashboard(uri, experiment_name, swept_params_from_overrides(task_overrides),
                                          parent_run_id=parent_run_id, objective=objective, study=study)
    except Exception as err:  # noqa: BLE001
        print(f"warning: no MLflow dashboard for {experiment_name!r} ({type(err).__name__}: {err})",
              file=sys.stderr)
        return None
    _sweep_metrics_shown[key] = (shown or frozenset()) | names
    return experiment_id


def latest_parent(client: MlflowClient, experiment_id: str) -> Run | None:
    found = client.search_runs([experiment_id], f"tags.`{tracking.ROLE_TAG}` = 'parent'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def varying_params(runs: Sequence[Run]) -> list[str]:
    """Params whose value differs between `runs`, sorted (derived ones like `model.parameters` left out)."""
    if len(runs) < 2:
        return []
    names = sorted({name for run in runs for name in run.data.params})
    return [name for name in names if not name.startswith(NOT_SWEPT + DERIVED)
            and len({run.data.params.get(name) for run in runs}) > 1]


def refresh_dashboard(uri: str | None, experiment_name: str) -> str | None:
    """Prepare one experiment's dashboard from what its runs show: the latest sweep's jobs, the
    params that vary between them, the figure its parent holds. None (and nothing written) if it
    holds no run of this project's."""
    client = MlflowClient(stores.resolve_uri(uri))
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    parent = latest_parent(client, experiment.experiment_id)
    query = f"tags.`{tracking.PARENT_RUN_TAG}` = '{parent.info.run_id}'" if parent else ""
    jobs = client.search_runs([experiment.experiment_id], query, max_results=1000)
    jobs = [run for run in jobs if tracking.CONFIG_HASH_TAG in run.data.tags]  # this project's jobs only
    if not jobs:
        return None
    return prepare_dashboard(uri, experiment_name, varying_params(jobs), DEFAULT_METRICS,
                             parent_run_id=parent.info.run_id if parent else None,
                             objective=jobs[0].data.params.get("objective"),
                             study=jobs[0].data.tags.get("study") or experiment_name)


def existing_dashboards(uri: str | None) -> dict[str, str]:
    """Name -> experiment id of every active experiment that already has a dashboard view, read
    without writing anything (`--no-dashboards` still lists them)."""
    client = MlflowClient(stores.check_readable_store(uri))
    return {experiment.name: experiment.experiment_id for experiment in client.search_experiments()
            if VIEW_TAG in experiment.tags}


def refresh_dashboards(uri: str | None) -> dict[str, str]:
    """`refresh_dashboard` for every active experiment with runs; returns name -> experiment id.

    The store must exist (`stores.check_readable_store`: UnreadableStoreError, never a new store)."""
    client = MlflowClient(stores.check_readable_store(uri))
    prepared = {}
    for experiment in client.search_experiments():
        experiment_id = refresh_dashboard(uri, experiment.name)
        if experiment_id is not None:
            prepared[experiment.name] = experiment_id
    return prepared


