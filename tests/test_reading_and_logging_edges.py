"""Reading runs back and logging them, at their edges: `results` (the band's ci range, parents, oldest first),
`analysis.common` (geometric log bands, distinct seeds, logged text against grid values, which runs a Study keeps),
the MLflow sink's buffering (full batches, their age, order after a failed write, key and value limits), the
in-memory sinks, and the dashboards' params and latest parent."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from analysis.common import Study, fewest_seeds, mean_band, missing_from_grid, study_grid
from nnresearch import dashboards, mlflow_sink, results, sinks, store_rows, stores, tracking

T_975_DF1 = 12.706204736174703
PARENT, ROLE, HASH = f"tags.{tracking.PARENT_RUN_TAG}", f"tags.{tracking.ROLE_TAG}", f"tags.{tracking.CONFIG_HASH_TAG}"


# --- nnresearch/results.py -----------------------------------------------------------------------

@pytest.mark.parametrize("ci", [0, 1, 0.0, 1.0])
def test_aggregate_refuses_the_ends_of_the_ci_range(ci):
    df = pd.DataFrame({"g": ["a", "a"], "value": [1.0, 2.0]})
    with pytest.raises(ValueError, match="ci"):
        results.aggregate(df, "g", ci=ci)


def test_a_parent_is_known_by_its_role_tag_or_by_its_children():
    frame = pd.DataFrame({
        "run_id": ["tagged", "named", "job", "alone"],
        ROLE: ["parent", None, None, None],       # "tagged": a sweep whose jobs are not logged yet
        PARENT: [None, None, "named", None],       # "named": a parent without the role tag (plain MLflow nesting)
    })
    assert results.is_parent(frame).tolist() == [True, True, False, False]


def test_runs_are_oldest_first(mlflow_uri):
    client = MlflowClient(stores.resolve_uri(mlflow_uri))
    experiment_id = client.create_experiment("ordered")
    for name, start in (("second", 2_000), ("first", 1_000), ("third", 3_000)):
        client.set_terminated(client.create_run(experiment_id, start_time=start, run_name=name).info.run_id)
    assert results.runs("ordered", mlflow_uri)["run_name"].tolist() == ["first", "second", "third"]


# --- analysis/common.py --------------------------------------------------------------------------

def test_a_log_band_is_geometric_at_both_ends():
    frame = pd.DataFrame({"g": ["a", "a"], "v": [1.0, 100.0]})  # log10: 0 and 2 -> mean 1, half-width t(0.975, 1)
    band = mean_band(frame, ["g"], "v", log=True).iloc[0]
    assert band["mean"] == pytest.approx(10.0)
    assert band["lo"] == pytest.approx(10 ** (1 - T_975_DF1))
    assert band["hi"] == pytest.approx(10 ** (1 + T_975_DF1))


def test_fewest_seeds_counts_distinct_seeds_not_runs():
    runs = pd.DataFrame([{"run_name": f"{a}-s{s}-{i}", "params.model.activation": a, "params.trainer.seed": s}
                         for i, (a, s) in enumerate([("relu", 0), ("relu", 0), ("tanh", 0), ("tanh", 1)])])
    assert fewest_seeds(runs) == (1, "relu-s0-0")


def test_a_boolean_grid_value_matches_the_logged_text():
    runs = pd.DataFrame({"params.model.bias": ["True", "False"]})  # MLflow holds params as text
    assert missing_from_grid(runs, {"model.bias": [True, False]}) == []


def test_a_search_interval_has_no_values_to_cover(tmp_path, monkeypatch):
    import nnresearch.paths

    study = tmp_path / "searched.yaml"
    study.write_text("hydra:\n  sweeper:\n    params:\n      optim.lr: interval(0.001, 0.1)\n      model.depth: 1,2\n")
    monkeypatch.setattr(nnresearch.paths, "study_file", lambda name: study)
    assert study_grid("searched") == {"model.depth": [1, 2]}


def study_over(frame: pd.DataFrame, all_sweeps: bool = False) -> Study:
    """A Study reading `frame` as its experiment's runs (the store is never opened)."""
    study = Study("toy", "sqlite:///unused.db", all_sweeps=all_sweeps)
    study.__dict__["_all"] = frame.assign(**{"params.study": "toy", "artifact_uri": "file:///x"})
    return study


