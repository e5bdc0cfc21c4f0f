"""`nnresearch.composition.ComposeOncePerChoice`: a sweep's job configs, composed once per choice of
config groups, must equal those Hydra composes for every job from scratch, `hydra` node included."""

import copy
import pickle

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.errors import HydraException
from omegaconf import OmegaConf

from nnresearch import composition
from nnresearch.callbacks import sweep_jobs, sweep_size
from nnresearch.composition import ComposeOncePerChoice


@pytest.fixture
def hydra_loader():
    """Hydra's own loader over conf/, as `python -m nnresearch.run` builds it."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nnresearch.config import register
    from nnresearch.paths import CONFIG_DIR

    register()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def master_config(loader, sweep):
    from hydra.types import RunMode

    return loader.load_configuration("config", overrides=sweep, run_mode=RunMode.MULTIRUN)


def jobs_of(loader, master):
    task, params = list(master.hydra.overrides.task), dict(master.hydra.sweeper.get("params") or {})
    jobs = sweep_jobs(task, params, loader)
    assert len(jobs) == sweep_size(task, params) > 1
    return jobs


def as_hydra_composes(loader, master, overrides):
    return OmegaConf.to_container(loader.load_sweep_config(master, overrides))


@pytest.mark.parametrize("sweep", [
    ["model.depth=1,2", "optim.lr=0.1,0.01", "trainer.epochs=3"],
    ["model=mlp,residual_mlp", "data=moons,spirals", "model.width=8,16", "+model.widths=[4,4]"],
    ["experiment=mitigations"],  # a @package _global_ config with its own sweeper params and group choices
    ["experiment=initialization", "profile=quick", "trainer.seed=0,1"],
    ["optim.clip_norm=null,1.0", "hydra.job.config.override_dirname.exclude_keys=[trainer.seed]", "trainer.seed=0,1"],
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+hydra.job.env_set.TEAM=a", "optim.lr=0.1,0.2"],
    ["trainer.seed=0,1", "hydra.sweep.subdir=${hydra.job.override_dirname}"],  # a hydra override Hydra keeps unresolved
    ["trainer.seed=0,1", "trainer={seed: 5}"],  # a later override of the same value wins, as in Hydra's order
    ["optim.lr=0.1,0.2", "++optim={lr: 0.5}", "trainer.seed=0,1"],
])
def test_each_job_is_composed_as_hydra_composes_it(hydra_loader, sweep):
    master = master_config(hydra_loader, sweep)
    reusing = ComposeOncePerChoice(hydra_loader)
    for overrides in jobs_of(hydra_loader, master):
        job = reusing.load_sweep_config(master, overrides)
        assert OmegaConf.to_container(job) == as_hydra_composes(hydra_loader, master, overrides), overrides
        assert OmegaConf.is_struct(job) and not OmegaConf.is_readonly(job.hydra)


def test_hydra_composes_once_per_choice_of_groups_and_every_job_gets_its_own_copy(hydra_loader, monkeypatch):
    master = master_config(hydra_loader, ["optim=sgd,adam", "optim.lr=0.1,0.01,0.001"])
    composed = []
    real = ConfigLoaderImpl.load_sweep_config
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config",
                        lambda self, master, overrides: composed.append(list(overrides)) or real(self, master, overrides))
    reusing = ComposeOncePerChoice(hydra_loader)
    configs = [reusing.load_sweep_config(master, overrides) for overrides in jobs_of(hydra_loader, master)]
    assert composed == [["optim=sgd"], ["optim=adam"]]
    assert [(c.optim.name, c.optim.lr) for c in configs] == [(o, lr) for o in ("sgd", "adam") for lr in (0.1, 0.01, 0.001)]
    configs[0].trainer.seed = 99
    assert reusing.load_sweep_config(master, ["optim=sgd", "optim.lr=0.1"]).trainer.seed != 99


def test_a_job_in_another_process_composes_its_choice_once_there(hydra_loader, monkeypatch):
    """What joblib or submitit hands each job: the loader and the sweep's name, no compositions
    (they would grow as jobs x choices); each process then composes each choice once."""
    master = master_config(hydra_loader, ["trainer.seed=0,1,2"])
    jobs = jobs_of(hydra_loader, master)
    reusing = ComposeOncePerChoice(hydra_loader)
    reusing.load_sweep_config(master, jobs[0])
    state = pickle.dumps(reusing)
    assert reusing.composed and len(state) < len(pickle.dumps(hydra_loader)) + 200  # Hydra's loader and a name
    monkeypatch.setattr(composition, "_IN_THIS_PROCESS", {"sweep": None, "composed": {}, "repository": None})
    composed = []
    real = ConfigLoaderImpl.load_sweep_config
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config",
                        lambda self, master, overrides: composed.append(list(overrides)) or real(self, master, overrides))
    for overrides in jobs[1:]:  # each job unpickles its own copy of the loader, as in a worker
        in_worker = pickle.loads(state)
        assert OmegaConf.to_container(in_worker.load_sweep_config(master, overrides)) == \
            as_hydra_composes(hydra_loader, master, overrides)
    assert composed.count([]) == 1  # the choice (no group: the empty one) once for both jobs; the rest are the comparisons


def test_composing_resolves_nothing_in_the_master_config(hydra_loader):
    """Looking up whether a swept key holds a plain value must not resolve it: a `${now:...}`
    resolved then would be cached in the master config and copied into every job."""
    master = master_config(hydra_loader, ["trainer.seed=0,1"])
    master.study = "${now:%H-%M-%S-%f}"  # as a config file may set it
    before = OmegaConf.to_container(master), copy.deepcopy(master._metadata.resolver_cache)
    ComposeOncePerChoice(hydra_loader).load_sweep_config(master, ["study=a", "trainer.seed=0"])
    assert (OmegaConf.to_container(master), master._metadata.resolver_cache) == before


@pytest.mark.parametrize("bad", [["model.no_such_key=1"], ["+model.depth=3"], ["~model.no_such_key"], ["optim.lr=0.1,0.2"],
                                 ["optim.lr=abc", "model.no_such_key=1"]])  # two bad ones: Hydra names the first
def test_a_bad_override_fails_as_it_fails_in_hydra(hydra_loader, bad):
    master = master_config(hydra_loader, ["trainer.seed=0,1"])
    with pytest.raises(HydraException) as hydra_error:
        hydra_loader.load_sweep_config(master, ["trainer.seed=0", *bad])
    with pytest.raises(HydraException) as error:
        ComposeOncePerChoice(hydra_loader).load_sweep_config(master, ["trainer.seed=0", *bad])
    assert (type(error.value), str(error.value)) == (type(hydra_error.value), str(hydra_error.value))


def test_a_group_found_through_the_sweeps_search_path_is_composed_by_hydra(hydra_loader, tmp_path):
    """A user's own configs added with `hydra.searchpath` are groups too, though Hydra's base
    repository does not know them: their overrides are choices, never plain values, even where
    the group shares its name with a value (`study`)."""
    (tmp_path / "optim").mkdir()
    (tmp_path / "optim" / "fast_sgd.yaml").write_text("defaults:\n  - sgd\n  - _self_\nlr: 0.5\n")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "long.yaml").write_text("# @package _global_\nstudy: long\ntrainer:\n  epochs: 9\n")
    (tmp_path / "objective").mkdir()  # a group with no options yet: Hydra refuses `objective=...` all the same
    (tmp_path / "objective" / "README.md").write_text("options to come\n")
    master = master_config(hydra_loader, [f"hydra.searchpath=[file://{tmp_path}]", "optim=sgd,fast_sgd", "+study=long"])
    reusing = ComposeOncePerChoice(hydra_loader)
    for overrides in jobs_of(hydra_loader, master):
        assert OmegaConf.to_container(reusing.load_sweep_config(master, overrides)) == \
            as_hydra_composes(hydra_loader, master, overrides), overrides
    job = reusing.load_sweep_config(master, ["optim=fast_sgd", "+study=long"])
    assert (job.optim.lr, job.study, job.trainer.epochs) == (0.5, "long", 9)
    with pytest.raises(HydraException) as hydra_error:
        hydra_loader.load_sweep_config(master, ["objective=val/acc"])
    with pytest.raises(HydraException) as error:
        reusing.load_sweep_config(master, ["objective=val/acc"])
    assert str(error.value) == str(hydra_error.value)


def test_a_job_shares_the_masters_resolved_values_as_hydra_s_job_does(hydra_loader):
    """Hydra copies the master config's resolver cache into each job, so a cached resolver (`${now:...}`
    in `hydra.sweep.dir`) gives every job the master's value, also when its choice was composed before the
    master resolved it; a counting resolver shows it without a clock."""
    calls = []
    OmegaConf.register_new_resolver("counted", lambda: calls.append(1) or len(calls), use_cache=True)
    try:
        master = master_config(hydra_loader, ["trainer.seed=0,1", "hydra.sweep.dir=sweeps/${counted:}"])
        reusing = ComposeOncePerChoice(hydra_loader)
        reusing.load_sweep_config(master, ["trainer.seed=0"])  # the choice composed before the master resolved it
        assert master.hydra.sweep.dir == "sweeps/1"  # resolved once in the launching process, and cached
        hydra_job = hydra_loader.load_sweep_config(master, ["trainer.seed=1"])
        job = reusing.load_sweep_config(master, ["trainer.seed=1"])
        assert (job.hydra.sweep.dir, hydra_job.hydra.sweep.dir, len(calls)) == ("sweeps/1", "sweeps/1", 1)
    finally:
        OmegaConf.clear_resolver("counted")


def test_a_job_s_own_hydra_override_stays_out_of_its_task_overrides_as_in_hydra(hydra_loader):
    master = master_config(hydra_loader, ["trainer.seed=0,1"])
    overrides = ["trainer.seed=1", "hydra.job.name=other"]
    job = ComposeOncePerChoice(hydra_loader).load_sweep_config(master, overrides)
    assert OmegaConf.to_container(job) == as_hydra_composes(hydra_loader, master, overrides)
    assert list(job.hydra.overrides.task) == ["trainer.seed=1"]
