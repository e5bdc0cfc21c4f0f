"""What the harness costs: one whole run through its layers against the bare core loop.

The same work every time (data set, network, seed, epochs, batches, learning rate), run as:

| variant       | what runs                                                                       |
|---------------|---------------------------------------------------------------------------------|
| bare          | load data, build the MLP, then only forward/backward/update per batch           |
| train_memory  | the same through `nnresearch.train.train` with a `MemorySink` (evaluation every  |
|               | epoch, per-layer diagnostics, finiteness checks)                                |
| execute_off   | `nnresearch.experiment.execute(cfg)` with `tracking.enabled=false`              |
| execute_on    | the same with MLflow tracking into a SQLite store in a temporary folder         |

Every variant includes loading the data and building the network; `data_load` times that alone.
The config is composed by Hydra exactly as `python -m nnresearch.run` composes it. A variant
whose import or run fails is recorded with its error instead of stopping the benchmark.
"""

from __future__ import annotations

import math
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import interleave


@dataclass(frozen=True)
class Workload:
    data: str = "digits"
    depth: int = 3
    width: int = 512
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.1
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2

    def overrides(self) -> list[str]:
        return [f"data={self.data}", "model=mlp", f"model.depth={self.depth}", f"model.width={self.width}",
                "model.activation=relu", "optim=sgd", f"optim.lr={self.lr}", f"trainer.epochs={self.epochs}",
                f"trainer.batch_size={self.batch_size}", f"trainer.seed={self.seed}", "trainer.progress=false",
                "trainer.dtype=float32", "trainer.device=cpu", f"data.val_fraction={self.val_fraction}",
                f"data.test_fraction={self.test_fraction}"]


FULL = Workload()
SMOKE = Workload(depth=1, width=32, epochs=2)


def _load(w: Workload):
    from nnresearch.data import load_dataset

    data = load_dataset(w.data, seed=w.seed, val_fraction=w.val_fraction, test_fraction=w.test_fraction)
    cast = lambda a: np.asarray(np.ascontiguousarray(a), dtype=np.float32)  # noqa: E731
    return data, [cast(a) for a in (data.X_train, data.Y_train, data.X_val, data.Y_val)]


def _network(w: Workload, data: Any, rng: np.random.Generator):
    from nnresearch.nn.architectures import Builder, Init, mlp

    builder = Builder(np, np.float32, rng, Init("he_normal"), "relu")
    return mlp(builder, [data.n_features, *[w.width] * w.depth, data.n_outputs], "softmax_ce")


def bare(w: Workload) -> float:
    """Forward, backward and SGD over the same shuffled batches as `train`; returns the final val loss."""
    from nnresearch.backend import make_rng, permutation
    from nnresearch.nn.optim import make_optimizer

    data, (X, Y, X_val, Y_val) = _load(w)
    rng = make_rng(w.seed)
    network = _network(w, data, rng)
    optimizer = make_optimizer("sgd")
    m = X.shape[-1]
    for _ in range(w.epochs):
        order = permutation(rng, m, np)
        for start in range(0, m, w.batch_size):
            index = order[start:start + w.batch_size]
            network.loss_and_gradients(np.take(X, index, axis=-1), np.take(Y, index, axis=-1))
            optimizer.step(network.params(), network.grads(), w.lr)
    network.forward(X_val)
    return float(network.cost(Y_val))


def train_memory(w: Workload) -> float:
    """The same through the training loop with an in-memory sink; returns the final val loss."""
    from nnresearch.backend import make_rng
    from nnresearch.nn.optim import make_optimizer
    from nnresearch.sinks import MemorySink
    from nnresearch.train import LoopOptions, Splits, train

    data, arrays = _load(w)
    rng = make_rng(w.seed)
    network = _network(w, data, rng)
    metrics = train(network, Splits(*arrays), make_optimizer("sgd"), lambda step: w.lr,
                    LoopOptions(w.epochs, w.batch_size, progress=False), rng, MemorySink())
    return float(metrics["val/loss"])


def compose(w: Workload, extra: list[str]):
    """(validated Config, overrides) for the workload, composed as `python -m nnresearch.run` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nnresearch.config import register, validate
    from nnresearch.paths import CONFIG_DIR

    register()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        composed = hydra_compose(config_name="config", overrides=w.overrides() + extra)
    return validate(composed), w.overrides() + extra


def executor(w: Workload, extra: list[str]) -> Callable[[], float]:
    from nnresearch.experiment import execute

    cfg, overrides = compose(w, extra)

    def run() -> float:
        return float(execute(cfg, overrides=overrides).metrics["val/loss"])

    return run


def _error(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()


def measure(w: Workload, repeats: int, fill_store: Callable[[Path], bool] | None = None) -> dict[str, Any]:
    """Median wall time of each variant (interleaved), its ratio to `bare`, and any errors.

    `fill_store(folder)` may put an existing `mlflow.db` into the tracking run's folder (True if
    it did); otherwise the first tracked run creates the store.
    """
    results: dict[str, Any] = {"workload": asdict(w), "variants": {}, "errors": {}}
    with tempfile.TemporaryDirectory(prefix="nnresearch-bench-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        results["store"] = "existing" if fill_store is not None and fill_store(Path(tmp)) else "new"
        makers: dict[str, Callable[[], Callable[[], float]]] = {
            "bare": lambda: lambda: bare(w),
            "train_memory": lambda: lambda: train_memory(w),
            "execute_off": lambda: executor(w, ["tracking.enabled=false"]),
            "execute_on": lambda: executor(w, ["tracking.enabled=true", f"tracking.uri={uri}"]),
        }
        runs: dict[str, Callable[[], float]] = {}
        val_loss: dict[str, float] = {}
        for name, make in makers.items():
            try:
                run = make()
                start = time.perf_counter()
                val_loss[name] = run()  # the first (cold) run: imports, and for execute_on the new store
                results["variants"][name] = {"first_run_s": time.perf_counter() - start}
                runs[name] = run
            except Exception as error:  # a harness piece under construction must not stop the benchmark
                results["errors"][name] = _error(error)
        try:
            start = time.perf_counter()
            _load(w)
            results["data_load_s"] = time.perf_counter() - start
        except Exception as error:
            results["errors"]["data_load"] = _error(error)
        failed: dict[str, str] = {}

        def guarded(name: str, run: Callable[[], float]) -> Callable[[], int]:
            def call() -> int:
                if name not in failed:
                    try:
                        run()
                    except Exception as error:
                        failed[name] = _error(error)
                return 1
            return call

        if runs and repeats > 0:
            timings = interleave({name: guarded(name, run) for name, run in runs.items()}, repeats, block_s=0.0, warmup=0)
            for name, timing in timings.items():
                if name in failed:
                    results["errors"][name] = failed[name]
                    results["variants"].pop(name, None)
                    continue
                results["variants"][name] |= timing.summary()
        for name, entry in results["variants"].items():
            entry.setdefault("median_s", entry["first_run_s"])
            entry["val_loss"] = val_loss.get(name, math.nan)
        reference = results["variants"].get("bare", {}).get("median_s")
        for entry in results["variants"].values():
            entry["ratio_to_bare"] = entry["median_s"] / reference if reference else None
    return results
