"""One training step (forward, cost, backward, SGD update) of the same MLP in each library.

Every contender trains `sizes = [n0, ..., nL]` with relu hidden layers and a softmax +
cross-entropy output on a fixed random float32 batch of `m` examples, learning rate 0.01, no
momentum, no weight decay. A builder returns `(step, info)`: `step()` performs the work and
returns how many training steps it did; `info` says what exactly was run.

| contender  | step                                                                         |
|------------|------------------------------------------------------------------------------|
| nnresearch | `Network.loss_and_gradients(X, Y)` then `make_optimizer("sgd").step(...)`   |
| torch      | eager `nn.Sequential(Linear, ReLU, ...)`, `CrossEntropyLoss`, `optim.SGD`,  |
|            | `zero_grad(set_to_none=True)`                                                |
| sklearn    | `MLPClassifier(solver="sgd").partial_fit` over N batches (one epoch), per batch |
| gemm_only  | the step's matrix products alone, no elementwise work (`flops.gemm_only`)   |
| torch_gemm_only | the same products with `torch` tensors: NumPy's BLAS against PyTorch's  |
| matmul_peak | one square `np.matmul` at the peak's side (`flops.square_matmul`)              |
| nnresearch_adam, torch_adam | the first two with Adam (defaults, lr 0.01): on shapes under 1 GFLOP |

The `gpu` part runs `nnresearch_step(device="gpu")` (the same core on CuPy) against
`torch_step(device="gpu")` (CUDA), and both GEMM-only contenders on the device (CuPy's cuBLAS
against torch's); every GPU contender waits for the device at the end of every step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.flops import gemm_only, square_matmul

LR = 0.01
Step = Callable[[], int]


class Unavailable(Exception):
    """A contender that cannot run here (its library is not installed)."""


def batch(sizes: list[int], m: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A random float32 batch in rows: X `(m, n0)` and integer labels `(m,)` in range(nL)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, sizes[0]), dtype=np.float32)
    labels = rng.integers(0, sizes[-1], m)
    return X, labels


def nnresearch_step(sizes: list[int], m: int, device: str = "cpu", optimizer: str = "sgd") -> tuple[Step, dict[str, Any]]:
    """The core's step on NumPy (`device="cpu"`) or CuPy (`"gpu"`, waiting for the device each step),
    updating with `optimizer` ("sgd" or "adam", default hyperparameters but the learning rate)."""
    from nnresearch.backend import make_rng
    from nnresearch.nn.architectures import Builder, Init, mlp
    from nnresearch.nn.optim import make_optimizer

    xp, wait = _array_device(device)
    network = mlp(Builder(xp, xp.float32, make_rng(0), Init("he_normal"), "relu"), sizes, "softmax_ce")
    update = make_optimizer(optimizer)
    rows, labels = batch(sizes, m)
    X = xp.asarray(np.ascontiguousarray(rows.T))  # the chapter's layout: examples in columns
    Y = xp.asarray(np.eye(sizes[-1], dtype=np.float32)[:, labels])

    def step() -> int:
        network.loss_and_gradients(X, Y)
        update.step(network.params(), network.grads(), LR)
        wait()
        return 1

    step()
    dtypes = sorted({str(p.dtype) for p in network.params().values()} | {str(g.dtype) for g in network.grads().values()})
    return step, {"dtype": "/".join(dtypes), "layout": "W (n_l, n_prev), A (n_l, m)", "backend": xp.__name__}


def _array_device(device: str) -> tuple[Any, Callable[[], None]]:
    """NumPy for "cpu", CuPy for "gpu" (Unavailable without CuPy and a CUDA device), and what makes
    a step's time include the kernels it queued: a device synchronize (nothing on the CPU)."""
    from nnresearch.backend import gpu_available, select

    if device == "gpu" and not gpu_available():
        raise Unavailable("CuPy with a CUDA device is not available")
    if device != "gpu":
        return select(device), lambda: None
    import cupy

    return select(device), cupy.cuda.Device().synchronize


def import_torch() -> Any:
    """`torch`, or Unavailable when it is not installed (it is the optional `bench` extra)."""
    try:
        import torch
    except ImportError as error:
        raise Unavailable(f"torch not installed ({error}); pip install '.[bench]'") from error
    return torch


def _torch_device(torch: Any, device: str) -> tuple[str, Callable[[], None]]:
    """torch's device for "cpu" / "gpu", and what waits for its queued kernels (nothing on the CPU)."""
    if device == "gpu" and not torch.cuda.is_available():
        raise Unavailable("torch sees no CUDA device")
    return ("cuda", torch.cuda.synchronize) if device == "gpu" else ("cpu", lambda: None)


