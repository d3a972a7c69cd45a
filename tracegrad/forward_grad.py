"""Forward gradients (Baydin et al. 2022): ``g(θ) = (∇f(θ)·v) v`` with random tangents v.

With ``directions=K`` the K tangents ride on a leading axis of one JVP execution and the
estimate is their average ``(1/K) Σ_k (∇f·v_k) v_k``.

Tangents are counter-based (``tracegrad/random.py``): direction ``k`` of parameter leaf ``p``
at step ``t`` is a pure function of ``(seed, t, p, k)``, so a run is reproducible from its
seed alone, a checkpoint needs no sampler state, and any process can rebuild any other's
direction. The step is passed explicitly (``g(*args, step=t)``, as the trainer does); without
it the estimator counts its own calls. ``"rademacher"`` (±1, unbiased, lower variance) costs
one hash per 64 numbers; ``"normal"`` a hash, a log, a cos and a sin per pair.

Array namespaces: when the compiled function runs on CuPy (``backend="cupy"``) or the
parameters are CuPy arrays, the same numbers are drawn on the GPU (``backends/cuda_random.py``,
one kernel launch for all leaves) and the estimate is formed on the device; nothing passes
through the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import random as tg_random
from ._namespace import array_namespace
from .api import Compiled, compile, tangent_rank, with_aux
from .errors import TangentError
from .structured import LowRankGrad
from .tree import tree_flatten, tree_unflatten

__all__ = ["DISTRIBUTIONS", "DirectionSampler", "Factors", "draw_tangents", "forward_grad"]

DISTRIBUTIONS = tg_random.DISTRIBUTIONS
STATE_VERSION = 2  # checkpoints' sampler_state: {"version": 2, "seed": ..., "distribution": ...}


class DirectionSampler:
    """Tangent directions with E[v vᵀ] = I, each a pure function of ``(seed, step, param,
    direction)`` — no position to save or restore.

    ``seed=None`` picks fresh entropy once, at construction (so one sampler is still
    reproducible within itself: ``draw_many(..., step=t)`` twice gives the same numbers)."""

    def __init__(self, distribution: str = "normal", seed: int | None = None):
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
        self.distribution = distribution
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(2, np.uint32).view(np.uint64)[0])
        self.seed = int(seed)
        self._device: Any = None

    def state(self) -> dict[str, Any]:
        """What a checkpoint records: the seed and distribution only (for a consistency check
        on resume; the numbers need nothing else)."""
        return {"version": STATE_VERSION, "seed": self.seed, "distribution": self.distribution}

    def set_state(self, state: Any) -> None:
        """Accept a checkpoint's sampler state. The current format must name this sampler's
        seed and distribution. Checkpoints from before counter-based tangents (a list of
        bit-generator states) load too: their stream position has no meaning here, and the
        directions after the resumed step come from ``(seed, step, param, direction)``."""
        if isinstance(state, list):  # format 1: stream states; nothing to restore
            return
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown sampler state {state!r}")
        if int(state["seed"]) != self.seed or state["distribution"] != self.distribution:
            raise ValueError(f"sampler state has seed {state['seed']} and distribution {state['distribution']!r}, "
                             f"this sampler seed {self.seed} and {self.distribution!r}")

    def key(self, step: int, param: int, direction: int, worker: int = 0) -> int:
        """The 64-bit key of one direction (``random.direction_key``)."""
        return tg_random.direction_key(self.seed, step, param, direction, worker)

    def draw_many(self, specs: Sequence[tuple[tuple[int, ...], Any]], xp: Any = np, *,
                  step: int, first_param: int = 0, worker: int = 0) -> list[Any]:
        """The tangents of one step: spec ``p`` is ``((K,) + leaf shape, dtype)`` for parameter
        leaf ``first_param + p``, row ``k`` its direction ``k`` (of data-parallel ``worker``).
        Arrays of namespace ``xp`` (NumPy or CuPy; on CuPy all of them come from one kernel
        launch)."""
        keys = [[self.key(step, first_param + p, k, worker) for k in range(shape[0])]
                for p, (shape, _) in enumerate(specs)]
        if xp is np:
            out = []
            for (shape, dtype), ks in zip(specs, keys):
                arr = np.empty(shape, np.dtype(dtype))
                for k, key in enumerate(ks):
                    tg_random.fill(self.distribution, key, arr[k])
                out.append(arr)
            return out
        if self._device is None:
            from .backends.cuda_random import DeviceSampler

            self._device = DeviceSampler(xp)
        return self._device.draw(self.distribution, keys, [s for s, _ in specs], [d for _, d in specs])


def forward_grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, *, directions: int = 1,
                 distribution: str = "normal", seed: int | None = None, backend: str = "numpy",
                 static_argnums: Sequence[int] = (), has_aux: bool = False, tangents: str = "dense",
                 rank: int | None = None) -> Callable[..., tuple[Any, Any]]:
    """Return ``g(*args, step=None) -> (value, grad_estimate)``: the forward-gradient estimate
    of the gradient of scalar ``fn`` with respect to ``args[argnums]`` (pytrees allowed),
    averaged over ``directions`` random tangents computed in one execution. With
    ``has_aux=True`` ``fn`` returns ``(value, aux)`` and ``g`` returns
    ``((value, aux), grad_estimate)``.

    The tangents of a call are those of ``(seed, step, leaf, direction)``; pass ``step``
    (an int >= 0) to make a call reproducible on its own, e.g. on resuming a run. Without
    it, call ``n`` of this estimator (0-based) uses step ``n``.

    ``tangents="rank1"`` gives every parameter leaf of ndim >= 2 a low-rank tangent
    ``Ẇ = a bᵀ`` (rank ``rank``, default 1; ``ad/lowrank.py``) instead of a dense one: the
    JVP runs through the factors, and the estimate of such a leaf is a ``LowRankGrad``
    (``structured.py``) that optimizers apply as one in-place rank-R update
    (``np.asarray(g)`` densifies it). Vectors keep dense tangents. The factors of leaf
    ``p``, direction ``k`` are the first ``(d0 + d1·d2·…)·r`` numbers of the direction of
    ``(seed, step, p, k)`` (``a`` first, scaled by ``1/sqrt(r)``), so E[vec(Ẇ)vec(Ẇ)ᵀ] = I."""
    if int(directions) < 1:
        raise ValueError(f"directions must be >= 1, got {directions}")
    k = int(directions)
    low_rank = tangent_rank(tangents, rank)
    if has_aux:
        if isinstance(fn, Compiled):
            fn, backend, static_argnums = fn.fn, fn.backend, fn.static_argnums
        compiled = compile(with_aux(fn, "forward_grad"), backend=backend, static_argnums=static_argnums)
    else:
        compiled = fn if isinstance(fn, Compiled) else compile(fn, backend=backend, static_argnums=static_argnums)
    sampler = DirectionSampler(distribution, seed)
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)

    calls = [0]

    def derive(*args: Any, step: int | None = None, worker: int = 0,
               **kwargs: Any) -> tuple[Any, Any, list[Any], list[tuple[Any, int]]]:
        """The value, the K directional derivatives ``jv``, the tangents of every
        differentiated leaf (depth-first: a ``(K, *shape)`` array, or ``Factors`` for a
        low-rank leaf) and the tree of each argument in ``nums`` with its leaf count."""
        if step is None:
            step = calls[0]
        elif int(step) < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        calls[0] += 1
        target = compiled
        if kwargs:  # traced keyword arguments ride after the positional ones (never differentiated)
            target, args = compiled._with_keywords(args, kwargs)
        for i in nums:
            if i >= len(args):
                raise TypeError(f"argnums names argument {i}, but only {len(args)} were passed")
        specs, trees = [], []
        for i in nums:
            leaves, tree = tree_flatten(args[i])
            for leaf in leaves:
                dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)
                if dtype.kind != "f":
                    raise TangentError(f"forward_grad: argument {i} has a leaf of dtype {dtype}; "
                                       "only floating-point parameters can be differentiated",
                                       hint="pass integer data through an argument not in argnums")
                specs.append(((k,) + tuple(np.shape(leaf)), dtype))
            trees.append((tree, len(leaves)))
        xp = _namespace(compiled, [args[i] for i in nums])
        parts = draw_tangents(sampler, specs, xp, int(step), low_rank, worker=worker)
        if low_rank:
            value, jv, trees = _structured(target, args, nums, parts, low_rank)
        else:
            tangents: list[Any] = [None] * len(args)
            start = 0
            for i, (tree, count) in zip(nums, trees):
                tangents[i] = tree_unflatten(tree, parts[start:start + count])
                start += count
            value, jv = target.jvp(tuple(args), tuple(tangents), batched=True)
            if has_aux:
                jv = jv[0]
        if has_aux and low_rank:
            value = tuple(value)
        if np.ndim(value[0] if has_aux else value) != 0 or jv is None:
            shape = np.shape(value[0] if has_aux else value)
            raise TangentError(f"forward_grad needs a function returning a scalar float, got shape {shape}",
                               hint="reduce the output, e.g. return np.mean(loss)")
        return value, jv, parts, trees

    def estimate(*args: Any, step: int | None = None, **kwargs: Any) -> tuple[Any, Any]:
        value, jv, parts, trees = derive(*args, step=step, **kwargs)
        grads, start = [], 0
        for tree, count in trees:
            g = []
            for part in parts[start:start + count]:
                if isinstance(part, Factors):
                    a, b = part.a, part.b
                    if k == 1:
                        g.append(LowRankGrad(array_namespace(a).multiply(a[0], jv[0], out=a[0]), b[0], part.shape))
                    else:  # Σ_k (d_k / K) a_k b_kᵀ: the factors side by side, rank K·r
                        xp = array_namespace(a)
                        a = a * (jv / k)[:, None, None]
                        u = xp.ascontiguousarray(xp.transpose(a, (1, 0, 2))).reshape(part.shape[0], -1)
                        v = xp.ascontiguousarray(xp.transpose(b, (1, 0, 2))).reshape(b.shape[1], -1)
                        g.append(LowRankGrad(u, v, part.shape))
                elif k == 1:  # scale the freshly drawn tangent in place: no parameter-sized temporary
                    g.append(array_namespace(part).multiply(part[0], jv[0], out=part[0]))
                else:
                    g.append(array_namespace(part).tensordot(jv, part, axes=1) / k)
            grads.append(tree_unflatten(tree, g))
            start += count
        return value, grads[0] if single else tuple(grads)

    def derivatives(*args: Any, step: int, worker: int = 0, **kwargs: Any) -> tuple[Any, Any, list[Any]]:
        """``(value, jv, tangents)``: the value (with aux), the K directional derivatives
        along the directions of ``(seed, step, leaf, k, worker)`` and those tangents, one
        entry per differentiated leaf (depth-first): a ``(K, *shape)`` array, or ``Factors``
        for a low-rank leaf. The data-parallel engine (``train/distributed.py``) sends ``jv``
        and rebuilds other workers' tangents with ``regenerate``."""
        value, jv, parts, _ = derive(*args, step=step, worker=worker, **kwargs)
        return value, jv, parts

    def regenerate(specs: Sequence[tuple[tuple[int, ...], Any]], step: int, worker: int = 0,
                   xp: Any = np) -> list[Any]:
        """The tangents ``derivatives`` drew for leaves of ``(shape, dtype)`` ``specs`` at
        ``(step, worker)``, drawn again from their keys (same numbers, same layout)."""
        return draw_tangents(sampler, [((k,) + tuple(shape), dtype) for shape, dtype in specs], xp,
                             int(step), low_rank, worker=worker)

    estimate.sampler = sampler  # type: ignore[attr-defined]
    estimate.namespace = lambda *args: _namespace(compiled, [args[i] for i in nums])  # type: ignore[attr-defined]
    estimate.compiled = compiled  # type: ignore[attr-defined]
    estimate.derivatives = derivatives  # type: ignore[attr-defined]
    estimate.regenerate = regenerate  # type: ignore[attr-defined]
    estimate.directions = k  # type: ignore[attr-defined]
    estimate.rank = low_rank  # type: ignore[attr-defined]
    return estimate


