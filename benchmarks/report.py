"""Writing one invocation's results: `results.json` (everything), `results.md`, `results.png`."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from benchmarks.processes import LAUNCHERS
from nnresearch.files import replaced_atomically

CONTENDERS = ("nnresearch", "torch", "sklearn", "gemm_only", "torch_gemm_only")
GPU_CONTENDERS = ("nnresearch_cupy", "torch_cuda", "gemm_only_cupy", "torch_gemm_only_cuda")


def _s(value: float | None) -> str:
    """Seconds with a unit a person reads at a glance."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.2f} s"


def _x(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _harness(h: dict[str, Any]) -> list[str]:
    """The harness part: one table per workload, the first workload judged against the targets."""
    t = h["targets"]
    lines = ["## Harness against the bare core loop", "",
             f"Targets on the first workload: harness (execute_on) / bare <= {t['harness_over_bare']:.2f}, tracking on / "
             f"off <= {t['tracking_on_over_off']:.2f} both end to end and clocked inside the runs. `bare` = the core's "
             "forward/backward/update over the same batches plus the evaluations the run reports (train and val cost at "
             "initialization, val cost every epoch, test cost at the end); `bare_steps` = the updates alone. The table "
             "gives each variant's best and median of the interleaved rounds; the judged end-to-end ratios are paired "
             "(the median over rounds of the two variants' times in the same round), with best against best and median "
             f"against median beside them. BLAS on {h.get('blas_threads')} thread (see benchmarks/harness.py).", ""]
    for w in h["workloads"].values():
        v, r = w["variants"], w["ratios"]
        lines += [f"### {w['label']}: {w['about']}", "",
                  f"`python -m nnresearch.run {' '.join(w['overrides'])}`; execute_on logs into a "
                  f"{'copy of an existing' if w.get('store') == 'existing' else 'new'} SQLite store.", ""]
        rows = [[name, _s(e.get("min_s")), _s(e.get("median_s")), _s(e.get("first_run_s")), _x(e.get("over_bare")),
                 _x(e.get("val_loss"), 6)] for name, e in v.items()]
        lines += _table(["variant", "best", "median", "first run", "/ bare", "final val loss"], rows)
        cost, values, clocked = w.get("tracking_cost_s"), w.get("logged_values"), w.get("in_tracking_s", {})
        lines += [f"harness / bare = **{_x(r.get('harness_over_bare_paired'), 3)}** paired (best against best "
                  f"{_x(r.get('harness_over_bare'), 3)}, median against median {_x(r.get('harness_over_bare_median'), 3)}); "
                  f"tracking on / off = **{_x(r.get('tracking_on_over_off_paired'), 3)}** paired (best against best "
                  f"{_x(r.get('tracking_on_over_off'), 3)}, median against median "
                  f"{_x(r.get('tracking_on_over_off_median'), 3)}); best on - best off = {_s(cost)} per run for "
                  f"{values if values is not None else '–'} logged metric values. Clocked inside the tracked runs "
                  f"(MLflow run open/end and every sink call): {_s(clocked.get('median_s'))} per run (median; "
                  f"{_s(clocked.get('min_s'))} to {_s(clocked.get('max_s'))}), which makes tracking on / off "
                  f"**{_x(r.get('tracking_clocked'), 3)}**." + _by_call(w.get("in_tracking_by_call_s", {})), ""]
        lines += [f"- **{name} failed**: `{error.splitlines()[-1]}`" for name, error in w.get("errors", {}).items()]
        lines += [""] if w.get("errors") else []
    verdict = h.get("verdict", {})
    lines += ["Targets: " + ", ".join(f"{key} {'met' if ok else 'NOT met'}" for key, ok in verdict.items()) + ".", ""]
    return lines


def _by_call(by_call: dict[str, float]) -> str:
    """' By call, median per run: end_run 25.1 ms, log_params 8.2 ms, ...' (largest first), or ''."""
    if not by_call:
        return ""
    return " By call, median per run: " + ", ".join(f"{call} {_s(seconds)}" for call, seconds in by_call.items()) + "."


def markdown(results: dict[str, Any]) -> str:
    meta, env = results["meta"], results["meta"]["environment"]
    lines = [f"# nnresearch benchmark{' (smoke)' if meta['smoke'] else ''}", "",
             f"`{meta['command']}` — {meta['started']}, {meta['duration_s']:.0f} s; {env['processor']}"
             f"{' (' + env['cpu_model'] + ')' if env.get('cpu_model') else ''}, "
             f"{env['cpu_count']} cores, BLAS threads {env['blas_threads']} ({env['blas_threads_source']}); "
             f"numpy {env['numpy']}, torch {env['torch']}, scikit-learn {env['sklearn']}"
             f"{', cupy ' + env['cupy'] if env.get('cupy') else ''}; load average "
             f"{env['load_average_start']} -> {env.get('load_average_end')}.", ""]
    if "step" in results:
        lines += ["## Training step (float32, relu, softmax + cross-entropy, SGD)", "",
                  "Median seconds per step over interleaved repeats; ratio = nnresearch / other "
                  "(<= 1.00: nnresearch is not slower), of the medians, of the best rounds (PyTorch's step "
                  "time is often bimodal on this machine, so the two can differ) and paired (the median over "
                  "rounds of the two steps' times in the same round, where the machine's drift cancels).", ""]
        rows = []
        for shape in results["step"]["shapes"]:
            c = shape["contenders"]
            rows.append([f"`{shape['name']}`", str(shape["batch"]),
                         *(_s(c.get(name, {}).get("median_s")) for name in CONTENDERS),
                         _x(shape["ratio"].get("torch")), _x(shape["ratio_best"].get("torch")),
                         _x(shape.get("ratio_paired", {}).get("torch")), _x(shape["ratio"].get("sklearn"))])
        lines += _table(["shape", "batch", "nnresearch", "torch", "sklearn", "GEMMs alone", "torch GEMMs", "vs torch",
                         "vs torch, best / best", "vs torch, paired", "vs sklearn"], rows)
        adam = [shape for shape in results["step"]["shapes"] if "nnresearch_adam" in shape["contenders"]]
        if adam:
            lines += ["The same step with Adam instead of SGD (defaults, lr 0.01; `torch.optim.Adam`'s default "
                      "implementation), on the shapes under 1 GFLOP, where the update is a visible part of the step:", ""]
            lines += _table(["shape", "batch", "nnresearch, Adam", "torch, Adam", "vs torch"],
                            [[f"`{s['name']}`", str(s["batch"]), _s(s["contenders"]["nnresearch_adam"]["median_s"]),
                              _s(s["contenders"].get("torch_adam", {}).get("median_s")), _x(s.get("adam_ratio"))]
                             for s in adam])
        step = results["step"]
        peak = step["peak"]
        lines += ["## Achieved FLOP/s", "",
                  f"float32 matmul peak of this machine: a square np.matmul of side {step['peak_side']}, timed as one more "
                  "contender in each shape's interleaved rounds (its median, under the same load as the step's median); "
                  f"alone, before and after the part, the best product reached {peak['peak'] / 1e9:.1f} GFLOP/s ("
                  + ", ".join(f"{k.removeprefix('numpy_')}: {v / 1e9:.1f}" for k, v in peak.items() if k.startswith("numpy_"))
                  + "). GEMM floor = time of the step's matmuls alone / time of the nnresearch step (1.00: "
                  "nothing but the matmuls costs time).", ""]
        rows = [[f"`{s['name']}`", _x(s["flops"] / 1e9, 3), _x(s["flops_per_s"].get("nnresearch", math.nan) / 1e9, 1),
                 _x(s["peak_in_rounds_flops_per_s"] / 1e9, 1), _x(s["peak_fraction"].get("nnresearch")),
                 _x(s["peak_fraction_isolated"].get("nnresearch")), _x(s["peak_fraction"].get("torch")),
                 _x(s["peak_fraction"].get("gemm_only")), _x(s.get("gemm_floor_fraction")), _x(s.get("blas_ratio"))]
                for s in step["shapes"]]
        lines += _table(["shape", "GFLOP/step", "nnresearch GFLOP/s", "peak in its rounds, GFLOP/s", "nnresearch / peak",
                         "nnresearch / isolated peak", "torch / peak", "GEMMs alone / peak", "GEMM floor",
                         "NumPy BLAS / torch BLAS"], rows)
        widest = step["shapes"][-1]
        lines += [f"Widest shape `{widest['name']}`: nnresearch reaches {_x(widest['peak_fraction'].get('nnresearch'))} "
                  f"of the matmul peak timed in its rounds (target >= 0.85; "
                  f"{_x(widest['peak_fraction_isolated'].get('nnresearch'))} of the isolated best); its own GEMMs alone reach "
                  f"{_x(widest['peak_fraction'].get('gemm_only'))}.", ""]
    if "gpu" in results:
        g = results["gpu"]
        lines += [f"## Training step on the GPU ({g.get('device')}): CuPy against PyTorch CUDA", "",
                  "Median seconds per step, each step waited for on the device; vs torch = nnresearch (CuPy) / PyTorch, "
                  "of the medians and of the best rounds. GEMM floor = CuPy's GEMMs alone / the nnresearch step.", ""]
        rows = [[f"`{s['name']}`", str(s["batch"]), *(_s(s["contenders"][name]["median_s"]) for name in GPU_CONTENDERS),
                 _x(s["ratio_to_torch"]), _x(s.get("ratio_to_torch_best")), _x(s.get("gemm_floor_fraction")),
                 _x(s.get("blas_ratio")), _x(s.get("flops_per_s", {}).get("nnresearch_cupy", math.nan) / 1e12, 1)]
                for s in g["shapes"]]
        lines += _table(["shape", "batch", "nnresearch (CuPy)", "PyTorch CUDA", "CuPy GEMMs", "torch GEMMs", "vs torch",
                         "vs torch, best / best", "GEMM floor", "CuPy BLAS / torch BLAS", "nnresearch TFLOP/s"], rows)
    if "harness" in results:
        lines += _harness(results["harness"])
    if "sweep" in results:
        sw = results["sweep"]
        lines += [f"## Sweep throughput ({sw.get('runs')} runs)", ""]
        rows = [[name, _s(sw[name].get("wall_s")), _x(sw[name].get("runs_per_minute"), 1), f"`{sw[name].get('command', '')}`"]
                for name in LAUNCHERS if name in sw]
        lines += _table(["launcher", "wall", "runs/min", "command"], rows)
        lines += ["Every sweep starts from a copy of an existing MLflow store (see start-up for what creating one costs)."
                  if sw.get("basic", {}).get("store") == "existing" else "Each sweep creates its own MLflow store.", ""]
        if sw.get("joblib_speedup") is not None:
            lines += [f"joblib (2 workers) / basic: {_x(sw.get('joblib_speedup'))}x", ""]
        if sw.get("grid_sweeper_speedup") is not None:
            lines += [f"grid sweeper (the default) / Hydra's basic sweeper, basic launcher: {_x(sw['grid_sweeper_speedup'])}x",
                      ""]
        check = sw.get("check", {})
        if "check_s" in check:
            lines += [f"Checking the {check['jobs']} jobs before the first starts (the grid sweeper, "
                      f"`callbacks.refuse_bad_jobs`; `benchmarks/sweep_check.py`): {_s(check['check_cold_s'])} in a fresh "
                      f"process, imports included; {_s(check['check_s'])} warm against {_s(check['hydra_check_s'])} for "
                      f"the check of Hydra's basic sweeper it replaces (composing every job): "
                      f"{_x(check['check_s'] / check['hydra_check_s'])}x.", ""]
        elif "error" in check:
            lines += [f"- **the sweep check's measurement failed**: `{check['error'][-300:]}`", ""]
        lines += [f"- **{n} failed**: `{sw[n]['error'][-300:]}`" for n in LAUNCHERS if "error" in sw.get(n, {})]
        lines += [""] if any("error" in sw.get(n, {}) for n in LAUNCHERS) else []
    if "startup" in results:
        st = results["startup"]
        lines += ["## Start-up (target < 5 s)", ""]
        timed = {name: v for name, v in st.items() if isinstance(v, dict) and "command" in v}
        rows = [[name, f"`{v['command']}`", _s(v.get("median_s")), ", ".join(_s(x) for x in v.get("runs_s", []))]
                for name, v in timed.items()]
        lines += _table(["what", "command", "median", "runs"], rows)
        store = st.get("store", {})
        lines += [f"Creating a new MLflow store (`stores.ensure_store`, in this process): "
                  f"{_s(store.get('store_creation_s'))}, after importing `nnresearch.stores` (and MLflow): "
                  f"{_s(store.get('tracking_import_s'))}. `default_run_existing_store` starts from a copy of it.", ""]
        lines += [f"- **{n} failed**: `{v['error'][-300:]}`" for n, v in {**timed, "store": store}.items() if "error" in v]
        lines += [""] if any("error" in v for v in {**timed, "store": store}.values()) else []
    if results.get("errors"):
        lines += ["## Failed", "", *(f"- {name}: `{why.splitlines()[-1]}`" for name, why in results["errors"].items()), ""]
    if results.get("skipped"):
        lines += ["## Skipped", "", *(f"- {name}: {why}" for name, why in results["skipped"].items()), ""]
    lines += ["## Notes", "", *(f"- {note}" for note in results.get("notes", [])), ""]
    return "\n".join(lines)


def plot(results: dict[str, Any]) -> bytes:
    """The step part's figure, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = results["step"]["shapes"]
    labels = [f"{s['name']}\nm={s['batch']}" for s in shapes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    present = [c for c in CONTENDERS if any(c in s["contenders"] for s in shapes)]
    width = 0.8 / max(1, len(present))
    for i, name in enumerate(present):
        xs = [j + (i - (len(present) - 1) / 2) * width for j in range(len(shapes))]
        left.bar(xs, [s["contenders"].get(name, {}).get("median_s", float("nan")) for s in shapes], width, label=name)
    left.set_yscale("log")
    left.set_ylabel("median seconds per training step")
    left.set_title("Training step, float32 (lower is better)")
    left.set_xticks(range(len(shapes)), labels, fontsize=7)
    left.legend(fontsize=8)
    for name in ("nnresearch", "torch", "gemm_only", "torch_gemm_only"):
        ys = [s["peak_fraction"].get(name, float("nan")) for s in shapes]
        right.plot(range(len(shapes)), ys, marker="o", label=name)
    right.axhline(0.85, color="gray", linestyle="--", linewidth=1, label="target 0.85")
    right.set_ylim(0, 1.1)
    right.set_ylabel("achieved FLOP/s / matmul peak")
    right.set_title(f"Fraction of the float32 matmul peak (square side {results['step']['peak_side']}, same rounds)")
    right.set_xticks(range(len(shapes)), labels, fontsize=7)
    right.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    return png.getvalue()


def write(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write the files into `out` (created if needed); returns their paths.

    All three are rendered before any is written, so a failure leaves the folder as it was; each is
    replaced whole. Without a step part there is no plot, and an earlier invocation's `results.png`
    is removed: the folder never pairs this invocation's JSON and Markdown with another's figure.
    """
    contents: dict[str, tuple[Path, bytes]] = {
        "json": (out / "results.json", (json.dumps(results, indent=2, default=str) + "\n").encode()),
        "markdown": (out / "results.md", markdown(results).encode()),
    }
    stale_plot = out / "results.png"
    if "step" in results and results["step"]["shapes"]:
        contents["plot"] = (stale_plot, plot(results))
    for path, content in contents.values():
        with replaced_atomically(path) as tmp:
            tmp.write_bytes(content)
    if "plot" not in contents:
        stale_plot.unlink(missing_ok=True)
    return {kind: path for kind, (path, _) in contents.items()}
