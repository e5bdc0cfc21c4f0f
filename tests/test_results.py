"""MLflow store -> DataFrames, on a store this module fills with known numbers.

Experiment "study": a sweep parent and 6 children (lr in {0.1, 0.01} x seed in {0, 1, 2}) that
log `val/loss = 10 * lr + seed + 0.5 * step` and `time_s = step` for steps 0..2, plus one run
(lr 0.1, seed 3) that logs step 0, then NaN at step 1, then fails. Experiment "other" holds one
run.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from nnresearch import results, stores, tracking

T_975_DF1 = 12.706204736174703  # Student t, two-sided 95 %, 1 degree of freedom (tables: 12.706)
T_975_DF2 = 4.302652729749462  # ... 2 degrees of freedom (tables: 4.303)


def loss(lr: float, seed: int, step: int) -> float:
    return 10 * lr + seed + 0.5 * step


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"
    parent = tracking.open_parent_run(uri, "study", "sweep-A", "parent")
    for lr in (0.1, 0.01):
        for seed in (0, 1, 2):
            with tracking.open_run(uri, "study", f"lr{lr}-s{seed}", parent_run_id=parent) as sink:
                sink.log_params({"optim": {"lr": lr}, "seed": seed})
                for step in range(3):
                    sink.log_metrics({"val/loss": loss(lr, seed, step), "time_s": step}, step)
    with pytest.raises(FloatingPointError):
        with tracking.open_run(uri, "study", "diverged", parent_run_id=parent) as sink:
            sink.log_params({"optim": {"lr": 0.1}, "seed": 3})
            sink.log_metrics({"val/loss": loss(0.1, 3, 0)}, 0)
            sink.log_metrics({"val/loss": float("nan")}, 1)
            raise FloatingPointError("loss is nan")
    MlflowClient(uri).set_terminated(parent)
    with tracking.open_run(uri, "other", "lonely") as sink:
        sink.log_metrics({"x": 1.0}, 0)
    return uri


def run_id(uri: str, run_name: str) -> str:
    frame = results.runs("study", uri)
    return frame.loc[frame["run_name"] == run_name, "run_id"].item()


# --- runs ---------------------------------------------------------------------------------------


def test_runs_has_one_row_per_run_with_prefixed_columns(uri):
    frame = results.runs("study", uri)
    assert len(frame) == 7
    assert list(frame.columns[:7]) == results.RUN_COLUMNS
    assert {"params.optim.lr", "params.seed", "metrics.val/loss", "tags.mlflow.parentRunId"} <= set(
        frame.columns
    )
    assert frame["params.optim.lr"].dtype == np.float64
    assert frame["params.seed"].dtype == np.int64
    assert isinstance(frame["start_time"].dtype, pd.DatetimeTZDtype)
    row = frame.set_index("run_name").loc["lr0.1-s2"]
    assert (row["status"], row["params.seed"], row["metrics.val/loss"]) == ("FINISHED", 2, 4.0)
    assert frame.set_index("run_name").loc["diverged", "status"] == "FAILED"


def test_runs_filters_parents_and_status(uri):
    assert len(results.runs("study", uri, include_parents=True)) == 8
    assert len(results.runs("study", uri, status="FINISHED")) == 6
    assert results.runs("study", uri, status=["FAILED", "KILLED"])["run_name"].tolist() == [
        "diverged"
    ]
    with pytest.raises(ValueError, match="'DONE'"):
        results.runs("study", uri, status="DONE")


def test_unknown_experiment_lists_the_existing_ones(uri):
    with pytest.raises(ValueError, match=r"'stduy'.*'Default', 'other', 'study'"):
        results.runs("stduy", uri)


def test_missing_store_is_not_created(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none.db")):
        results.runs("study", f"sqlite:///{tmp_path}/none.db")
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(("content", "what"), [(b"", "an empty file"), (b"my notes", "not a SQLite database")])
def test_a_file_that_is_not_a_store_is_refused_and_left_as_it_was(tmp_path, content, what):
    """MLflow opening an empty (or foreign) file at a store's path would write its schema into it."""
    from nnresearch.stores import UnreadableStoreError

    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(UnreadableStoreError, match=f"{path} is not an MLflow store \\({what}\\)"):
        results.runs("study", f"sqlite:///{path}")
    assert path.read_bytes() == content