class Factors(NamedTuple):
    """The rank-``r`` tangents of one leaf of ndim >= 2 for K directions: ``a`` of shape
    ``(K, shape[0], r)`` (scaled by ``1/sqrt(r)``), ``b`` of shape ``(K, prod(shape[1:]), r)``;
    direction k is ``reshape(a[k] @ b[k]ᵀ, shape)``."""

    a: Any
    b: Any
    shape: tuple[int, ...]


def draw_shape(shape: Sequence[int], rank: int) -> tuple[int, ...]:
    """The numbers one direction of a leaf of ``shape`` takes: the leaf itself (dense), or
    ``(d0 + d1·d2·…)·r`` (the factors of a rank-``r`` tangent, ``a`` first)."""
    shape = tuple(int(s) for s in shape)
    if rank and len(shape) >= 2:
        return ((shape[0] + math.prod(shape[1:])) * rank,)
    return shape


def split_factors(drawn: Any, shape: Sequence[int], rank: int) -> Factors:
    """The factors held in ``drawn`` (``(..., (d0 + rest)·r)`` numbers as ``draw_shape``
    lays them out): views ``a`` (scaled by ``1/sqrt(r)`` in place) and ``b``."""
    shape = tuple(int(s) for s in shape)
    m, lead = shape[0] * rank, drawn.shape[:-1]
    a = drawn[..., :m].reshape(*lead, shape[0], rank)
    b = drawn[..., m:].reshape(*lead, math.prod(shape[1:]), rank)
    if rank > 1:
        a *= 1.0 / math.sqrt(rank)
    return Factors(a, b, shape)


