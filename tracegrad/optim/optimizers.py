"""Pure functional optimizers over pytrees of arrays.

Contract: an ``Optimizer`` is a pair of pure functions,
``init(params) -> state`` and ``update(grads, state, params) -> (new_params,
new_state)``; nothing is mutated in place, so a step can be retried or replayed.
``update_inplace`` is the same step done in place, for training loops that own
their buffers: the parameters and the state's arrays are overwritten (``out=``)
and returned, gradients are only read, and the temporaries live in a workspace
kept by the optimizer (one or two arrays per parameter shape), so a steady-state
step allocates no parameter-sized buffer. ``update`` is ``update_inplace`` on
copies, so both give bit-identical numbers.
``state`` is a NamedTuple pytree whose leaves are arrays plus an integer
``step`` (the number of updates applied), so ``tree_flatten`` + ``np.savez``
checkpoints it and ``tree_unflatten`` restores it.

Arithmetic is written with operators and the array namespace of each leaf
(``array_namespace``), so NumPy and CuPy arrays both work and CuPy is only
imported when a CuPy array is actually seen. Every output leaf keeps its
parameter's dtype: gradients are cast to the parameter dtype first, and learning
rates and hyper-parameters are Python floats (weak scalars under NumPy 2).

The learning rate used by update ``t`` (0-based) is ``lr(t)`` when ``lr`` is a
schedule, so ``lr(0)`` drives the first step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .._namespace import array_namespace  # re-exported: optimizers and the trainer use it
from ..structured import LowRankGrad
from ..tree import TreeDef, tree_flatten, tree_map, tree_unflatten
from .schedules import LearningRate, constant, cosine_decay, exponential_decay, resolve_lr

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "AdamState",
    "MomentumState",
    "Optimizer",
    "SGDState",
    "adam",
    "array_namespace",
    "make_optimizer",
    "momentum",
    "sgd",
]


@dataclass(frozen=True)
class Optimizer:
    """An optimizer as two pure functions; ``hyperparams`` is for logging only."""

    name: str
    init: Callable[[Any], Any]
    update: Callable[[Any, Any, Any], tuple[Any, Any]]
    hyperparams: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    update_inplace: Callable[[Any, Any, Any], tuple[Any, Any]] | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return f"{self.name}({args})"


class SGDState(NamedTuple):
    step: int


class MomentumState(NamedTuple):
    step: int
    velocity: Any


class AdamState(NamedTuple):
    step: int
    mu: Any  # first-moment estimate, same tree as params
    nu: Any  # second-moment estimate


def _leaves(tree: Any, treedef: TreeDef, what: str) -> list[Any]:
    leaves, td = tree_flatten(tree)
    if td != treedef:
        raise ValueError(f"{what} has structure {td!r} but params have {treedef!r}")
    return leaves


def _as_param(p: Any, *others: Any) -> Any:
    """``p`` as an array where the others live: a host parameter meeting device gradients
    (e.g. the first step of a CuPy run) moves to the device instead of failing to mix."""
    return array_namespace(p, *others).asarray(p)


def _like(x: Any, p: Any) -> Any:
    """``x`` as an array of ``p``'s dtype (0-d arithmetic yields NumPy scalars; cast back)."""
    return array_namespace(x, p).asarray(x, dtype=p.dtype)


def _zeros_like(p: Any) -> Any:
    p = _as_param(p)
    return array_namespace(p).zeros_like(p)


def _owned(p: Any, *others: Any) -> Any:
    """``p`` as a writable array where the others live, itself when it already is one (the
    in-place update writes into it), else a new array (a host parameter meeting device
    gradients, a Python scalar, a read-only array)."""
    xp = array_namespace(p, *others)
    if xp is np and type(p) is np.ndarray:
        return p if p.flags.writeable else p.copy()
    if type(p).__module__.startswith("cupy") and xp is not np:
        return p
    return xp.array(p)  # a copy


