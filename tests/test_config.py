"""`nnresearch.config.validate`: what composes but cannot mean what it says is refused, naming the key.

Keys outside the schema (`+model.depht=3`), optimizer settings the chosen optimizer never reads,
an accuracy objective on regression data, and non-finite or out-of-range values all fail with a
ValueError that names the config key, before any run exists. The command line itself is in
`tests/test_cli.py`; every shipped config group option and sweep value validates in
`tests/test_harness.py`.
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from dataclasses import fields

import pytest
from hydra.errors import ConfigCompositionException

from nnresearch.config import (
    MODEL_TASKS,
    ONE_HOT_HEADS,
    ONE_HOT_TASKS,
    OPTIMIZER_FIELDS,
    Config,
    OptimConfig,
    config_hash,
    validate,
)
from nnresearch.data import DATA_TASKS, DATASETS, load_dataset
from nnresearch.experiment import check_head_fits, prepare
from nnresearch.nn.losses import HEADS
from nnresearch.nn.optim import OPTIMIZERS

# --------------------------------------------------------------------------------------------
# 1. Keys outside the schema


def test_a_typo_fails_while_composing(compose):
    """The module docstring's promise: Hydra itself refuses `model.depht=3`."""
    with pytest.raises(ConfigCompositionException, match="depht"):
        compose(["model.depht=3"])


@pytest.mark.parametrize(("override", "key", "valid"), [
    ("+model.depht=3", "model.depht", "the keys of model are: name, depth, width"),
    ("+optim.momentun=0.5", "optim.momentun", "the keys of optim are: name, lr, momentum"),
    ("+trainer.epoch=3", "trainer.epoch", "the keys of trainer are: epochs"),
    ("+foo=1", "foo", "the top-level keys are: model, data, optim, trainer, tracking, study, objective"),
])
def test_a_key_added_with_plus_that_is_not_in_the_schema_is_refused(compose, override, key, valid):
    with pytest.raises(ValueError, match=rf"^{re.escape(key)} is not a config key; {re.escape(valid)}"):
        validate(compose([override]))


def test_the_refusal_suggests_the_key_meant():
    with pytest.raises(ValueError, match=r"did you mean model\.depth \(without '\+'\)"):
        validate(_config_with("model.depht", 3))


def test_a_built_config_with_an_attribute_outside_the_schema_is_refused():
    cfg = Config()
    cfg.trainer.epoch = 3  # a typo on the dataclass itself
    with pytest.raises(ValueError, match=r"^trainer\.epoch is not a config key"):
        validate(cfg)


