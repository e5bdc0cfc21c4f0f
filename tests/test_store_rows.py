"""`nnresearch.store_rows`: metrics and params bulk-inserted into an SQLite store must be stored
exactly as MLflow's own `log_batch` stores them: every row of a metric's history, the run's latest
values, every param; and what `log_batch` refuses is refused with its error."""

import math
from types import SimpleNamespace

import mlflow.tracking.fluent
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from nnresearch import store_rows

INF = float("inf")
BATCHES = [
    [Metric("loss", 1.0, 1000, 0), Metric("loss", 0.5, 1001, 1), Metric("acc", 0.1, 1000, 0),
     Metric("loss", 0.5, 1001, 1),  # the same number twice in one batch: stored once
     Metric("nan", math.nan, 1000, 0), Metric("inf", INF, 1000, 0), Metric("inf", -INF, 1000, 1),
     Metric("late", 3.0, 1000, 5), Metric("late", 4.0, 1000, 2),  # an older step logged after a newer one
     Metric("tie", 2.0, 1000, 3), Metric("tie", 1.0, 1000, 3)],  # one step, one time, two values
    [Metric("loss", 0.25, 1002, 2), Metric("nan", 2.0, 1002, 1), Metric("late", 5.0, 999, 5),
     Metric("acc", 0.2, 900, 0)],  # an earlier timestamp at the same step
    [Metric("loss", 0.25, 1002, 2), Metric("loss", 0.125, 1003, 3)],  # a row already stored, then a new one
]


@pytest.fixture
def client(tmp_path):
    from nnresearch.stores import ensure_store

    return MlflowClient(ensure_store(f"sqlite:///{tmp_path}/mlflow.db"))


def stored(client: MlflowClient, run_id: str) -> tuple[dict, dict]:
    """Every key's history as sorted (step, timestamp, value) rows (NaN as a string), and the latest values."""
    def plain(value):
        return "nan" if math.isnan(value) else value

    metrics = client.get_run(run_id).data.metrics
    histories = {key: sorted((m.step, m.timestamp, plain(m.value)) for m in client.get_metric_history(run_id, key))
                 for key in metrics}
    return histories, {key: plain(value) for key, value in metrics.items()}


def _refusal(call, run_id: str) -> str:
    """The message of the MlflowException `call()` raises, run id `run_id` written as <run>."""
    with pytest.raises(MlflowException) as refused:
        call()
    return str(refused.value).replace(run_id, "<run>")


@pytest.fixture
def two_runs(client, monkeypatch):
    """Two new runs, `by_mlflow` for `log_batch` and `by_insert` for the insert; `fell_back` lists the
    batch numbers (the test sets `batch`) for which the insert went to `log_batch`."""
    experiment = client.create_experiment("two runs")
    runs = SimpleNamespace(by_mlflow=client.create_run(experiment).info.run_id,
                           by_insert=client.create_run(experiment).info.run_id, batch=None, fell_back=[])
    log_batch = MlflowClient.log_batch

    def recording(self, run_id, **kwargs):
        if run_id == runs.by_insert:
            runs.fell_back.append(runs.batch)
        return log_batch(self, run_id, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", recording)
    assert store_rows._sqlite_store(client) is not None  # the insert, not log_batch, is under test
    return runs


def test_the_bulk_insert_stores_what_log_batch_stores(client, two_runs):
    by_mlflow, by_insert = two_runs.by_mlflow, two_runs.by_insert
    for two_runs.batch, batch in enumerate(BATCHES):
        client.log_batch(by_mlflow, metrics=batch, synchronous=True)
        store_rows.write_metrics(client, by_insert, batch)
        assert stored(client, by_insert) == stored(client, by_mlflow)
    assert two_runs.fell_back == [2]  # only the batch repeating a stored row; a repeat within a batch is written once
    histories, latest = stored(client, by_insert)
    assert latest == {"loss": 0.125, "acc": 0.1, "nan": 2.0, "inf": -1.7976931348623157e308, "late": 3.0, "tie": 2.0}
    assert histories["loss"] == [(0, 1000, 1.0), (1, 1001, 0.5), (2, 1002, 0.25), (3, 1003, 0.125)]


def test_a_deleted_run_is_refused_as_log_batch_refuses_it(client):
    run_id = client.create_run(client.create_experiment("deleted")).info.run_id
    client.delete_run(run_id)
    expected = _refusal(lambda: client.log_batch(run_id, metrics=BATCHES[0], synchronous=True), run_id)
    assert _refusal(lambda: store_rows.write_metrics(client, run_id, BATCHES[0]), run_id) == expected


@pytest.mark.parametrize("bad", [{"run_id": "not a run id"}, {"metrics": [Metric("loss", 1.0, -5, 0)]},
                                 {"metrics": [Metric("loss", "high", 1000, 0)]}])
def test_what_log_batch_refuses_is_refused_the_same_way(client, bad):
    run_id = client.create_run(client.create_experiment("refused")).info.run_id
    call = {"run_id": run_id, "metrics": BATCHES[1]} | bad
    expected = _refusal(lambda: client.log_batch(call["run_id"], metrics=call["metrics"], synchronous=True), run_id)
    assert _refusal(lambda: store_rows.write_metrics(client, call["run_id"], call["metrics"]), run_id) == expected


@pytest.mark.parametrize("linked", ["active model", "model_id", "dataset"])
def test_metrics_of_a_logged_model_or_a_data_set_go_through_log_batch(client, monkeypatch, linked):
    """Only `log_batch` links metrics to the active model or a data set (`logged_model_metrics`)."""
    metric = Metric("loss", 1.0, 1000, 0, model_id="m-1" if linked == "model_id" else None,
                    dataset_name="moons" if linked == "dataset" else None, dataset_digest="d1" if linked == "dataset" else None)
    if linked == "active model":  # as `mlflow.set_active_model` or MLFLOW_ACTIVE_MODEL_ID make it
        monkeypatch.setattr(mlflow.tracking.fluent, "get_active_model_id", lambda: "m-1")
    sent = []
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, run_id, metrics, synchronous: sent.append(metrics))
    store_rows.write_metrics(client, "0" * 32, [metric])
    assert sent == [[metric]]


