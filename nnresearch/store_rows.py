"""Metrics and params into MLflow's embedded SQLite store, each batch in one insert
(`write_metrics`, `write_params`).

MLflow's `log_batch` makes one ORM object per number and flushes them through SQLAlchemy's unit
of work: tens of milliseconds per 1000 numbers, as long as a small network trains for (the
default run logs ~600), and its params take a second session that loads the run's params first.
For the SQLite store, `write_metrics` writes the same rows of MLflow's `metrics` table with one
Core `INSERT` and has MLflow's own code update the run's latest values, in one transaction, after
MLflow's own check that the run is active; `write_params` writes the rows of its `params` table
the same way. The rows and the latest values are those `log_batch` writes (tests/test_store_rows.py
compares them, NaN and inf included), and MLflow validates them as `log_batch` does; a batch
repeating a row already stored goes to `log_batch`, which skips repeats (and refuses a param
whose value changed). Other stores (a tracking server, PostgreSQL), metrics of a logged model or
data set, and an MLflow without the parts used here keep `log_batch`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.tracking import fluent
from mlflow.utils.validation import (
    _validate_batch_log_data,
    _validate_batch_log_limits,
    _validate_param_keys_unique,
    _validate_run_id,
)

# What the bulk insert uses of MLflow's SqlAlchemyStore.
_STORE_PARTS = ("ManagedSessionMaker", "_get_run", "_check_run_is_active", "_update_latest_metrics_if_necessary",
                "sanitize_metric_value")


def write_metrics(client: MlflowClient, run_id: str, metrics: Sequence[Metric]) -> None:
    """Store `metrics` (at most MLflow's batch limit) in run `run_id`: the bulk insert into an
    SQLite store, `client.log_batch` elsewhere, and wherever metrics also belong to a logged model
    (an active model, `Metric.model_id`) or a data set, which only `log_batch` records."""
    store = _sqlite_store(client)
    if store is None or fluent.get_active_model_id() is not None or any(
            metric.model_id or metric.dataset_name or metric.dataset_digest for metric in metrics):
        client.log_batch(run_id, metrics=list(metrics), synchronous=True)
        return
    _validate_run_id(run_id)
    _validate_batch_log_data(metrics, [], [])  # what log_batch refuses is refused the same way
    _insert(store, client, run_id, metrics)


def write_params(client: MlflowClient, run_id: str, params: Sequence[Param]) -> None:
    """Store `params` (at most MLflow's batch limit) in run `run_id`: the bulk insert into an SQLite
    store, `client.log_batch` elsewhere and for a batch naming a param the run already has."""
    from mlflow.store.tracking.dbmodels.models import SqlParam

    store = _sqlite_store(client)
    if store is None or not params:
        client.log_batch(run_id, params=list(params), synchronous=True)
        return
    _validate_run_id(run_id)
    # What `MlflowClient.log_batch` does before its store: values as text, then MLflow's checks
    # (over-long values cut); a key twice is refused here, before any row is written.
    _, checked, _ = _validate_batch_log_data([], [Param(param.key, str(param.value)) for param in params], [])
    _validate_batch_log_limits([], checked, [])
    _validate_param_keys_unique(checked)
    rows = [{"run_uuid": run_id, "key": param.key, "value": param.value} for param in checked]
    if not _inserted(store, run_id, SqlParam.__table__, rows):
        client.log_batch(run_id, params=list(params), synchronous=True)


def _sqlite_store(client: MlflowClient) -> Any:
    """The client's store if it is MLflow's SQLite store with every part the bulk insert uses, else None."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    try:
        store = client._tracking_client.store
        usable = (isinstance(store, SqlAlchemyStore) and store.db_type == "sqlite"
                  and all(hasattr(store, part) for part in _STORE_PARTS)
                  and "read_only" in inspect.signature(store.ManagedSessionMaker).parameters)
    except (AttributeError, TypeError, ValueError):  # an MLflow built otherwise: its own log_batch
        return None
    return store if usable else None


def _insert(store: Any, client: MlflowClient, run_id: str, metrics: Sequence[Metric]) -> None:
    """The metrics' rows in one INSERT, then MLflow's update of the run's latest value of each key
    (given the newest row of each: by step, timestamp, value), in one transaction."""
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    if not metrics:
        return
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for metric in metrics:
        is_nan, value = store.sanitize_metric_value(metric.value)
        row = {"run_uuid": run_id, "key": metric.key, "value": value, "timestamp": metric.timestamp,
               "step": metric.step, "is_nan": is_nan}
        rows[(metric.key, metric.timestamp, metric.step, value, is_nan)] = row  # the table's key: one row each
    newest: dict[str, dict[str, Any]] = {}
    for row in rows.values():
        known = newest.get(row["key"])
        if known is None or (row["step"], row["timestamp"], row["value"]) > (known["step"], known["timestamp"], known["value"]):
            newest[row["key"]] = row

    def update_latest(session: Any) -> None:
        store._update_latest_metrics_if_necessary([SqlMetric(**row) for row in newest.values()], session)

    if not _inserted(store, run_id, SqlMetric.__table__, list(rows.values()), then=update_latest):
        client.log_batch(run_id, metrics=list(metrics), synchronous=True)


def _inserted(store: Any, run_id: str, table: Any, rows: list[dict[str, Any]],
              then: Callable[[Any], None] | None = None) -> bool:
    """In one session, committed at its end: MLflow's check that run `run_id` is active, one INSERT
    of `rows` into `table`, then `then(session)`; False, with nothing written (the INSERT's rows
    before the stored one rolled back), if a row is already stored."""
    import sqlalchemy

    with store.ManagedSessionMaker(read_only=False) as session:
        store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))
        try:
            session.execute(sqlalchemy.insert(table), rows)
        except sqlalchemy.exc.IntegrityError:
            session.rollback()
            return False
        if then is not None:
            then(session)
    return True
