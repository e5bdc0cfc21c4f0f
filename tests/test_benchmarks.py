"""The benchmark itself runs and writes what it promises (never its timings: the machine is shared).

The smoke mode runs in-process (its sweep and start-up parts start `python -m nnresearch.run`
subprocesses, as a user would); in the step part PyTorch is reported as
unavailable so the test means the same with and without the optional `bench` extra installed.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest

from benchmarks import contenders, flops, report, run


def test_balanced_orders_let_every_contender_follow_every_other_equally_often():
    from collections import Counter

    from benchmarks.timing import balanced_orders

    for n in range(1, 8):
        orders = balanced_orders(n)
        assert len(orders) == (n if n % 2 == 0 else 2 * n)
        assert all(sorted(order) == list(range(n)) for order in orders)
        follows = Counter((order[i], order[i + 1]) for order in orders for i in range(n - 1))
        assert len(follows) == n * (n - 1) and len(set(follows.values())) <= 1


def test_interleave_measures_every_contender_after_every_other_equally_often():
    from collections import Counter

    from benchmarks.timing import balanced_orders, interleave

    calls: list[str] = []
    names = ["a", "b", "c", "d", "e"]
    contenders = {name: (lambda name=name: calls.append(name)) for name in names}
    rounds = 2 * len(balanced_orders(len(names)))
    timings = interleave(contenders, rounds, block_s=0.0, warmup=0)
    assert all(len(t.per_unit_s) == rounds for t in timings.values())
    # one call per block plus one unmeasured settle call per round: a call followed by the same
    # name is a settle, and the block after it is measured after its own contender
    measured_after = Counter()
    for i in range(1, len(calls)):
        settle = i + 1 < len(calls) and calls[i + 1] == calls[i]
        if not settle:
            measured_after[(calls[i - 1], calls[i])] += 1
    across = {pair: n for pair, n in measured_after.items() if pair[0] != pair[1]}
    after_itself = {pair: n for pair, n in measured_after.items() if pair[0] == pair[1]}
    assert len(across) == len(names) * (len(names) - 1) and len(set(across.values())) == 1
    assert len(after_itself) == len(names) and len(set(after_itself.values())) == 1


def test_interleave_with_settle_measures_every_block_after_its_own_contender(monkeypatch):
    from itertools import groupby

    from benchmarks import timing

    clock = [0.0]  # each call takes exactly 2 ms on this clock, however loaded the machine
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    calls: list[str] = []

    def contender(name):
        def call():
            calls.append(name)
            clock[0] += 0.002
        return call

    names = ["a", "b", "c", "d"]
    timings = timing.interleave({name: contender(name) for name in names}, 4, block_s=0.0, warmup=0, settle_s=0.005)
    assert all(t.per_unit_s == pytest.approx([0.002] * 4) for t in timings.values())
    # every block: 0.005 s of unmeasured calls (3 of 2 ms), then its one measured call, so no measured call
    # comes right after another contender's (what OpenBLAS's spinning threads slow)
    runs = [(name, len(list(group))) for name, group in groupby(calls)]
    assert len(runs) == 4 * len(names) and all(n == 4 for _, n in runs), runs


def test_paired_ratio_is_the_median_of_same_round_ratios():
    from benchmarks.timing import paired_ratio

    # round 2 ran at half speed, slowing both variants alike: each round's ratio is still ~1.05
    on, off = [1.05, 2.10, 1.04], [1.00, 2.00, 0.95]
    assert paired_ratio(on, off) == pytest.approx(1.05)
    with pytest.raises(ValueError, match="equal"):
        paired_ratio([1.0, 2.0], [1.0])


def test_step_flops_counts_forward_and_backward_matmuls():
    # forward 2*m*(2*3 + 3*4); backward twice that, less dA_prev of the first layer (2*m*2*3)
    m = 5
    forward = 2 * m * (2 * 3 + 3 * 4)
    assert flops.step_flops([2, 3, 4], m) == 3 * forward - 2 * m * 2 * 3


def test_smoke_step_part_writes_json_markdown_and_plot(tmp_path, monkeypatch):
    def no_torch():
        raise contenders.Unavailable("torch hidden by the test")

    monkeypatch.setattr(contenders, "import_torch", no_torch)  # as without the bench extra
    results = run.main(["--smoke", "--parts", "step", "--out", str(tmp_path)])

    written = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.png").stat().st_size > 0
    markdown = (tmp_path / "results.md").read_text()
    assert "Training step" in markdown and "Achieved FLOP/s" in markdown and "with Adam instead of SGD" in markdown

    assert set(written) >= {"meta", "step", "skipped", "notes"}
    assert written["meta"]["smoke"] is True
    assert written["meta"]["environment"]["blas_threads"] >= 1
    assert "torch" in written["skipped"]
    step = written["step"]
    assert step["peak"]["peak"] > 0
    assert [s["name"] for s in step["shapes"]] == ["2-16-16-2", "2-64-64-64-2"]
    for shape in step["shapes"]:
        assert shape["flops"] > 0
        assert "torch" not in shape["contenders"]
        assert {"nnresearch", "gemm_only", "sklearn", "nnresearch_adam"} <= set(shape["contenders"])
        assert "torch_adam" not in shape["contenders"] and "adam_ratio" not in shape  # no torch, no ratio
        assert "nnresearch_adam" not in shape["ratio"] and "nnresearch_adam" not in shape["flops_per_s"]
        for contender in shape["contenders"].values():
            assert contender["median_s"] > 0 and contender["repeats"] >= 1
        assert shape["contenders"]["nnresearch"]["info"]["dtype"] == "float32"
        assert shape["contenders"]["sklearn"]["info"]["dtype"] == "float32"
        assert shape["ratio"]["sklearn"] > 0 and shape["ratio"]["gemm_only"] > 0
        ours, theirs = (shape["contenders"][name]["per_round_s"] for name in ("nnresearch", "sklearn"))
        assert len(ours) == len(theirs) == shape["contenders"]["nnresearch"]["repeats"]
        assert shape["ratio_paired"]["sklearn"] == statistics.median(a / b for a, b in zip(ours, theirs))
        assert shape["flops_per_s"]["nnresearch"] > 0
        assert 0 < shape["peak_fraction"]["nnresearch"]
        # the peak is timed in the shape's own rounds, at the side where the isolated peak was best
        peak = shape["contenders"]["matmul_peak"]
        assert peak["info"]["side"] == step["peak_side"] and "matmul_peak" not in shape["ratio"]
        assert shape["peak_in_rounds_flops_per_s"] == pytest.approx(2 * step["peak_side"] ** 3 / peak["median_s"])
        assert shape["peak_fraction"]["nnresearch"] == pytest.approx(shape["flops_per_s"]["nnresearch"] / shape["peak_in_rounds_flops_per_s"])
        assert shape["peak_fraction_isolated"]["nnresearch"] == pytest.approx(shape["flops_per_s"]["nnresearch"] / step["peak"]["peak"])
    assert results["step"]["threads"] == written["meta"]["environment"]["blas_threads"]


def test_unknown_part_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        run.main(["--parts", "step,nonsense", "--out", str(tmp_path)])


def test_smoke_harness_sweep_and_startup_parts_measure_what_they_promise(tmp_path):
    results = run.main(["--smoke", "--parts", "harness,sweep,startup", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "results.json").read_text())
    markdown = (tmp_path / "results.md").read_text()
    assert "Harness against the bare core loop" in markdown and "Sweep throughput" in markdown and "Start-up" in markdown

    (workload,) = written["harness"]["workloads"].values()
    assert workload["errors"] == {}
    variants = workload["variants"]
    assert set(variants) == {"bare_steps", "bare", "train_memory", "execute_off", "execute_on"}
    # every variant computed the same numbers: the bare loop really does the run's work
    assert len({v["val_loss"] for v in variants.values()}) == 1
    assert all(v["min_s"] > 0 and v["median_s"] >= v["min_s"] for v in variants.values())
    assert workload["logged_values"] > 0 and workload["store"] == "existing"
    assert workload["ratios"]["harness_over_bare"] == pytest.approx(variants["execute_on"]["min_s"] / variants["bare"]["min_s"])
    on, off = variants["execute_on"]["per_round_s"], variants["execute_off"]["per_round_s"]
    assert workload["ratios"]["tracking_on_over_off_paired"] == pytest.approx(statistics.median(a / b for a, b in zip(on, off)))
    assert set(written["harness"]["verdict"]) == {"harness_over_bare", "tracking_on_over_off"}
    clocked = workload["in_tracking_s"]
    assert 0 < clocked["min_s"] <= clocked["median_s"] <= clocked["max_s"]
    assert clocked["median_s"] < variants["execute_on"]["median_s"]  # a part of the run, never all of it
    by_call = workload["in_tracking_by_call_s"]
    assert {"open_run", "end_run", "log_params", "log_dict", "log_arrays"} <= set(by_call)
    assert all(seconds >= 0 for seconds in by_call.values()) and list(by_call.values()) == sorted(by_call.values(), reverse=True)
    assert f"end_run {report._s(by_call['end_run'])}" in markdown

    basic = written["sweep"]["basic"]
    assert "error" not in basic and basic["runs_per_minute"] > 0
    check = written["sweep"]["check"]
    assert check["jobs"] == written["sweep"]["runs"]
    assert all(check[key] > 0 for key in ("check_cold_s", "check_s", "hydra_check_s"))
    assert "(the grid sweeper, `callbacks.refuse_bad_jobs`" in markdown
    timed = {name: v for name, v in written["startup"].items() if isinstance(v, dict) and "command" in v}
    assert {"python_pass", "run_help", "default_run_existing_store"} <= set(timed)
    assert all("error" not in v and v["median_s"] > 0 for v in timed.values())
    assert results["harness"]["workloads"]["smoke"]["label"] == "smoke"


def test_tracking_clock_times_the_run_s_tracking_calls_once_and_restores_the_product(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from benchmarks.harness import TrackingClock, compose
    from nnresearch import experiment, store_rows
    from nnresearch.mlflow_sink import MLflowSink

    monkeypatch.chdir(tmp_path)
    cfg = compose(["data=digits", "model.depth=1", "model.width=8", "trainer.epochs=1", "trainer.progress=false",
                   f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    store_writes, in_clock, train = [], [], experiment.train
    clock = TrackingClock()

    def slow_store_write(write):  # every metric/param/tag batch costs 50 ms more: the clock must see it
        def slowly(*args, **kwargs):
            store_writes.append(clock._depth > 0)
            time.sleep(0.05)
            return write(*args, **kwargs)
        return slowly

    def slow_training(*args, **kwargs):  # 300 ms of training: the clock must not see it
        in_clock.append(clock._depth > 0)
        time.sleep(0.3)
        return train(*args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", slow_store_write(MlflowClient.log_batch))
    monkeypatch.setattr(store_rows, "write_metrics", slow_store_write(store_rows.write_metrics))
    monkeypatch.setattr(store_rows, "write_params", slow_store_write(store_rows.write_params))
    monkeypatch.setattr(experiment, "train", slow_training)
    untouched = (experiment.open_tracking, MLflowSink.flush)
    start = time.perf_counter()
    with clock.installed():
        outcome = experiment.execute(cfg)
    total = time.perf_counter() - start
    assert outcome.run_id and len(store_writes) >= 2 and all(store_writes)  # params, then the metrics
    assert in_clock == [False]
    assert 0.05 * len(store_writes) <= clock.seconds < total - 0.3
    assert sum(clock.by_call.values()) == pytest.approx(clock.seconds)
    assert clock.by_call["log_params"] >= 0.05 and clock.by_call["end_run"] >= 0.05  # the params, the final metrics
    assert (experiment.open_tracking, MLflowSink.flush) == untouched


def test_tracking_clock_counts_nested_calls_once(monkeypatch):
    from types import SimpleNamespace

    from benchmarks import harness
    from benchmarks.harness import TrackingClock

    # the test's own clock, advanced by its own sleeps: a loaded machine's late wake-ups cannot change the sums
    now = [100.0]
    monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    def sleep(seconds: float) -> None:
        now[0] += seconds

    clock = TrackingClock()
    with clock.timing("end_run"):
        sleep(0.01)
        with clock.timing("flush"):  # the final flush inside ending the run
            sleep(0.2)
    assert clock.seconds == pytest.approx(0.21)  # counted twice it would be 0.41
    assert clock.by_call == {"end_run": clock.seconds}


def test_tracking_clock_times_every_public_method_of_the_sink():
    from benchmarks.harness import TrackingClock
    from nnresearch.mlflow_sink import MLflowSink

    public = {name for name, value in vars(MLflowSink).items() if not name.startswith("_") and callable(value)}
    assert set(TrackingClock.SINK_METHODS) == public


def test_gpu_part_measures_cupy_against_torch_cuda_or_says_why_not(tmp_path):
    results = run.main(["--smoke", "--parts", "gpu", "--out", str(tmp_path)])
    if "gpu" not in results:  # no CuPy with a CUDA device, or no torch with CUDA: the reason is recorded
        assert results["skipped"]["gpu"]
        pytest.skip(f"the gpu part recorded why it did not run: {results['skipped']['gpu']}")
    for shape in results["gpu"]["shapes"]:
        c = shape["contenders"]
        assert set(c) == {"nnresearch_cupy", "torch_cuda", "gemm_only_cupy", "torch_gemm_only_cuda"}
        assert shape["ratio_to_torch"] == pytest.approx(c["nnresearch_cupy"]["median_s"] / c["torch_cuda"]["median_s"])
        assert shape["blas_ratio"] == pytest.approx(c["gemm_only_cupy"]["median_s"] / c["torch_gemm_only_cuda"]["median_s"])
        assert shape["gemm_floor_fraction"] > 0
        assert c["nnresearch_cupy"]["info"]["dtype"] == "float32"
    assert "GPU" in (tmp_path / "results.md").read_text()


def _meta(parts):
    environment = {"processor": "x86_64", "cpu_count": 2, "blas_threads": 2, "blas_threads_source": "test", "numpy": "2",
                   "torch": None, "sklearn": "1", "load_average_start": None}
    return {"command": "python -m benchmarks.run", "smoke": True, "parts": parts, "started": "now", "duration_s": 1.0,
            "environment": environment}


def test_results_without_a_step_part_leave_no_earlier_plot_beside_them(tmp_path):
    (tmp_path / "results.png").write_bytes(b"an earlier invocation's figure")
    paths = report.write({"meta": _meta(["startup"]), "skipped": {}, "errors": {}, "notes": []}, tmp_path)
    assert set(paths) == {"json", "markdown"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.md"]


def test_results_that_cannot_be_rendered_leave_the_folder_as_it_was(tmp_path):
    for name in ("results.json", "results.md", "results.png"):
        (tmp_path / name).write_text("earlier")
    broken = {"meta": _meta(["step"]), "step": {"shapes": [{"name": "2-2"}]}, "skipped": {}, "errors": {}, "notes": []}
    with pytest.raises(KeyError):
        report.write(broken, tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == dict.fromkeys(("results.json", "results.md", "results.png"),
                                                                                "earlier")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_torch_contender_does_the_work_of_the_nnresearch_step(optimizer):
    """Same architecture, loss, update and dtype: from nnresearch's weights, two of PyTorch's steps as
    the benchmark times them give nnresearch's losses and parameters (the smoke test hides torch)."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from nnresearch.backend import make_rng
    from nnresearch.nn.architectures import Builder, Init, mlp
    from nnresearch.nn.optim import make_optimizer

    sizes, m = [6, 5, 4, 3], 8
    network = mlp(Builder(np, np.float32, make_rng(0), Init("he_normal"), "relu"), sizes, "softmax_ce")
    update = make_optimizer(optimizer)
    rows, labels = contenders.batch(sizes, m)
    X, Y = np.ascontiguousarray(rows.T), np.eye(sizes[-1], dtype=np.float32)[:, labels]
    model = contenders.torch_mlp(torch, sizes)
    linears = [layer for layer in model if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        for index, linear in enumerate(linears, start=1):
            linear.weight.copy_(torch.from_numpy(network.params()[f"W{index}"]))
            linear.bias.copy_(torch.from_numpy(network.params()[f"b{index}"][:, 0]))
    torch_update = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](model.parameters(), lr=contenders.LR)
    step = contenders.torch_training_step(torch, model, torch_update, torch.from_numpy(rows), torch.from_numpy(labels))
    for _ in range(2):
        ours = network.loss_and_gradients(X, Y)
        update.step(network.params(), network.grads(), contenders.LR)
        theirs = step()
        assert float(ours) == pytest.approx(theirs.item(), rel=1e-5)
    for index, linear in enumerate(linears, start=1):
        assert linear.weight.dtype == torch.float32 and network.params()[f"W{index}"].dtype == np.float32
        np.testing.assert_allclose(linear.weight.detach().numpy(), network.params()[f"W{index}"], atol=1e-6)
        np.testing.assert_allclose(linear.bias.detach().numpy(), network.params()[f"b{index}"][:, 0], atol=1e-6)


def test_blas_threads_reports_numpy_s_blas_when_another_is_listed_first(monkeypatch):
    from pathlib import Path

    import numpy as np
    import threadpoolctl

    from benchmarks.timing import blas_threads

    numpy_libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    scipy_s = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.30", "num_threads": 7,
               "filepath": str(numpy_libs.parent / "scipy.libs" / "libscipy_openblas.so")}
    numpy_s = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.31", "num_threads": 2,
               "filepath": str(numpy_libs / "libscipy_openblas64_.so")}
    # after torch and scikit-learn are imported, threadpoolctl listed SciPy's OpenBLAS first
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: [scipy_s, numpy_s])
    assert blas_threads() == (2, "threadpoolctl (openblas 0.3.31)")