def _read(g: Any, p: Any) -> Any:
    """Gradient ``g`` as an array of ``p``'s namespace and dtype (no copy when it is one)."""
    return array_namespace(g, p).asarray(g, dtype=p.dtype)


def _copy(x: Any) -> Any:
    return array_namespace(x).array(x, copy=True) if hasattr(x, "dtype") else x


def _flat_dict_pairs(params: Any, grads: Any) -> list[tuple[Any, np.ndarray, Any]] | None:
    """``(key, param, grad)`` in tree order (sorted keys) when ``params`` is a flat dict of
    writable NumPy arrays and ``grads`` a dict of the same keys holding, per key, a NumPy
    array of the parameter's shape and dtype or a ``LowRankGrad`` of its shape; else
    ``None`` and the caller takes its general path, which makes every check (structure,
    namespace, dtype casts, copies of read-only parameters) and raises its errors. The
    steady-state fast path of the in-place updates (issue 11): a logistic-regression step
    spent 20 µs in the general path's tree walk and per-leaf namespace checks."""
    if type(params) is not dict or type(grads) is not dict or len(params) != len(grads):
        return None
    out = []
    try:
        keys = sorted(params)
    except TypeError:
        return None
    for key in keys:
        p, g = params[key], grads.get(key)
        if type(p) is not np.ndarray or not p.flags.writeable:
            return None
        tg = type(g)
        if tg is np.ndarray:
            if g.shape != p.shape or g.dtype != p.dtype:
                return None
        elif tg is not LowRankGrad or g.shape != p.shape or type(g.u) is not np.ndarray or g.dtype != p.dtype:
            return None
        out.append((key, p, g))
    return out


def _flat_like(tree: Any, pairs: list[tuple[Any, np.ndarray, Any]]) -> list[np.ndarray] | None:
    """An optimizer state's arrays in ``pairs``' order when ``tree`` is a flat dict of the
    same keys holding writable NumPy arrays of each parameter's shape and dtype (what
    ``init`` made); else ``None`` (the general path then checks and converts)."""
    if type(tree) is not dict or len(tree) != len(pairs):
        return None
    out = []
    for key, p, _ in pairs:
        a = tree.get(key)
        if type(a) is not np.ndarray or a.shape != p.shape or a.dtype != p.dtype or not a.flags.writeable:
            return None
        out.append(a)
    return out