def torch_step(sizes: list[int], m: int, threads: int, device: str = "cpu", optimizer: str = "sgd") -> tuple[Step, dict[str, Any]]:
    """PyTorch eager on the CPU, or on CUDA (`device="gpu"`, synchronizing each step), updating with
    `torch.optim.SGD` or `torch.optim.Adam` (its default implementation for the device)."""
    torch = import_torch()
    target, wait = _torch_device(torch, device)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_mlp(torch, sizes).to(target)
    update = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](model.parameters(), lr=LR)
    rows, labels = batch(sizes, m)
    X, y = torch.from_numpy(rows).to(target), torch.from_numpy(labels).to(target)
    train_step = torch_training_step(torch, model, update, X, y)

    def step() -> int:
        train_step()
        wait()
        return 1

    step()
    info = {"dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "device": target}
    if device == "gpu":
        return step, info | {"name": torch.cuda.get_device_name(), "tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    return step, info | {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
                         "mkldnn": bool(torch.backends.mkldnn.is_available()), "mkl": bool(torch.backends.mkl.is_available())}


def torch_mlp(torch: Any, sizes: list[int]) -> Any:
    """`nn.Sequential(Linear, ReLU, ..., Linear)`: no ReLU after the output layer (the loss takes logits)."""
    layers: list[Any] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def torch_training_step(torch: Any, model: Any, update: Any, X: Any, y: Any) -> Callable[[], Any]:
    """PyTorch's training step as the `torch` contender times it: zero_grad, forward, cross-entropy,
    backward, the optimizer's step; returns the loss (a test compares it with nnresearch's)."""
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> Any:
        update.zero_grad(set_to_none=True)
        loss = loss_fn(model(X), y)
        loss.backward()
        update.step()
        return loss

    return step


def sklearn_step(sizes: list[int], m: int, n_batches: int) -> tuple[Step, dict[str, Any]]:
    try:
        from sklearn.neural_network import MLPClassifier
    except ImportError as error:
        raise Unavailable(f"scikit-learn not installed ({error})") from error

    rows, labels = batch(sizes, m * n_batches)
    classifier = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="sgd", batch_size=m,
                               learning_rate_init=LR, momentum=0.0, nesterovs_momentum=False, alpha=0.0,
                               shuffle=False, random_state=0)
    classifier.partial_fit(rows, labels, classes=np.arange(sizes[-1]))  # initializes the weights

    def step() -> int:
        classifier.partial_fit(rows, labels)
        return n_batches

    step()
    return step, {"dtype": str(classifier.coefs_[0].dtype), "batches_per_call": n_batches,
                  "output": f"{classifier.out_activation_} x {classifier.coefs_[-1].shape[1]}"}


def gemm_step(sizes: list[int], m: int, device: str = "cpu") -> tuple[Step, dict[str, Any]]:
    """The step's products alone (`flops.gemm_only`) on NumPy, or on CuPy waiting for the device;
    a call returning None is one unit."""
    xp, wait = _array_device(device)
    products = gemm_only(sizes, m, xp=xp)
    if device == "cpu":  # no wrapper: the CPU contender stays the bare products
        return products, {"dtype": "float32"}

    def step() -> int:
        products()
        wait()
        return 1

    return step, {"dtype": "float32", "backend": "cupy", "cupy_tf32": os.environ.get("CUPY_TF32", "0")}


def peak_step(side: int) -> tuple[Step, dict[str, Any]]:
    """One square float32 product at the side where the matmul peak was measured: timed beside the
    step in the same rounds, it is the peak under the same load as the contenders."""
    return square_matmul(side), {"dtype": "float32", "side": side, "flops": 2 * side**3}


def torch_gemm_step(sizes: list[int], m: int, threads: int, device: str = "cpu") -> tuple[Step, dict[str, Any]]:
    """`gemm_step` with torch tensors in torch's own layout (X rows), the products autograd runs;
    on CUDA (`device="gpu"`) synchronizing each step."""
    torch = import_torch()
    target, wait = _torch_device(torch, device)
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    pairs = list(zip(sizes[:-1], sizes[1:]))
    Ws = [torch.randn(n_out, n_in, generator=generator).to(target) for n_in, n_out in pairs]
    As = [torch.randn(m, n_in, generator=generator).to(target) for n_in, _ in pairs]
    deltas = [torch.randn(m, n_out, generator=generator).to(target) for _, n_out in pairs]

    def step() -> int:
        with torch.no_grad():
            for W, A in zip(Ws, As):
                A @ W.T  # forward, as nn.Linear
            for index, (W, A, delta) in enumerate(zip(Ws, As, deltas)):
                delta.T @ A  # dW
                if index > 0:
                    delta @ W  # dA_prev
        wait()
        return 1

    return step, {"dtype": "float32", "device": target}