def draw_tangents(sampler: DirectionSampler, specs: Sequence[tuple[tuple[int, ...], Any]], xp: Any, step: int,
                  rank: int, *, worker: int = 0) -> list[Any]:
    """The tangents of one step for leaves of ``((K, *shape), dtype)`` ``specs``: a
    ``(K, *shape)`` array per leaf, or its ``Factors`` when ``rank > 0`` and ndim >= 2 —
    a pure function of ``(seed, step, leaf, direction, worker)``."""
    draw_specs = [((shape[0],) + draw_shape(shape[1:], rank), dtype) for shape, dtype in specs]
    drawn = sampler.draw_many(draw_specs, xp, step=step, worker=worker)
    return [split_factors(arr, shape[1:], rank) if rank and len(shape) >= 3 else arr
            for (shape, _), arr in zip(specs, drawn)]


def _structured(target: Compiled, args: tuple, nums: tuple[int, ...], parts: list[Any],
                r: int) -> tuple[Any, Any, list[tuple[Any, int]]]:
    """The JVP with rank-``r`` tangents on the leaves of ndim >= 2 (``parts``: drawn by
    ``draw_tangents``): returns the value, the directional derivatives and the subtree of
    each argument in ``nums`` with its leaf count."""
    _, treedef, _, _ = target._signature(args)
    spans: dict[int, tuple[int, Any]] = {}  # argument position -> (first leaf, subtree)
    start = 0
    for pos, child in zip(target._dynamic_positions(len(args)), treedef.children):
        spans[pos] = (start, child)
        start += child.num_leaves
    flags = [False] * start
    for i in nums:
        if i not in spans:
            raise TangentError(f"forward_grad: argument {i} is static and has no gradient",
                               hint="drop it from argnums or static_argnums")
        first, child = spans[i]
        flags[first:first + child.num_leaves] = [True] * child.num_leaves
    mask = tuple(flags)
    inputs_of: dict[int, list[Any]] = {}  # leaf position -> its tangent inputs
    p, trees = 0, []
    for i in nums:
        first, child = spans[i]
        trees.append((child, child.num_leaves))
        for j in range(first, first + child.num_leaves):
            part = parts[p]
            inputs_of[j] = [part.a, part.b] if isinstance(part, Factors) else [part]
            p += 1
    tangent_inputs = [x for j in sorted(inputs_of) for x in inputs_of[j]]
    k = parts[0].a.shape[0] if isinstance(parts[0], Factors) else parts[0].shape[0]
    value, touts = target.jvp_leaves(args, mask, (k,), r, tangent_inputs)
    return value, (touts[0] if touts else None), trees


def _namespace(compiled: Compiled, params: Sequence[Any]) -> Any:
    """Where tangents live: CuPy when the function runs on CuPy or the parameters are CuPy
    arrays (imported only then), else NumPy."""
    if compiled.backend == "cupy":
        from .backends import get_backend

        return get_backend("cupy").cp
    leaves = [leaf for p in params for leaf in tree_flatten(p)[0]]
    return array_namespace(*leaves)