class _Workspace:
    """Temporaries of the in-place updates, kept across steps: one array per
    ``(shape, dtype, namespace, slot)``, reused by every leaf of that shape."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[Any, ...], Any] = {}

    def get_numpy(self, p: np.ndarray, slot: int) -> np.ndarray:
        """``get`` for a NumPy ``p`` (the fast paths: no namespace lookup)."""
        key = (p.shape, p.dtype.str, "numpy", slot)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = np.empty(p.shape, p.dtype)
        return buf

    def get(self, p: Any, slot: int) -> Any:
        xp = array_namespace(p)
        key = (p.shape, p.dtype.str, xp.__name__, slot)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = xp.empty(p.shape, p.dtype)
        return buf


def _functional(update_inplace: Callable[[Any, Any, Any], tuple[Any, Any]]) -> Callable[[Any, Any, Any], tuple[Any, Any]]:
    """The pure ``update``: the in-place step on copies of the parameters and the state."""

    def update(grads: Any, state: Any, params: Any) -> tuple[Any, Any]:
        return update_inplace(grads, tree_map(_copy, state), tree_map(_copy, params))

    return update


def _check_nonneg(name: str, value: float) -> float:
    if not value >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def _check_beta(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def sgd(lr: LearningRate, weight_decay: float = 0.0) -> Optimizer:
    """Plain SGD, ``p <- p - lr * (g + weight_decay * p)``."""
    schedule = resolve_lr(lr)
    wd = _check_nonneg("weight_decay", weight_decay)

    def init(params: Any) -> SGDState:
        return SGDState(0)

    ws = _Workspace()

    def leaf(xp: Any, p: Any, g: Any, d: Any, lr_t: float) -> Any:
        """One parameter's step in place, returning it; ``d`` is a workspace buffer of its
        shape, None when ``g`` is a ``LowRankGrad``: ``p <- (1 - lr wd) p - lr u vᵀ``, one
        rank-R update in place."""
        if d is None:
            if wd:
                p *= 1.0 - lr_t * wd
            return g.add_to(p, -lr_t)
        if wd:  # g + wd * p
            xp.multiply(p, wd, out=d)
            d += g
            d *= lr_t
        else:
            xp.multiply(g, lr_t, out=d)
        p -= d
        return p

    def update_inplace(grads: Any, state: SGDState, params: Any) -> tuple[Any, SGDState]:
        step = int(state.step)
        lr_t = float(schedule(step))
        pairs = _flat_dict_pairs(params, grads)
        if pairs is not None:  # the common case without the tree walk: see _flat_dict_pairs
            out_d: dict[Any, Any] = {}
            for key, p, g in pairs:
                low = type(g) is LowRankGrad
                out_d[key] = leaf(np, p, g, None if low else ws.get_numpy(p, 0), lr_t)
            return out_d, SGDState(step + 1)
        p_leaves, treedef = tree_flatten(params)
        g_leaves = _leaves(grads, treedef, "grads")
        out = []
        for p, g in zip(p_leaves, g_leaves):
            if isinstance(g, LowRankGrad):
                p = _owned(p, g.u)
                out.append(leaf(None, p, g, None, lr_t))
                continue
            p = _owned(p, g)
            out.append(leaf(array_namespace(p), p, _read(g, p), ws.get(p, 0), lr_t))
        return tree_unflatten(treedef, out), SGDState(step + 1)

    return Optimizer("sgd", init, _functional(update_inplace), {"lr": lr, "weight_decay": wd},
                     update_inplace=update_inplace)


def momentum(
    lr: LearningRate, beta: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0
) -> Optimizer:
    """Heavy-ball momentum in the PyTorch convention (no dampening).

    ``v <- beta * v + g``; the step is ``v``, or ``g + beta * v`` with Nesterov.
    ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2).
    """
    schedule = resolve_lr(lr)
    beta = _check_beta("beta", beta)
    wd = _check_nonneg("weight_decay", weight_decay)

    def init(params: Any) -> MomentumState:
        return MomentumState(0, tree_map(_zeros_like, params))

    ws = _Workspace()

    def leaf(xp: Any, p: Any, g: Any, low: LowRankGrad | None, v: Any, d: Any, g_wd: Any, lr_t: float) -> None:
        """One parameter's step in place (``low``: a rank-R gradient, applied as updates);
        ``d`` and ``g_wd`` are workspace buffers of ``p``'s shape."""
        if wd:  # g + wd * p, kept in a second buffer
            xp.multiply(p, wd, out=g_wd)
            if low is not None:
                low.add_to(g_wd)
                low = None
            else:
                g_wd += g
            g = g_wd
        v *= beta  # v <- beta * v + g
        if low is not None:
            low.add_to(v)
        else:
            v += g
        if nesterov:  # step g + beta * v
            xp.multiply(v, beta, out=d)
            if low is not None:
                low.add_to(d)
            else:
                d += g
            d *= lr_t
        else:
            xp.multiply(v, lr_t, out=d)
        p -= d

    def update_inplace(grads: Any, state: MomentumState, params: Any) -> tuple[Any, MomentumState]:
        step = int(state.step)
        lr_t = float(schedule(step))
        pairs = _flat_dict_pairs(params, grads)
        vs = None if pairs is None else _flat_like(state.velocity, pairs)
        if pairs is not None and vs is not None:  # flat dicts of NumPy arrays: no tree walk
            out_p, out_v = {}, {}
            for (key, p, g), v in zip(pairs, vs):
                low = g if type(g) is LowRankGrad else None
                leaf(np, p, g, low, v, ws.get_numpy(p, 0), ws.get_numpy(p, 1) if wd else None, lr_t)
                out_p[key], out_v[key] = p, v
            return out_p, MomentumState(step + 1, out_v)
        p_leaves, treedef = tree_flatten(params)
        g_leaves = _leaves(grads, treedef, "grads")
        v_leaves = _leaves(state.velocity, treedef, "momentum velocity")
        new_p, new_v = [], []
        for p, g, v in zip(p_leaves, g_leaves, v_leaves):
            low = g if isinstance(g, LowRankGrad) else None  # applied as rank-R updates in place
            p = _owned(p, v) if low is not None else _owned(p, g, v)
            v = _owned(_read(v, p))
            g = None if low is not None else _read(g, p)
            leaf(array_namespace(p), p, g, low, v, ws.get(p, 0), ws.get(p, 1) if wd else None, lr_t)
            new_p.append(p)
            new_v.append(v)
        return (
            tree_unflatten(treedef, new_p),
            MomentumState(step + 1, tree_unflatten(treedef, new_v)),
        )

    return Optimizer(
        "momentum",
        init,
        _functional(update_inplace),
        {"lr": lr, "beta": beta, "nesterov": nesterov, "weight_decay": wd},
        update_inplace=update_inplace,
    )


