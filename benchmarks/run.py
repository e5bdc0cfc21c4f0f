"""`python -m benchmarks.run [--smoke] [--out DIR] [--parts step,harness,sweep,startup,gpu] [--threads N]`

One invocation measures everything side by side and writes `DIR/results.{json,md,png}`
(default `benchmarks/results/`, ignored by git):

1. step     one training step per shape: nnresearch vs PyTorch eager vs scikit-learn, plus the
            step's GEMMs alone; FLOP/s against the float32 matmul peak timed in the same rounds
2. harness  a whole run through `experiment.execute` (tracking on/off) and `train` vs the bare loop
3. sweep    runs per minute of a multirun, Hydra's basic launcher vs joblib with 2 workers and vs
            Hydra's own sweeper, and the grid sweeper's check of the jobs against Hydra's
4. startup  `python -m nnresearch.run --help` and a default run, wall time
5. gpu      the step on CuPy against PyTorch CUDA at the three largest shapes (skipped, saying
            why, without CuPy and a CUDA device)

`--smoke` makes everything tiny (two smallest shapes, 2 repeats, a 2-run sweep with the basic
launcher only, start-up once) to check the benchmark itself in under a minute on an idle machine;
its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import contenders, flops, harness, processes, report
from benchmarks.timing import (
    blas_threads,
    environment,
    interleave,
    load_average,
    paired_ratio,
)

PARTS = ("step", "harness", "sweep", "startup", "gpu")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

SHAPES: list[tuple[list[int], int]] = [
    ([2, 16, 16, 2], 32),
    ([2, 64, 64, 64, 2], 128),
    ([784, 256, 256, 10], 128),
    ([784, 1024, 1024, 10], 256),
    ([3072, 2048, 2048, 2048, 10], 512),
]


@dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    shapes: list[tuple[list[int], int]]
    repeats_small: int  # shapes under 1 GFLOP per step; whole cycles of `balanced_orders` (8 for 8 contenders)
    repeats_large: int  # two cycles: at 2 threads one round's widest ratio to PyTorch ranged 0.76-1.32 on a shared host
    block_s: float
    settle_s: float  # unmeasured calls opening each step block: outlasts OpenBLAS's spinning threads (timing.py)
    peak_sides: tuple[int, ...]
    peak_repeats: int
    sklearn_batches_small: int
    sklearn_batches_large: int
    harness_workloads: tuple[harness.Workload, ...]  # the first one is judged against the targets
    sweep_depths: list[int]
    sweep_seeds: list[int]
    sweep_epochs: int
    sweep_launchers: tuple[str, ...]
    startup_repeats: int
    startup_new_store: bool  # also time a default run that has to create its MLflow store


FULL = Plan(shapes=SHAPES, repeats_small=16, repeats_large=12, block_s=0.25, settle_s=0.15,
            peak_sides=(2048, 4096), peak_repeats=3,
            sklearn_batches_small=8, sklearn_batches_large=2, harness_workloads=harness.FULL,
            sweep_depths=[1, 2, 3, 4], sweep_seeds=[0, 1, 2, 3, 4, 5], sweep_epochs=2,
            sweep_launchers=("basic", "joblib_2", "basic_hydra_sweeper"), startup_repeats=3, startup_new_store=True)
SMOKE = Plan(shapes=SHAPES[:2], repeats_small=2, repeats_large=2, block_s=0.02, settle_s=0.005,
             peak_sides=(256, 512), peak_repeats=2,
             sklearn_batches_small=2, sklearn_batches_large=2, harness_workloads=(harness.SMOKE,),
             sweep_depths=[1, 2], sweep_seeds=[0], sweep_epochs=1, sweep_launchers=("basic",), startup_repeats=1,
             startup_new_store=False)


def _name(sizes: list[int]) -> str:
    return "-".join(map(str, sizes))


def _timed_shape(sizes: list[int], m: int, built: dict[str, tuple[Any, dict[str, Any]]], repeats: int,
                 block_s: float, settle_s: float) -> dict[str, Any]:
    """One shape's entry: every built `(step, info)` contender timed in interleaved blocks, each block
    opening with `settle_s` of its own unmeasured calls."""
    timings = interleave({name: step for name, (step, _) in built.items()}, repeats, block_s, settle_s=settle_s)
    return {"name": _name(sizes), "sizes": sizes, "batch": m, "flops": flops.step_flops(sizes, m),
            "contenders": {name: timing.summary() | {"info": built[name][1]} for name, timing in timings.items()}}


def measure_steps(plan: Plan, threads: int, skipped: dict[str, str]) -> dict[str, Any]:
    """Part 1 and 2: per-shape step timings, ratios, FLOP/s and the fraction of the matmul peak.

    The peak a step is judged against is the square product at the best side of `peak_before`,
    timed as one more contender in that shape's interleaved rounds (median against median, under
    the same load: PyTorch's idle worker threads slow the next block, whoever runs it). The
    isolated peak (best of `peak_repeats`, before and after the part) is reported beside it.
    """
    peak_before = flops.matmul_peak(plan.peak_sides, plan.peak_repeats)
    side = max(plan.peak_sides, key=lambda n: peak_before[f"numpy_{n}"])
    shapes = []
    for sizes, m in plan.shapes:
        work = flops.step_flops(sizes, m)
        large = work >= 1e9
        builders = {
            "nnresearch": lambda: contenders.nnresearch_step(sizes, m),
            "torch": lambda: contenders.torch_step(sizes, m, threads),
            "sklearn": lambda: contenders.sklearn_step(sizes, m, plan.sklearn_batches_large if large else plan.sklearn_batches_small),
            "gemm_only": lambda: contenders.gemm_step(sizes, m),
            "torch_gemm_only": lambda: contenders.torch_gemm_step(sizes, m, threads),
            "matmul_peak": lambda: contenders.peak_step(side),
        }
        if not large:  # where the optimizer is a visible part of the step
            builders |= {"nnresearch_adam": lambda: contenders.nnresearch_step(sizes, m, optimizer="adam"),
                         "torch_adam": lambda: contenders.torch_step(sizes, m, threads, optimizer="adam")}
        built = {}
        for name, build in builders.items():
            try:
                built[name] = build()
            except contenders.Unavailable as why:
                skipped[name.removesuffix("_gemm_only").removesuffix("_adam")] = str(why)
        entry = _timed_shape(sizes, m, built, plan.repeats_large if large else plan.repeats_small, plan.block_s,
                             plan.settle_s)
        steps = {name: c for name, c in entry["contenders"].items() if name != "matmul_peak" and not name.endswith("_adam")}
        with_adam = {name: c["median_s"] for name, c in entry["contenders"].items() if name.endswith("_adam")}
        if len(with_adam) == 2:
            entry["adam_ratio"] = with_adam["nnresearch_adam"] / with_adam["torch_adam"]
        ours = steps["nnresearch"]["median_s"]
        entry["ratio"] = {name: ours / c["median_s"] for name, c in steps.items() if name != "nnresearch"}
        entry["ratio_best"] = {name: steps["nnresearch"]["min_s"] / c["min_s"] for name, c in steps.items()
                               if name != "nnresearch"}
        entry["ratio_paired"] = {name: paired_ratio(steps["nnresearch"]["per_round_s"], c["per_round_s"])
                                 for name, c in steps.items() if name != "nnresearch"}
        entry["flops_per_s"] = {name: work / c["median_s"] for name, c in steps.items() if name != "sklearn"}
        peak = entry["contenders"]["matmul_peak"]
        entry["peak_in_rounds_flops_per_s"] = peak["info"]["flops"] / peak["median_s"]
        entry["peak_fraction"] = {name: value / entry["peak_in_rounds_flops_per_s"]
                                  for name, value in entry["flops_per_s"].items()}
        entry["gemm_floor_fraction"] = steps["gemm_only"]["median_s"] / ours
        if "torch_gemm_only" in steps:  # > 1: NumPy's BLAS is slower than torch's on these products
            entry["blas_ratio"] = steps["gemm_only"]["median_s"] / steps["torch_gemm_only"]["median_s"]
        shapes.append(entry)
        del built
        gc.collect()
    peak_after = flops.matmul_peak(plan.peak_sides, plan.peak_repeats)
    peak = {key: max(peak_before[key], peak_after[key]) for key in peak_before}
    for entry in shapes:
        entry["peak_fraction_isolated"] = {name: value / peak["peak"] for name, value in entry["flops_per_s"].items()}
    widest = shapes[-1]
    return {"shapes": shapes, "peak": peak, "peak_before": peak_before, "peak_after": peak_after, "peak_side": side,
            "settle_s": plan.settle_s,
            "peak_fraction_means": "median FLOP/s / median FLOP/s of matmul_peak timed in the same rounds "
                                   "(peak_fraction_isolated: / the isolated best)",
            "threads": threads, "widest": {"name": widest["name"], "peak_fraction": widest["peak_fraction"].get("nnresearch"),
                                           "peak_fraction_isolated": widest["peak_fraction_isolated"].get("nnresearch"),
                                           "target": 0.85}}


def measure_gpu(plan: Plan, skipped: dict[str, str]) -> dict[str, Any] | None:
    """The step on CuPy against PyTorch CUDA at the three largest shapes, and each library's GEMMs
    alone on the device (where the time goes); None (and a reason) without a GPU."""
    shapes = []
    for sizes, m in plan.shapes[-3:]:
        try:
            built = {"nnresearch_cupy": contenders.nnresearch_step(sizes, m, device="gpu"),
                     "torch_cuda": contenders.torch_step(sizes, m, 1, device="gpu"),
                     "gemm_only_cupy": contenders.gemm_step(sizes, m, device="gpu"),
                     "torch_gemm_only_cuda": contenders.torch_gemm_step(sizes, m, 1, device="gpu")}
        except contenders.Unavailable as why:
            skipped["gpu"] = str(why)
            return None
        entry = _timed_shape(sizes, m, built, plan.repeats_small, plan.block_s, plan.settle_s)
        c = entry["contenders"]
        entry["ratio_to_torch"] = c["nnresearch_cupy"]["median_s"] / c["torch_cuda"]["median_s"]
        entry["ratio_to_torch_best"] = c["nnresearch_cupy"]["min_s"] / c["torch_cuda"]["min_s"]
        entry["flops_per_s"] = {name: entry["flops"] / timing["median_s"] for name, timing in c.items()}
        entry["gemm_floor_fraction"] = c["gemm_only_cupy"]["median_s"] / c["nnresearch_cupy"]["median_s"]
        entry["blas_ratio"] = c["gemm_only_cupy"]["median_s"] / c["torch_gemm_only_cuda"]["median_s"]
        shapes.append(entry)
        del built
        gc.collect()
    return {"shapes": shapes, "device": shapes[0]["contenders"]["torch_cuda"]["info"].get("name") if shapes else None}


def notes(results: dict[str, Any], threads: int, source: str) -> list[str]:
    out = [f"Threads: NumPy's BLAS uses {threads} (from {source}); torch.set_num_threads({threads}). "
           "Each comparison is a ratio of medians taken in one invocation, contenders interleaved in "
           "carryover-balanced orders (timing.balanced_orders): the machine is shared, so absolute times drift "
           "between runs, ratios much less.",
           "FLOPs count the matmuls only: 2 m n_in n_out per layer forward, twice that backward "
           "(dW and dA_prev), no dA_prev for the first layer."]
    step = results.get("step", {}).get("shapes", [])
    if step:
        out.append(f"Every step block opens with {results['step']['settle_s']} s of its own unmeasured calls: OpenBLAS's "
                   "idle threads spin for ~0.1 s after each NumPy product and took a core from whichever block came next, "
                   "mostly PyTorch's (timing.py).")
        out.append("Peak = the median of a square float32 np.matmul (the best side of the isolated measurement) timed "
                   "in every shape's rounds beside the step; the isolated peak = best np.matmul of square matrices "
                   "before and after the step part, with nothing else running.")
    sk = next((s["contenders"]["sklearn"]["info"] for s in step if "sklearn" in s["contenders"]), None)
    if sk:
        out.append(f"scikit-learn's MLPClassifier computes in the dtype of X: given float32 it keeps float32 "
                   f"(checked: coefs_ are {sk['dtype']}); given float64 (its usual input) it would run in float64. "
                   "Settings: solver='sgd', momentum=0, alpha=0, shuffle=False, learning_rate_init=0.01; time per "
                   "batch = one partial_fit over N batches / N, so it includes its per-call input checks. For two "
                   "classes it uses one logistic output unit instead of a 2-way softmax.")
    tinfo = next((s["contenders"]["torch"]["info"] for s in step if "torch" in s["contenders"]), None)
    if tinfo:
        out.append(f"PyTorch: eager mode, {tinfo['dtype']}, {tinfo['threads']} intra-op threads, mkldnn={tinfo['mkldnn']}, "
                   f"mkl={tinfo['mkl']}; inputs (m, n) with integer class targets; no torch.compile.")
    if step:
        out.append(f"nnresearch parameters and gradients stay {step[0]['contenders']['nnresearch']['info']['dtype']} "
                   "through a step (checked after one step). 'GEMMs alone' runs only the step's matrix products on "
                   "preallocated arrays: the floor for any NumPy implementation of the step; 'torch GEMMs' runs the "
                   "same products with torch tensors, so 'NumPy BLAS / torch BLAS' > 1 is a gap no change to the core "
                   "can close.")
    gpu = results.get("gpu", {}).get("shapes", [])
    if gpu:
        torch_info = gpu[0]["contenders"]["torch_cuda"]["info"]
        out.append(f"GPU: float32 everywhere; torch's TF32 matmuls {'on' if torch_info.get('tf32') else 'off'}, "
                   f"CUPY_TF32={gpu[0]['contenders']['gemm_only_cupy']['info'].get('cupy_tf32')}. Every GPU contender "
                   "synchronizes the device at the end of each step, so its time is the longer of the host's dispatch "
                   "and the device's work; torch's host side on 1 intra-op thread. 'GEMMs alone' are the step's "
                   "products only, in each library: CuPy's / torch's > 1 is a gap in the products, the rest of "
                   "'vs torch' is the elementwise work and launches.")
    if "harness" in results:
        out.append("Harness: every variant loads the data and builds the network from the same composed config and "
                   "draws the same batches from the same generator as train(), so equal final val losses show equal "
                   "work. Times are the best of interleaved rounds (noise on a shared machine only adds time); "
                   "ratios of the medians are in results.json.")
    return out


def run(smoke: bool, out: Path, parts: tuple[str, ...] = PARTS, argv: list[str] | None = None,
        threads: int | None = None) -> dict[str, Any]:
    """Measure `parts`, write results.{json,md,png} into `out`, return the results.

    `threads=None` uses as many threads as NumPy's BLAS already does (torch is set to the same);
    a number limits BLAS to it for this invocation (threadpoolctl) and sets torch to it too.
    """
    if threads is None:
        return _run(smoke, out, parts, argv, *blas_threads())
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        return _run(smoke, out, parts, argv, threads, f"--threads {threads} (threadpoolctl limit)")


def _run(smoke: bool, out: Path, parts: tuple[str, ...], argv: list[str] | None, threads: int,
         source: str) -> dict[str, Any]:
    plan = SMOKE if smoke else FULL
    started = time.perf_counter()
    results: dict[str, Any] = {"meta": {"command": "python -m benchmarks.run " + " ".join(argv or []),
                                        "smoke": smoke, "parts": list(parts),
                                        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                        "environment": environment()},
                               "skipped": {}, "errors": {}}
    if "step" in parts:
        print("step: training step per shape, and the matmul peak ...", flush=True)
        results["step"] = measure_steps(plan, threads, results["skipped"])
    if "gpu" in parts:
        print("gpu: training step on CuPy and PyTorch CUDA ...", flush=True)
        try:
            gpu = measure_gpu(plan, results["skipped"])
        except Exception as error:  # noqa: BLE001 - a CUDA failure must not lose the other parts' results
            results["errors"]["gpu"] = harness.error_text(error)
        else:
            if gpu is not None:
                results["gpu"] = gpu
    template = processes.StoreTemplate() if {"harness", "sweep", "startup"} & set(parts) else None
    try:
        if "harness" in parts:
            print("harness: execute / train / bare loop ...", flush=True)
            try:
                results["harness"] = harness.measure(plan.harness_workloads, template.fill)
            except Exception as error:  # noqa: BLE001 - recorded; the sweep and start-up parts still run
                results["errors"]["harness"] = harness.error_text(error)
        if "sweep" in parts:
            print(f"sweep: {', '.join(plan.sweep_launchers)} launcher ...", flush=True)
            results["sweep"] = processes.sweep(plan.sweep_depths, plan.sweep_seeds, plan.sweep_epochs, template,
                                               plan.sweep_launchers)
        if "startup" in parts:
            print("startup: --help and a default run ...", flush=True)
            results["startup"] = processes.startup(plan.startup_repeats, template, plan.startup_new_store)
    finally:
        if template is not None:
            template.close()
    results["meta"]["duration_s"] = time.perf_counter() - started
    results["meta"]["environment"]["load_average_end"] = load_average()
    results["notes"] = notes(results, threads, source)
    paths = report.write(_finite(results), out)
    print(paths["markdown"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return results


def _finite(value: Any) -> Any:
    """NaN and inf as None, so results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[1])
    parser.add_argument("--smoke", action="store_true", help="everything tiny, to check the benchmark itself")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for NumPy's BLAS and torch (default: what NumPy's BLAS uses)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    parts = tuple(p for p in args.parts.split(",") if p)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return run(args.smoke, args.out, parts, argv, args.threads)


if __name__ == "__main__":
    main()
