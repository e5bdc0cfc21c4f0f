"""Side-by-side performance measurements of nnresearch against PyTorch, scikit-learn and itself.

`python -m benchmarks.run [--smoke] [--out DIR]` measures, in one invocation:

| module          | what                                                                      |
|-----------------|---------------------------------------------------------------------------|
| `contenders.py` | one training step (forward, backward, SGD) in nnresearch, PyTorch, sklearn, and the step's GEMMs alone |
| `flops.py`      | the FLOPs of one step and this machine's float32 matmul peak              |
| `harness.py`    | a whole run through `experiment.execute` / `train` against the bare core loop |
| `processes.py`  | sweep throughput (basic vs joblib launcher) and start-up time, as subprocesses |
| `timing.py`     | interleaved repeats and medians (the machine is shared and noisy)          |
| `report.py`     | results.json, results.md and results.png                                  |

Every comparison is a ratio against a reference measured in the same invocation, interleaved
with it, so a busy machine slows both sides alike. The benchmarks import PyTorch (the `bench`
extra) but the package never does.
"""
