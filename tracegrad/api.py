"""The public compiler API: ``compile``, ``jvp``, ``grad``, ``value_and_grad`` and the
``Compiled`` callable.

A ``Compiled`` function traces its Python function once per input signature — pytree
structure, leaf shapes and dtypes, static argument values, and (for JVPs) which leaves
carry tangents and how many directions, (for gradients) which leaves are differentiated —
then runs the cached generated code. Forward and reverse mode share the tracer, the
clean-up passes and the backend; only the transform in between differs.
"""

from __future__ import annotations

import functools
import inspect
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._namespace import is_device_array
from .errors import ArgumentTypeError, GradientError, TangentError, TracegradError
from .ir import Aval, Graph
from .modes import PRIMAL, HessianMode, JVPMode, Mode, VJPCotangentMode, VJPMode
from .tracing.effects import (
    check_arguments_unchanged,
    check_leaks,
    no_random_draws,
    user_frame_source,
)
from .tracing.source import _is_internal
from .tracing.tracer import MAX_RANK, GraphBuilder, Tracer, aval_of
from .tree import TreeDef, tree_flatten, tree_flatten_signature, tree_map, tree_unflatten

if TYPE_CHECKING:  # pragma: no cover
    from .backends import Executable

__all__ = ["Compiled", "compile", "grad", "jvp", "value_and_grad"]

_MAX_FAST = 64  # signatures per compiled function with a steady-state fast path


def _leaf_aval(x: Any, where: str) -> Aval:
    """``aval_of`` for an argument leaf, with errors that name the argument."""
    if isinstance(x, Tracer | complex):
        aval = None  # traced values of another trace and Python complex numbers are not arguments
    else:
        try:
            aval = aval_of(x)
        except TypeError:
            aval = None
    if aval is None:
        raise ArgumentTypeError(
            f"{where} has type {type(x).__name__}; compiled functions take NumPy arrays, Python scalars "
            "and dicts/lists/tuples of them",
            hint="convert it with np.asarray, or mark the argument static with static_argnums=(i,)")
    if aval.ndim > MAX_RANK:
        raise ArgumentTypeError(f"{where} has rank {aval.ndim}; tracegrad supports arrays of rank up to "
                                f"{MAX_RANK} (NumPy's limit)",
                                hint="merge axes with reshape before the call")
    if aval.dtype.kind not in "biufc":
        raise ArgumentTypeError(f"{where} is an array of dtype {aval.dtype}; only numeric arrays can be traced")
    return aval


def _path_names(treedef: TreeDef, prefix: str) -> list[str]:
    """Readable names for the leaves of a pytree, e.g. ``params_w1``."""
    out: list[str] = []

    def walk(td: TreeDef, name: str) -> None:
        if td.kind == "leaf":
            out.append(re.sub(r"\W", "_", name))
        elif td.kind == "dict":
            for k, c in zip(td.keys, td.children):
                walk(c, f"{name}_{k}")
        else:
            for i, c in enumerate(td.children):
                walk(c, f"{name}_{i}")

    walk(treedef, prefix)
    return out


@dataclass
class _Entry:
    """One cached compilation."""

    graph: Graph
    executable: Executable
    out_tree: TreeDef
    out_float: list[bool]


