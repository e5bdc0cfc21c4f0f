"""The harness in-process: Hydra configs in (`conf/` composed like the CLI does), MLflow runs out.

Every config group option composes and validates; every model x data pairing trains for one epoch
into a temporary SQLite store and leaves a FINISHED run with its params, per-epoch metrics, tags
and artifacts; failures and divergence end the run the way `nnresearch.experiment` promises.
The command line itself (subprocesses, signals, sweeps, the wheel) is in `tests/test_cli.py`.
"""

from __future__ import annotations

import csv
import functools
import inspect
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from omegaconf import OmegaConf

from nnresearch import experiment
from nnresearch.config import validate
from nnresearch.data import DATASETS, load_dataset
from nnresearch.paths import CONFIG_DIR

SMOKE = ["trainer.epochs=1", "trainer.progress=false"]
# Small versions of each model, so the whole matrix trains in seconds (unknown models run as configured).
SMALL_MODEL = {
    "mlp": ["model.width=8"],
    "residual_mlp": ["model.depth=2", "model.width=8"],
    "cnn1d": ["model.channels=[4]", "model.kernel_size=3"],
}
SMALL_N = 60
# Models that only make sense for one kind of target (anything else must fail with a clear ValueError).
ONLY_FOR_TASK = {"logistic": "binary", "softmax_regression": "multiclass"}
# The data set a group's options are written for, where the default (moons, 600 training examples) is too small.
DATA_FOR_GROUP = {"train_set": "mnist1d"}
RUN_TAGS = ("study", "git_commit", "backend", "dataset", "dataset_hash")
ARTIFACTS = ("config.yaml", "overrides.txt", "params/init.npz", "params/final.npz", "diagnostics.csv")


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def group_options() -> list[tuple[str, str]]:
    """Every `<group>/<option>.yaml` under CONFIG_DIR (symlinked groups such as experiment/ included)."""
    groups = sorted(path.name for path in CONFIG_DIR.iterdir() if path.is_dir())
    return [(group, option) for group in groups for option in options(group)]


