"""Checkpoints: everything needed to continue a run exactly where it stopped, in one `.npz`.

Contents: the network state under its own names (`W1`, `b1`, ..., BatchNorm buffers), the
optimizer state as `optim/<key>`, the run's generator state (JSON, as a 0-d string array) and the
number of finished epochs. Written atomically, read with `allow_pickle=False`; continuing from a
checkpoint gives bit-identical numbers to a run that was never interrupted (on NumPy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nnresearch import backend
from nnresearch.nn.network import Network, load_npz, save_npz

OPTIM_PREFIX = "optim/"


def save_checkpoint(path: str | Path, network: Network, optimizer: Any, rng: np.random.Generator, epoch: int) -> Path:
    """Write the checkpoint of the state after `epoch` finished epochs."""
    arrays = {name: backend.to_numpy(a) for name, a in network.state().items()}
    arrays |= {OPTIM_PREFIX + key: np.asarray(value) for key, value in optimizer.state_dict().items()}
    arrays["rng_state"] = np.asarray(json.dumps(rng.bit_generator.state))
    arrays["epoch"] = np.asarray(epoch)
    save_npz(path, arrays)
    return Path(path)


def load_checkpoint(path: str | Path, network: Network, optimizer: Any, rng: np.random.Generator) -> int:
    """Restore network, optimizer and generator from `path`; returns the number of finished epochs.

    A missing, truncated or foreign file raises a ValueError/FileNotFoundError naming it, and
    leaves the network unchanged.
    """
    arrays = load_npz(path)
    missing = {"rng_state", "epoch"} - arrays.keys()
    if missing:
        raise ValueError(f"{path} is not an nnresearch checkpoint: it lacks {sorted(missing)}")
    optimizer_state = {k.removeprefix(OPTIM_PREFIX): v for k, v in arrays.items() if k.startswith(OPTIM_PREFIX)}
    network_state = {k: v for k, v in arrays.items() if not k.startswith(OPTIM_PREFIX) and k not in ("rng_state", "epoch")}
    try:
        optimizer.load_state_dict({k: (float(v) if v.ndim == 0 else v) for k, v in optimizer_state.items()}, like=network.params())
        network.load_state(network_state)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{path} does not fit this run ({error}); resume it with the model and optim "
                         "settings it was written with") from error
    rng.bit_generator.state = json.loads(str(arrays["rng_state"]))
    return int(arrays["epoch"])