# --------------------------------------------------------------------------------------------
# 2. Optimizer settings the chosen optimizer does not read


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim=sgd", "optim.momentum=0.99"],
     "optim.momentum=0.99 has no effect with optim=sgd; it is used by optim=momentum, nesterov"),
    (["optim=sgd", "optim.beta1=0.5"], "optim.beta1=0.5 has no effect with optim=sgd; it is used by optim=adam"),
    (["optim=momentum", "optim.eps=0.001"],
     "optim.eps=0.001 has no effect with optim=momentum; it is used by optim=adam"),
    (["optim=nesterov", "optim.beta2=0.9"], "optim.beta2=0.9 has no effect with optim=nesterov"),
    (["optim=adam", "optim.momentum=0.5"], "optim.momentum=0.5 has no effect with optim=adam"),
    (["optim.gamma=0.5"], "optim.gamma=0.5 has no effect with optim.schedule=constant; it is used by optim.schedule=step_decay"),
    (["optim.schedule=cosine", "optim.step_epochs=3"], "optim.step_epochs=3 has no effect with optim.schedule=cosine"),
    (["optim.schedule=step_decay", "optim.min_lr=0.01"],
     "optim.min_lr=0.01 has no effect with optim.schedule=step_decay; it is used by optim.schedule=cosine"),
    (["model.init=he_normal", "model.init_std=0.5"],
     "model.init_std=0.5 has no effect with model.init=he_normal; it is used by model.init=normal"),
    (["model.init=normal", "model.init_limit=0.1"], "model.init_limit=0.1 has no effect with model.init=normal"),
    (["model.bias_value=0.1"], "model.bias_value=0.1 has no effect with model.bias_init=zeros; it is used by "
                               "model.bias_init=constant"),
])
def test_an_optimizer_or_schedule_setting_the_choice_ignores_is_refused(compose, overrides, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        validate(compose(overrides))


@pytest.mark.parametrize("overrides", [
    ["optim=sgd", "optim.weight_decay=0.01"],
    ["optim.schedule=step_decay", "optim.gamma=0.5", "optim.step_epochs=3", "optim.warmup_epochs=2"],
    ["optim.schedule=cosine", "optim.min_lr=0.01", "optim.warmup_epochs=2"],
    ["model.init=normal", "model.init_std=0.3", "model.bias_init=constant", "model.bias_value=-1"],
    ["model.init=uniform", "model.init_limit=0.1"],
    ["model.init=constant", "model.init_value=0.2"],
    ["optim=sgd", "optim.momentum=0.9"],  # the schema default: nothing was asked for
    ["optim=momentum", "optim.momentum=0.5"],
    ["optim=nesterov", "optim.momentum=0.5"],
    ["optim=adam", "optim.beta1=0.5", "optim.beta2=0.9", "optim.eps=1e-6", "optim.weight_decay=0.01"],
])
def test_the_settings_an_optimizer_reads_are_accepted(compose, overrides):
    validate(compose(overrides))


def test_optimizer_fields_cover_every_optimizer_and_build_it():
    """`OPTIMIZER_FIELDS` names every optimizer, and each one accepts the settings the table gives it."""
    from nnresearch.experiment import _optimizer_options
    from nnresearch.nn.optim import make_optimizer

    from nnresearch.config import SCHEDULE_FIELDS
    from nnresearch.nn.schedules import SCHEDULES

    assert set(OPTIMIZER_FIELDS) == set(OPTIMIZERS)
    assert set(SCHEDULE_FIELDS) == set(SCHEDULES)
    from nnresearch.config import BIAS_INIT_FIELDS, INIT_FIELDS
    from nnresearch.nn.initializers import INITIALIZERS

    assert set(INIT_FIELDS) | set(BIAS_INIT_FIELDS) <= set(INITIALIZERS)
    for name in OPTIMIZER_FIELDS:
        make_optimizer(name, **_optimizer_options(OptimConfig(name=name)))
    assert make_optimizer("sgd", **_optimizer_options(OptimConfig(name="sgd", momentum=0.5))).momentum == 0.0


# --------------------------------------------------------------------------------------------
# 3. The objective against the data set's task


@pytest.mark.parametrize("data", ["sine", "step", "abs", "sawtooth"])
def test_an_accuracy_objective_on_regression_data_is_refused(compose, data):
    refused = rf"^objective=val/acc has no value for data\.name={data} .*use objective=val/loss"
    with pytest.raises(ValueError, match=refused):
        validate(compose([f"data={data}", "objective=val/acc"]))
    validate(compose([f"data={data}", "objective=val/loss"]))


def test_an_accuracy_objective_for_an_output_without_accuracy_is_refused(compose):
    """model.head=linear_mse on binary data trains, but has no accuracy: every job's objective would be NaN."""
    with pytest.raises(ValueError, match=r"^objective=val/acc has no value with model\.head=linear_mse .*use objective=val/loss"):
        validate(compose(["model.head=linear_mse", "objective=val/acc"]))
    validate(compose(["model.head=linear_mse", "objective=val/loss"]))
    validate(compose(["model.head=sigmoid_mse", "objective=val/acc"]))


@pytest.mark.parametrize("name", DATASETS)
def test_what_validate_knows_of_each_data_set_agrees_with_the_loaded_one(name):
    """`DATA_TASKS` (the task without loading) is the loaded task, and validate refuses exactly the
    models and objectives that do not fit it."""
    small = {"n_samples": 60} if "n_samples" in inspect.signature(DATASETS[name]).parameters else {}
    task = load_dataset(name, **small).task
    assert DATA_TASKS[name] == task
    for model, needed in MODEL_TASKS.items():
        cfg = Config()
        cfg.data.name, cfg.model.name = name, model
        if task == needed:
            validate(cfg)
        else:
            with pytest.raises(ValueError, match=rf"^model={model} needs a {needed} data set; data.name={name} is {task}"):
                validate(cfg)
    for head in HEADS:
        cfg = Config()
        cfg.data.name, cfg.model.head = name, head
        cfg.data.n_samples = small.get("n_samples", cfg.data.n_samples)
        if head in ONE_HOT_HEADS and task not in ONE_HOT_TASKS:
            with pytest.raises(ValueError, match=rf"^model.head={head} needs one-hot targets; data.name={name} is {task}"):
                validate(cfg)
            with pytest.raises(ValueError, match=f"model.head={head} cannot fit data.name={name}"):  # never a working config refused
                prepared = prepare(cfg)
                check_head_fits(cfg, prepared.data, prepared.network, [(prepared.splits.X_train, prepared.splits.Y_train)])
        else:
            validate(cfg)
    cfg = Config()
    cfg.data.name, cfg.objective = name, "val/acc"
    if task == "regression":
        with pytest.raises(ValueError, match="objective=val/acc"):
            validate(cfg)
    else:
        validate(cfg)


# --------------------------------------------------------------------------------------------
# 4. Non-finite and out-of-range values, named by their config key


def _float_keys() -> list[str]:
    """Every dotted key of the schema whose type is a float (optional ones included)."""
    keys = []
    for group in fields(Config):
        if not inspect.isclass(group.default_factory):
            continue
        for f in fields(group.default_factory):
            hint = typing.get_type_hints(group.default_factory)[f.name]
            if hint is float or float in typing.get_args(hint):
                keys.append(f"{group.name}.{f.name}")
    return keys


def _config_with(key: str, value) -> Config:
    """The default config with `<group>.<name>` set to `value` (a dataclass, as `validate` also takes)."""
    cfg = Config()
    group, name = key.split(".")
    setattr(getattr(cfg, group), name, value)
    return cfg


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", _float_keys())
def test_every_float_of_the_schema_must_be_finite(key, value):
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}={value} is not a finite number"):
        validate(_config_with(key, value))


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.seed=-1"], "trainer.seed=-1 is out of range; expected trainer.seed >= 0"),
    (["data.seed=-1"], "data.seed=-1 is out of range; expected data.seed >= 0"),
    (["optim.lr=nan"], "optim.lr=nan is not a finite number"),
    (["model.init=constant", "model.init_value=nan"], "model.init_value=nan is not a finite number"),
    (["data.n_samples=0"], "data.n_samples=0 is out of range for data=moons split by data.val_fraction=0.2 and "
                           "data.test_fraction=0.2; expected data.n_samples >= 8"),
    (["optim.warmup_epochs=10", "trainer.epochs=5"],
     "optim.warmup_epochs=10 is out of range; expected optim.warmup_epochs <= trainer.epochs=5"),
    (["trainer.epochs=-1"], "trainer.epochs=-1 is out of range; expected trainer.epochs >= 1"),  # not warmup's bound
    (["data.noise=-0.1"], "data.noise=-0.1 is out of range"),
    (["data.n_classes=1"], "data.n_classes=1 is out of range"),
    (["data=sawtooth", "data.compositions=0"], "data.compositions=0 is out of range"),
    (["data.train_size=1"], "data.train_size=1 is out of range; expected data.train_size >= 2"),
    (["data=spirals", "data.train_size=2"], "data.train_size=2 is out of range; expected data.train_size >= 3"),
    (["data=mnist1d", "data.train_size=2401"], "data.train_size=2401 is out of range; expected data.train_size <= 2400, "
                                              "the train split of data.n_samples=4000 (raise data.n_samples for more)"),
    (["optim=adam", "optim.beta1=1.0"], "optim.beta1=1.0 is out of range; expected 0 <= optim.beta1 < 1"),
    (["optim=adam", "optim.beta2=-0.1"], "optim.beta2=-0.1 is out of range"),
    (["optim=adam", "optim.eps=0"], "optim.eps=0.0 is out of range; expected optim.eps > 0"),
    (["optim.schedule=step_decay", "optim.gamma=2"], "optim.gamma=2.0 is out of range; expected optim.gamma <= 1"),
    (["optim.schedule=cosine", "optim.min_lr=-1"], "optim.min_lr=-1.0 is out of range"),
    (["model.activation=leaky_relu", "model.alpha=1.5"], "model.alpha=1.5 is out of range"),
    (["model.init=uniform", "model.init_limit=-1"], "model.init_limit=-1.0 is out of range"),
    (["optim.schedule=cosine", "optim.min_lr=5"], "optim.min_lr=5.0 is out of range; expected optim.min_lr <= optim.lr=0.1"),
    (["model=cnn1d", "data=mnist1d", "model.channels=[0,16]"], "model.channels=[0, 16]: expected a non-empty list"),
    (["model=cnn1d", "data=mnist1d", "model.channels=[]"], "model.channels=[]: expected a non-empty list"),
    (["optim=nesterov", "optim.momentum=0"], "optim.momentum=0 with optim.name=nesterov: Nesterov momentum needs 0 <"),
    (["model.widths=[8,8]", "model.depth=5"], "model.depth=5 has no effect with model.widths=[8, 8]"),
    (["model.widths=[8,8]", "model.width=128"], "model.width=128 has no effect with model.widths=[8, 8]"),
    (["study="], "study='' with tracking.experiment=None: the MLflow experiment needs a name"),
    (["optim.lr=1e39"], "optim.lr=1e+39 is inf in float32 (trainer.dtype=float32, largest 3.403e+38)"),
    (["optim=adam", "optim.eps=1e-50"], "optim.eps=1e-50 is 0 in float32 (trainer.dtype=float32)"),
    # at the edge of their ranges
    (["trainer.checkpoint_every=-1"], "trainer.checkpoint_every=-1 is out of range; expected trainer.checkpoint_every >= 0"),
    (["trainer.eval_every=0"], "trainer.eval_every=0 is out of range; expected trainer.eval_every >= 1"),
    (["trainer.probe_every=0"], "trainer.probe_every=0 is out of range; expected trainer.probe_every >= 1"),
    (["model.width=0"], "model.width=0 is out of range; expected model.width >= 1"),
    (["model.widths=[8,0]"], "model.widths=[8, 0]: every width must be >= 1"),
    (["data.test_fraction=0"], "data.test_fraction=0.0 is out of range; expected data.test_fraction > 0"),
    (["data.val_fraction=0.5", "data.test_fraction=0.5"], "data.val_fraction + data.test_fraction must be < 1, got 0.5 + 0.5"),
])
def test_an_out_of_range_value_is_refused_naming_its_key(compose, overrides, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        validate(compose(overrides))


def test_warm_up_may_last_the_whole_run(compose):
    """The schedule accepts warmup_steps == total_steps, so validate accepts warmup_epochs == epochs."""
    validate(compose(["optim.warmup_epochs=5", "trainer.epochs=5"]))


# --------------------------------------------------------------------------------------------
# 5. config_hash: what identifies a run's numbers (sweeps skip FINISHED runs by it)


@pytest.mark.parametrize("override", [
    "tracking.uri=sqlite:///elsewhere.db", "tracking.experiment=other", "trainer.progress=false",
    "trainer.checkpoint_every=2", "trainer.resume=/tmp/checkpoint.npz",
])
def test_settings_that_do_not_change_the_numbers_keep_the_hash(compose, override):
    assert config_hash(validate(compose([override]))) == config_hash(validate(compose([])))


@pytest.mark.parametrize("override", ["trainer.seed=3", "data.seed=1", "optim.lr=0.2", "model.depth=3",
                                      "trainer.batch_size=16", "model.activation=tanh", "data.train_size=100"])
def test_settings_that_change_the_numbers_change_the_hash(compose, override):
    assert config_hash(validate(compose([override]))) != config_hash(validate(compose([])))


def test_the_hash_of_the_default_config_is_stable_across_versions(compose):
    """Stores written by earlier versions tag their runs with this hash; a new scheme would make
    `tracking.skip_finished` rerun every finished job of those stores."""
    assert config_hash(validate(compose([]))) == "e5a89b1b44964a13"


def test_the_float32_bound_is_numpy_s():
    import numpy as np

    from nnresearch.config import FLOAT32_MAX, FLOAT32_ROUNDS_TO_ZERO

    assert FLOAT32_MAX == float(np.finfo(np.float32).max)
    smallest = float(np.finfo(np.float32).smallest_subnormal)
    assert FLOAT32_ROUNDS_TO_ZERO == smallest / 2 and np.float32(FLOAT32_ROUNDS_TO_ZERO) == 0
    assert np.float32(np.nextafter(FLOAT32_ROUNDS_TO_ZERO, 1.0)) == smallest


# --------------------------------------------------------------------------------------------
# 6. Refusals the mutation audit found untested (each one dropped or shifted by one went unnoticed)


@pytest.mark.parametrize(("overrides", "key", "valid"), [
    (["model.activation=rleu"], "model.activation", ["relu", "tanh", "sigmoid", "leaky_relu"]),
    (["optim.name=adamw"], "optim.name", ["sgd", "momentum", "nesterov", "adam"]),
    (["trainer.dtype=float16"], "trainer.dtype", ["float32", "float64"]),
    (["tracking.skip_finished=sometimes"], "tracking.skip_finished", ["sweeps", "always", "never"]),
])
def test_an_unknown_name_is_refused_listing_the_valid_ones(compose, overrides, key, valid):
    """Whoever mistypes a name learns the right ones from the message, not from the source."""
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}=.* is not valid; allowed values: ") as refused:
        validate(compose(overrides))
    listed = str(refused.value).split("allowed values: ", 1)[1].split(", ")
    assert set(valid) <= set(listed), listed