class Compiled:
    """A function compiled by ``tracegrad.compile``."""

    def __init__(self, fn: Callable[..., Any], backend: str = "numpy", static_argnums: Sequence[int] = (),
                 static_argnames: Sequence[str] = ()):
        if not callable(fn):
            raise TypeError(f"tracegrad.compile expects a function, got {type(fn).__name__}")
        self.fn = fn
        self.backend = backend
        from .backends import get_backend  # on first compile: importing the API loads no backend

        self._backend = get_backend(backend)
        self._cache: dict[Any, _Entry] = {}
        # steady state: tree_flatten_signature's key -> the primal entry, for calls with no
        # static or keyword arguments (no TreeDef, aval or mode built per call)
        self._fast: dict[Any, _Entry] = {}
        self._fast_grad: dict[Any, tuple] = {}  # the same for value_and_grad, keyed with argnums
        self._fast_jvp: dict[Any, _Entry] = {}  # and for jvp, keyed with the tangents' signature
        self._keyword_variants: dict[Any, Compiled] = {}
        try:
            params = inspect.signature(fn).parameters
            self._arg_names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            self._arg_names = []
        names = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
        nums = {int(i) for i in static_argnums}
        # like jax.jit: a static parameter is static whether it is passed by position or by name
        self._named_positions = {self._arg_names.index(n) for n in names if n in self._arg_names} - nums
        nums.update(self._named_positions)
        names += tuple(self._arg_names[i] for i in nums if i < len(self._arg_names))
        self.static_argnums = tuple(sorted(nums))
        self.static_argnames = tuple(dict.fromkeys(names))
        functools.update_wrapper(self, fn)

    # -- keyword arguments ---------------------------------------------------------------
    def _with_keywords(self, args: tuple, kwargs: dict[str, Any]) -> tuple[Compiled, tuple]:
        """A positional-only variant for this set of keyword names (cached), and its arguments:
        keyword arguments named in ``static_argnames`` are static (hashable, part of the cache
        key); the others are traced like positional ones, after them."""
        static = tuple(sorted((k, v) for k, v in kwargs.items() if k in self.static_argnames))
        for k, v in static:
            try:
                hash(v)
            except TypeError:
                raise ArgumentTypeError(f"static argument {k} of type {type(v).__name__} is not hashable",
                                        hint="pass a tuple instead of a list, or make it a traced argument") from None
        dynamic = tuple(sorted(k for k in kwargs if k not in self.static_argnames))
        n = len(args)
        key = (n, dynamic, static)
        variant = self._keyword_variants.get(key)
        if variant is None:
            fn, fixed = self.fn, dict(static)

            def call_with_keywords(*a: Any) -> Any:
                return fn(*a[:n], **dict(zip(dynamic, a[n:])), **fixed)

            call_with_keywords.__name__ = getattr(fn, "__name__", "f")
            call_with_keywords.__wrapped__ = fn  # type: ignore[attr-defined]
            variant = Compiled(call_with_keywords, self.backend, [i for i in self.static_argnums if i < n])
            variant._arg_names = [self._arg_name(i) for i in range(n)] + list(dynamic)
            self._keyword_variants[key] = variant
        return variant, args + tuple(kwargs[k] for k in dynamic)

    # -- signatures ----------------------------------------------------------------
    def _arg_name(self, i: int) -> str:
        return self._arg_names[i] if i < len(self._arg_names) else f"arg{i}"

    def _split(self, args: tuple) -> tuple[tuple, tuple]:
        for i in self.static_argnums:
            if i >= len(args) and i not in self._named_positions:
                raise TypeError(f"static_argnums names argument {i}, but only {len(args)} were passed")
        dynamic = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        static = tuple(args[i] for i in self.static_argnums if i < len(args))
        for i, s in zip(self.static_argnums, static):
            try:
                hash(s)
            except TypeError:
                raise ArgumentTypeError(f"static argument {i} ({self._arg_name(i)}) of type "
                                        f"{type(s).__name__} is not hashable",
                                        hint="pass a tuple instead of a list, or make it a traced argument") from None
        return dynamic, static

    def _merge(self, dynamic: Sequence[Any], static: tuple) -> list[Any]:
        out, dyn, st = [], iter(dynamic), iter(static)
        for i in range(len(dynamic) + len(static)):
            out.append(next(st) if i in self.static_argnums else next(dyn))
        return out

    def _dynamic_positions(self, nargs: int) -> list[int]:
        return [i for i in range(nargs) if i not in self.static_argnums]

    def _avals(self, args: tuple) -> tuple[list[Any], TreeDef, tuple[Aval, ...], tuple]:
        dynamic, static = self._split(args)
        leaves, treedef = tree_flatten(dynamic)
        names = self._leaf_names(treedef, len(args))
        avals = tuple(_leaf_aval(x, f"argument {n}") for x, n in zip(leaves, names))
        return leaves, treedef, avals, static

    def _signature(self, args: tuple) -> tuple[list[Any], TreeDef, tuple, tuple]:
        """Cheap per-call cache key of the leaves; avals are built only on a cache miss."""
        dynamic, static = self._split(args) if self.static_argnums else (args, ())
        leaves, treedef = tree_flatten(dynamic)
        sig = []
        for x in leaves:
            t = type(x)
            if (t is np.ndarray or is_device_array(x)) and x.dtype.kind in "biufc":
                sig.append((x.shape, x.dtype))  # a CuPy array keys like the NumPy array it mirrors
            elif t in (float, int, bool):
                sig.append(t)
            else:
                return self._avals(args)  # the slow path validates and explains bad types
        return leaves, treedef, tuple(sig), static

    def _leaf_names(self, treedef: TreeDef, nargs: int) -> list[str]:
        names: list[str] = []
        for pos, child in zip(self._dynamic_positions(nargs), treedef.children):
            names.extend(_path_names(child, self._arg_name(pos)))
        return names

    # -- tracing ---------------------------------------------------------------------
    def _trace(self, treedef: TreeDef, avals: tuple[Aval, ...], static: tuple, nargs: int,
               mutable: Sequence[bool] | None = None) -> tuple[Graph, TreeDef]:
        name = getattr(self.fn, "__name__", "f")
        builder = GraphBuilder(name if name.isidentifier() else "f")
        builder.tracked = weakref.WeakSet()
        names = self._leaf_names(treedef, nargs)
        if mutable is None:
            mutable = [not a.weak for a in avals]
        tracers = [builder.new_input(a, n, mutable=m) for a, n, m in zip(avals, names, mutable)]
        dynamic = tree_unflatten(treedef, tracers)
        try:
            with no_random_draws(self.fn, name):
                try:
                    out = self.fn(*self._merge(dynamic, static))
                except (AttributeError, TypeError, IndexError) as err:
                    if isinstance(err, TracegradError):
                        raise
                    self._explain_lists(treedef, nargs, err)
                    raise
            check_arguments_unchanged(dynamic, tracers, name)
            out_leaves, out_tree = tree_flatten(out)
            for j, leaf in enumerate(out_leaves):
                if not isinstance(leaf, Tracer | np.ndarray | np.generic | bool | int | float):
                    raise ArgumentTypeError(f"{name} returned a {type(leaf).__name__} (output leaf {j}); "
                                            "compiled functions must return arrays or pytrees of arrays")
            graph = builder.build(out_leaves)
            del out
            check_leaks(builder, [*tracers, *out_leaves])
        finally:
            builder.finished = True
        return graph, out_tree

    def _explain_lists(self, treedef: TreeDef, nargs: int, err: Exception) -> None:
        """A Python list argument is a pytree of separate scalars, not an array: when the
        function then fails the way an array would not (``x.shape``, ``x @ w``), say so."""
        for pos, child in zip(self._dynamic_positions(nargs), treedef.children):
            if child.kind == "list" and child.children and all(c.kind == "leaf" for c in child.children):
                tb, source = err.__traceback__, None
                while tb is not None:
                    if not _is_internal(tb.tb_frame.f_code.co_filename):
                        source = user_frame_source(tb.tb_frame)
                    tb = tb.tb_next
                raise ArgumentTypeError(
                    f"argument {self._arg_name(pos)} is a Python list of {len(child.children)} numbers; compiled "
                    f"functions trace a list as a list of separate scalars, not as an array "
                    f"({type(err).__name__}: {err})",
                    source=source, hint=f"pass np.asarray({self._arg_name(pos)}) instead of the list") from err

    def _entry(self, args: tuple, mode: Mode) -> tuple[_Entry, list[Any]]:
        leaves, treedef, sig, static = self._signature(args)
        key = (treedef, sig, static, len(args), mode)
        entry = self._cache.get(key)
        if entry is None:
            leaves, treedef, avals, static = self._avals(args)
            mutable = [isinstance(x, np.ndarray) or (not isinstance(x, np.generic) and not a.weak)
                       for x, a in zip(leaves, avals)]  # scalars are immutable: `s += 1` rebinds
            primal, out_tree = self._trace(treedef, avals, static, len(args), mutable)
            graph, out_float = mode.build(primal)
            executable = self._backend.compile(graph)  # a fusing backend returns the fused graph
            entry = _Entry(executable.graph, executable, out_tree, out_float)
            self._cache[key] = entry
        return entry, leaves

    # -- running ---------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            variant, args = self._with_keywords(args, kwargs)
            return variant(*args)
        flat = None if self.static_argnums else tree_flatten_signature(args)
        if flat is not None:
            entry = self._fast.get(flat[1])
            if entry is not None:
                outs = entry.executable.fn(*flat[0])
                return outs[0] if entry.out_tree.kind == "leaf" else tree_unflatten(entry.out_tree, outs)
        entry, leaves = self._entry(args, PRIMAL)
        if flat is not None and len(self._fast) < _MAX_FAST:
            self._fast[flat[1]] = entry
        outs = entry.executable(*leaves)
        return tree_unflatten(entry.out_tree, outs)

    def jvp(self, primals: Sequence[Any], tangents: Sequence[Any], *, batched: bool = False) -> tuple[Any, Any]:
        """Outputs and tangent outputs (``None`` for non-float outputs) in one execution.

        With ``batched=True`` every given tangent has a leading axis of K directions and
        each tangent output gets the same leading axis."""
        _check_tuples(primals, tangents)
        primals, tangents = tuple(primals), tuple(tangents)
        flat = flat_t = None
        if not self.static_argnums and len(primals) == len(tangents):
            flat, flat_t = tree_flatten_signature(primals), tree_flatten_signature(tangents)
            if flat is not None and flat_t is not None:
                fast = self._fast_jvp.get((flat[1], flat_t[1], batched))
                if fast is not None:  # steady state: checked when this signature was first seen
                    return self._run_jvp(fast, flat[0], flat_t[0])
        if len(primals) != len(tangents):
            raise TangentError(f"jvp: got {len(primals)} primals but {len(tangents)} tangents",
                               hint="pass one tangent (or None) per primal argument")
        for i in self.static_argnums:
            if i < len(tangents) and tangents[i] is not None:
                raise TangentError(f"jvp: static argument {i} cannot have a tangent; pass None")
        leaves, treedef, _, _ = self._signature(primals)
        dyn_tangents = [t for i, t in enumerate(tangents) if i not in self.static_argnums]
        dyn_primals = [p for i, p in enumerate(primals) if i not in self.static_argnums]
        t_leaves: list[Any] = []
        for pos, p, t in zip(self._dynamic_positions(len(primals)), dyn_primals, dyn_tangents):
            t_leaves.extend(_match_tangent(p, t, self._arg_name(pos)))
        batch = _check_tangents(leaves, t_leaves, lambda: self._leaf_names(treedef, len(primals)), batched)
        mask = tuple(t is not None for t in t_leaves)
        entry, leaves = self._entry(primals, JVPMode(mask, batch))
        if flat is not None and flat_t is not None and len(self._fast_jvp) < _MAX_FAST:
            self._fast_jvp[(flat[1], flat_t[1], batched)] = entry
        return self._run_jvp(entry, leaves, [t for t in t_leaves if t is not None])

    @staticmethod
    def _run_jvp(entry: _Entry, leaves: Sequence[Any], tangent_leaves: Sequence[Any]) -> tuple[Any, Any]:
        outs = entry.executable.fn(*leaves, *tangent_leaves)
        n = len(entry.out_float)
        it = iter(outs[n:])
        out_t = [next(it) if f else None for f in entry.out_float]
        return tree_unflatten(entry.out_tree, outs[:n]), tree_unflatten(entry.out_tree, out_t)

    def jvp_leaves(self, args: tuple, mask: tuple[bool, ...], batch: tuple[int, ...], rank: int,
                   tangent_inputs: Sequence[Any]) -> tuple[Any, list[Any]]:
        """The JVP on flat leaves: ``mask`` marks the dynamic leaves with tangents,
        ``tangent_inputs`` are the JVP graph's tangent inputs in order (for ``rank > 0`` two
        factors per leaf of ndim >= 2, ``ad.lowrank``). Returns the output pytree and the flat
        tangents of the float outputs (``forward_grad``'s structured path)."""
        entry, leaves = self._entry(tuple(args), JVPMode(tuple(mask), tuple(batch), int(rank)))
        outs = entry.executable(*leaves, *tangent_inputs)
        n = len(entry.out_float)
        return tree_unflatten(entry.out_tree, outs[:n]), list(outs[n:])

    def jvp_executable(self, args: tuple, mask: tuple[bool, ...], batch: tuple[int, ...],
                       rank: int) -> tuple[Callable[..., tuple], TreeDef, int]:
        """What ``jvp_leaves`` runs, for a caller that runs it itself per call (the
        steady-state path of ``forward_grad``): the generated function (inputs: the dynamic
        leaves, then the tangent inputs), the output structure and the number of outputs
        before the tangent outputs."""
        entry, _ = self._entry(tuple(args), JVPMode(tuple(mask), tuple(batch), int(rank)))
        return entry.executable.fn, entry.out_tree, len(entry.out_float)

    def value_and_grad(self, *args: Any, argnums: int | Sequence[int] = 0) -> tuple[Any, Any]:
        """The scalar output and its gradient with respect to ``args[argnums]`` (reverse mode),
        from one execution of the fused forward+backward graph. The gradient has the pytree
        structure of that argument (a tuple of them when ``argnums`` is a tuple)."""
        flat = None if self.static_argnums else tree_flatten_signature(args)
        if flat is not None:
            fast = self._fast_grad.get((flat[1], argnums))
            if fast is not None:  # steady state: the entry and output positions worked out before
                fn, out_tree, n, picks, single = fast
                outs = fn(*flat[0])
                value = outs[0] if out_tree.kind == "leaf" else tree_unflatten(out_tree, outs[:n])
                grads = [outs[ks[0]] if td.kind == "leaf" else tree_unflatten(td, [outs[k] for k in ks])
                         for td, ks in picks]
                return value, grads[0] if single else tuple(grads)
        leaves, treedef, _, _ = self._signature(args)
        nums, mask, spans = self._grad_mask(args, leaves, treedef, argnums)
        entry, leaves = self._entry(args, VJPMode(mask))
        outs = entry.executable(*leaves)
        n = len(entry.out_float)
        where = {leaf: k for k, leaf in enumerate(i for i, m in enumerate(mask) if m)}
        picks = [(td, [n + where[j] for j in range(start, start + td.num_leaves)])
                 for start, td in (spans[i] for i in nums)]
        grads = [tree_unflatten(td, [outs[k] for k in ks]) for td, ks in picks]
        value = tree_unflatten(entry.out_tree, outs[:n])
        if flat is not None and len(self._fast_grad) < _MAX_FAST:
            try:
                self._fast_grad[(flat[1], argnums)] = (entry.executable.fn, entry.out_tree, n, picks,
                                                       isinstance(argnums, int))
            except TypeError:  # unhashable argnums (a list): no fast path
                pass
        return value, grads[0] if isinstance(argnums, int) else tuple(grads)

    def vjp(self, args: Sequence[Any], cotangents: Callable[[list[Aval | None]], list[Any]],
            argnums: int | Sequence[int] = 0) -> tuple[list[Any], TreeDef, list[Any]]:
        """Vector-Jacobian products in one execution. ``cotangents(avals)`` gets one entry per
        output leaf: its aval where the output takes a cotangent (a computed float), else
        None; it returns the cotangents of the former, in order. Returns the flat outputs,
        their structure and the products, one pytree per entry of ``argnums``."""
        args = tuple(args)
        leaves, treedef, _, _ = self._signature(args)
        nums, mask, spans = self._grad_mask(args, leaves, treedef, argnums)
        entry, leaves = self._entry(args, VJPCotangentMode(tuple(mask)))
        n = len(entry.out_float)
        avals = [a.aval for a in entry.graph.outputs[:n]]
        seeds = cotangents([a if f else None for a, f in zip(avals, entry.out_float)])
        outs = entry.executable(*leaves, *seeds)
        where = {leaf: k for k, leaf in enumerate(i for i, m in enumerate(mask) if m)}
        grads = [tree_unflatten(td, [outs[n + where[j]] for j in range(start, start + td.num_leaves)])
                 for start, td in (spans[i] for i in nums)]
        return list(outs[:n]), entry.out_tree, grads

    def hessian_blocks(self, args: Sequence[Any], argnums: int | Sequence[int], directions: list[Any]) -> tuple[Any, list[Any]]:
        """The value and, for each differentiated leaf, the derivative of its gradient along
        ``directions`` (one tangent per differentiated leaf, K directions on a leading axis)."""
        args = tuple(args)
        leaves, treedef, _, _ = self._signature(args)
        _, mask, _ = self._grad_mask(args, leaves, treedef, argnums)
        batch = (int(np.shape(directions[0])[0]),)
        entry, leaves = self._entry(args, HessianMode(tuple(mask), tuple(batch)))
        outs = entry.executable(*leaves, *directions)
        n_grad = len(entry.out_float)  # value, then one gradient per differentiated leaf
        it = iter(outs[n_grad:])
        tangents = [next(it) if f else None for f in entry.out_float]
        return outs[0], tangents[1:]

    def _grad_mask(self, args: tuple, leaves: list[Any], treedef: TreeDef,
                   argnums: int | Sequence[int]) -> tuple[tuple[int, ...], tuple[bool, ...], dict[int, tuple]]:
        """Validate ``argnums``; return them, the per-leaf differentiation mask and, per
        argument position, ``(first leaf index, subtree structure)``."""
        nums = _check_argnums(argnums)
        spans: dict[int, tuple[int, TreeDef]] = {}
        start = 0
        for pos, child in zip(self._dynamic_positions(len(args)), treedef.children):
            spans[pos] = (start, child)
            start += child.num_leaves
        for i in nums:
            if i >= len(args):
                raise GradientError(f"argnums names argument {i}, but only {len(args)} were passed")
            if i in self.static_argnums:
                raise GradientError(f"argnums names argument {i} ({self._arg_name(i)}), which is static "
                                    "and has no gradient", hint="drop it from argnums or static_argnums")
        mask = [False] * len(leaves)
        for i in nums:
            first, child = spans[i]
            for j in range(first, first + child.num_leaves):
                x = leaves[j]
                if not ((type(x) is np.ndarray and x.dtype.kind == "f") or type(x) is float
                        or isinstance(x, np.floating)):
                    name = self._leaf_names(treedef, len(args))[j]
                    dtype = np.asarray(x).dtype if isinstance(x, np.ndarray | np.generic | int) else type(x).__name__
                    raise GradientError(
                        f"argument {name} has dtype {dtype} and cannot be differentiated "
                        f"(argnums={argnums!r} includes it)",
                        hint="pass integer data such as labels through an argument not in argnums")
                mask[j] = True
        return nums, tuple(mask), spans

    # -- inspection ------------------------------------------------------------------
    def graph(self, *args: Any, optimized: bool = True) -> Graph:
        """The primal graph for these arguments (after clean-up passes unless ``optimized=False``)."""
        if not optimized:
            _, treedef, avals, static = self._avals(args)
            return self._trace(treedef, avals, static, len(args))[0]
        return self._entry(args, PRIMAL)[0].graph

    def _jvp_mode(self, args: tuple, argnums: Any, directions: int | None, tangents: str = "dense") -> JVPMode:
        _, treedef, avals, _ = self._avals(args)
        positions = self._dynamic_positions(len(args))
        wanted = set(positions if argnums is None else ((argnums,) if isinstance(argnums, int) else argnums))
        mask = []
        for pos, child in zip(positions, treedef.children):
            mask.extend([pos in wanted] * child.num_leaves)
        mask = [m and a.is_float for m, a in zip(mask, avals)]
        return JVPMode(tuple(mask), () if directions is None else (int(directions),), tangent_rank(tangents))

    def jvp_graph(self, *args: Any, argnums: Any = None, directions: int | None = None,
                  tangents: str = "dense") -> Graph:
        """The fused primal+tangent graph, with tangents for the float leaves of ``argnums``
        (default: all arguments) and optionally ``directions`` tangents at once;
        ``tangents="rank1"`` (or ``"rank<r>"``) makes matrix and kernel tangents low-rank
        factors (inputs ``<name>_a``, ``<name>_b``)."""
        return self._entry(args, self._jvp_mode(args, argnums, directions, tangents))[0].graph

    def grad_graph(self, *args: Any, argnums: int | Sequence[int] = 0) -> Graph:
        """The fused forward+backward graph: outputs the value, then the gradient of each
        float leaf of ``args[argnums]`` in order."""
        leaves, treedef, _, _ = self._signature(args)
        return self._entry(args, VJPMode(self._grad_mask(args, leaves, treedef, argnums)[1]))[0].graph

    def source(self, *args: Any, jvp: bool = False, argnums: Any = None, directions: int | None = None,
               grad: bool = False, tangents: str = "dense") -> str:
        """The generated Python source (of the JVP graph with ``jvp=True``, of the gradient
        graph with ``grad=True``, there ``argnums`` defaulting to 0)."""
        if grad:
            leaves, treedef, _, _ = self._signature(args)
            mask = self._grad_mask(args, leaves, treedef, 0 if argnums is None else argnums)[1]
            return self._entry(args, VJPMode(mask))[0].executable.source
        mode = self._jvp_mode(args, argnums, directions, tangents) if jvp else PRIMAL
        return self._entry(args, mode)[0].executable.source

    def cache_size(self) -> int:
        return len(self._cache) + sum(v.cache_size() for v in self._keyword_variants.values())

    def __repr__(self) -> str:  # what a notebook shows: the function, backend and cache
        name = getattr(self.fn, "__qualname__", getattr(self.fn, "__name__", "f"))
        n = len(self._cache)
        static = f", static_argnums={self.static_argnums}" if self.static_argnums else ""
        return (f"<tracegrad.compile {name}({', '.join(self._arg_names)}) backend={self.backend!r}"
                f"{static}, {n} compiled signature{'s' if n != 1 else ''}>")


