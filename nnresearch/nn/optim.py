"""Optimizers: how the gradients from backprop become a change of the parameters.

Chapter §9, step 4 (gradient descent), for every parameter ``W`` with gradient ``dW = dJ/dW``:

    W := W - alpha * dJ/dW

and the two extensions every study here compares it with, momentum (classical and Nesterov) and
Adam, plus L2 weight decay and gradient clipping (chapter §8: "Exploding -> gradient clipping,
careful init, weight decay").

Interface: parameters and gradients are plain dicts ``name -> array`` (``W1, b1, gamma3, beta3``).
``step(params, grads, lr)`` changes every ``params[name]`` IN PLACE (``p -= update``): layers hold
references to their arrays, so rebinding the dict entry would silently detach them. The learning
rate is an argument of ``step`` (not of the optimizer) so a schedule can change it every step.

dtype: every hyperparameter is kept as a Python float, which NumPy 2 and the array API treat as a
"weak" scalar, so a float32 network stays float32 (a NumPy float64 scalar would promote it).
"""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Any

import numpy as np

from nnresearch.backend import axpy, namespace, to_numpy

Params = dict[str, Any]


def decays(name: str) -> bool:
    """Whether weight decay applies to the parameter called `name`.

    Only weight matrices ``W*`` and convolution kernels ``K*``; never biases ``b*`` nor the
    BatchNorm scale and shift ``gamma*`` / ``beta*`` (decaying those only fights normalisation).
    """
    return name.startswith(("W", "K"))