def runs_frame(rows: list[tuple]) -> pd.DataFrame:
    """rows of (run_id, status, start, role, parent, hash)."""
    return pd.DataFrame([{"run_id": r, "run_name": r, "status": st, "start_time": pd.Timestamp(t, unit="s", tz="UTC"),
                          ROLE: role, PARENT: parent, HASH: h} for r, st, t, role, parent, h in rows])


def test_all_sweeps_keep_every_run_without_a_config_hash():
    frame = runs_frame([("p1", "FINISHED", 0, "parent", None, None), ("p2", "FINISHED", 10, "parent", None, None),
                        ("old-a", "FINISHED", 1, None, "p1", None), ("old-b", "FINISHED", 2, None, "p1", None),
                        ("h-old", "FINISHED", 3, None, "p1", "h"), ("h-new", "FINISHED", 11, None, "p2", "h")])
    assert sorted(study_over(frame, all_sweeps=True).runs["run_id"]) == ["h-new", "old-a", "old-b"]


def test_unfinished_counts_running_jobs_only():
    frame = runs_frame([("p", "RUNNING", 0, "parent", None, None), ("ok", "FINISHED", 1, None, "p", "a"),
                        ("on", "RUNNING", 2, None, "p", "b"), ("bad", "FAILED", 3, None, "p", "c"),
                        ("killed", "KILLED", 4, None, "p", "d")])
    assert study_over(frame).unfinished == 1


def test_one_sweep_has_no_earlier_sweeps():
    one = runs_frame([("p", "FINISHED", 0, "parent", None, None), ("j", "FINISHED", 1, None, "p", "a")])
    assert not study_over(one).has_earlier_sweeps
    two = runs_frame([("p0", "FINISHED", 0, "parent", None, None), ("p", "FINISHED", 5, "parent", None, None),
                      ("j", "FINISHED", 6, None, "p", "a")])
    assert study_over(two).has_earlier_sweeps


# --- nnresearch/mlflow_sink.py -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def offline_sink(monkeypatch):
    """An MLflowSink whose store writes are recorded (`written`, one list per write), on a fake clock;
    `fail` holds how many of the next writes raise."""
    written, fail, clock = [], [0], Clock()

    def write(client, run_id, chunk):
        if fail[0]:
            fail[0] -= 1
            raise ConnectionError("store gone")
        written.append(list(chunk))

    monkeypatch.setattr(store_rows, "write_metrics", write)
    monkeypatch.setattr(mlflow_sink, "time", clock)
    run = SimpleNamespace(info=SimpleNamespace(run_id="r", run_name="n", experiment_id="0", artifact_uri="file:///x"))
    sink = mlflow_sink.MLflowSink(SimpleNamespace(tracking_uri="sqlite:///unused.db"), run, flush_every_s=2.0)
    return sink, written, fail, clock


def test_a_key_of_mlflow_s_full_length_is_accepted():
    key = "k" * MAX_ENTITY_KEY_LENGTH
    assert mlflow_sink._check_key(key, "metric") == key
    with pytest.raises(ValueError):
        mlflow_sink._check_key(key + "k", "metric")


def test_a_flush_interval_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError, match="flush_every_s"):
        mlflow_sink.check_flush_every(float("nan"))


def test_a_full_batch_of_exactly_1000_is_sent_at_once(offline_sink):
    sink, written, _, _ = offline_sink
    for step in range(500):
        sink.log_metrics({"a": 1.0, "b": 2.0}, step)
    assert sink.unsent == 0 and [len(w) for w in written] == [1000]


def test_stored_through_step_is_the_last_step_written(offline_sink):
    sink, _, _, _ = offline_sink
    for step in range(5):
        sink.log_metrics({"a": float(step)}, step)
    sink.flush()
    assert sink.stored_through_step == 4