TANGENT_KINDS = ("dense", "rank1")


def tangent_rank(tangents: str, rank: int | None = None) -> int:
    """The low-rank rank a tangent-kind name stands for: ``"dense"`` -> 0, ``"rank1"`` -> 1
    (or ``rank``), ``"rank<r>"`` -> r."""
    name = str(tangents)
    if name == "dense":
        if rank not in (None, 0):
            raise ValueError(f"rank={rank} applies to low-rank tangents; pass tangents='rank1'")
        return 0
    if name.startswith("rank") and name[4:].isdigit() and int(name[4:]) >= 1:
        if rank is None or name == f"rank{rank}":
            return int(name[4:])
        if name != "rank1":
            raise ValueError(f"tangents={name!r} and rank={rank} disagree; pass one of them")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
        return rank
    raise ValueError(f"tangents must be one of {TANGENT_KINDS} (or 'rank<r>'), got {tangents!r}")


def _check_tuples(primals: Any, tangents: Any) -> None:
    for what, value in (("primals", primals), ("tangents", tangents)):
        if not isinstance(value, tuple | list):
            raise TangentError(
                f"jvp: {what} must be a tuple (one entry per argument of the function), got "
                f"{type(value).__name__}" + (f" of shape {value.shape}" if hasattr(value, "shape") else ""),
                hint="for one argument write tg.jvp(f, (x,), (v,))")



