"""The data layer: shapes, encodings, determinism, train-only standardisation, argument errors."""

from __future__ import annotations

import collections
import functools
import random

import numpy as np
import pytest

from nnresearch.data import DATASETS, TASKS, Dataset, load_dataset, permute_features, real, registry, tent_power
from nnresearch.data.dataset import Samples, content_hash
from nnresearch.data.registry import SUBSET_STREAM
from nnresearch.data.splits import build_dataset, train_subset

# name -> (task, n_features, n_outputs) at the defaults
EXPECTED = {
    "xor": ("binary", 2, 1),
    "moons": ("binary", 2, 1),
    "circles": ("binary", 2, 1),
    "spirals": ("multiclass", 2, 3),
    "blobs": ("multiclass", 2, 3),
    "multilabel": ("multilabel", 20, 5),
    "sine": ("regression", 1, 1),
    "step": ("regression", 1, 1),
    "abs": ("regression", 1, 1),
    "sawtooth": ("regression", 1, 1),
    "digits": ("multiclass", 64, 10),
    "breast_cancer": ("binary", 30, 1),
    "mnist1d": ("multiclass", 40, 10),
    "images64": ("binary", 64 * 64 * 3, 1),
}
SMALL = {"mnist1d": 500, "images64": 120}  # keep the slow generators quick in tests
SPLITS = ("train", "val", "test")


def small(name: str, **kwargs) -> Dataset:
    return load_dataset(name, n_samples=SMALL.get(name), **kwargs)


def parts(ds: Dataset) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [(s, getattr(ds, f"X_{s}"), getattr(ds, f"Y_{s}")) for s in SPLITS]