def test_the_rest_of_a_full_batch_ages_from_when_the_batch_was_sent(offline_sink):
    sink, written, _, clock = offline_sink
    sink.log_metrics({f"m{i}": 0.0 for i in range(500)}, 0)   # t=0
    clock.now = 1.5
    sink.log_metrics({f"m{i}": 0.0 for i in range(502)}, 1)   # t=1.5: 1000 sent, 2 kept, now the oldest
    assert sink.unsent == 2
    clock.now = 2.5
    sink.log_metrics({"x": 0.0}, 2)                           # 1 s after the batch went: not yet due
    assert sink.unsent == 3


def test_metrics_reach_the_store_in_the_order_logged_after_a_failed_write(offline_sink):
    sink, written, fail, _ = offline_sink
    for step in range(999):
        sink.log_metrics({"a": float(step)}, step)
    fail[0] = 1
    with pytest.raises(ConnectionError):
        sink.log_metrics({"a": 0.0, "b": 0.0, "c": 0.0}, 999)   # 1002 buffered: the full batch's write fails
    sink.flush()
    steps = [m.step for chunk in written for m in chunk]
    assert len(steps) == 1002 and steps == sorted(steps)


def test_the_sink_cuts_long_values_itself_even_when_mlflow_would_refuse_them(mlflow_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")  # MLflow then refuses over-long values
    with tracking.open_run(mlflow_uri, "long", "values") as sink:
        sink.log_params({"p": "x" * (MAX_PARAM_VAL_LENGTH + 10)})
        sink.set_tags({"t": "y" * (MAX_TAG_VAL_LENGTH + 10)})
    run = MlflowClient(stores.resolve_uri(mlflow_uri)).get_run(sink.run_id)
    assert run.data.params["p"] == "x" * MAX_PARAM_VAL_LENGTH
    assert run.data.tags["t"] == "y" * MAX_TAG_VAL_LENGTH


# --- nnresearch/sinks.py -------------------------------------------------------------------------


def test_memory_sink_keeps_floats_and_text_and_last_is_the_newest():
    sink = sinks.MemorySink()
    sink.log_metrics({"loss": np.float32(2.0)}, 0)
    sink.log_metrics({"loss": 1}, 1)
    sink.set_tags({"diverged_at_step": 17})
    assert sink.last("loss") == 1.0 and type(sink.history["loss"][0][1]) is float
    assert sink.tags == {"diverged_at_step": "17"}


def test_tee_sink_sends_everything_to_every_sink():
    a, b = sinks.MemorySink(), sinks.MemorySink()
    tee = sinks.TeeSink(a, b)
    tee.log_metrics({"x": 1.0}, 0)
    tee.set_tags({"t": "v"})
    for sink in (a, b):
        assert sink.history == {"x": [(0, 1.0)]} and sink.tags == {"t": "v"}


# --- nnresearch/dashboards.py --------------------------------------------------------------------

def fake_run(**params):
    return SimpleNamespace(data=SimpleNamespace(params={k.replace("__", "."): str(v) for k, v in params.items()}))


def test_varying_params_are_the_differing_ones_sorted_without_derived_ones():
    varied = ["a", "b", "c", "d", "e", "f"]  # six: an unsorted set comes out sorted 1 time in 720
    runs = [fake_run(optim__lr=0.1, model__parameters=10, dataset__n=5, **{k: 1 for k in varied}),
            fake_run(optim__lr=0.1, model__parameters=20, dataset__n=6, **{k: 2 for k in varied})]
    assert dashboards.varying_params(runs) == varied
    assert dashboards.varying_params(runs[:1]) == []


def test_swept_params_name_a_key_once():
    assert dashboards.swept_params_from_overrides(["model.depth=2", "+model.depth=4", "trainer.seed=0"]) == [
        "model.depth", "trainer.seed"]


def test_latest_parent_is_the_newest(mlflow_uri):
    client = MlflowClient(stores.resolve_uri(mlflow_uri))
    experiment_id = client.create_experiment("parents")
    ids = [client.create_run(experiment_id, start_time=start, tags={tracking.ROLE_TAG: "parent"}).info.run_id
           for start in (1_000, 3_000, 2_000)]
    assert dashboards.latest_parent(client, experiment_id).info.run_id == ids[1]
