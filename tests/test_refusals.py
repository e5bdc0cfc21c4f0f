"""What used to escape `validate` and crash a run (or job N of a sweep) is refused before any run exists.

Each is refused with the key and what is allowed, so a single run prints one line (`refused, no run
created: ...`, exit status 2) and a grid sweep is refused before its first job (`sweep refused before
any run started`):

1. `data.n_samples` too few for the train / val / test split (`nnresearch.data.splits`): `validate`;
2. `trainer.device=gpu` where CuPy is missing or sees no CUDA device: `check_machine`, which the grid
   sweeper runs only where the launcher runs the jobs on this machine;
3. `trainer.resume` naming a missing file, or a checkpoint written with other settings: `check_machine`;
4. a model setting the chosen model (or activation) does not read, such as `model=logistic model.depth=3`:
   `validate`;
5. what only the data tell (more samples than a bundled set has, a head unfit for the targets' values):
   `experiment.RefusedBeforeRun`, raised before the job's MLflow run is opened.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from test_cli import count_runs

from nnresearch import backend, experiment, stores
from nnresearch.config import (
    MODEL_FIELDS,
    MODELS,
    Config,
    DataConfig,
    ModelConfig,
    _classes,
    _least_samples,
    _schema_fields,
    check_machine,
    compose,
    validate,
)
from nnresearch.data import DATASETS, load_dataset
from nnresearch.paths import CONFIG_DIR

QUIET = ["trainer.progress=false"]
SMALL = ["data.n_samples=60", "model.width=8", "trainer.epochs=1", *QUIET]


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without CuPy or a CUDA device, whatever it has."""
    monkeypatch.setattr(backend, "gpu_available", lambda: False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of `SMALL` after its one epoch, written through the command line's code path."""
    folder = tmp_path_factory.mktemp("checkpoint")
    experiment.execute(validate(compose([*SMALL, "trainer.checkpoint_every=1", "tracking=off"])), output_dir=folder)
    return folder / "checkpoints" / "epoch00001.npz"


# --------------------------------------------------------------------------------------------
# 1. Too few samples to split


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.n_samples=3"], "data.n_samples=3 is out of range for data=moons split by data.val_fraction=0.2 and "
                           "data.test_fraction=0.2; expected data.n_samples >= 8"),
    (["data=spirals", "data.n_samples=12"], "data.n_samples=12 is out of range for data=spirals"),
    (["data=spirals", "data.n_classes=5", "data.n_samples=20"], "expected data.n_samples >= 23"),
    (["data=digits", "data.n_samples=47"], "expected data.n_samples >= 48"),
    (["data=sine", "data.n_samples=3"], "expected data.n_samples >= 4"),
    (["data.n_samples=20", "data.val_fraction=0.05"], "expected data.n_samples >= 30"),
    (["data.val_fraction=0.001"], "data.n_samples=1000 is out of range for data=moons split by data.val_fraction=0.001"),
])
def test_too_few_samples_to_split_are_refused_with_the_least_count(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate(compose(overrides))


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("fractions", [(0.2, 0.2), (0.1, 0.3)])
def test_the_least_count_validate_names_is_the_least_the_data_set_splits(name, fractions):
    """At the least count validate accepts, the data set loads; one fewer, both refuse it."""
    val_fraction, test_fraction = fractions
    d = DataConfig(name=name, val_fraction=val_fraction, test_fraction=test_fraction)
    least = _least_samples(_classes(d), val_fraction, test_fraction)
    cfg = Config()
    cfg.data = DataConfig(name=name, n_samples=least, val_fraction=val_fraction, test_fraction=test_fraction)
    validate(cfg)
    load_dataset(name, n_samples=least, val_fraction=val_fraction, test_fraction=test_fraction)
    cfg.data.n_samples = least - 1
    with pytest.raises(ValueError, match=rf"^data\.n_samples={least - 1} is out of range"):
        validate(cfg)
    with pytest.raises(ValueError, match="n_samples"):
        load_dataset(name, n_samples=least - 1, val_fraction=val_fraction, test_fraction=test_fraction)


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.batch_size=1"], "trainer.batch_size=1 with model.batchnorm=true: a batch of one example has variance 0"),
    (["trainer.batch_size=599"], "trainer.batch_size=599 with model.batchnorm=true leaves the 600 training examples a "
                                 "last batch of one, whose variance is 0 (BatchNorm trains nothing on it); use another "
                                 "batch size, e.g. 600"),
    (["data=digits", "trainer.batch_size=1"], "trainer.batch_size=1 with model.batchnorm=true"),
])
def test_a_batchnorm_batch_of_one_example_is_refused(overrides, message):
    """BatchNorm's variance of one example is 0: its output is beta whatever the input (PyTorch refuses it too)."""
    with pytest.raises(ValueError, match=re.escape(message)):
        validate(compose(["model.batchnorm=true", *overrides]))
    validate(compose(overrides))  # without BatchNorm the same batches are fine