def test_other_stores_keep_log_batch(monkeypatch):
    client = MlflowClient("http://127.0.0.1:9")  # nothing is sent: log_batch is replaced below
    sent = []
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, run_id, metrics, synchronous: sent.append((run_id, metrics)))
    assert store_rows._sqlite_store(client) is None
    store_rows.write_metrics(client, "run", BATCHES[1])
    assert sent == [("run", BATCHES[1])]


def test_the_latest_value_is_the_one_at_the_highest_step_whatever_its_time(client, two_runs):
    """Within one batch the run's latest value is MLflow's: highest step first, then time, then value,
    so a higher step logged with an earlier timestamp (a clock stepped back) still wins."""
    by_mlflow, by_insert = two_runs.by_mlflow, two_runs.by_insert
    batch = [Metric("k", 1.0, 2000, 1), Metric("k", 2.0, 1000, 2), Metric("j", 5.0, 1000, 3), Metric("j", 6.0, 1000, 3)]
    client.log_batch(by_mlflow, metrics=batch, synchronous=True)
    store_rows.write_metrics(client, by_insert, batch)
    assert stored(client, by_insert) == stored(client, by_mlflow)
    assert stored(client, by_insert)[1] == {"k": 2.0, "j": 6.0}


PARAM_BATCHES = [
    [Param("model.width", "64"), Param("optim.lr", "0.1"), Param("data.name", "moons"), Param("note", "µ ≠ mu"),
     Param("empty", ""), Param("long", "x" * 60000),  # longer than a param may be: cut to MLflow's limit
     Param("number", 5), Param("bytes", b"xy"), Param("none", None)],  # not text: stored as str() of the value
    [Param("model.width", "64"), Param("trainer.seed", "3")],  # a param already stored, with its value, then a new one
]


def test_the_bulk_insert_stores_the_params_log_batch_stores(client, two_runs):
    by_mlflow, by_insert = two_runs.by_mlflow, two_runs.by_insert
    for two_runs.batch, batch in enumerate(PARAM_BATCHES):
        client.log_batch(by_mlflow, params=batch, synchronous=True)
        store_rows.write_params(client, by_insert, batch)
        assert client.get_run(by_insert).data.params == client.get_run(by_mlflow).data.params
    assert two_runs.fell_back == [1]  # only the batch naming a stored param
    assert client.get_run(by_insert).data.params["trainer.seed"] == "3"


@pytest.mark.parametrize("bad", [
    [Param("new", "1"), Param("model.width", "128")],  # a changed value, after a new one: nothing is written
    [Param("a", "1"), Param("a", "2")],  # one key twice
    [Param("bad key?", "1")],
])
def test_a_param_log_batch_refuses_is_refused_the_same_way(client, two_runs, bad):
    by_mlflow, by_insert = two_runs.by_mlflow, two_runs.by_insert
    for run_id in (by_mlflow, by_insert):
        client.log_batch(run_id, params=PARAM_BATCHES[0], synchronous=True)
    expected = _refusal(lambda: client.log_batch(by_mlflow, params=bad, synchronous=True), by_mlflow)
    assert _refusal(lambda: store_rows.write_params(client, by_insert, bad), by_insert) == expected
    assert client.get_run(by_insert).data.params == client.get_run(by_mlflow).data.params


def test_params_of_a_deleted_or_unknown_run_are_refused_as_log_batch_refuses_them(client):
    run_id = client.create_run(client.create_experiment("deleted params")).info.run_id
    client.delete_run(run_id)
    for target in (run_id, "not a run id"):
        expected = _refusal(lambda target=target: client.log_batch(target, params=PARAM_BATCHES[1], synchronous=True),
                            target)
        assert _refusal(lambda target=target: store_rows.write_params(client, target, PARAM_BATCHES[1]), target) == expected


def test_an_empty_batch_of_params_is_nothing_to_store_whatever_the_run(client):
    store_rows.write_params(client, "not a run id", [])  # as log_batch: nothing to send, nothing checked


def test_params_in_other_stores_keep_log_batch(monkeypatch):
    client = MlflowClient("http://127.0.0.1:9")  # nothing is sent: log_batch is replaced below
    sent = []
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, run_id, params, synchronous: sent.append((run_id, params)))
    store_rows.write_params(client, "run", PARAM_BATCHES[1])
    assert sent == [("run", PARAM_BATCHES[1])]
