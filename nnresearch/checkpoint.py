"""Checkpoints: everything needed to continue a run exactly where it stopped, in one `.npz`.

Contents: the network state under its own names (`W1`, `b1`, ..., BatchNorm buffers), the
optimizer state as `optim/<key>`, the run's generator state (JSON, as a 0-d string array), the
number of finished epochs and the settings the numbers depend on (`settings`: flat config keys ->
values, JSON). Written atomically, read with `allow_pickle=False`; continuing from a checkpoint
gives bit-identical numbers to a run that was never interrupted (on NumPy).

Resuming is refused when the run's settings differ from the checkpoint's (the differing keys are
named): continuing with another batch size, learning rate or data set would silently mix two
runs. A checkpoint written without settings (before they were stored) is not checked.
`read_metadata` reads the epochs and settings alone, so `nnresearch.config.validate` refuses such
a resume before any run exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nnresearch import backend
from nnresearch.nn.network import Network, load_npz, save_npz

OPTIM_PREFIX = "optim/"
META = ("rng_state", "epoch", "settings")  # entries that are neither network nor optimizer state


def save_checkpoint(path: str | Path, network: Network, optimizer: Any, rng: np.random.Generator, epoch: int,
                    settings: Mapping[str, str] | None = None) -> Path:
    """Write the checkpoint of the state after `epoch` finished epochs, with the run's `settings`."""
    arrays = {name: backend.to_numpy(a) for name, a in network.state().items()}
    arrays |= {OPTIM_PREFIX + key: np.asarray(value) for key, value in optimizer.state_dict().items()}
    arrays["rng_state"] = np.asarray(json.dumps(rng.bit_generator.state))
    arrays["epoch"] = np.asarray(epoch)
    if settings is not None:
        arrays["settings"] = np.asarray(json.dumps(dict(settings), sort_keys=True))
    save_npz(path, arrays)
    return Path(path)


def load_checkpoint(path: str | Path, network: Network, optimizer: Any, rng: np.random.Generator,
                    settings: Mapping[str, str] | None = None) -> int:
    """Restore network, optimizer and generator from `path`; returns the number of finished epochs.

    A missing, truncated or foreign file, or one written with other `settings` than the ones given,
    raises a ValueError/FileNotFoundError naming it, and leaves the network and optimizer unchanged.
    """
    arrays = load_npz(path)
    _check_is_checkpoint(path, arrays.keys())
    generator_state, epoch = _checked_meta(path, arrays, type(rng.bit_generator))
    if settings is not None and "settings" in arrays:
        check_settings(path, _saved_settings(arrays), settings)
    optimizer_state = {k.removeprefix(OPTIM_PREFIX): v for k, v in arrays.items() if k.startswith(OPTIM_PREFIX)}
    network_state = {k: v for k, v in arrays.items() if not k.startswith(OPTIM_PREFIX) and k not in META}
    previous = optimizer.state_dict()
    try:
        optimizer.load_state_dict({k: (float(v) if v.ndim == 0 else v) for k, v in optimizer_state.items()}, like=network.params())
        network.load_state(network_state)  # checks every array before it changes any
    except (KeyError, ValueError) as error:
        optimizer.load_state_dict(previous, like=network.params())
        raise ValueError(f"{path} does not fit this run ({error}); resume it with the model and optim "
                         "settings it was written with") from error
    rng.bit_generator.state = generator_state
    return epoch


def _checked_meta(path: str | Path, arrays: Mapping[str, Any],
                  bit_generator: type[np.random.BitGenerator] = np.random.PCG64) -> tuple[dict[str, Any], int]:
    """The generator state and finished epochs a checkpoint holds, checked before anything is restored:
    the state is tried on a scratch `bit_generator` (the run's kind; `make_rng`'s by default). A damaged
    entry raises a ValueError naming the file."""
    try:
        state = json.loads(str(arrays["rng_state"]))
        bit_generator().state = state
        return state, int(arrays["epoch"])
    except (KeyError, TypeError, ValueError) as error:  # json's JSONDecodeError is a ValueError
        raise ValueError(f"{path} is a damaged checkpoint: its generator state or epoch cannot be read ({error}); "
                         "resume from another checkpoint of the run") from error


def read_metadata(path: str | Path) -> tuple[int, dict[str, str] | None]:
    """The finished epochs and the settings (None when written without) of the checkpoint at `path`,
    read without its arrays, so a config check can read them before any run exists. A missing,
    unreadable or foreign file raises a ValueError naming it."""
    try:
        meta = load_npz(path, META)
    except FileNotFoundError:
        what = "a folder, not a checkpoint file" if Path(path).is_dir() else "no such file"
        raise ValueError(f"no checkpoint at {path} ({what}); give one that trainer.checkpoint_every wrote, "
                         "<output dir>/checkpoints/epochNNNNN.npz") from None
    _check_is_checkpoint(path, meta.keys())
    return _checked_meta(path, meta)[1], _saved_settings(meta) if "settings" in meta else None


def _saved_settings(arrays: Mapping[str, Any]) -> dict[str, str]:
    """The settings a checkpoint was written with (`config.resume_settings`), stored as JSON text."""
    return json.loads(str(arrays["settings"]))


def check_epochs_left(path: str | Path, epoch: int, epochs: int) -> None:
    """ValueError if a checkpoint with `epoch` finished epochs leaves nothing to train in a run of `epochs`."""
    if epoch >= epochs:
        raise ValueError(f"trainer.resume={path} has {epoch} finished epochs and trainer.epochs={epochs}: "
                         f"nothing left to train; set trainer.epochs above {epoch} to continue it")


def _check_is_checkpoint(path: str | Path, names: Iterable[str]) -> None:
    """ValueError unless the entries `names` of the file at `path` include a checkpoint's own."""
    missing = {"rng_state", "epoch"} - set(names)
    if missing:
        raise ValueError(f"{path} is not an nnresearch checkpoint: it lacks {sorted(missing)}")


def check_settings(path: str | Path, saved: Mapping[str, str], settings: Mapping[str, str]) -> None:
    """ValueError naming every key whose value differs between the checkpoint and this run. Keys only
    one side has (a setting added to or removed from the schema since) are not compared."""
    differing = sorted(key for key in saved.keys() & settings.keys() if saved[key] != settings[key])
    if differing:
        listed = ", ".join(f"{key}={saved[key]} (this run: {settings[key]})" for key in differing)
        raise ValueError(f"{path} was written with other settings than this run: {listed}; resume with the "
                         "checkpoint's values, or start a new run without trainer.resume")