def test_batchnorm_without_a_hidden_layer_to_normalize_refuses_no_batch_size():
    validate(compose(["model.depth=0", "model.batchnorm=true", "trainer.batch_size=1"]))


def test_a_batchnorm_batch_of_one_known_only_once_the_data_load_is_refused_before_the_run(mlflow_uri, tmp_path,
                                                                                         monkeypatch, main_in_process):
    """digits' size (1,797: 1,079 to train) is known once loaded: batches of 77 leave one example."""
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process("data=digits", "model.batchnorm=true", "trainer.batch_size=77", *QUIET,
                                     f"tracking.uri={mlflow_uri}", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2, out + err
    assert err.startswith("refused, no run created: trainer.batch_size=77 with model.batchnorm=true leaves the 1079 "
                          "training examples a last batch of one"), err
    assert count_runs(Path(mlflow_uri.removeprefix("sqlite:///"))) == 0
    assert not (tmp_path / "run").exists(), "refused before Hydra creates the run's folder (callbacks.RunCheck)"


def test_a_data_option_the_data_set_does_not_take_is_refused():
    with pytest.raises(ValueError, match=r"^data\.noise=0\.1 has no effect with data=digits; it is used by data=xor"):
        validate(compose(["data=digits", "data.noise=0.1"]))
    with pytest.raises(ValueError, match=r"^data\.n_classes=3 has no effect with data=moons"):
        validate(compose(["data.n_classes=3"]))


# --------------------------------------------------------------------------------------------
# 2. trainer.device=gpu without a GPU


def test_gpu_without_one_is_refused_and_auto_falls_back(no_gpu):
    with pytest.raises(ValueError, match=r"^trainer\.device=gpu is not available here.*allowed values on this machine: "
                                         r"cpu, auto"):
        check_machine(validate(compose(["trainer.device=gpu"])))
    check_machine(validate(compose(["trainer.device=auto"])))


def test_only_device_gpu_asks_for_cupy(monkeypatch):
    """Validating stays cheap: CuPy is imported (by `gpu_available`) for device=gpu alone."""
    def no_cupy_here() -> bool:
        raise AssertionError("gpu_available was called")

    monkeypatch.setattr(backend, "gpu_available", no_cupy_here)
    for device in ("cpu", "auto"):
        check_machine(validate(compose([f"trainer.device={device}"])))
    monkeypatch.setattr(backend, "gpu_available", lambda: True)
    check_machine(validate(compose(["trainer.device=gpu"])))


def test_a_config_logged_on_a_gpu_machine_validates_on_one_without(no_gpu):
    """`validate` is the config's own check: the analyses validate a run's logged config.yaml on any
    machine, a GPU run's or a resumed run's included; only starting a run asks the machine."""
    validate(compose(["trainer.device=gpu", "trainer.resume=/on/another/machine.npz"]))


# --------------------------------------------------------------------------------------------
# 3. trainer.resume that cannot be continued


def test_a_missing_checkpoint_is_refused():
    with pytest.raises(ValueError, match=r"^trainer\.resume: no checkpoint at /nonexistent\.npz \(no such file\)"):
        check_machine(validate(compose(["trainer.resume=/nonexistent.npz"])))


def test_a_folder_given_as_checkpoint_is_refused_as_a_folder(tmp_path):
    """`trainer.resume=<output dir>/checkpoints` (the folder, not one file in it) said "no such file"."""
    with pytest.raises(ValueError, match=rf"^trainer\.resume: no checkpoint at {re.escape(str(tmp_path))} "
                                         r"\(a folder, not a checkpoint file\)"):
        check_machine(validate(compose([f"trainer.resume={tmp_path}"])))


def test_a_checkpoint_with_other_settings_or_no_epoch_left_is_refused(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=rf"^trainer\.resume: {re.escape(str(checkpoint))} was written with other "
                                         r"settings than this run: model\.width=8 \(this run: 16\)"):
        check_machine(validate(compose([*SMALL, "model.width=16", "trainer.epochs=3", f"trainer.resume={checkpoint}"])))
    with pytest.raises(ValueError, match=r"has 1 finished epochs and trainer\.epochs=1: nothing left to train"):
        check_machine(validate(compose([*SMALL, f"trainer.resume={checkpoint}"])))
    foreign = tmp_path / "weights.npz"
    np.savez(foreign, W1=np.zeros(3))
    with pytest.raises(ValueError, match=r"^trainer\.resume: .*weights\.npz is not an nnresearch checkpoint"):
        check_machine(validate(compose([*SMALL, f"trainer.resume={foreign}"])))
    check_machine(validate(compose([*SMALL, "trainer.epochs=3", f"trainer.resume={checkpoint}"])))


@pytest.mark.parametrize("overrides", [[], ["optim.schedule=cosine"], ["model=cnn1d", "data=mnist1d"],
                                       ["model.widths=[8,4]"]])
def test_validate_compares_the_settings_a_checkpoint_stores(overrides):
    """What validate compares a checkpoint's settings with is what `experiment.resume_settings` stores."""
    cfg = validate(compose(overrides))
    flat = {key: str(value) for key, value in _schema_fields(cfg)}
    stored = experiment.resume_settings(cfg)
    assert {key: flat[key] for key in stored} == stored


# --------------------------------------------------------------------------------------------
# 4. Model settings the chosen model or activation does not read


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=logistic", "model.depth=3"],
     "model.depth=3 has no effect with model=logistic; it is used by model=mlp, residual_mlp (drop model.depth"),
    (["model=logistic", "model.activation=tanh"], "model.activation=tanh has no effect with model=logistic"),
    (["model=cnn1d", "model.width=32"], "model.width=32 has no effect with model=cnn1d; it is used by model=mlp, residual_mlp"),
    (["model=cnn1d", "model.batchnorm=true"], "model.batchnorm=True has no effect with model=cnn1d"),
    (["model=mlp", "model.kernel_size=3"], "model.kernel_size=3 has no effect with model=mlp; it is used by model=cnn1d"),
    (["model=residual_mlp", "model.widths=[8,8]"], "model.widths=[8, 8] has no effect with model=residual_mlp"),
    (["model=softmax_regression", "data=digits", "model.width=8"], "model.width=8 has no effect with model=softmax_regression"),
    (["model.alpha=0.2"], "model.alpha=0.2 has no effect with model.activation=relu; it is used by "
                          "model.activation=leaky_relu"),
    (["model.activation=tanh", "model.alpha=0.1"], "model.alpha=0.1 has no effect with model.activation=tanh"),
])
def test_a_model_setting_the_chosen_model_ignores_is_refused(overrides, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        validate(compose(overrides))


@pytest.mark.parametrize("overrides", [
    ["model=logistic"], ["model=cnn1d"], ["model=residual_mlp"], ["model=softmax_regression", "data=digits"],
    ["model=logistic", "model.depth=2"],  # the schema's default: nothing was asked for
    ["model.name=cnn1d"],  # the mlp's depth 2 kept: the schema's default
    ["model=cnn1d", "model.activation=leaky_relu", "model.alpha=0.2"],
    ["model.activation=leaky_relu", "model.alpha=0.3", "model.widths=[8,4]", "model.batchnorm=true"],
    ["model=residual_mlp", "model.depth=3", "model.width=16", "model.batchnorm=true"],
])
def test_the_settings_a_model_reads_are_accepted(overrides):
    validate(compose(overrides))


def test_model_fields_cover_every_model_and_its_own_config():
    """`MODEL_FIELDS` names every model, each has its conf/model/<name>.yaml, and only model fields."""
    assert set(MODEL_FIELDS) == set(MODELS) == {path.stem for path in (CONFIG_DIR / "model").glob("*.yaml")}
    names = {field for field in inspect.signature(ModelConfig).parameters}
    assert {field for used in MODEL_FIELDS.values() for field in used} <= names


# --------------------------------------------------------------------------------------------
# The command line: one line and exit status 2 for a single run, a refused sweep, no run either way


BAD = {
    # id: (the override that is refused, a word of the refusal)
    "too_few_samples": ("data.n_samples=3", "data.n_samples=3 is out of range"),
    "gpu_without_one": ("trainer.device=gpu", "trainer.device=gpu is not available here"),
    "missing_checkpoint": ("trainer.resume=/nonexistent.npz", "no checkpoint at /nonexistent.npz"),
    "setting_the_model_ignores": ("model.alpha=0.5", "model.alpha=0.5 has no effect with model.activation=relu"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_single_run_is_refused_in_one_line_before_its_run_exists(case, no_gpu, mlflow_uri, tmp_path, monkeypatch,
                                                                  main_in_process):
    monkeypatch.chdir(tmp_path)
    override, words = BAD[case]
    code, out, err = main_in_process(*SMALL, override, f"tracking.uri={mlflow_uri}", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2, out + err
    assert err.startswith("refused, no run created:") and words in err and "Traceback" not in err, err
    assert count_runs(Path(mlflow_uri.removeprefix("sqlite:///"))) == 0
    assert not (tmp_path / "run").exists(), "refused before Hydra creates the run's folder (callbacks.RunCheck)"


def test_a_single_run_resuming_a_checkpoint_of_other_settings_is_refused_in_one_line(checkpoint, mlflow_uri, tmp_path,
                                                                                    monkeypatch, main_in_process):
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*SMALL, "optim.lr=0.05", "trainer.epochs=2", f"trainer.resume={checkpoint}",
                                     f"tracking.uri={mlflow_uri}", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2, out + err
    assert err.startswith("refused, no run created: trainer.resume:") and "optim.lr=0.1 (this run: 0.05)" in err, err
    assert count_runs(Path(mlflow_uri.removeprefix("sqlite:///"))) == 0


@pytest.mark.parametrize("overrides, words", [
    (["data=digits", "data.n_samples=5000"], "n_samples=5000 for 'digits'; expected between 10 (one per class) and 1797"),
    (["data=sine", "model.head=sigmoid_bce"], "model.head=sigmoid_bce cannot fit data.name=sine"),
])
def test_what_only_the_data_tell_is_refused_in_one_line_before_the_run_exists(overrides, words, mlflow_uri, tmp_path,
                                                                              monkeypatch, main_in_process):
    """Data that cannot be made as configured, or a head unfit for their values, show only once the
    data are made (`experiment.RefusedBeforeRun`): still one line, exit status 2 and no run."""
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process(*overrides, *QUIET, "trainer.epochs=1", f"tracking.uri={mlflow_uri}",
                                     f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 2, out + err
    assert err.startswith("refused, no run created:") and words in err and "Traceback" not in err, err
    assert count_runs(Path(mlflow_uri.removeprefix("sqlite:///"))) == 0


SWEEPS = {
    # id: (sweep overrides, the refused job and its reason)
    "too_few_samples": (["data.n_samples=1000,3"], "job 1 of 2 (data.n_samples=3): data.n_samples=3 is out of range"),
    "gpu_without_one": (["trainer.device=cpu,gpu"], "job 1 of 2 (trainer.device=gpu): trainer.device=gpu is not available"),
    "missing_checkpoint": (["trainer.seed=0,1", "trainer.resume=/nonexistent.npz"], "job 0 of 2"),
    "setting_the_model_ignores": (["model=mlp,logistic", "model.depth=3"],
                                  "job 1 of 2 (model=logistic): model.depth=3 has no effect with model=logistic"),
    "gpu_without_one_in_parallel": (["trainer.device=cpu,gpu", "hydra/launcher=joblib"], "job 1 of 2 (trainer.device=gpu)"),
    "head_unfit_for_regression_targets": (["data=moons,sine", "model.head=sigmoid_bce"],
                                          "job 1 of 2 (data=sine): model.head=sigmoid_bce cannot fit data.name=sine"),
    "samples_beyond_digits": (["data=digits", "data.n_samples=100,5000"],  # digits' 1,797: known once loaded
                              "job 1 of 2 (data.n_samples=5000): n_samples=5000 for 'digits'"),
    "train_size_beyond_digits": (["data=digits", "data.train_size=1000,1080"],  # digits' size is known once loaded
                                 "job 1 of 2 (data.train_size=1080): train_size=1080 for 'digits' is out of range; "
                                 "expected 10 <= train_size <= 1079"),
    "batchnorm_batch_of_one_in_digits": (["data=digits", "model.batchnorm=true", "trainer.batch_size=77,64"],
                                         "job 0 of 2 (trainer.batch_size=77): trainer.batch_size=77 with "
                                         "model.batchnorm=true leaves the 1079 training examples a last batch of one"),
}


@pytest.mark.parametrize("case", SWEEPS)
def test_a_sweep_with_one_bad_job_is_refused_before_any_run_exists(case, no_gpu, tmp_path, monkeypatch, main_in_process):
    monkeypatch.chdir(tmp_path)
    overrides, words = SWEEPS[case]
    code, out, err = main_in_process("-m", *overrides, *SMALL[1:], f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2, out + err
    assert "sweep refused before any run started" in err and words in err, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.parametrize(("uri", "words"), [
    ("http://127.0.0.1:1", "no MLflow tracking server answers at http://127.0.0.1:1"),
    ("htp://127.0.0.1:5000", "tracking uri 'htp://127.0.0.1:5000' has the scheme 'htp', which no MLflow store has; did you mean http://?"),
])
def test_a_sweep_into_a_store_it_cannot_use_is_refused_before_any_run_exists(uri, words, tmp_path, monkeypatch,
                                                                            main_in_process):
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process("-m", "trainer.seed=0,1", *SMALL[1:], f"tracking.uri={uri}")
    assert code == 2, out + err
    assert err.startswith(f"sweep refused before any run started: {words}") and "Traceback" not in err, err
    assert "job" not in err, "a store every job uses is the sweep's, not its first job's"
    assert not (tmp_path / "multirun").exists()


def test_a_store_only_some_jobs_use_is_refused_naming_those_jobs(tmp_path, monkeypatch, main_in_process):
    monkeypatch.chdir(tmp_path)
    code, out, err = main_in_process("-m", "trainer.seed=0,1", f"tracking.uri=sqlite:///{tmp_path / 'm.db'},http://127.0.0.1:1",
                                     *SMALL[1:])
    assert code == 2, out + err
    assert err.startswith("sweep refused before any run started: jobs 1, 3 of 4: no MLflow tracking server answers at "
                          "http://127.0.0.1:1"), err
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "multirun").exists()


def test_a_sweep_for_other_machines_is_not_refused_for_this_one_s(no_gpu, capsys):
    """A Slurm sweep started from a login node without a GPU: its jobs ask their own node (`check_machine`
    in each job), so the check before the first starts leaves the GPU and the checkpoints out."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from nnresearch.callbacks import refuse_bad_jobs
    from nnresearch.config import register

    register()
    job = ["trainer.device=gpu", "trainer.resume=/on/the/cluster.npz"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for launcher in ("slurm", "joblib", "submitit_local"):
            master = loader.load_configuration("config", overrides=[f"hydra/launcher={launcher}"], run_mode=RunMode.MULTIRUN)
            if launcher == "slurm":
                refuse_bad_jobs(loader, master, [job])
            else:
                with pytest.raises(SystemExit):
                    refuse_bad_jobs(loader, master, [job])
    err = capsys.readouterr().err
    assert err.count("sweep refused before any run started: job 0 of 1") == 2 and "trainer.device=gpu is not available" in err


@pytest.mark.parametrize(("make", "words"), [
    (lambda path: path.mkdir(), "is not an MLflow store (not a file)"),
    (lambda path: path.write_text("my notes"), "is not an MLflow store (not a SQLite database)"),
])
def test_a_store_path_holding_something_else_is_refused_before_any_folder(make, words, tmp_path, monkeypatch,
                                                                          main_in_process):
    """A folder or another file where the SQLite store should be: refused in one line, left as it was
    (it was a 170-line SQLAlchemy traceback after Hydra had made outputs/). An empty file is let through:
    MLflow makes the store in it."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "store.db"
    make(target)
    code, out, err = main_in_process(*SMALL, f"tracking.uri=sqlite:///{target}")
    assert code == 2 and err.startswith("refused, no run created: ") and words in err and "Traceback" not in err, err
    assert not (tmp_path / "outputs").exists()
    assert target.is_dir() or target.read_text() == "my notes"


@pytest.mark.parametrize(("tables", "refused"), [
    ((), False),  # a database MLflow has opened but not yet written to
    (("experiments",), False),  # MLflow's first table: another job is making the store now
    (("experiments", "runs", "metrics"), False),
    (("notes",), True),  # another program's database
])
def test_a_store_another_job_is_making_is_not_refused(tables, refused, tmp_path):
    """Two jobs of a joblib sweep start on a store that does not exist yet: one makes it under the store's
    lock, table by table, while the other checks it (`check_store`) before it waits for that lock. Seen
    half-made, the store was refused as "a SQLite database without MLflow's tables", which failed the
    sweep; another program's database still is."""
    db = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("PRAGMA user_version = 1")  # the header is written even with no table
        for table in tables:
            connection.execute(f"CREATE TABLE {table} (id INTEGER)")
    uri = f"sqlite:///{db}"
    if refused:
        with pytest.raises(stores.UnreadableStoreError, match="a SQLite database without MLflow's tables"):
            stores.check_store(uri)
    else:
        assert stores.check_store(uri) == uri
    with pytest.raises(stores.UnreadableStoreError, match="without MLflow's tables"):
        stores.check_readable_store(uri)  # reading needs a whole store


@pytest.mark.parametrize("size", ["model.widths=[10000,10000000000000]", "data.n_samples=1000000000000000"])
def test_a_run_too_big_for_memory_is_refused_in_one_line(size, tmp_path, monkeypatch, main_in_process):
    """A network or data set NumPy cannot allocate (10^16 weights, 10^15 examples: petabytes, more than
    any address space holds) was a MemoryError traceback; now one line naming the array, exit 2, no run.
    The first layer is small, so the refusal comes before gigabytes are drawn."""
    monkeypatch.chdir(tmp_path)
    small = [arg for arg in SMALL if not arg.startswith("model.width=")]
    code, out, err = main_in_process(*small, size, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2 and "Traceback" not in err, err  # MLflow's lines on making the store come first
    assert err.splitlines()[-1].startswith("refused, no run created: the data and network of this run do not fit in "
                                           "memory (Unable to allocate")
    assert count_runs(tmp_path / "mlflow.db") == 0
