"""Checkpoints: continuing from one gives the same numbers as never stopping; bad files fail clearly."""

import json

import numpy as np
import pytest

from nnresearch import backend
from nnresearch.checkpoint import load_checkpoint, save_checkpoint
from nnresearch.data import load_dataset
from nnresearch.nn.architectures import Builder, Init, mlp
from nnresearch.nn.network import save_npz
from nnresearch.nn.optim import make_optimizer
from nnresearch.nn.schedules import make_schedule
from nnresearch.sinks import MemorySink
from nnresearch.train import LoopOptions, Splits, train


def setup(seed=0):
    data = load_dataset("moons", seed=0, n_samples=300)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    splits = Splits(f32(data.X_train), f32(data.Y_train), f32(data.X_val), f32(data.Y_val))
    rng = backend.make_rng(seed)
    net = mlp(Builder(np, np.float32, rng, Init("he_normal"), "relu", batchnorm=True), [2, 8, 8, 1], "sigmoid_bce")
    return net, splits, make_optimizer("adam"), make_schedule("cosine", 0.01, 6 * 6), rng


def test_resume_equals_an_uninterrupted_run(tmp_path):
    options = LoopOptions(epochs=6, batch_size=32, progress=False)
    net, splits, opt, schedule, rng = setup()
    straight = train(net, splits, opt, schedule, options, rng, MemorySink())
    expected = {k: v.copy() for k, v in net.state().items()}

    net, splits, opt, schedule, rng = setup()
    path = tmp_path / "ck.npz"
    train(net, splits, opt, schedule, LoopOptions(epochs=3, batch_size=32, progress=False), rng, MemorySink(),
          on_epoch_end=lambda epoch: save_checkpoint(path, net, opt, rng, epoch) if epoch == 3 else None)

    net, splits, opt, schedule, rng = setup(seed=99)  # a different start, overwritten by the checkpoint
    start = load_checkpoint(path, net, opt, rng)
    resumed = train(net, splits, opt, schedule, options, rng, MemorySink(), start_epoch=start)
    assert start == 3
    assert resumed["train/loss"] == straight["train/loss"]
    for name, value in net.state().items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_bad_checkpoint_is_refused_and_changes_nothing(tmp_path, damage):
    net, splits, opt, schedule, rng = setup()
    path = tmp_path / "ck.npz"
    save_checkpoint(path, net, opt, rng, 1)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:
        np.savez(path, W1=np.zeros(3))
    before = {k: v.copy() for k, v in net.state().items()}
    with pytest.raises(ValueError, match=str(path.name)):
        load_checkpoint(path, net, opt, rng)
    for name, value in net.state().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("entry, damaged", [
    ("rng_state", "{not json"),
    ("rng_state", json.dumps(np.random.MT19937(0).state, default=np.ndarray.tolist)),  # another bit generator's state
    ("rng_state", json.dumps({"bit_generator": "PCG64"})),
    ("epoch", "three"),
])
def test_a_damaged_generator_state_or_epoch_is_refused_before_anything_is_restored(tmp_path, entry, damaged):
    """Into another run's network, optimizer and generator: the refusal names the file and all three stay as they were."""
    net, splits, opt, schedule, rng = setup()
    path = tmp_path / "ck.npz"
    save_checkpoint(path, net, opt, rng, 1)
    np.savez(path, **(dict(np.load(path)) | {entry: np.asarray(damaged)}))
    other_net, _, other_opt, _, other_rng = setup(seed=1)
    train(other_net, splits, other_opt, schedule, LoopOptions(epochs=1, batch_size=32, progress=False), other_rng, MemorySink())
    before = ({k: v.copy() for k, v in other_net.state().items()}, {k: np.copy(v) for k, v in other_opt.state_dict().items()},
              other_rng.bit_generator.state)
    with pytest.raises(ValueError, match=f"{path.name} is a damaged checkpoint"):
        load_checkpoint(path, other_net, other_opt, other_rng)
    for name, value in other_net.state().items():
        np.testing.assert_array_equal(value, before[0][name], err_msg=name)
    for key, value in other_opt.state_dict().items():
        np.testing.assert_array_equal(value, before[1][key], err_msg=key)
    assert other_rng.bit_generator.state == before[2]