def in_primary_defaults(group: str) -> bool:
    """True if conf/config.yaml's defaults list names `group` (else it is added with `+group=`)."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "config.yaml").defaults)
    return any(isinstance(entry, dict) and any(key.split(" ")[-1] == group for key in entry) for entry in defaults)


def is_global(path) -> bool:
    return "@package _global_" in path.read_text()


def data_overrides(name: str) -> list[str]:
    accepts_n = "n_samples" in inspect.signature(DATASETS[name]).parameters
    return [f"data.n_samples={SMALL_N}"] if accepts_n else []


@functools.cache
def task_of(data_option: str) -> str:
    """binary / multiclass / multilabel / regression of the data set that `data=<option>` selects."""
    name = OmegaConf.load(CONFIG_DIR / "data" / f"{data_option}.yaml").name
    return load_dataset(name, **({"n_samples": SMALL_N} if data_overrides(name) else {})).task


def runs_of(uri: str, study: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(study)
    return [] if found is None else client.search_runs([found.experiment_id])


def run_job(compose, overrides: list[str]) -> tuple[experiment.Outcome, object]:
    """What run.py does for one job, in-process: compose, validate, execute (overrides logged too)."""
    dict_cfg = compose(overrides)
    cfg = validate(dict_cfg)
    outcome = experiment.execute(cfg, overrides=overrides)
    return outcome, cfg


# --------------------------------------------------------------------------------------------
# 1. Every config group option composes and validates


def fitting_data(group: str, option: str) -> list[str]:
    """The data override a group option needs: a model for one task only gets a data set of that task
    (the default, moons, is binary); a group written for one data set gets it (DATA_FOR_GROUP)."""
    if group == "model" and option in ONLY_FOR_TASK:
        return [f"data={next(d for d in options('data') if task_of(d) == ONLY_FOR_TASK[option])}"]
    return [f"data={DATA_FOR_GROUP[group]}"] if group in DATA_FOR_GROUP else []


@pytest.mark.parametrize(("group", "option"), group_options(), ids=lambda v: v)
def test_every_group_option_composes_and_validates(compose, group, option):
    cfg = compose([f"{'' if in_primary_defaults(group) else '+'}{group}={option}", *fitting_data(group, option)])
    validated = validate(cfg)
    path = CONFIG_DIR / group / f"{option}.yaml"
    if is_global(path):
        return  # an experiment or profile: it may set anything anywhere; validating is the check
    raw = OmegaConf.to_container(OmegaConf.load(path))
    raw.pop("defaults", None)
    composed = OmegaConf.to_container(cfg)[group]
    for key, value in raw.items():
        assert composed[key] == value, f"{group}={option}: {group}.{key} not applied"
    assert getattr(validated, group) is not None


# A data set of each model's kind where the default (moons, binary) does not fit it.
DATA_FOR_MODEL = {"softmax_regression": "digits", "cnn1d": "mnist1d"}


@pytest.mark.parametrize("model", options("model"))
def test_every_model_learns_with_its_own_defaults(compose, model):
    """`model=<option>` alone, with the default optimizer (sgd, lr 0.1), learns in five epochs: no
    divergence, and a training loss well under chance's, ln(classes). A residual_mlp with He init
    doubled its activations' second moment at every block and diverged at step 3."""
    data = DATA_FOR_MODEL.get(model, "moons")
    outcome, cfg = run_job(compose, [f"model={model}", f"data={data}", "trainer.epochs=5", "trainer.progress=false",
                                     "tracking=off"])
    assert outcome.diverged_at is None, f"model={model} data={data} diverged at step {outcome.diverged_at}"
    classes = load_dataset(cfg.data.name).n_outputs
    chance = math.log(max(classes, 2))
    assert outcome.metrics["train/loss"] < 0.6 * chance, (model, data, outcome.metrics)


