"""Compose a sweep's jobs once per choice of config groups (`ComposeOncePerChoice`).

Hydra composes every job of a sweep from scratch (`ConfigLoader.load_sweep_config`: search path,
defaults list, one YAML merge per group; ~70-120 ms a job), although the jobs of a grid differ
mostly in plain values (`optim.lr=0.1`, `trainer.seed=3`). The grid sweeper
(`hydra_plugins.nnresearch_sweeper`) hands its launcher this loader instead: it has Hydra compose
each distinct choice of config groups once, and makes each job's config from a copy of that, with
the job's other overrides applied as Hydra applies them after composing the defaults, and the
`hydra.overrides.task` list and `hydra.job.override_dirname` Hydra would have set. The configs are
equal to Hydra's (tests/test_composition.py compares them, `hydra` node included).

An override counts as a plain value only where that is certain: its key is not a config group and
names a value (not a node) in the sweep's master config. Anything else (a group, `+key` for a key
the master config lacks, a `hydra.*` override) is part of the choice that Hydra composes.
"""

from __future__ import annotations

import pickle
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import Container, DictConfig, OmegaConf


_ABSENT = object()


class ComposeOncePerChoice(ConfigLoader):
    """A `ConfigLoader` that composes a sweep's jobs once per choice of config groups (see the
    module); everything else is delegated to Hydra's loader, `loader`.

    Each composition is kept pickled: unpickling is a quicker copy of a config than `deepcopy`,
    and the loader pickles cheaply with its compositions, so a job in another process (joblib,
    submitit) finds its choice already composed by the launching process's check of the batch.
    """

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.composed: dict[tuple[str, ...], bytes] = {}
        self._groups: dict[str, bool] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        parsed = OverridesParser.create(self).parse_overrides(list(sweep_overrides))
        is_value = [self._is_plain_value(override, master_config) for override in parsed]
        choice = tuple(override.input_line for override, value in zip(parsed, is_value) if not value)
        if choice not in self.composed:
            self.composed[choice] = pickle.dumps(self.loader.load_sweep_config(master_config, list(choice)))
        config = pickle.loads(self.composed[choice])
        ConfigLoaderImpl._apply_overrides_to_config([o for o, value in zip(parsed, is_value) if value], config)
        task = [override for override in parsed if not override.is_hydra_override()]
        config.hydra.overrides.task = [override.input_line for override in task]
        dirname = config.hydra.job.config.override_dirname
        config.hydra.job.override_dirname = get_overrides_dirname(
            overrides=task, exclude_keys=list(dirname.exclude_keys), item_sep=dirname.item_sep, kv_sep=dirname.kv_sep)
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    def _is_plain_value(self, override: Override, master_config: DictConfig) -> bool:
        if override.is_hydra_override() or override.package is not None:
            return False
        key = override.key_or_group
        node = OmegaConf.select(master_config, key, default=_ABSENT, throw_on_resolution_failure=False)
        if node is _ABSENT or isinstance(node, Container):
            return False
        if key not in self._groups:  # searched as Hydra searches, with the sweep's own search path
            self._groups[key] = bool(self.loader.get_group_options(
                key, results_filter=None, config_name=master_config.hydra.job.config_name,
                overrides=list(master_config.hydra.overrides.hydra)))
        return not self._groups[key]

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