def test_a_checkpoint_whose_network_does_not_fit_leaves_the_optimizer_as_it_was(tmp_path):
    """The optimizer's part is read first; a network part refused after it (here a NaN) puts it back."""
    net, splits, opt, schedule, rng = setup()
    train(net, splits, opt, schedule, LoopOptions(epochs=1, batch_size=32, progress=False), rng, MemorySink())
    path = tmp_path / "ck.npz"
    save_checkpoint(path, net, opt, rng, 1)
    arrays = dict(np.load(path))
    arrays["W1"][0, 0] = np.nan
    np.savez(path, **arrays)
    train(net, splits, opt, schedule, LoopOptions(epochs=1, batch_size=32, progress=False), rng, MemorySink())
    before = opt.state_dict()
    with pytest.raises(ValueError, match="W1 contains NaN"):
        load_checkpoint(path, net, opt, rng)
    after = opt.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


def test_missing_checkpoint_names_the_file(tmp_path):
    net, splits, opt, schedule, rng = setup()
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_checkpoint(tmp_path / "nope.npz", net, opt, rng)


def test_other_settings_are_refused_naming_the_keys_and_change_nothing(tmp_path):
    net, splits, opt, schedule, rng = setup()
    path = tmp_path / "ck.npz"
    save_checkpoint(path, net, opt, rng, 1, {"trainer.batch_size": "32", "optim.lr": "0.1", "model.width": "8"})
    net, splits, opt, schedule, rng = setup(seed=99)
    before = {k: v.copy() for k, v in net.state().items()}
    with pytest.raises(ValueError, match=r"ck.npz .*optim.lr=0.1 \(this run: 0.05\), trainer.batch_size=32 \(this run: 16\)"):
        load_checkpoint(path, net, opt, rng, {"trainer.batch_size": "16", "optim.lr": "0.05", "model.width": "8"})
    for name, value in net.state().items():
        np.testing.assert_array_equal(value, before[name])
    assert load_checkpoint(path, net, opt, rng, {"trainer.batch_size": "32", "optim.lr": "0.1", "model.width": "8"}) == 1


def test_a_setting_added_to_the_schema_since_does_not_block_a_resume(tmp_path):
    net, splits, opt, schedule, rng = setup()
    path = tmp_path / "ck.npz"
    save_checkpoint(path, net, opt, rng, 1, {"optim.lr": "0.1", "model.retired": "3"})
    assert load_checkpoint(path, net, opt, rng, {"optim.lr": "0.1", "model.new_field": "False"}) == 1


def test_a_checkpoint_without_settings_is_not_checked(tmp_path):
    net, splits, opt, schedule, rng = setup()
    path = tmp_path / "ck.npz"
    save_checkpoint(path, net, opt, rng, 2)  # as written before checkpoints stored their settings
    assert load_checkpoint(path, net, opt, rng, {"trainer.batch_size": "16"}) == 2


def test_resume_settings_hold_what_the_numbers_depend_on():
    from nnresearch.config import compose, validate
    from nnresearch.experiment import resume_settings

    settings = resume_settings(validate(compose(["trainer.batch_size=16"])))
    assert settings["trainer.batch_size"] == "16" and "model.width" in settings and "optim.lr" in settings
    assert not {"trainer.epochs", "trainer.resume", "trainer.gradient_noise", "trainer.progress"} & settings.keys()
    assert not [key for key in settings if key.startswith("tracking.")]
    cosine = resume_settings(validate(compose(["optim.schedule=cosine", "trainer.epochs=7"])))
    assert cosine["trainer.epochs"] == "7"  # cosine's lr depends on the run's total steps


def test_a_file_without_epoch_is_named_not_a_checkpoint(tmp_path):
    net, _, opt, _, rng = setup()
    path = tmp_path / "x.npz"
    save_npz(path, {"rng_state": np.asarray(json.dumps(rng.bit_generator.state))})
    with pytest.raises(ValueError, match="not an nnresearch checkpoint.*'epoch'"):
        load_checkpoint(path, net, opt, rng)


def test_a_foreign_npz_is_named_not_a_checkpoint(tmp_path):
    """load_checkpoint itself says what the file is not."""
    net, _, opt, _, rng = setup()
    path = tmp_path / "weights.npz"
    save_npz(path, {name: np.asarray(w) for name, w in net.state().items()})
    with pytest.raises(ValueError, match="not an nnresearch checkpoint"):
        load_checkpoint(path, net, opt, rng)