@pytest.mark.parametrize("name", options("experiment") or [pytest.param("-", marks=pytest.mark.skip("no experiments"))])
def test_every_experiment_sweep_value_validates(compose, name):
    """Each value of each swept key in an experiment's grid gives a valid config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    raw = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml")
    grid = OmegaConf.select(raw, "hydra.sweeper.params") or {}
    parser = OverridesParser.create()
    for key, values in grid.items():
        override = parser.parse_override(f"{key}={values}")
        if override.is_sweep_override():
            swept = list(override.sweep_string_iterator())
        else:
            swept = [override.get_value_element_as_str()]
        for value in swept:
            validate(compose([f"experiment={name}", f"{key}={value}"]))


def test_config_groups_cover_the_schema():
    """The component groups the brief names exist, each with at least one option."""
    for group in ("model", "data", "optim", "trainer", "tracking"):
        assert options(group), f"conf/{group}/ has no options"


# --------------------------------------------------------------------------------------------
# 2. Every model x data pairing: one epoch, one FINISHED run with everything logged


@pytest.fixture(scope="module")
def smoke_uri(tmp_path_factory, mlflow_template_db):
    db = tmp_path_factory.mktemp("smoke") / "mlflow.db"
    shutil.copyfile(mlflow_template_db, db)
    return f"sqlite:///{db}"


def check_weights(path, model: str, n_features: int, n_outputs: int) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    weights = sorted((k for k in arrays if re.fullmatch(r"W\d+", k)), key=lambda k: int(k[1:]))
    assert weights, f"no W1, W2, ... in {sorted(arrays)}"
    assert weights == [f"W{i}" for i in range(1, len(weights) + 1)], weights
    for key in weights:
        W, b = arrays[key], arrays[f"b{key[1:]}"]
        assert np.all(np.isfinite(W)) and np.all(np.isfinite(b)), key
        if W.ndim == 2:  # a dense layer: W (n_l, n_prev), b (n_l, 1)
            assert b.shape == (W.shape[0], 1), (key, W.shape, b.shape)
        else:  # a convolution: W (c_out, c_in, k), b (c_out, 1, 1)
            assert b.shape == (W.shape[0],) + (1,) * (W.ndim - 1), (key, W.shape, b.shape)
    dense = [arrays[k] for k in weights if arrays[k].ndim == 2]
    assert dense[-1].shape[0] == n_outputs
    if model != "cnn1d":
        assert dense[0].shape[1] == n_features
        for previous, current in zip(dense, dense[1:]):
            assert current.shape[1] == previous.shape[0], "W[l] must be (n_l, n_prev)"
    return arrays


@pytest.mark.parametrize("data", options("data"))
@pytest.mark.parametrize("model", options("model"))
def test_every_model_data_pairing_trains_one_epoch(compose, smoke_uri, tmp_path, model, data):
    if model in ONLY_FOR_TASK and task_of(data) != ONLY_FOR_TASK[model]:
        pytest.skip("invalid pairing by design; test_invalid_pairings_fail_clearly covers it")
    name = OmegaConf.load(CONFIG_DIR / "data" / f"{data}.yaml").name
    overrides = [f"model={model}", f"data={data}", *SMOKE, *SMALL_MODEL.get(model, []), *data_overrides(name),
                 f"tracking.uri={smoke_uri}", "study=smoke"]
    outcome, cfg = run_job(compose, overrides)

    assert outcome.diverged_at is None, f"the smoke config diverged at step {outcome.diverged_at}"
    assert math.isfinite(outcome.objective)
    client = MlflowClient(smoke_uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == outcome.run_name
    params = run.data.params
    assert params["model.name"] == model
    assert params["model.depth"] == str(cfg.model.depth)
    assert params["data.name"] == cfg.data.name
    assert params["trainer.epochs"] == "1"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert {0, 1} <= set(steps), steps
    assert "val/loss" in run.data.metrics and "test/loss" in run.data.metrics
    tags = run.data.tags
    for tag in RUN_TAGS:
        assert tags.get(tag), f"tag {tag} missing in {sorted(tags)}"
    assert tags["study"] == "smoke" and tags["dataset"] == cfg.data.name
    assert tags["dataset_hash"] == params["dataset.content_hash"]

    root = Path(download_artifacts(run_id=run.info.run_id, tracking_uri=smoke_uri, dst_path=str(tmp_path)))
    for artifact in ARTIFACTS:
        assert (root / artifact).is_file(), f"artifact {artifact} missing"
    logged = yaml.safe_load((root / "config.yaml").read_text())
    assert logged["model"]["name"] == model and logged["data"]["name"] == cfg.data.name
    assert (root / "overrides.txt").read_text().split() == overrides
    n_features, n_outputs = int(params["dataset.n_features"]), int(params["dataset.n_outputs"])
    init = check_weights(root / "params/init.npz", model, n_features, n_outputs)
    final = check_weights(root / "params/final.npz", model, n_features, n_outputs)
    assert init.keys() == final.keys()
    assert any(not np.array_equal(init[k], final[k]) for k in init), "training changed no parameter"
    with open(root / "diagnostics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows and {"step", "layer"} <= rows[0].keys()
    assert {row["step"] for row in rows} >= {"0"}


@pytest.mark.parametrize("model", sorted(set(ONLY_FOR_TASK) & set(options("model"))))
def test_invalid_pairings_fail_clearly(compose, mlflow_uri, model):
    """A model that needs another kind of target raises a ValueError naming model and data, before a run exists."""
    invalid = [data for data in options("data") if task_of(data) != ONLY_FOR_TASK[model]]
    assert invalid
    problems = []
    for data in invalid:
        name = OmegaConf.load(CONFIG_DIR / "data" / f"{data}.yaml").name
        overrides = [f"model={model}", f"data={data}", *SMOKE, *data_overrides(name), f"tracking.uri={mlflow_uri}",
                     f"study=invalid_{data}"]
        try:
            run_job(compose, overrides)
        except Exception as error:  # noqa: BLE001 - collect every pairing's problem, then fail once
            if not isinstance(error, ValueError):
                problems.append(f"{data}: {type(error).__name__} instead of ValueError: {error}")
            elif model not in str(error) or name not in str(error):
                problems.append(f"{data}: the message should name model={model} and data {name!r}: {error}")
        else:
            problems.append(f"{data}: no ValueError")
        leftover = runs_of(mlflow_uri, f"invalid_{data}")
        if leftover:
            problems.append(f"{data}: left {len(leftover)} run(s) in the store ({leftover[0].info.status})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("data", "head", "fitting"), [("sine", "softmax_ce", "linear_mse"), ("moons", "softmax_ce", "sigmoid_bce"),
                                                     ("sine", "sigmoid_bce", "linear_mse")])
def test_a_head_that_cannot_fit_the_data_is_refused_before_a_run_exists(compose, mlflow_uri, data, head, fitting):
    """model.head whose targets the data cannot give (regression values under a softmax, one 0/1
    column under a softmax: refused by `validate`; sine's values outside [0, 1] under a sigmoid:
    refused once the data is loaded): a ValueError naming model.head, data.name and a head that
    fits, and no run in the store (not even a FAILED one)."""
    overrides = [f"data={data}", f"model.head={head}", *SMOKE, *data_overrides(data), f"tracking.uri={mlflow_uri}",
                 "study=unfit_head"]
    with pytest.raises(ValueError, match=rf"model.head={head}.*data.name={data}.*model.head={fitting}"):
        run_job(compose, overrides)
    assert not runs_of(mlflow_uri, "unfit_head"), "a run was created for a job that could not start"


# --------------------------------------------------------------------------------------------
# 7. An exception ends the run FAILED, keeping what was logged


def test_exception_in_training_ends_run_failed(compose, mlflow_uri, monkeypatch):
    def broken_train(*args, **kwargs):
        raise RuntimeError("boom in train")

    monkeypatch.setattr(experiment, "train", broken_train)
    with pytest.raises(RuntimeError, match="boom in train"):
        run_job(compose, [*SMOKE, "model.depth=3", f"tracking.uri={mlflow_uri}", "study=failing"])
    (run,) = runs_of(mlflow_uri, "failing")
    assert run.info.status == "FAILED"
    assert run.data.params["model.depth"] == "3"
    assert run.data.tags["study"] == "failing"
    logged = {a.path for a in MlflowClient(mlflow_uri).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.txt"} <= logged


# --------------------------------------------------------------------------------------------
# 8. A diverging run is a result: FINISHED, tagged


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on the way to NaN is the point
def test_diverging_run_is_finished_and_tagged(compose, mlflow_uri):
    outcome, _ = run_job(compose, ["optim.lr=1e6", "trainer.epochs=5", "trainer.progress=false",
                                   f"tracking.uri={mlflow_uri}", "study=diverging"])
    assert outcome.diverged_at is not None
    assert math.isnan(outcome.objective)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["diverged"] == "true"
    assert run.data.tags["diverged_at_step"] == str(outcome.diverged_at)
    assert run.data.tags.get("diverged_layer")
    assert 0 in [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "diagnostics.csv"} <= logged


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_evaluation_counts_as_divergence(compose, mlflow_uri):
    """execute() promises NaN/inf ends as `diverged=true`; an overflowing val/test loss is inf too.

    A residual_mlp of depth 8 with He init at lr 0.1 on `sine` overflows within two steps: the
    training cost is still finite (~1e35 in float32) but the validation loss is inf.
    """
    outcome, _ = run_job(compose, ["model=residual_mlp", "model.init=he_normal", "data=sine", f"data.n_samples={SMALL_N}", *SMOKE,
                                   f"tracking.uri={mlflow_uri}", "study=overflow"])
    losses = {k: v for k, v in outcome.metrics.items() if k.endswith("/loss")}
    assert outcome.diverged_at is not None or not all(math.isfinite(v) for v in losses.values()), (
        "this config no longer overflows, so the test checks nothing: pick another that does")
    assert outcome.diverged_at is not None, f"non-finite losses {losses} but the run is not marked diverged"
    run = MlflowClient(mlflow_uri).get_run(outcome.run_id)
    assert run.data.tags.get("diverged") == "true"
    assert math.isnan(outcome.objective)


# --------------------------------------------------------------------------------------------
# 9. tracking=off creates no store


def test_tracking_off_creates_no_store(compose, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outcome, cfg = run_job(compose, ["tracking=off", *SMOKE, f"data.n_samples={SMALL_N}"])
    assert cfg.tracking.enabled is False
    assert outcome.run_id is None
    assert math.isfinite(outcome.metrics["train/loss"])
    assert list(tmp_path.iterdir()) == [], "tracking=off wrote files into the working directory"


def test_a_softmax_head_on_multi_label_data_trains_on_distributions_and_scores_the_label_sets(compose):
    """The run's data keep their label sets; the head trains toward each set's distribution (no label:
    uniform), and its accuracy scores the sets, so an example with no label counts as none, not as all."""
    from nnresearch.nn.losses import label_distribution, threshold_accuracy
    from nnresearch.train import evaluate

    prepared = experiment.prepare(validate(compose(["data=multilabel", "model.head=softmax_ce", "tracking=off"])))
    network, Y = prepared.network, prepared.splits.Y_val
    assert network.head.multi_hot and set(np.unique(Y)) == {0.0, 1.0} and (Y.sum(axis=0) == 0).any()
    network.check_batch(prepared.splits.X_val, Y)  # label sets, not one-hot columns: accepted for this head
    metrics = evaluate(network, prepared.splits.X_val, Y)

    # The references, computed here in float64 from the logits Z[L] and the label sets alone.
    Z, labels = network.Z_L.astype(np.float64), Y.astype(np.float64)
    n_classes, m = labels.shape
    counts = labels.sum(axis=0)
    target = np.where(counts > 0, labels / np.maximum(counts, 1), 1.0 / n_classes)
    log_softmax = Z - Z.max(axis=0) - np.log(np.exp(Z - Z.max(axis=0)).sum(axis=0))
    assert metrics["loss"] == pytest.approx(-(target * log_softmax).sum() / m, rel=1e-5)
    predicted_sets = np.exp(log_softmax) >= 0.5
    assert metrics["acc"] == pytest.approx((predicted_sets == (labels == 1)).mean(), abs=1e-6)
    # Scored on the distribution, an example with no label would count as one with every label.
    assert metrics["acc"] != pytest.approx(float(threshold_accuracy(network.A_L, label_distribution(Y))), abs=1e-6)


def test_prepare_builds_the_data_the_config_describes_in_the_trainer_s_dtype(compose):
    """`data.*` reaches the loader (its own seed, not trainer.seed; its size, fractions and train_size;
    the permuted variant), and the splits and the weights are float32: no float64 data in a float32 run."""
    from nnresearch.data import permute_features

    cfg = validate(compose(["data.seed=5", "trainer.seed=0", "data.n_samples=200", "data.val_fraction=0.1",
                            "data.test_fraction=0.3", "data.train_size=50", "data.permute_features=true",
                            "model.width=8"]))
    prepared = experiment.prepare(cfg)
    expected = permute_features(load_dataset("moons", seed=5, n_samples=200, val_fraction=0.1, test_fraction=0.3,
                                             train_size=50), experiment.PERMUTATION_SEED)
    assert prepared.data.sizes == {"train": 50, "val": 20, "test": 60}  # 0.1 and 0.3 of 200; 50 of the other 120
    assert (prepared.data.name, prepared.data.content_hash) == ("moons-permuted", expected.content_hash)
    s = prepared.splits
    for array in (s.X_train, s.Y_train, s.X_val, s.Y_val, prepared.X_test, prepared.Y_test):
        assert array.dtype == np.float32
    assert {value.dtype for value in prepared.network.state().values()} == {np.dtype(np.float32)}


@pytest.mark.parametrize(("overrides", "optimizer", "schedule"), [
    (["optim=momentum", "optim.momentum=0.5", "optim.weight_decay=0.01", "optim.schedule=step_decay",
      "optim.step_epochs=1", "optim.gamma=0.5", "optim.warmup_epochs=1"],
     ("momentum", {"momentum": 0.5, "weight_decay": 0.01}),
     ("step_decay", 0.05, 20, {"step_size": 10, "gamma": 0.5, "warmup_steps": 10})),
    (["optim=adam", "optim.beta1=0.5", "optim.beta2=0.9", "optim.eps=1e-6", "optim.schedule=cosine", "optim.lr=0.01",
      "optim.min_lr=0.001"],
     ("adam", {"beta1": 0.5, "beta2": 0.9, "eps": 1e-6, "weight_decay": 0.0}),
     ("cosine", 0.01, 20, {"min_lr": 0.001, "warmup_steps": 0})),
])
def test_execute_builds_the_optimizer_and_schedule_the_config_sets(compose, monkeypatch, overrides, optimizer, schedule):
    """600 moons to train in batches of 64 make 10 steps an epoch: 2 epochs are a 20-step schedule."""
    built = {}
    real_optimizer, real_schedule = experiment.make_optimizer, experiment.make_schedule
    monkeypatch.setattr(experiment, "make_optimizer",
                        lambda name, **kw: built.setdefault("optimizer", (name, kw)) and real_optimizer(name, **kw))
    monkeypatch.setattr(experiment, "make_schedule",
                        lambda *args, **kw: built.setdefault("schedule", (*args, kw)) and real_schedule(*args, **kw))
    cfg = validate(compose([*overrides, "tracking=off", "trainer.epochs=2", "trainer.batch_size=64", "model.width=8",
                            "trainer.progress=false"]))
    experiment.execute(cfg)
    assert built["optimizer"] == optimizer
    name, lr, total, options = built["schedule"]
    assert (name, lr, total) == schedule[:3]
    assert {key: options[key] for key in schedule[3]} == schedule[3]


def test_softmax_regression_builds_the_head_the_config_names(compose):
    """`model=softmax_regression` is one softmax layer; its `model.head` (e.g. the naive softmax of the
    softmax_stability study) is the head the network is built with, not the default softmax_ce."""
    for head in ("naive_softmax_ce", "softmax_ce"):
        prepared = experiment.prepare(validate(compose(["model=softmax_regression", "data=digits",
                                                        f"model.head={head}", "tracking=off"])))
        assert prepared.network.head.name == head
        assert len(prepared.network.units) == 1


def test_the_initial_weights_come_from_trainer_seed_not_data_seed(compose):
    """The run's generator (initial weights, then batch orders) is seeded by `trainer.seed`; `data.seed`
    draws the data set and its splits only, so seeds can be crossed with data sets."""
    def initial(*overrides: str) -> dict[str, np.ndarray]:
        prepared = experiment.prepare(validate(compose(["tracking=off", *overrides])))
        return {name: np.asarray(value).copy() for name, value in prepared.network.params().items()}

    base = initial("trainer.seed=3", "data.seed=0")
    for name, value in initial("trainer.seed=3", "data.seed=1").items():
        np.testing.assert_array_equal(value, base[name], err_msg=name)
    assert not np.array_equal(initial("trainer.seed=4", "data.seed=0")["W1"], base["W1"])