# --- histories ----------------------------------------------------------------------------------


def test_histories_are_long_with_params_joined(uri):
    long = results.histories("study", ["val/loss"], uri, params=["optim.lr", "seed"])
    assert list(long.columns) == [*results.HISTORY_COLUMNS, "params.optim.lr", "params.seed"]
    assert len(long) == 6 * 3 + 2
    assert set(long["metric"]) == {"val/loss"}
    assert long.equals(long.sort_values(["run_id", "metric", "step"], ignore_index=True))
    finite = long[long["value"].notna()]
    assert len(finite) == 6 * 3 + 1
    for row in finite.itertuples(index=False):
        assert row.value == pytest.approx(loss(row[4], row[5], row.step))
    # the diverged run's last value is NaN: its history is still there, NaN included
    diverged = long[long["params.seed"] == 3]
    assert diverged["step"].tolist() == [0, 1] and math.isnan(diverged["value"].iloc[1])


def test_histories_of_given_runs_take_all_their_metrics(uri):
    ids = [run_id(uri, "lr0.01-s0"), run_id(uri, "diverged")]
    long = results.histories(ids, uri=uri)
    counts = long.groupby(["run_id", "metric"]).size().to_dict()
    assert counts == {(ids[0], "time_s"): 3, (ids[0], "val/loss"): 3, (ids[1], "val/loss"): 2}


def test_histories_name_unknown_metrics_and_params(uri):
    with pytest.raises(ValueError, match=r"'val/los'.*'time_s', 'val/loss'"):
        results.histories("study", ["val/los"], uri)
    with pytest.raises(ValueError, match="params.depth"):
        results.histories("study", uri=uri, params=["depth"])


# --- aggregate ----------------------------------------------------------------------------------


def test_aggregate_over_seeds_matches_a_hand_computation(uri):
    long = results.histories("study", ["val/loss"], uri, params=["optim.lr"])
    final = results.aggregate(long[long["step"] == 2], ["params.optim.lr"])
    assert list(final.columns) == ["params.optim.lr", *results.AGGREGATE_COLUMNS]
    # lr 0.01: losses 1.1, 2.1, 3.1 -> mean 2.1, std 1, half-width t(0.975, 2) / sqrt(3).
    small = final.set_index("params.optim.lr").loc[0.01]
    half = T_975_DF2 / math.sqrt(3)
    assert small["count"] == 3
    assert small[["mean", "std", "lo", "hi"]].tolist() == pytest.approx(
        [2.1, 1.0, 2.1 - half, 2.1 + half], rel=1e-12
    )


def test_aggregate_of_one_value_is_a_point_and_nan_is_not_counted():
    df = pd.DataFrame({"g": ["a", "a", "b", "b"], "value": [1.0, 3.0, 5.0, np.nan]})
    out = results.aggregate(df, "g").set_index("g")
    # a: mean 2, std sqrt(2), half-width t(0.975, 1) * sqrt(2) / sqrt(2).
    assert out.loc["a", ["mean", "std", "count"]].tolist() == pytest.approx([2.0, math.sqrt(2), 2])
    assert out.loc["a", ["lo", "hi"]].tolist() == pytest.approx([2 - T_975_DF1, 2 + T_975_DF1])
    assert out.loc["b", ["mean", "count", "lo", "hi"]].tolist() == [5.0, 1, 5.0, 5.0]
    assert math.isnan(out.loc["b", "std"])


def test_aggregate_checks_its_arguments():
    df = pd.DataFrame({"g": ["a"], "value": [1.0], "name": ["x"]})
    with pytest.raises(ValueError, match="'seed'"):
        results.aggregate(df, ["seed"])
    with pytest.raises(TypeError, match="'name'"):
        results.aggregate(df, ["g"], value="name")
    with pytest.raises(ValueError, match="ci"):
        results.aggregate(df, ["g"], ci=95)


# --- figures ------------------------------------------------------------------------------------


