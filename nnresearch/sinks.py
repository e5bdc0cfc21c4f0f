"""Where the training loop sends what it measures.

The loop only knows this protocol; `nnresearch.mlflow_sink.MLflowSink` sends the numbers to MLflow,
`MemorySink` keeps them in lists so tests can train without any store, and `NullSink` (for
`tracking.enabled=false`) has `MLflowSink`'s logging methods and records nothing.

Metric names follow one convention so that MLflow's UI groups them into chart sections by the
prefix before "/": `train/loss`, `val/acc`, `lr`, `time_s`, and per layer `grad_norm/layer3`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol


class Sink(Protocol):
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record `metrics` (name -> float) at `step` (the epoch, or the step for per-step logs)."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Attach string tags to the run (for example `diverged_at_step`)."""


class MemorySink:
    """A sink that keeps everything in memory: `history[name]` is a list of (step, value)."""

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.tags: dict[str, str] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.history.setdefault(name, []).append((step, float(value)))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def last(self, name: str) -> float:
        """The most recent value of metric `name`."""
        return self.history[name][-1][1]


class TeeSink:
    """Sends everything to several sinks (for example MLflow, and memory for the run's summary table)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log_metrics(metrics, step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for sink in self.sinks:
            sink.set_tags(tags)


class NullSink:
    """The sink for `tracking.enabled=false`: `MLflowSink`'s logging methods, recording nothing."""

    run_id = None
    run_name = None
    experiment_id = None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Discard `metrics`."""

    def flush(self) -> None:
        """Nothing is buffered."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Discard `tags`."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Discard `params`."""

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Discard `obj`."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Discard `text`."""

    def log_arrays(self, arrays: Mapping[str, Any], artifact_file: str) -> None:
        """Discard `arrays`."""

    def log_table(self, table: Any, artifact_file: str) -> None:
        """Discard `table`."""

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Discard `path`."""
