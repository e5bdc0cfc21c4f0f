"""The benchmark itself runs and writes what it promises (never its timings: the machine is shared).

The smoke mode of the training-step and FLOP parts runs in-process, with PyTorch reported as
unavailable so the test means the same with and without the optional `bench` extra installed.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import contenders, flops, run


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
    assert "Training step" in markdown and "Achieved FLOP/s" in markdown

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
        assert {"nnresearch", "gemm_only", "sklearn"} <= set(shape["contenders"])
        for contender in shape["contenders"].values():
            assert contender["median_s"] > 0 and contender["repeats"] >= 1
        assert shape["contenders"]["nnresearch"]["info"]["dtype"] == "float32"
        assert shape["contenders"]["sklearn"]["info"]["dtype"] == "float32"
        assert shape["ratio"]["sklearn"] > 0 and shape["ratio"]["gemm_only"] > 0
        assert shape["flops_per_s"]["nnresearch"] > 0
        assert 0 < shape["peak_fraction"]["nnresearch"]
    assert results["step"]["threads"] == written["meta"]["environment"]["blas_threads"]


def test_unknown_part_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        run.main(["--parts", "step,nonsense", "--out", str(tmp_path)])
