"""Config values at their bounds (batch size 0, exactly three examples per class, a zero init std) and files
that are not checkpoints, each refused or accepted as the checks say."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnresearch import backend
from nnresearch.checkpoint import load_checkpoint
from nnresearch.config import compose, validate
from nnresearch.nn.architectures import Builder, mlp
from nnresearch.nn.network import save_npz
from nnresearch.nn.optim import make_optimizer


def test_batch_size_zero_is_refused():
    with pytest.raises(ValueError, match="trainer.batch_size=0 is out of range"):
        validate(compose(["trainer.batch_size=0"]))


def test_exactly_min_per_class_examples_per_class_is_accepted():
    """6 binary examples, 3 per class, thirds: splits of 2, 2, 2 fit."""
    validate(compose(["data=xor", "data.n_samples=6", "data.val_fraction=0.33", "data.test_fraction=0.33"]))


def test_a_normal_init_with_std_zero_is_refused():
    """Init_std must be > 0, not >= 0."""
    with pytest.raises(ValueError, match="model.init_std=0.0 is out of range"):
        validate(compose(["model.init=normal", "model.init_std=0.0"]))


def test_a_file_without_epoch_is_named_not_a_checkpoint(tmp_path):
    rng = backend.make_rng(0)
    net = mlp(Builder(np, np.float32, rng), [2, 3, 1], "sigmoid_bce")
    path = tmp_path / "x.npz"
    save_npz(path, {"rng_state": np.asarray(json.dumps(rng.bit_generator.state))})
    with pytest.raises(ValueError, match="not an nnresearch checkpoint.*'epoch'"):
        load_checkpoint(path, net, make_optimizer("sgd"), rng)


def test_a_foreign_npz_is_named_not_a_checkpoint(tmp_path):
    """Load_checkpoint itself says what the file is not."""
    rng = backend.make_rng(0)
    net = mlp(Builder(np, np.float32, rng), [2, 3, 1], "sigmoid_bce")
    path = tmp_path / "weights.npz"
    save_npz(path, {name: np.asarray(w) for name, w in net.state().items()})
    with pytest.raises(ValueError, match="not an nnresearch checkpoint"):
        load_checkpoint(path, net, make_optimizer("sgd"), rng)
