"""Compose a sweep's jobs once per choice of config groups (`ComposeOncePerChoice`).

Hydra composes every job of a sweep from scratch (`ConfigLoader.load_sweep_config`: search path,
defaults list, one YAML merge per group; ~70-120 ms a job), although the jobs of a grid differ
mostly in plain values (`optim.lr=0.1`, `trainer.seed=3`). The grid sweeper
(`hydra_plugins.nnresearch_sweeper`) hands its check and its launcher this loader instead: Hydra
composes each distinct choice once per process (the launching one, and each joblib worker), and
each job's config is a copy of that with the job's plain
values applied as Hydra applies them after composing the defaults, and the `hydra.overrides.task`
list and `hydra.job.override_dirname` Hydra would have set. The configs are equal to Hydra's
(tests/test_composition.py compares them, `hydra` node included), and so are the errors.

An override counts as a plain value only where that is certain: it is not a sweep, a `hydra.*`
override, a group (as Hydra's repository, with the sweep's search path, knows them) or a
`@package` override; its key names a value in the sweep's master config, not a node nor an
interpolation (read without resolving it: `${now:...}` stays unresolved); and no override after
it is one that Hydra applies to the config (it would be applied after it in Hydra's order).
Everything else is part of the choice that Hydra composes.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, ValueNode


# This process's compositions, of one sweep at a time: the launching process's check and the basic
# launcher share them, and each joblib worker keeps what its earlier jobs composed.
_IN_THIS_PROCESS: dict[str, Any] = {"sweep": None, "composed": {}, "repository": None}


class ComposeOncePerChoice(ConfigLoader):
    """A `ConfigLoader` that composes a sweep's jobs once per choice of config groups in each
    process (see the module); everything else is delegated to Hydra's loader, `loader`.

    It pickles as Hydra's loader and the sweep's name, without compositions (carrying them to
    every job would grow as jobs x choices): a job in another process (joblib, submitit) finds
    those its process already made for the sweep, or composes its choice there, as Hydra does.
    """

    def __init__(self, loader: ConfigLoader, sweep: str | None = None) -> None:
        self.loader = loader
        self.sweep = sweep or uuid.uuid4().hex  # names this sweep's compositions in every process

    def __getstate__(self) -> dict[str, Any]:
        return {"loader": self.loader, "sweep": self.sweep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["loader"], state["sweep"])

    @property
    def composed(self) -> dict[tuple[str, ...], DictConfig]:
        """This sweep's compositions in this process, by choice."""
        return self._kept()["composed"]

    def _kept(self) -> dict[str, Any]:
        """What this process keeps for this sweep; an earlier sweep's compositions are dropped."""
        if _IN_THIS_PROCESS["sweep"] != self.sweep:
            _IN_THIS_PROCESS.update(sweep=self.sweep, composed={}, repository=None)
        return _IN_THIS_PROCESS

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        parsed = OverridesParser.create(self).parse_overrides(list(sweep_overrides))
        plain = self._plain_values(parsed, master_config)
        choice = tuple(override.input_line for override, is_plain in zip(parsed, plain) if not is_plain)
        if choice not in self.composed:
            self.composed[choice] = self.loader.load_sweep_config(master_config, list(choice))
        config = copy.deepcopy(self.composed[choice])
        ConfigLoaderImpl._apply_overrides_to_config([o for o, is_plain in zip(parsed, plain) if is_plain], config)
        task = [override for override in parsed if not override.is_hydra_override()]
        config.hydra.overrides.task = [override.input_line for override in task]
        dirname = config.hydra.job.config.override_dirname
        config.hydra.job.override_dirname = get_overrides_dirname(
            overrides=task, exclude_keys=list(dirname.exclude_keys), item_sep=dirname.item_sep, kv_sep=dirname.kv_sep)
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    def _plain_values(self, parsed: list[Override], master_config: DictConfig) -> list[bool]:
        """For each override, whether it is a plain value (see the module)."""
        repository = self._sweep_repository(master_config)
        plain = [False] * len(parsed)
        applied_after = False  # an override later in the list that Hydra applies to the config
        for index in reversed(range(len(parsed))):
            override = parsed[index]
            group = repository.group_exists(override.key_or_group)
            if not group and not applied_after and _names_a_value(override, master_config):
                plain[index] = True
            elif not group or isinstance(override.value(), dict):  # a dict on a group is a config override
                applied_after = True
        return plain

    def _sweep_repository(self, master_config: DictConfig) -> Any:
        """Hydra's config repository with the sweep's search path (`hydra.searchpath` included)."""
        kept = self._kept()
        if kept["repository"] is None:
            hydra_overrides = OmegaConf.to_container(master_config.hydra.overrides.hydra)  # unresolved, as Hydra reads them
            _, kept["repository"] = self.loader._parse_overrides_and_create_caching_repo(
                master_config.hydra.job.config_name, hydra_overrides)
        return kept["repository"]

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)


def _names_a_value(override: Override, master_config: DictConfig) -> bool:
    """Whether `override` sets one value that the master config has, neither a node nor an
    interpolation, looked up without resolving anything."""
    if override.is_hydra_override() or override.package is not None or override.is_sweep_override():
        return False
    node: Any = master_config
    for part in override.key_or_group.split("."):
        if not isinstance(node, DictConfig):
            return False
        node = node._get_node(part, validate_access=False, throw_on_missing_key=False)
    return isinstance(node, ValueNode) and not node._is_interpolation()