def test_log_figure_puts_figures_into_the_run(uri, tmp_path):
    parent = results.runs("study", uri, include_parents=True)
    parent_id = parent.loc[parent["run_name"] == "parent", "run_id"].item()
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    results.log_figure(parent_id, figure, "figures/loss.png", uri)
    png = tmp_path / "drawn.png"
    figure.savefig(png)
    results.log_figure(parent_id, png, "figures/copy.png", uri)
    client = MlflowClient(stores.resolve_uri(uri))
    logged = {a.path for a in client.list_artifacts(parent_id, "figures")}
    assert logged == {"figures/loss.png", "figures/copy.png"}
    with pytest.raises(TypeError, match="figure"):
        results.log_figure(parent_id, 42, "figures/x.png", uri)


# --- what the module-wide store does not exercise ------------------------------------------------


def test_runs_and_the_experiment_list_follow_every_page(uri, monkeypatch):
    """A store with more runs (or experiments) than one page of MLflow's search holds is read whole:
    with pages of 2, the 8 runs of "study" take 4 pages and the 3 experiments 2."""
    monkeypatch.setattr(results, "PAGE_SIZE", 2)
    assert len(results.runs("study", uri, include_parents=True)) == 8
    assert len(results.runs("study", uri)) == 7
    assert len(results.histories("study", ["val/loss"], uri)) == 6 * 3 + 2
    with pytest.raises(results.ExperimentNotFound) as missing:
        results.runs("stduy", uri)
    assert missing.value.existing == ["Default", "other", "study"]


@pytest.fixture
def own_uri(mlflow_uri) -> str:
    """A store of this test's own (the module-wide one is shared by every test above)."""
    return mlflow_uri


def test_a_deleted_experiment_is_not_read_and_not_listed(own_uri):
    with tracking.open_run(own_uri, "kept", "a") as sink:
        sink.log_metrics({"x": 1.0}, 0)
    with tracking.open_run(own_uri, "gone", "b") as sink:
        sink.log_metrics({"x": 2.0}, 0)
    MlflowClient(stores.resolve_uri(own_uri)).delete_experiment(sink.experiment_id)
    with pytest.raises(results.ExperimentNotFound, match="'gone'") as missing:
        results.runs("gone", own_uri)
    assert "gone" not in missing.value.existing and "kept" in missing.value.existing
    with pytest.raises(results.ExperimentNotFound):
        results.histories("gone", uri=own_uri)


def test_text_params_stay_text_and_a_parent_s_own_metrics_stay_out_of_the_histories(own_uri):
    """A param that is not a number keeps its text (never NaN); a sweep parent that logged a metric of
    its own (a summary of its jobs) is left out of an experiment's histories as it is out of its runs."""
    parent = tracking.open_parent_run(own_uri, "mixed", "sweep-M", "parent")
    for activation, lr in (("relu", 0.1), ("tanh", 0.01)):
        with tracking.open_run(own_uri, "mixed", activation, parent_run_id=parent) as sink:
            sink.log_params({"activation": activation, "lr": lr})
            sink.log_metrics({"val/loss": lr}, 0)
    MlflowClient(stores.resolve_uri(own_uri)).log_metric(parent, "val/loss", 99.0, step=0)

    frame = results.runs("mixed", own_uri)
    assert sorted(zip(frame["params.activation"], frame["params.lr"])) == [("relu", 0.1), ("tanh", 0.01)]
    long = results.histories("mixed", ["val/loss"], own_uri, params=["activation"])
    assert parent not in set(long["run_id"])
    assert sorted(zip(long["params.activation"], long["value"])) == [("relu", 0.1), ("tanh", 0.01)]


def test_aggregate_keeps_a_group_whose_key_is_nan():
    """Runs that lack a param (NaN key) form their own group, as the docstring promises; none is dropped."""
    df = pd.DataFrame({"params.width": [8.0, 8.0, np.nan], "value": [1.0, 3.0, 5.0]})
    out = results.aggregate(df, "params.width")
    assert len(out) == 2 and out["count"].sum() == 3
    lacking = out[out["params.width"].isna()]
    assert lacking[["mean", "count"]].values.tolist() == [[5.0, 1]]