def adam(
    lr: LearningRate,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> Optimizer:
    """Adam (Kingma & Ba) with bias correction.

    ``weight_decay`` is L2 added to the gradient by default (so it is rescaled
    by the adaptive denominator, as in PyTorch ``Adam``); with
    ``decoupled=True`` it is AdamW's ``p <- p - lr * weight_decay * p``, applied
    outside the adaptive step.
    """
    schedule = resolve_lr(lr)
    b1 = _check_beta("b1", b1)
    b2 = _check_beta("b2", b2)
    eps = _check_nonneg("eps", eps)
    wd = _check_nonneg("weight_decay", weight_decay)

    def init(params: Any) -> AdamState:
        return AdamState(0, tree_map(_zeros_like, params), tree_map(_zeros_like, params))

    ws = _Workspace()

    def leaf(xp: Any, p: Any, g: Any, m: Any, v: Any, s1: Any, s2: Any, lr_t: float, bc1: float, bc2: float) -> None:
        """One parameter's step in place; ``s1``, ``s2`` are workspace buffers of its shape."""
        if wd and not decoupled:  # g + wd * p, in s2 until the moments are updated
            xp.multiply(p, wd, out=s2)
            s2 += g
            g = s2
        m *= b1  # m <- b1 * m + (1 - b1) * g
        xp.multiply(g, 1.0 - b1, out=s1)
        m += s1
        xp.multiply(g, g, out=s1)  # v <- b2 * v + (1 - b2) * (g * g)
        s1 *= 1.0 - b2
        v *= b2
        v += s1
        xp.divide(v, bc2, out=s1)  # direction (m / bc1) / (sqrt(v / bc2) + eps)
        xp.sqrt(s1, out=s1)
        s1 += eps
        xp.divide(m, bc1, out=s2)
        s2 /= s1
        if wd and decoupled:
            xp.multiply(p, wd, out=s1)
            s2 += s1
        s2 *= lr_t
        p -= s2

    def update_inplace(grads: Any, state: AdamState, params: Any) -> tuple[Any, AdamState]:
        step = int(state.step)
        lr_t = float(schedule(step))
        t = step + 1
        bc1 = 1.0 - b1**t
        bc2 = 1.0 - b2**t
        pairs = _flat_dict_pairs(params, grads)
        ms = None if pairs is None else _flat_like(state.mu, pairs)
        vs = None if ms is None else _flat_like(state.nu, pairs)
        if pairs is not None and ms is not None and vs is not None:  # flat dicts of NumPy arrays
            out_p, out_m, out_v = {}, {}, {}
            for (key, p, g), m, v in zip(pairs, ms, vs):
                if type(g) is LowRankGrad:  # the moments need the dense estimate: a kept buffer
                    g = g.dense(out=ws.get_numpy(p, 2))
                leaf(np, p, g, m, v, ws.get_numpy(p, 0), ws.get_numpy(p, 1), lr_t, bc1, bc2)
                out_p[key], out_m[key], out_v[key] = p, m, v
            return out_p, AdamState(t, out_m, out_v)
        p_leaves, treedef = tree_flatten(params)
        g_leaves = _leaves(grads, treedef, "grads")
        m_leaves = _leaves(state.mu, treedef, "adam mu")
        v_leaves = _leaves(state.nu, treedef, "adam nu")
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(p_leaves, g_leaves, m_leaves, v_leaves):
            if isinstance(g, LowRankGrad):  # the moments need the dense estimate: a kept buffer
                p = _owned(p, m, v)
                g = g.dense(out=ws.get(p, 2)) if g.dtype == p.dtype else np.asarray(g, dtype=p.dtype)
            p = _owned(p, g, m, v)
            g, m, v = _read(g, p), _owned(_read(m, p)), _owned(_read(v, p))
            leaf(array_namespace(p), p, g, m, v, ws.get(p, 0), ws.get(p, 1), lr_t, bc1, bc2)
            new_p.append(p)
            new_m.append(m)
            new_v.append(v)
        return (
            tree_unflatten(treedef, new_p),
            AdamState(t, tree_unflatten(treedef, new_m), tree_unflatten(treedef, new_v)),
        )

    return Optimizer(
        "adam",
        init,
        _functional(update_inplace),
        {"lr": lr, "b1": b1, "b2": b2, "eps": eps, "weight_decay": wd, "decoupled": decoupled},
        update_inplace=update_inplace,
    )


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {"sgd": sgd, "momentum": momentum, "adam": adam}
SCHEDULES = ("constant", "exp", "cosine")


def make_optimizer(name: str, lr: LearningRate, schedule: str = "constant", **kw: Any) -> Optimizer:
    """Build an optimizer from CLI-style strings.

    Schedule options travel in ``kw`` next to the optimizer's own: ``k`` for
    "exp", ``total_steps`` and ``final_lr`` for "cosine". ``total_steps`` is
    accepted (and unused) with every schedule so a CLI can always pass it; any
    other option the chosen optimizer or schedule does not take is an error.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if not callable(lr):
        resolve_lr(lr)  # type and sign check, with the same message as the factories
    total_steps = kw.pop("total_steps", None)
    k = kw.pop("k", None)
    final_lr = kw.pop("final_lr", None)
    if k is not None and schedule != "exp":
        raise ValueError(f"option k applies to schedule 'exp', not {schedule!r}")
    if final_lr is not None and schedule != "cosine":
        raise ValueError(f"option final_lr applies to schedule 'cosine', not {schedule!r}")

    lr_sched: LearningRate
    if callable(lr):
        if schedule != "constant":
            raise ValueError(f"lr is already a schedule; it cannot be combined with {schedule!r}")
        lr_sched = lr
    elif schedule == "constant":
        lr_sched = constant(lr)
    elif schedule == "exp":
        lr_sched = exponential_decay(lr, 1e-4 if k is None else k)
    else:
        if total_steps is None:
            raise ValueError("schedule 'cosine' needs total_steps")
        lr_sched = cosine_decay(lr, total_steps, 0.0 if final_lr is None else final_lr)

    factory = OPTIMIZERS[name]
    valid = [p for p in inspect.signature(factory).parameters if p != "lr"]
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for optimizer {name!r}; "
            f"valid: {', '.join(valid)}"
        )
    return factory(lr_sched, **kw)
