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
from .tree import tree_flatten, tree_flatten_signature, tree_unflatten

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
                 rank: int | None = None, keep_buffers: bool = False) -> Callable[..., tuple[Any, Any]]:
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
    ``(seed, step, p, k)`` (``a`` first, scaled by ``1/sqrt(r)``), so E[vec(Ẇ)vec(Ẇ)ᵀ] = I.

    Steady state: after the first call of an input signature, later calls of it on NumPy
    take a fast path (``_Plan``) that skips the pytree checks and signature work and runs
    the generated code directly. With ``keep_buffers=True`` the tangents are drawn into
    buffers kept across calls and the estimate is formed in them, so a step allocates no
    parameter-sized array — but the arrays of an estimate are then overwritten by the next
    call: consume it first (the trainer applies it at once). By default every call returns
    fresh arrays."""
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
    plans: dict[Any, _Plan] = {}
    fast = compiled.backend == "numpy" and not compiled.static_argnums

    def derive(*args: Any, step: int | None = None, worker: int = 0,
               **kwargs: Any) -> tuple[Any, Any, list[Any], list[tuple[Any, int]]]:
        """The general path (checks every argument, any namespace, keyword arguments): the
        value, the K directional derivatives ``jv``, the tangents of every differentiated
        leaf (depth-first: a ``(K, *shape)`` array, or ``Factors`` for a low-rank leaf) and
        the tree of each argument in ``nums`` with its leaf count."""
        step = _next_step(step)
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
        parts = draw_tangents(sampler, specs, xp, step, low_rank, worker=worker)
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

    def _next_step(step: int | None) -> int:
        """The step of this call (the explicit one, else the count of calls so far)."""
        if step is None:
            step = calls[0]
        elif type(step) is not int or step < 0:
            if int(step) < 0:
                raise ValueError(f"step must be >= 0, got {step}")
            step = int(step)
        calls[0] += 1
        return step

    def estimate(*args: Any, step: int | None = None, **kwargs: Any) -> tuple[Any, Any]:
        if fast and not kwargs:
            flat = tree_flatten_signature(args)
            if flat is not None:
                leaves, key = flat
                plan = plans.get(key)
                if plan is not None:
                    return plan(leaves, _next_step(step))
                if len(plans) < _MAX_PLANS:
                    value_grads = _estimate(args, step, kwargs)
                    plans[key] = _Plan(compiled, args, leaves, nums, k, low_rank, sampler, has_aux, single,
                                       keep_buffers)
                    return value_grads
        return _estimate(args, step, kwargs)

    def _estimate(args: tuple, step: int | None, kwargs: dict[str, Any]) -> tuple[Any, Any]:
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
    factors = _factor_views(drawn, tuple(int(s) for s in shape), rank)
    if rank > 1:
        factors.a[...] *= 1.0 / math.sqrt(rank)
    return factors


def draw_tangents(sampler: DirectionSampler, specs: Sequence[tuple[tuple[int, ...], Any]], xp: Any, step: int,
                  rank: int, *, worker: int = 0) -> list[Any]:
    """The tangents of one step for leaves of ``((K, *shape), dtype)`` ``specs``: a
    ``(K, *shape)`` array per leaf, or its ``Factors`` when ``rank > 0`` and ndim >= 2 —
    a pure function of ``(seed, step, leaf, direction, worker)``."""
    draw_specs = [((shape[0],) + draw_shape(shape[1:], rank), dtype) for shape, dtype in specs]
    drawn = sampler.draw_many(draw_specs, xp, step=step, worker=worker)
    return [split_factors(arr, shape[1:], rank) if rank and len(shape) >= 3 else arr
            for (shape, _), arr in zip(specs, drawn)]


_MAX_PLANS = 64  # signatures with a fast path per estimator (each keeps its buffers)


_BATCH_MAX = 1 << 16  # numbers: up to this many a step's draws go through one random.Batch


class _Plan:
    """The steady-state executor of one input signature: everything the general path
    works out per call (which leaves get tangents, their shapes, the compiled entry, the
    order of the generated function's inputs, the output structure) fixed once, so a
    call is: draw the tangents, run the generated code, scale the tangents into the
    estimate. The numbers are the general path's exactly (same keys, same graph).

    Small draws (one direction of float32 leaves, ``_BATCH_MAX`` numbers in all: logistic
    regression, rank-1 factors) go through one ``random.Batch`` — one hash pass for every
    leaf instead of a dozen NumPy calls per leaf — into one buffer whose views are the
    tangents; with ``keep`` the buffer, its views and the generated function's tangent
    inputs are built once, so a call only refills them.

    Built after a successful general-path call of the same signature, so every check
    that call made holds for this one too (the key pins structure, shapes and dtypes)."""

    __slots__ = ("batch", "buffers", "distribution", "fn", "grad_trees", "has_aux", "k", "keep", "kept", "n_out",
                 "out_tree", "parts", "rank", "seed_key", "single", "specs", "tangent_order", "value_leaf")

    def __init__(self, compiled: Compiled, args: tuple, leaves: list[Any], nums: tuple[int, ...], k: int, r: int,
                 sampler: DirectionSampler, has_aux: bool, single: bool, keep: bool):
        spans, start = {}, 0
        _, treedef = tree_flatten(args)
        for pos, child in enumerate(treedef.children):
            spans[pos] = (start, child)
            start += child.num_leaves
        mask = [False] * len(leaves)
        positions: list[int] = []  # flat leaf position of drawn leaf p (p in nums order)
        self.grad_trees = []
        for i in nums:
            first, child = spans[i]
            mask[first:first + child.num_leaves] = [True] * child.num_leaves
            positions.extend(range(first, first + child.num_leaves))
            # a flat dict of leaves (the usual parameters) is rebuilt with dict(zip(...))
            flat_dict = child.kind == "dict" and all(c.kind == "leaf" for c in child.children)
            self.grad_trees.append((child, child.num_leaves, child.keys if flat_dict else None))
        self.fn, self.out_tree, self.n_out = compiled.jvp_executable(args, tuple(mask), (k,), r)
        self.value_leaf = self.out_tree.kind == "leaf"
        self.k, self.rank, self.has_aux, self.single, self.keep = k, r, has_aux, single, keep
        self.seed_key, self.distribution = tg_random.seed_key(sampler.seed), sampler.distribution
        # per drawn leaf: the drawn array's shape and dtype, and the leaf's shape when it
        # is low-rank (its factors are views of the drawn array)
        self.specs: list[tuple[tuple[int, ...], np.dtype]] = []
        self.parts: list[tuple[int, ...] | None] = []
        for j in positions:
            shape, dtype = tuple(np.shape(leaves[j])), np.dtype(leaves[j].dtype if hasattr(leaves[j], "dtype")
                                                                 else np.asarray(leaves[j]).dtype)
            self.specs.append(((k,) + draw_shape(shape, r), dtype))
            self.parts.append(shape if r and len(shape) >= 2 else None)
        # the generated function takes the tangent inputs in flat-leaf order
        self.tangent_order = sorted(range(len(positions)), key=lambda p: positions[p])
        sizes = [math.prod(s[1:]) for s, _ in self.specs]
        self.batch = None
        if k == 1 and all(d == np.float32 for _, d in self.specs) and sum(sizes) <= _BATCH_MAX:
            self.batch = tg_random.Batch(self.distribution, sizes)
        self.buffers = self.kept = None
        if keep and self.batch is not None:
            self.kept = self._views(self.batch.buffer())
        elif keep:
            self.buffers = [np.empty(s, d) for s, d in self.specs]

    def _views(self, buf: np.ndarray) -> tuple[np.ndarray, list[Any], list[Any], list[Any]]:
        """The tangents held in a ``Batch`` buffer: ``(buf, tangents, the generated function's
        tangent inputs, the per-leaf arrays the estimate is scaled into)`` (all views)."""
        drawn = [v.reshape(s) for v, (s, _) in zip(self.batch.views(buf), self.specs)]
        tangents = [arr if shape is None else _factor_views(arr, shape, self.rank)
                    for arr, shape in zip(drawn, self.parts)]
        return buf, tangents, self._tangent_inputs(tangents), [t[0] if type(t) is not Factors else t.a[0]
                                                               for t in tangents]

    def _tangent_inputs(self, tangents: list[Any]) -> list[Any]:
        inputs: list[Any] = []
        for p in self.tangent_order:
            t = tangents[p]
            if type(t) is Factors:
                inputs += (t.a, t.b)
            else:
                inputs.append(t)
        return inputs

    def __call__(self, leaves: list[Any], step: int) -> tuple[Any, Any]:
        k, r = self.k, self.rank
        base = tg_random.step_key_of(self.seed_key, step)
        if self.batch is not None:  # one pass for every leaf; then the tangents are views
            buf, tangents, tangent_inputs, scaled = self.kept or self._views(self.batch.buffer())
            leaf_key = tg_random.leaf_key
            self.batch.fill_keys([leaf_key(base, p, 0) for p in range(len(tangents))], buf)
            if r > 1:
                for t in tangents:
                    if type(t) is Factors:
                        t.a[...] *= 1.0 / math.sqrt(r)  # split_factors' scaling, the same rounding
            outs = self.fn(*leaves, *tangent_inputs)
            n = self.n_out
            value = outs[0] if self.value_leaf else tree_unflatten(self.out_tree, outs[:n])
            d = outs[n][0]
            grads_flat: list[Any] = []
            for t, s, shape in zip(tangents, scaled, self.parts):
                np.multiply(s, d, out=s)
                grads_flat.append(s if shape is None else LowRankGrad(s, t.b[0], shape))
            return value, self._grads(grads_flat)
        drawn = self.buffers if self.keep else [np.empty(s, d) for s, d in self.specs]
        fill, dist = tg_random.fill, self.distribution
        tangents = []
        for p, arr in enumerate(drawn):
            for d in range(k):
                fill(dist, tg_random.leaf_key(base, p, d), arr[d])
            shape = self.parts[p]
            tangents.append(arr if shape is None else split_factors(arr, shape, r))
        outs = self.fn(*leaves, *self._tangent_inputs(tangents))
        n = self.n_out
        value = outs[0] if self.value_leaf else tree_unflatten(self.out_tree, outs[:n])
        jv = outs[n]
        grads_flat = []
        for p, t in enumerate(tangents):
            shape = self.parts[p]
            if shape is None:
                if k == 1:
                    grads_flat.append(np.multiply(t[0], jv[0], out=t[0]))
                else:
                    grads_flat.append(np.tensordot(jv, t, axes=1) / k)
            else:
                a, b = t.a, t.b
                if k == 1:
                    grads_flat.append(LowRankGrad(np.multiply(a[0], jv[0], out=a[0]), b[0], shape))
                else:
                    a = a * (jv / k)[:, None, None]
                    u = np.ascontiguousarray(np.transpose(a, (1, 0, 2))).reshape(shape[0], k * r)
                    v = np.ascontiguousarray(np.transpose(b, (1, 0, 2))).reshape(b.shape[1], k * r)
                    grads_flat.append(LowRankGrad(u, v, shape))
        return value, self._grads(grads_flat)

    def _grads(self, grads_flat: list[Any]) -> Any:
        """The estimate in the structure of the differentiated arguments."""
        grads, start = [], 0
        for tree, count, keys in self.grad_trees:
            part = grads_flat[start:start + count]
            if keys is not None:
                grads.append(dict(zip(keys, part)))
            else:
                grads.append(part[0] if tree.kind == "leaf" else tree_unflatten(tree, part))
            start += count
        return grads[0] if self.single else tuple(grads)


def _factor_views(drawn: Any, shape: tuple[int, ...], rank: int) -> Factors:
    """``split_factors`` without the in-place ``1/sqrt(rank)`` scaling (views only; the
    caller scales ``a`` after every draw)."""
    m = shape[0] * rank
    return Factors(drawn[..., :m].reshape(*drawn.shape[:-1], shape[0], rank),
                   drawn[..., m:].reshape(*drawn.shape[:-1], math.prod(shape[1:]), rank), shape)


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
