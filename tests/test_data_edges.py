"""The data sets at their edges: refusals that name their bound, hashes that tell arrays apart, the seed's
streams pinned (data, splits, training subset), sine's range, exact sample counts."""

from __future__ import annotations

import numpy as np
import pytest

from nnresearch.data import load_dataset, real
from nnresearch.data.dataset import Dataset, Samples, content_hash, permute_features
from nnresearch.data.registry import DATASETS, SUBSET_STREAM
from nnresearch.data.splits import build_dataset, train_subset


def test_a_class_with_two_examples_is_refused_by_name():
    """Splits that fit by size still need MIN_PER_CLASS (3) examples of every class."""
    y = np.array([0] * 14 + [1] * 14 + [2] * 2)
    X = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ValueError, match="fewer than 3 examples"):
        build_dataset("t", Samples(X, y, "multiclass"), np.random.default_rng(0),
                      val_fraction=0.2, test_fraction=0.2, standardize=True)


def test_content_hash_tells_shapes_and_dtypes_apart():
    """Equal bytes, another shape or dtype, another hash."""
    assert content_hash(np.zeros((2, 3))) != content_hash(np.zeros((3, 2)))
    assert content_hash(np.zeros(2)) != content_hash(np.zeros(4, dtype=np.float32))


def test_permuted_data_hash_is_the_hash_of_its_arrays():
    """The permuted set's content_hash is that of its own six arrays, in order."""
    p = permute_features(load_dataset("moons", n_samples=60), seed=1)
    assert p.content_hash == content_hash(p.X_train, p.Y_train, p.X_val, p.Y_val, p.X_test, p.Y_test)


def test_a_dataset_with_an_unknown_task_is_refused():
    a = np.zeros((1, 2))
    with pytest.raises(ValueError, match="task='bogus'"):
        Dataset("t", "bogus", a, a, a, a, a, a, "h")


def test_n_samples_below_three_is_refused_by_its_own_check():
    """The error names the bound, not a later split failure."""
    with pytest.raises(ValueError, match="n_samples=2; expected an int >= 3"):
        load_dataset("sine", n_samples=2)


def test_a_bool_is_not_an_int_argument():
    with pytest.raises(TypeError, match="seed must be an int"):
        load_dataset("moons", seed=True)


def test_data_and_split_streams_are_the_seed_s_children_0_and_1():
    """Pins which child of the seed generates the data (a swap changes every data set of a seed)."""
    data_seed, _ = np.random.SeedSequence(3).spawn(2)
    samples = DATASETS["moons"](np.random.default_rng(data_seed), n_samples=60)
    ds = load_dataset("moons", seed=3, n_samples=60, standardize=False)
    rows = np.hstack([ds.X_train, ds.X_val, ds.X_test]).T
    np.testing.assert_array_equal(np.unique(rows, axis=0), np.unique(samples.X, axis=0))


def test_train_subset_draws_from_its_own_stream():
    """Pins the subset stream, spawn key SUBSET_STREAM of the seed."""
    full = load_dataset("moons", seed=4, n_samples=100)
    sub = load_dataset("moons", seed=4, n_samples=100, train_size=10)
    expected = train_subset(full, 10, np.random.default_rng(np.random.SeedSequence(4, spawn_key=(SUBSET_STREAM,))))
    assert sub.content_hash == expected.content_hash


def test_sine_covers_minus_one_to_one():
    """X ~ U[-1, 1] (two periods), not [0, 1]."""
    x = load_dataset("sine", standardize=False).X_train
    assert x.min() < -0.9 and x.max() > 0.9


def test_digits_subset_below_one_per_class_names_the_bound():
    with pytest.raises(ValueError, match="expected between 10 .one per class."):
        real.digits(np.random.default_rng(0), n_samples=5)


def test_mnist1d_returns_exactly_n_samples_when_not_a_multiple_of_ten():
    s = real.mnist1d(np.random.default_rng(0), n_samples=15)
    assert s.X.shape == (15, 40) and s.y.shape == (15,)