def _match_tangent(primal: Any, tangent: Any, where: str) -> list[Any]:
    """Tangent leaves aligned with the primal's leaves (``None`` = no tangent)."""
    p_leaves, p_tree = tree_flatten(primal)
    if tangent is None:
        return [None] * len(p_leaves)
    if p_tree.kind == "leaf":
        return [tangent]
    if isinstance(primal, dict):
        if not isinstance(tangent, dict) or set(tangent) != set(primal):
            raise TangentError(f"tangent for {where} must be a dict with keys {sorted(primal)}, got "
                               f"{sorted(tangent) if isinstance(tangent, dict) else type(tangent).__name__}")
        return [x for k in sorted(primal) for x in _match_tangent(primal[k], tangent[k], f"{where}[{k!r}]")]
    if isinstance(primal, list | tuple):
        if not isinstance(tangent, list | tuple) or len(tangent) != len(primal):
            raise TangentError(f"tangent for {where} must be a {type(primal).__name__} of length {len(primal)}")
        return [x for i, (p, t) in enumerate(zip(primal, tangent)) for x in _match_tangent(p, t, f"{where}[{i}]")]
    if p_tree.kind == "custom":  # a registered class: the tangent is an instance of the same structure
        t_leaves, t_tree = tree_flatten(tangent)
        if t_tree != p_tree:
            raise TangentError(f"tangent for {where} must have the structure {p_tree!r}, got {t_tree!r}")
        return t_leaves
    return [None] * len(p_leaves)