def _check(name: str, value: Any, ok: bool, expected: str) -> float:
    """`value` as a Python float, or a ValueError naming the argument, its value and the range."""
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; expected {expected}")
    return float(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def _unit_interval(name: str, value: Any) -> float:
    v = _number(name, value)
    return _check(name, value, 0.0 <= v < 1.0, f"0 <= {name} < 1")


def _non_negative(name: str, value: Any) -> float:
    v = _number(name, value)
    return _check(name, value, math.isfinite(v) and v >= 0.0, f"a finite {name} >= 0")


def _positive(name: str, value: Any) -> float:
    v = _number(name, value)
    return _check(name, value, math.isfinite(v) and v > 0.0, f"a finite {name} > 0")


class _Optimizer:
    """What every optimizer shares: per-parameter state slots and their checkpoints.

    ``self.state[slot][name]`` is created lazily with ``xp.zeros_like(param)``, so it lives in the
    parameter's namespace, device and dtype. Subclasses set ``slots`` and implement ``_update`` (one
    parameter) or ``_apply`` (all of them at once, as Adam does).
    """

    slots: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {slot: {} for slot in self.slots}

    def _slot(self, slot: str, name: str, p: Any) -> Any:
        table = self.state[slot]
        if name not in table:
            table[name] = namespace(p).zeros_like(p)
        return table[name]

    def step(self, params: Params, grads: Params, lr: float) -> None:
        """Update every parameter that has a gradient, in place, with learning rate `lr`.

        Parameters without an entry in `grads` are left alone (frozen).
        """
        lr = _non_negative("lr", lr)
        for name, g in grads.items():
            if name not in params:
                raise ValueError(
                    f"gradient {name!r} has no parameter; parameters are {', '.join(params)}"
                )
            p = params[name]
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(
                    f"gradient {name!r} is {g.dtype}{tuple(g.shape)} but the parameter is "
                    f"{p.dtype}{tuple(p.shape)}; they must match"
                )
        self._apply(params, grads, lr)

    def _apply(self, params: Params, grads: Params, lr: float) -> None:
        """The update of every parameter in `grads`, one at a time (`_update`)."""
        for name, g in grads.items():
            self._update(name, params[name], g, lr)

    def _update(self, name: str, p: Any, g: Any, lr: float) -> None:
        raise NotImplementedError

    def _scalars(self) -> dict[str, float]:
        """Non-array state for the checkpoint (Adam: ``t``)."""
        return {}

    def _load_scalars(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Host NumPy copies of the state, flat keys ``"<slot>.<param>"`` plus scalars (``t``)."""
        out: dict[str, Any] = {}
        for slot, table in self.state.items():
            for name, a in table.items():
                out[f"{slot}.{name}"] = np.array(to_numpy(a), copy=True)
        out.update(self._scalars())
        return out

    def load_state_dict(self, state: dict[str, Any], like: Params) -> None:
        """Replace the state with `state` (from `state_dict`), each array moved into the namespace,
        device and dtype of ``like[name]`` (the parameters it belongs to)."""
        import array_api_compat

        fresh: dict[str, dict[str, Any]] = {slot: {} for slot in self.slots}
        scalars = set(self._scalars())
        for key, value in state.items():
            if key in scalars:
                continue
            slot, _, name = key.partition(".")
            if slot not in fresh or not name:
                expected = [f"{s}.<param>" for s in self.slots] + sorted(scalars)
                raise ValueError(
                    f"unexpected key {key!r} in the state of {type(self).__name__}; "
                    f"expected keys {', '.join(expected) or '(none)'}"
                )
            if name not in like:
                raise ValueError(f"state key {key!r} names no parameter; have {', '.join(like)}")
            p = like[name]
            if tuple(np.shape(value)) != tuple(p.shape):
                raise ValueError(
                    f"state {key!r} has shape {tuple(np.shape(value))}, parameter {name!r} "
                    f"has {tuple(p.shape)}"
                )
            xp = namespace(p)
            fresh[slot][name] = xp.asarray(
                value, dtype=p.dtype, device=array_api_compat.device(p), copy=True
            )
        missing = scalars - set(state)
        if missing:
            raise ValueError(f"state of {type(self).__name__} lacks {', '.join(sorted(missing))}")
        self._load_scalars(state)
        self.state = fresh


class GradientDescent(_Optimizer):
    """Gradient descent with optional momentum, Nesterov momentum and coupled L2 weight decay.

        g = dJ/dW + wd * W                 (wd only on weights, see `decays`)
        momentum == 0:  W := W - lr * g                       (chapter §9)
        classical:      v := mu * v - lr * g;  W := W + v
        Nesterov:       v := mu * v - lr * g;  W := W + mu * v - lr * g

    The velocity carries the learning rate (Sutskever et al. 2013); for a constant learning rate
    this equals PyTorch's ``SGD(momentum=mu, nesterov=...)`` step for step.
    """

    def __init__(self, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        self.momentum = _unit_interval("momentum", momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError(f"nesterov=True needs 0 < momentum < 1, got momentum={momentum!r}")
        self.slots = ("v",) if self.momentum > 0.0 else ()
        super().__init__()

    def _update(self, name: str, p: Any, g: Any, lr: float) -> None:
        if self.weight_decay and decays(name):
            g = g + self.weight_decay * p
        if not self.slots:
            axpy(-lr, g, p)  # p -= lr * g, without a full-size lr * g temporary
            return
        v = self.momentum * self._slot("v", name, p) - lr * g
        self.state["v"][name] = v
        p += (self.momentum * v - lr * g) if self.nesterov else v

    def __repr__(self) -> str:
        return (
            f"GradientDescent(momentum={self.momentum}, nesterov={self.nesterov}, "
            f"weight_decay={self.weight_decay})"
        )


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction and decoupled weight decay (AdamW).

        t := t + 1
        m := b1 * m + (1 - b1) * g            v := b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)               v_hat = v / (1 - b2**t)
        W := W - lr * (m_hat / (sqrt(v_hat) + eps) + wd * W)     (wd only on weights)

    Decoupled decay (Loshchilov & Hutter 2019) shrinks the weight directly instead of adding
    ``wd * W`` to the gradient, which Adam's per-coordinate scaling would otherwise undo; scaled
    by ``lr`` as in PyTorch's ``AdamW``. ``t`` counts ``step`` calls, shared by all parameters.
    All parameters must share one dtype: their m and v are kept in one flat buffer each, with two
    flat scratch buffers the step works in (`_apply`): four times the parameters' size in all.
    """

    slots = ("m", "v")

    def __init__(
        self,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.beta1 = _unit_interval("beta1", beta1)
        self.beta2 = _unit_interval("beta2", beta2)
        self.eps = _positive("eps", eps)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.t = 0
        self._flat: tuple[Any, ...] | None = None  # m and v, flat (see `_apply`)
        self._layout: tuple[tuple[str, tuple[int, ...], Any], ...] = ()
        self._spans: list[tuple[int, int]] = []
        self._scratch: tuple[Any, Any] = ()  # two flat arrays the step works in
        self._pieces: list[Any] = []  # views of the first, one per parameter and shaped like it
        super().__init__()

    def _apply(self, params: Params, grads: Params, lr: float) -> None:
        """m and v of all parameters live in one flat buffer each, so the moments and the update
        are a few array operations per step, not a few per parameter (most of a small network's
        step); they work in place on two flat scratch buffers, so a step allocates one flat array
        (the square root), not one per operation. Each element goes through the same operations,
        in the same order, as in the formulas above."""
        names = tuple(grads)
        moments = self._flat_moments(names, grads) if names else None  # refuses a bad layout before counting
        self.t += 1
        if moments is None:
            return
        m, v = moments
        g, scratch = self._scratch
        xp = namespace(m)
        for name, piece in zip(names, self._pieces):
            piece[...] = grads[name]
        b1, b2 = self.beta1, self.beta2
        m *= b1
        scratch[...] = g
        scratch *= 1.0 - b1
        m += scratch
        g *= g
        g *= 1.0 - b2
        v *= b2
        v += g
        scratch[...] = v
        scratch /= 1.0 - b2**self.t
        denominator = xp.sqrt(scratch)
        denominator += self.eps
        update = g  # this step's gradient is no longer needed; `_pieces` now view the update
        update[...] = m
        update /= 1.0 - b1**self.t
        update /= denominator
        pairs = [(params[name], u) for name, u in zip(names, self._pieces)]
        if self.weight_decay:
            for (p, u), name in zip(pairs, names):
                if decays(name):
                    u += self.weight_decay * p
        update *= lr
        for p, u in pairs:
            p -= u

    def _flat_moments(self, names: tuple[str, ...], grads: Params) -> tuple[Any, Any]:
        """The flat m and v for parameters `names` (shaped like `grads`), made from the per-parameter
        state (zeros where there is none) when the parameters differ from the last step's."""
        layout = tuple((name, tuple(grads[name].shape), grads[name].dtype) for name in names)
        if self._flat is not None and self._layout == layout:
            return self._flat
        if len({dtype for _, _, dtype in layout}) > 1:
            raise ValueError(f"Adam updates its parameters together: they must share one dtype, got "
                             f"{', '.join(f'{name} {dtype}' for name, _, dtype in layout)}")
        xp = namespace(grads[names[0]])
        self._scatter()  # the old buffers' values, per parameter
        for slot in self.slots:
            for name, shape, _ in layout:
                known = self._state[slot].get(name)
                if known is not None and tuple(known.shape) != shape:
                    raise ValueError(f"Adam's state {slot}.{name} has shape {tuple(known.shape)} but its gradient "
                                     f"{shape}: a parameter changed shape; use a new optimizer for it")
            kept = [name for name in self._state[slot] if name not in names]
            for name in kept:  # copies: the old buffers go once nothing points into them
                self._state[slot][name] = xp.asarray(self._state[slot][name], copy=True)
        self._flat = None
        ends = list(itertools.accumulate(math.prod(shape) for _, shape, _ in layout))
        self._spans = list(zip([0, *ends[:-1]], ends))
        flat = tuple(xp.concat([xp.reshape(self._slot(slot, name, grads[name]), (-1,)) for name in names])
                     for slot in self.slots)
        self._scratch = (xp.empty_like(flat[0]), xp.empty_like(flat[0]))
        self._pieces = [xp.reshape(self._scratch[0][start:stop], shape)
                        for (_, shape, _), (start, stop) in zip(layout, self._spans)]
        self._flat, self._layout = flat, layout
        self._scatter()  # the per-parameter arrays the buffers were made from can go
        return flat

    def _scatter(self) -> None:
        """Point the per-parameter state at the flat m and v (what `state` and checkpoints read)."""
        if self._flat is None:
            return
        for slot, flat in zip(self.slots, self._flat):
            xp = namespace(flat)
            for (name, shape, _), (start, stop) in zip(self._layout, self._spans):
                self._state[slot][name] = xp.reshape(flat[start:stop], shape)

    @property
    def state(self) -> dict[str, dict[str, Any]]:
        """``state[slot][name]``, as for every optimizer: views of the flat buffers, which later
        steps update in place (``state_dict`` copies them; ``load_state_dict`` replaces them)."""
        self._scatter()
        return self._state

    @state.setter
    def state(self, state: dict[str, dict[str, Any]]) -> None:
        self._state, self._flat = state, None  # a loaded state replaces what the buffers held

    def _scalars(self) -> dict[str, float]:
        return {"t": float(self.t)}

    def _load_scalars(self, state: dict[str, Any]) -> None:
        t = float(state["t"])
        if not (t >= 0 and t == int(t)):
            raise ValueError(f"state 't'={state['t']!r} must be a whole number >= 0")
        self.t = int(t)

    def __repr__(self) -> str:
        return (
            f"Adam(beta1={self.beta1}, beta2={self.beta2}, eps={self.eps}, "
            f"weight_decay={self.weight_decay})"
        )


# name -> (class, defaults the name implies); the caller's keyword arguments override defaults.
OPTIMIZERS: dict[str, tuple[type[_Optimizer], dict[str, Any]]] = {
    "sgd": (GradientDescent, {}),
    "momentum": (GradientDescent, {"momentum": 0.9}),
    "nesterov": (GradientDescent, {"momentum": 0.9, "nesterov": True}),
    "adam": (Adam, {}),
}


def make_optimizer(name: str, **kwargs: Any) -> GradientDescent | Adam:
    """The optimizer called `name` (one of `OPTIMIZERS`) with hyperparameters `kwargs`."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    cls, defaults = OPTIMIZERS[name]
    accepted = list(inspect.signature(cls).parameters)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise TypeError(
            f"optimizer {name!r} got unexpected argument(s) {', '.join(unknown)}; "
            f"it accepts {', '.join(accepted)}"
        )
    return cls(**{**defaults, **kwargs})


def global_norm(grads: Params) -> float:
    """sqrt(sum over all gradients of sum(g**2)), as a Python float (0.0 for no gradients).

    Accumulated in float64 so a float32 exploding gradient reports its size instead of inf.
    """
    if not grads:
        return 0.0
    xp = namespace(*grads.values())
    total = sum(xp.sum(xp.astype(g, xp.float64, copy=False) ** 2) for g in grads.values())
    return math.sqrt(float(total))


def clip_by_global_norm(grads: Params, max_norm: float) -> float:
    """g <- g * max_norm / norm for every gradient when norm = `global_norm` > max_norm.

    Replaces the dict entries (as `clip_by_value` does) instead of scaling the arrays in place, so
    the network's own gradients stay dJ/dparam and the diagnostics report them unclipped. Returns
    the norm before clipping. A non-finite norm (inf / nan) is returned and nothing is scaled:
    scaling by 0 or nan would only hide the divergence from the caller.
    """
    max_norm = _positive("max_norm", max_norm)
    norm = global_norm(grads)
    if math.isfinite(norm) and norm > max_norm:
        for name, g in grads.items():
            grads[name] = g * (max_norm / norm)  # a Python float is weakly typed: float32 stays float32
    return norm


def clip_by_value(grads: Params, limit: float) -> None:
    """Clip every gradient elementwise into [-limit, limit], replacing the dict entries (the
    network's own gradients stay dJ/dparam)."""
    limit = _positive("limit", limit)
    for name, g in grads.items():
        grads[name] = namespace(g).clip(g, -limit, limit)