def test_registry_covers_every_expected_data_set():
    assert set(DATASETS) == set(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_shapes_task_and_target_encoding(name):
    ds = small(name)
    task, n_features, n_outputs = EXPECTED[name]
    assert (ds.name, ds.task, ds.n_features, ds.n_outputs) == (name, task, n_features, n_outputs)
    assert ds.task in TASKS
    for split, X, Y in parts(ds):
        m = ds.sizes[split]
        assert X.shape == (n_features, m) and Y.shape == (n_outputs, m), split
        assert X.dtype == Y.dtype == np.float64
        assert X.flags.c_contiguous and Y.flags.c_contiguous
        assert np.isfinite(X).all() and np.isfinite(Y).all()
        if task in ("binary", "multilabel", "multiclass"):
            assert set(np.unique(Y)) <= {0.0, 1.0}
        if task == "multiclass":
            np.testing.assert_array_equal(Y.sum(axis=0), 1.0)
    if task != "regression":  # every class / label shows up in training
        assert (ds.Y_train.sum(axis=1) > 0).all()
        if task == "binary":
            assert ds.Y_train.mean() < 1.0


def test_default_sizes_and_fractions():
    ds = load_dataset("moons")
    assert ds.sizes == {"train": 600, "val": 200, "test": 200}
    ds = load_dataset("moons", n_samples=500, val_fraction=0.1, test_fraction=0.3)
    assert ds.sizes == {"train": 300, "val": 50, "test": 150}
    assert load_dataset("digits").sizes == {"train": 1079, "val": 359, "test": 359}
    assert sum(load_dataset("mnist1d").sizes.values()) == 4000


@pytest.mark.parametrize("name", EXPECTED)
def test_same_seed_same_arrays_other_seed_other_hash(name):
    a, b = small(name, seed=3), small(name, seed=3)
    assert a.content_hash == b.content_hash
    for (_, Xa, Ya), (_, Xb, Yb) in zip(parts(a), parts(b)):
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(Ya, Yb)
    c = small(name, seed=4)
    assert c.content_hash != a.content_hash
    assert not np.array_equal(c.X_train, a.X_train)


def test_hash_covers_arguments_and_matches_describe():
    base = load_dataset("spirals")
    assert load_dataset("spirals", noise=0.3).content_hash != base.content_hash
    assert load_dataset("spirals", standardize=False).content_hash != base.content_hash
    described = base.describe()
    assert described == {
        "name": "spirals", "task": "multiclass", "sizes": base.sizes, "n_features": 2,
        "n_outputs": 3, "content_hash": base.content_hash,
    }
    assert len(base.content_hash) == 64 and int(base.content_hash, 16) >= 0


@pytest.mark.parametrize("name", ["breast_cancer", "sine", "images64", "blobs"])
def test_standardisation_uses_train_statistics_only(name):
    std_ds = small(name, seed=1)
    raw = small(name, seed=1, standardize=False)  # same seed -> same split, unscaled
    np.testing.assert_array_equal(std_ds.Y_train, raw.Y_train)
    mean = raw.X_train.mean(axis=1, keepdims=True)
    scale = raw.X_train.std(axis=1, keepdims=True)
    scale = np.where(scale < 1e-12, 1.0, scale)
    for (_, X, _), (_, X_raw, _) in zip(parts(std_ds), parts(raw)):
        np.testing.assert_allclose(X, (X_raw - mean) / scale, atol=1e-12)
    varying = raw.X_train.std(axis=1) > 1e-12
    np.testing.assert_allclose(std_ds.X_train.mean(axis=1), 0.0, atol=1e-10)
    np.testing.assert_allclose(std_ds.X_train.std(axis=1)[varying], 1.0, atol=1e-10)
    # val was not standardised with its own statistics
    assert np.abs(std_ds.X_val.mean(axis=1)).max() > 1e-6


def test_constant_features_are_centred_not_divided_by_zero():
    ds = load_dataset("digits")  # pixel 0 is always blank
    assert np.isfinite(ds.X_train).all()
    np.testing.assert_array_equal(ds.X_train[0], 0.0)


def test_unstandardised_raw_ranges():
    assert np.abs(load_dataset("sine", standardize=False).X_train).max() <= 1.0
    saw = load_dataset("sawtooth", standardize=False)
    assert saw.X_train.min() >= 0.0 and saw.X_train.max() <= 1.0
    img = load_dataset("images64", n_samples=60, standardize=False)
    assert img.X_train.min() >= 0.0 and img.X_train.max() <= 1.0
    assert img.X_train.std() > 0.1


def test_classification_splits_are_stratified():
    ds = load_dataset("breast_cancer")
    fractions = [Y.mean() for _, _, Y in parts(ds)]
    assert max(fractions) - min(fractions) < 0.02
    ds = load_dataset("digits", n_samples=300)
    counts = ds.Y_val.sum(axis=1)
    assert counts.max() - counts.min() <= 2


def test_n_classes_reaches_the_generator():
    assert load_dataset("spirals", n_classes=5).Y_train.shape[0] == 5
    assert load_dataset("blobs", n_classes=4).Y_test.shape[0] == 4
    assert load_dataset("multilabel", n_classes=3).Y_val.shape[0] == 3
    digits = load_dataset("digits", n_classes=4)
    assert digits.n_outputs == 4 and sum(digits.sizes.values()) < 1797


def test_xor_labels_follow_the_quadrants():
    ds = load_dataset("xor", noise=0.05, standardize=False)
    X, Y = ds.X_train, ds.Y_train[0]
    np.testing.assert_array_equal(Y, ((X[0] > 0) != (X[1] > 0)).astype(float))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_tent_power_has_2_to_the_k_linear_pieces(k):
    x = np.linspace(0.0, 1.0, 2**k * 64 + 1)  # the breakpoints j / 2^k lie on the grid
    slopes = np.diff(tent_power(x, k)) / np.diff(x)
    np.testing.assert_allclose(np.abs(slopes), 2.0**k, rtol=1e-6)
    pieces = 1 + np.count_nonzero(np.abs(np.diff(slopes)) > 1e-6 * 2**k)
    assert pieces == 2**k


def test_sawtooth_data_are_the_composed_tent_map():
    ds = load_dataset("sawtooth", standardize=False, compositions=3)
    for _, X, Y in parts(ds):
        np.testing.assert_allclose(Y[0], tent_power(X[0], 3), atol=1e-12)
    assert ds.content_hash != load_dataset("sawtooth", standardize=False).content_hash
    noisy = load_dataset("sawtooth", standardize=False, noise=0.1)
    residual = noisy.Y_train[0] - tent_power(noisy.X_train[0], 4)
    assert 0.05 < residual.std() < 0.15


def test_mnist1d_leaves_global_random_state_and_disk_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    registry._made.cache_clear()  # generated here, not taken from an earlier test
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    load_dataset("mnist1d", n_samples=95)
    assert (np.random.random(), random.random()) == (expected_np, expected_py)
    assert list(tmp_path.iterdir()) == []


def test_a_process_makes_each_data_set_once_and_keeps_the_last_few(monkeypatch):
    """The jobs of a sweep in one process share the data set they ask for (read-only arrays)."""
    registry._made.cache_clear()
    made = []
    moons = DATASETS["moons"]

    @functools.wraps(moons)  # the same signature: load_dataset checks the arguments against it
    def counted(rng, **kwargs):
        made.append(kwargs)
        return moons(rng, **kwargs)

    monkeypatch.setitem(DATASETS, "moons", counted)
    first = load_dataset("moons", seed=1, n_samples=50)
    assert load_dataset("moons", seed=1, n_samples=50) is first and len(made) == 1
    assert load_dataset("moons", seed=2, n_samples=50) is not first  # other arguments: another data set
    assert load_dataset("moons", seed=1, n_samples=50, noise=0.3).content_hash != first.content_hash
    for seed in range(registry.KEPT):
        load_dataset("moons", seed=10 + seed, n_samples=50)
    assert load_dataset("moons", seed=1, n_samples=50) is not first and len(made) == 3 + registry.KEPT + 1


def test_arrays_are_read_only():
    ds = load_dataset("xor")
    with pytest.raises(ValueError):
        ds.X_train[0, 0] = 1.0


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown data set 'nope'") as info:
        load_dataset("nope")
    for name in DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("val", "test", "arg"),
    [(0.0, 0.2, "val_fraction"), (1.0, 0.2, "val_fraction"), (0.2, -0.1, "test_fraction"),
     (0.2, 1.5, "test_fraction"), (0.5, 0.5, "sum"), (0.6, 0.5, "sum")],
)
def test_bad_fractions_raise(val, test, arg):
    with pytest.raises(ValueError, match=arg):
        load_dataset("moons", val_fraction=val, test_fraction=test)


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "pattern"),
    [
        ("moons", {"n_samples": 2}, ValueError, "n_samples=2"),
        ("spirals", {"n_samples": 12, "n_classes": 5}, ValueError, "n_samples=12"),
        ("moons", {"n_samples": 10.5}, TypeError, "n_samples"),
        ("spirals", {"n_classes": 1}, ValueError, "n_classes=1"),
        ("digits", {"n_classes": 11}, ValueError, "n_classes=11"),
        ("digits", {"n_samples": 5000}, ValueError, "n_samples=5000"),
        ("moons", {"noise": -0.1}, ValueError, "noise=-0.1"),
        ("moons", {"n_classes": 3}, ValueError, "does not take n_classes"),
        ("digits", {"noise": 0.1}, ValueError, "does not take noise"),
        ("sine", {"compositions": 3}, ValueError, "does not take compositions"),
        ("sawtooth", {"compositions": 0}, ValueError, "compositions=0"),
        ("moons", {"seed": -1}, ValueError, "seed=-1"),
        ("moons", {"val_fraction": "0.2"}, TypeError, "val_fraction"),
    ],
)
def test_bad_arguments_name_themselves(name, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        load_dataset(name, **kwargs)


def test_train_size_keeps_nested_stratified_subsets_with_the_same_val_and_test():
    """`train_size` changes only how many examples are trained on: the smaller set is part of the larger,
    every class keeps its share (within one), val and test are the whole set's arrays."""
    whole = load_dataset("spirals")  # 3 classes, 540 examples to train
    subsets = {n: load_dataset("spirals", train_size=n) for n in (31, 90, 540)}
    for n, ds in subsets.items():
        assert ds.sizes == {"train": n, "val": 180, "test": 180}
        counts = ds.Y_train.sum(axis=1)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n
        for split in ("val", "test"):
            np.testing.assert_array_equal(getattr(ds, f"X_{split}"), getattr(whole, f"X_{split}"))
            np.testing.assert_array_equal(getattr(ds, f"Y_{split}"), getattr(whole, f"Y_{split}"))
    examples = {n: {tuple(column) for column in ds.X_train.T} for n, ds in subsets.items()}
    assert examples[31] < examples[90] < examples[540]
    assert subsets[540].content_hash == whole.content_hash  # the whole split, in its own order
    assert load_dataset("spirals", train_size=90).content_hash == subsets[90].content_hash  # same seed, same subset
    assert load_dataset("spirals", seed=1, train_size=90).sizes["train"] == 90
    assert load_dataset("sine", train_size=2).sizes["train"] == 2  # regression: not stratified, two to train


@pytest.mark.parametrize(("size", "error", "message"), [
    (541, ValueError, r"^train_size=541 for 'spirals' is out of range; expected 3 <= train_size <= 540"),
    (2, ValueError, r"^train_size=2 for 'spirals' is out of range; expected 3 <= train_size"),  # one per class
    (1, ValueError, r"^train_size=1; expected an int >= 2"),
    (10.0, TypeError, r"^train_size must be an int"),
])
def test_a_train_size_the_train_split_cannot_give_is_refused(size, error, message):
    with pytest.raises(error, match=message):
        load_dataset("spirals", train_size=size)


def labelled_rows(X: np.ndarray, y: np.ndarray) -> collections.Counter:
    """Each example (one per row of `X`) with its label, counted: a multiset to compare data sets by."""
    return collections.Counter((row.tobytes(), int(label)) for row, label in zip(X, y))


@pytest.mark.parametrize(("name", "loader"), [("digits", "load_digits"), ("breast_cancer", "load_breast_cancer")])
def test_the_three_splits_are_scikit_learns_own_examples_each_once_with_its_label(name, loader):
    """Train, val and test partition the bundled set: every example of scikit-learn's loader, with its
    own label (class c is one-hot row c; breast_cancer keeps 1 = benign), in exactly one split."""
    import sklearn.datasets

    X, y = getattr(sklearn.datasets, loader)(return_X_y=True)
    ds = load_dataset(name, standardize=False)
    got = collections.Counter()
    for _, X_split, Y_split in parts(ds):
        labels = Y_split.argmax(axis=0) if ds.task == "multiclass" else Y_split[0]
        got += labelled_rows(X_split.T, labels)
    assert got == labelled_rows(X.astype(np.float64), y)
    assert sum(ds.sizes.values()) == len(y)


def test_split_sizes_round_each_fraction_of_n_samples():
    # 0.2 * 103 = 20.6 rounds to 21 for val and for test; train keeps the other 61
    assert load_dataset("moons", n_samples=103).sizes == {"train": 61, "val": 21, "test": 21}
    # 0.15 * 110 = 16.5 rounds half to even (16); 0.25 * 110 = 27.5 rounds to 28
    assert load_dataset("moons", n_samples=110, val_fraction=0.15, test_fraction=0.25).sizes == {
        "train": 66, "val": 16, "test": 28}


def test_mnist1d_labels_belong_to_their_signals():
    """A 1-nearest-neighbour classifier fitted on train scores well above chance (10%) on val: each
    signal keeps its own label (~40% at this size; labels shifted against the signals give ~10%)."""
    from sklearn.neighbors import KNeighborsClassifier

    ds = load_dataset("mnist1d", n_samples=1000)
    knn = KNeighborsClassifier(n_neighbors=1).fit(ds.X_train.T, ds.Y_train.argmax(axis=0))
    assert knn.score(ds.X_val.T, ds.Y_val.argmax(axis=0)) > 0.25


def test_images64_columns_are_height_width_rgb_images_of_discs_labelled_1_and_squares_0():
    """Without noise each column, reshaped to (64, 64, 3), holds two colours: the background and the
    shape's. The shape fills its bounding box when it is a square (label 0) and about pi/4 of it when
    it is a disc (label 1). Flattened in another order, a pixel's three values mix colours."""
    ds = load_dataset("images64", n_samples=40, noise=0.0, standardize=False)
    for _, X, Y in parts(ds):
        for column, label in zip(X.T, Y[0]):
            image = column.reshape(64, 64, 3)
            colours = np.unique(image.reshape(-1, 3), axis=0)
            assert len(colours) == 2
            shape = (image == colours[colours.sum(axis=1).argmax()]).all(axis=2)  # the shape is the brighter
            rows, cols = np.flatnonzero(shape.any(axis=1)), np.flatnonzero(shape.any(axis=0))
            fill = shape.sum() / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
            if label == 1:
                assert 0.7 < fill < 0.85, fill  # a disc: pi/4 of its square, give or take the pixel grid
            else:
                assert fill == 1.0


def test_permute_features_moves_every_split_s_features_by_one_permutation():
    """The permutation is recovered from train (each permuted feature row is one original row) and
    must be the one val and test were given; targets stay as they were."""
    ds = load_dataset("breast_cancer")  # 30 features, no two alike
    permuted = permute_features(ds, 1234)
    order = [int(np.flatnonzero((ds.X_train == row).all(axis=1))[0]) for row in permuted.X_train]
    assert sorted(order) == list(range(30)) and order != list(range(30))
    for split in ("val", "test"):
        np.testing.assert_array_equal(getattr(permuted, f"X_{split}"), getattr(ds, f"X_{split}")[order])
    for _, Y, Y_permuted in zip(SPLITS, (ds.Y_train, ds.Y_val, ds.Y_test),
                                (permuted.Y_train, permuted.Y_val, permuted.Y_test)):
        np.testing.assert_array_equal(Y_permuted, Y)
    assert permuted.content_hash != ds.content_hash and permuted.name == "breast_cancer-permuted"


# --- edges: refusals naming their bounds, hashes, the seed's streams ---------------------------


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