def _shape_dtype(x: Any) -> tuple[tuple[int, ...], np.dtype, bool]:
    if type(x) is np.ndarray:
        return x.shape, x.dtype, False
    a = _leaf_aval(x, "a tangent")
    return a.shape, a.dtype, a.weak


def _check_tangents(primals: Sequence[Any], tangents: Sequence[Any], names: Callable[[], list[str]],
                    batched: bool) -> tuple:
    batch: tuple | None = None
    for i, (p, t) in enumerate(zip(primals, tangents)):
        if t is None:
            continue
        p_shape, p_dtype, p_weak = _shape_dtype(p)
        t_shape, t_dtype, t_weak = _shape_dtype(t)
        if p_dtype.kind == "f" and t_dtype == p_dtype and t_weak == p_weak:
            if not batched and t_shape == p_shape:
                continue
            if batched and t_shape[1:] == p_shape and (batch is None or t_shape[:1] == batch):
                batch = t_shape[:1]
                continue
        name = names()[i]  # the slow path explains what is wrong
        aval = _leaf_aval(p, f"argument {name}")
        if not aval.is_float:
            raise TangentError(f"argument {name} has dtype {aval.dtype} and cannot have a tangent",
                               hint="pass None as its tangent (integer data such as labels is constant)")
        t_aval = _leaf_aval(t, f"tangent of {name}")
        shape = t_aval.shape
        if batched:
            if len(shape) != len(aval.shape) + 1:
                raise TangentError(f"tangent of {name} has shape {shape}; with batched=True it must be "
                                   f"(K,) + {aval.shape}")
            lead, shape = shape[:1], shape[1:]
            if batch is not None and lead != batch:
                raise TangentError(f"tangent of {name} has {lead[0]} directions, others have {batch[0]}")
            batch = lead
        if shape != aval.shape:
            raise TangentError(f"tangent of {name} has shape {t_aval.shape} but its primal has shape {aval.shape}",
                               hint="a tangent must have exactly its primal's shape")
        if t_aval.dtype != aval.dtype and not (aval.weak and t_aval.weak):
            raise TangentError(f"tangent of {name} has dtype {t_aval.dtype} but its primal has dtype {aval.dtype}",
                               hint=f"cast the tangent with .astype(np.{aval.dtype.name})")
    return batch or ()