def test_trainer_checkpoint_every_0_means_never_and_is_accepted(compose):
    validate(compose(["trainer.checkpoint_every=0"]))


def test_a_value_float32_rounds_to_0_is_refused_at_the_boundary_itself():
    """Half float32's smallest subnormal rounds (to even) to 0: refused, as every smaller value is;
    the next float above it does not round to 0 and is accepted."""
    import numpy as np

    from nnresearch.config import FLOAT32_ROUNDS_TO_ZERO

    at_the_boundary = float(np.finfo(np.float32).smallest_subnormal) / 2
    assert np.float32(at_the_boundary) == 0  # the reference: NumPy's own rounding
    cfg = _config_with("optim.eps", at_the_boundary)
    cfg.optim.name = "adam"
    with pytest.raises(ValueError, match=r"^optim\.eps=.* is 0 in float32"):
        validate(cfg)
    above = math.nextafter(FLOAT32_ROUNDS_TO_ZERO, 1.0)
    assert np.float32(above) != 0
    cfg.optim.eps = above
    validate(cfg)


def test_a_value_float32_rounds_to_inf_is_refused_and_one_it_rounds_to_its_largest_is_accepted():
    """Halfway from float32's largest value to the next power of 2 rounds (to even) to inf: refused, as every
    larger value is; the float just below it rounds to float32's largest, a finite number, and is accepted."""
    import warnings

    import numpy as np

    from nnresearch.config import FLOAT32_ROUNDS_TO_INF

    below = math.nextafter(FLOAT32_ROUNDS_TO_INF, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy warns of the overflow it is asked to show
        assert np.isinf(np.float32(FLOAT32_ROUNDS_TO_INF))  # the references: NumPy's own rounding
    assert np.float32(below) == np.finfo(np.float32).max and below > float(np.finfo(np.float32).max)
    cfg = _config_with("optim.lr", FLOAT32_ROUNDS_TO_INF)
    with pytest.raises(ValueError, match=r"^optim\.lr=.* is inf in float32"):
        validate(cfg)
    cfg.optim.lr = below
    validate(cfg)


def test_float32_s_range_does_not_bind_a_float64_run(compose):
    """1e39 is inf in float32 only: a float64 run may use it (its eps as small as 1e-50 too)."""
    validate(compose(["trainer.dtype=float64", "optim.lr=1e39"]))
    validate(compose(["trainer.dtype=float64", "optim=adam", "optim.eps=1e-50"]))


# --------------------------------------------------------------------------------------------
# Values at their bounds


def test_batch_size_zero_is_refused(compose):
    with pytest.raises(ValueError, match="trainer.batch_size=0 is out of range"):
        validate(compose(["trainer.batch_size=0"]))


def test_exactly_min_per_class_examples_per_class_is_accepted(compose):
    """6 binary examples, 3 per class, thirds: splits of 2, 2, 2 fit."""
    validate(compose(["data=xor", "data.n_samples=6", "data.val_fraction=0.33", "data.test_fraction=0.33"]))


def test_a_normal_init_with_std_zero_is_refused(compose):
    """init_std must be > 0, not >= 0."""
    with pytest.raises(ValueError, match="model.init_std=0.0 is out of range"):
        validate(compose(["model.init=normal", "model.init_std=0.0"]))