def compile(fn: Callable[..., Any] | None = None, *, backend: str = "numpy",
            static_argnums: Sequence[int] | int = (), static_argnames: Sequence[str] | str = ()) -> Any:
    """Compile ``fn`` (NumPy-style code) with tracegrad; usable as ``@compile`` or ``@compile(...)``.

    As with ``jax.jit``, ``static_argnums``/``static_argnames`` name arguments that are
    Python values (flags, sizes) rather than arrays: each value gets its own compilation.
    Keyword arguments not named static are traced like positional ones."""
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    if fn is None:
        return lambda f: Compiled(f, backend, static_argnums, static_argnames)
    return Compiled(fn, backend, static_argnums, static_argnames)


def jvp(fn: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """Like ``jax.jvp``: ``(fn(*primals), d/dt fn(primals + t * tangents))`` in one execution.

    A tangent of ``None`` (for a whole argument or any subtree) marks a constant."""
    _check_tuples(primals, tangents)
    compiled = fn if isinstance(fn, Compiled) else _compiled_for(fn)
    return compiled.jvp(primals, tangents)


def _check_argnums(argnums: Any) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int | np.integer) else argnums
    try:
        nums = tuple(nums)
    except TypeError:
        nums = (argnums,)
    if not nums or any(isinstance(i, bool) or not isinstance(i, int | np.integer) or i < 0 for i in nums):
        raise GradientError(f"argnums must be a non-negative int or a tuple of them, got {argnums!r}")
    return tuple(int(i) for i in nums)


def with_aux(fn: Callable[..., Any], who: str) -> Callable[..., Any]:
    """``fn`` returning ``(value, aux)``, checked, with ``aux`` excluded from differentiation
    (as in JAX: aux is carried along, never differentiated)."""
    from .tracing.dispatch import numpy_namespace

    stop_gradient = numpy_namespace().stop_gradient

    name = getattr(fn, "__name__", "f")

    def split_aux(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise GradientError(f"{who}(..., has_aux=True) needs a function returning a pair (value, aux); "
                                f"{name} returned {type(out).__name__}"
                                + (f" of length {len(out)}" if isinstance(out, tuple | list) else ""),
                                hint="return value, aux (aux may be any pytree, e.g. a dict of metrics)")
        value, aux = out
        if len(tree_flatten(value)[0]) != 1:
            raise GradientError(f"{who}(..., has_aux=True): the value {name} returns must be one scalar array",
                                hint="return loss, aux with loss a scalar")
        return value, tree_map(stop_gradient, aux)

    split_aux.__name__ = name
    split_aux.__wrapped__ = fn  # type: ignore[attr-defined]
    return split_aux


def _aux_seeds(avals: list[Aval | None]) -> list[Any]:
    """Cotangents seeding reverse mode from the value (output 0) alone."""
    if not avals or avals[0] is None or avals[0].shape != ():
        raise GradientError("gradients need a function whose value (the first of value, aux) is a computed "
                            "scalar float", hint="reduce the value to a scalar, e.g. np.mean(loss)")
    return [np.ones((), avals[0].dtype)] + [np.zeros(a.shape, a.dtype) for a in avals[1:] if a is not None]


def value_and_grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, *, has_aux: bool = False,
                   backend: str = "numpy", static_argnums: Sequence[int] | int = ()) -> Callable[..., tuple[Any, Any]]:
    """Like ``jax.value_and_grad``: ``g(*args) -> (fn(*args), ∇fn)`` by reverse mode, for a
    ``fn`` returning a scalar float. The gradient has the pytree structure of
    ``args[argnums]`` (a tuple of such when ``argnums`` is a tuple); value and gradient come
    from one execution of one compiled graph, cached per input signature. With
    ``has_aux=True`` ``fn`` returns ``(value, aux)`` and ``g`` returns ``((value, aux), ∇value)``."""
    _check_argnums(argnums)
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    if has_aux:
        if isinstance(fn, Compiled):
            fn, backend, static_argnums = fn.fn, fn.backend, fn.static_argnums
        compiled = Compiled(with_aux(fn, "value_and_grad"), backend, static_argnums)
    else:
        compiled = fn if isinstance(fn, Compiled) else Compiled(fn, backend, static_argnums)

    def value_and_grad_fn(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        target, call_args = compiled._with_keywords(args, kwargs) if kwargs else (compiled, args)
        if not has_aux:
            return target.value_and_grad(*call_args, argnums=argnums)
        outs, out_tree, grads = target.vjp(call_args, _aux_seeds, argnums)
        value_aux = tree_unflatten(out_tree, outs)
        return value_aux, grads[0] if isinstance(argnums, int) else tuple(grads)

    value_and_grad_fn.compiled = compiled  # type: ignore[attr-defined]
    value_and_grad_fn.__name__ = f"value_and_grad_{getattr(fn, '__name__', 'f')}"
    return value_and_grad_fn


def grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, *, has_aux: bool = False,
         backend: str = "numpy", static_argnums: Sequence[int] | int = ()) -> Callable[..., Any]:
    """Like ``jax.grad``: ``g(*args) -> ∇fn`` with respect to ``args[argnums]`` (reverse mode);
    with ``has_aux=True``, ``g(*args) -> (∇value, aux)``. See ``value_and_grad``."""
    vg = value_and_grad(fn, argnums, has_aux=has_aux, backend=backend, static_argnums=static_argnums)

    def grad_fn(*args: Any, **kwargs: Any) -> Any:
        value, g = vg(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    grad_fn.compiled = vg.compiled  # type: ignore[attr-defined]
    grad_fn.__name__ = f"grad_{getattr(fn, '__name__', 'f')}"
    return grad_fn


@functools.lru_cache(maxsize=256)
def _compiled_for(fn: Callable[..., Any]) -> Compiled:
    return Compiled(fn)
