"""User-defined derivative rules: ``custom_jvp`` and ``custom_vjp``, as in JAX.

Outside a trace a decorated function is just called. Inside one (``compile``, ``jvp``,
``grad``, ``forward_grad``, ``jacfwd``, ...) a call becomes ONE node of a primitive made for
that function, its argument structure and operand avals (never registered in
``ir.PRIMITIVES``: it is private to the function, and the registry's completeness tests are
about the declared operations). Its facts:

- shape rule: the function traced on abstract values (a throwaway ``GraphBuilder``);
- NumPy lowering: one call of a runtime helper (``Primitive.runtime``) that evaluates the
  user's function on the concrete arrays, so the generated code calls the user's Python;
- JVP (``custom_jvp``): the user's rule, called on the traced primals and ONE tangent
  direction at a time; with K directions (``forward_grad``, ``jacfwd``) it is called K times
  and the tangents are stacked (CSE merges the K copies of the primal computation);
- VJP (``custom_vjp``): ``fwd`` on the traced primals, then ``bwd(residuals, ct)``; the
  forward computation of ``fwd`` is replayed in the backward graph (the primal node itself
  runs the plain function), which costs one re-evaluation of ``fwd``;
- VJP of a ``custom_jvp`` function: JAX linearizes and transposes the rule; here the rule is
  called once per input element with the basis directions and the Jacobian is contracted
  with the cotangent — only for at most ``MAX_BASIS`` input elements, beyond which a
  ``GradientError`` says to define a ``custom_vjp``;
- JVP of a ``custom_vjp`` function: a ``TangentError`` (JAX raises too): use ``custom_jvp``.

The rules' results are ordinary traced ops, so the transformed graph is an ordinary graph
and derivatives of derivatives work.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import linecache
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._namespace import array_namespace, is_device_array
from .ad import tangents as T
from .errors import GradientError, TangentError, TracegradError
from .ir import Aval, Graph, Primitive, SourceInfo
from .tracing.dispatch import numpy_namespace
from .tracing.tracer import GraphBuilder, Tracer, aval_of
from .tracing.tracer import bind as _bind
from .tree import TreeDef, tree_flatten, tree_unflatten

__all__ = ["MAX_BASIS", "CustomRuleError", "custom_jvp", "custom_vjp"]

MAX_BASIS = 32  # reverse mode through a custom_jvp rule: at most this many input elements
_COUNTER = itertools.count()


class CustomRuleError(TracegradError, ValueError):
    """A custom derivative rule returned something of the wrong structure, shape or dtype."""


def _def_source(fn: Callable[..., Any]) -> SourceInfo | None:
    """Where ``fn`` is defined (the line an error about its result should name)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    lineno = code.co_firstlineno  # a decorated function's first line is its first decorator
    for ln in range(code.co_firstlineno, code.co_firstlineno + 30):
        if linecache.getline(code.co_filename, ln).lstrip().startswith(("def ", "async def ")):
            lineno = ln
            break
    return SourceInfo(code.co_filename, lineno, code.co_name, linecache.getline(code.co_filename, lineno))


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _is_array_leaf(x: Any) -> bool:
    return isinstance(x, Tracer | np.ndarray | np.generic | bool | int | float | complex)


class _Traced:
    """The function traced on abstract values: its output structure and avals, its graph."""

    def __init__(self, fun: Callable[..., Any], name: str, in_tree: TreeDef, in_avals: tuple[Aval, ...],
                 rebuild: Callable[[list[Any]], tuple[Any, ...]]):
        builder = GraphBuilder(name)
        tracers = [builder.new_input(a, None, "primal") for a in in_avals]
        out = fun(*rebuild(tracers))
        leaves, self.out_tree = tree_flatten(out)
        for leaf in leaves:
            if not _is_array_leaf(leaf):
                raise CustomRuleError(f"{name} returned a {type(leaf).__name__}; a custom-rule function must "
                                      "return arrays (or a pytree of arrays)", source=_def_source(fun))
        self.graph: Graph = builder.build(leaves)
        builder.finished = True
        self.out_avals = tuple(aval_of(a) if not isinstance(a, Tracer) else a.aval for a in leaves)


class _CustomFunction:
    """Shared machinery of ``custom_jvp`` and ``custom_vjp``: argument handling, the eager path
    and the per-signature primitive."""

    kind = "custom"

    def __new__(cls, fun: Callable[..., Any] | None = None, nondiff_argnums: Sequence[int] = ()) -> Any:
        """``@custom_jvp`` or ``@custom_jvp(nondiff_argnums=(0,))`` (a decorator factory)."""
        if fun is None:
            return functools.partial(cls, nondiff_argnums=nondiff_argnums)
        return super().__new__(cls)

    def __init__(self, fun: Callable[..., Any], nondiff_argnums: Sequence[int] = ()):
        self.fun = fun
        self.nondiff_argnums = tuple(sorted(int(i) for i in nondiff_argnums))
        self._cr_signature = inspect.signature(fun)
        self._cr_prims: dict[Any, tuple[Primitive, _Traced]] = {}
        self._cr_id = next(_COUNTER)
        functools.update_wrapper(self, fun)

    # -- arguments ---------------------------------------------------------------------
    def _positional(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if not kwargs:
            return args
        bound = self._cr_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if bound.kwargs:
            raise TypeError(f"{_fn_name(self.fun)}: keyword-only arguments are not supported by {self.kind}")
        return tuple(bound.args)

    def _split(self, args: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        for i in self.nondiff_argnums:
            if i >= len(args):
                raise TypeError(f"{_fn_name(self.fun)}: nondiff_argnums names argument {i} but the call has "
                                f"{len(args)} positional arguments")
        static = tuple(args[i] for i in self.nondiff_argnums)
        diff = tuple(a for i, a in enumerate(args) if i not in self.nondiff_argnums)
        for s in static:
            if any(isinstance(leaf, Tracer) for leaf in tree_flatten(s)[0]):
                raise TracegradError(f"{_fn_name(self.fun)}: a traced value was passed in nondiff_argnums",
                                     hint="nondiff_argnums are for static values (ints, functions, "
                                     "shapes); pass arrays as ordinary (differentiable) arguments")
        return static, diff

    def _merge(self, static: tuple[Any, ...], diff: Sequence[Any]) -> tuple[Any, ...]:
        out: list[Any] = []
        s, d = iter(static), iter(diff)
        for i in range(len(static) + len(diff)):
            out.append(next(s) if i in self.nondiff_argnums else next(d))
        return tuple(out)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = self._positional(args, kwargs)
        static, diff = self._split(args)
        leaves, in_tree = tree_flatten(diff)
        if not any(isinstance(x, Tracer) for x in leaves):
            return self.fun(*args)  # not traced: an ordinary call
        in_avals = tuple(aval_of(x) for x in leaves)
        prim, traced = self._primitive(static, in_tree, in_avals)
        outs = _bind(prim, *leaves)
        outs = list(outs) if prim.multiple_results else [outs]
        return tree_unflatten(traced.out_tree, outs)

    # -- the primitive -----------------------------------------------------------------
    def _rebuild(self, static: tuple[Any, ...], in_tree: TreeDef) -> Callable[[list[Any]], tuple[Any, ...]]:
        """Leaves -> the full positional arguments (static ones put back in place)."""
        return lambda leaves: self._merge(static, tree_unflatten(in_tree, list(leaves)))

    def _primitive(self, static: tuple[Any, ...], in_tree: TreeDef,
                   in_avals: tuple[Aval, ...]) -> tuple[Primitive, _Traced]:
        try:
            key: Any = (static, in_tree, in_avals)
            hash(key)
        except TypeError:
            key = None  # unhashable static arguments: a primitive for this call only
        if key is not None and key in self._cr_prims:
            return self._cr_prims[key]
        n = next(_COUNTER)
        name = f"{self.kind}_{_identifier(_fn_name(self.fun))}_{n}"
        rebuild = self._rebuild(static, in_tree)
        traced = _Traced(self.fun, name, in_tree, in_avals, rebuild)
        multiple = len(traced.out_avals) != 1
        helper = f"tg_{name}"
        fun, out_tree, out_avals = self.fun, traced.out_tree, traced.out_avals

        def run(*leaves: Any) -> Any:
            """Evaluate the user's function on concrete arrays (the node's NumPy lowering). The
            user wrote NumPy: on the CuPy backend the operands are copied to the host and the
            results back to the device."""
            xp = array_namespace(*leaves)
            if xp is not np:
                leaves = tuple(x.get() if is_device_array(x) else x for x in leaves)
            out_leaves, tree = tree_flatten(fun(*rebuild(list(leaves))))
            if tree != out_tree:
                raise CustomRuleError(f"{_fn_name(fun)} returned a different structure at run time "
                                      f"({tree}) than when traced ({out_tree})", source=_def_source(fun))
            outs = tuple(xp.asarray(np.asarray(o, dtype=a.dtype)) for o, a in zip(out_leaves, out_avals))
            return outs if multiple else outs[0]

        def abstract_eval(avals: list[Aval], params: dict[str, Any]) -> Any:
            if [(a.shape, a.dtype) for a in avals] != [(a.shape, a.dtype) for a in in_avals]:
                raise TracegradError(f"{name}: called with operands {avals}, traced for {list(in_avals)}")
            return out_avals if multiple else out_avals[0]

        prim = Primitive(name, abstract_eval, lowerings={"numpy": lambda *a: f"{helper}({', '.join(a)})"},
                         multiple_results=multiple, runtime={helper: run},
                         flops=lambda i, o, p: _graph_flops(traced.graph))
        prim.jvp = self._jvp_rule(static, in_tree, traced, multiple)
        prim.vjp = self._vjp_rule(static, in_tree, traced, multiple)
        if key is not None:
            self._cr_prims[key] = (prim, traced)
        return prim, traced

    def _jvp_rule(self, static: tuple[Any, ...], in_tree: TreeDef, traced: _Traced, multiple: bool) -> Any:
        raise NotImplementedError

    def _vjp_rule(self, static: tuple[Any, ...], in_tree: TreeDef, traced: _Traced, multiple: bool) -> Any:
        raise NotImplementedError


def _graph_flops(graph: Graph) -> int:
    total = 0
    for n in graph.nodes:
        if n.primitive.has_cost_rule():
            total += n.primitive.flop_count([a.aval for a in n.inputs], [v.aval for v in n.outputs], n.params)
    return total


def _check_leaves(what: str, rule: Callable[..., Any], value: Any, tree: TreeDef,
                  avals: Sequence[Aval], allow_none: bool = False) -> list[Any]:
    """The leaves of a rule's result, checked against the expected structure and shapes
    (dtypes are cast); errors name the rule's definition line."""
    if allow_none and value is None:
        return [None] * len(avals)
    leaves, got = tree_flatten(value)
    if got != tree:
        raise CustomRuleError(f"{_fn_name(rule)} returned {what} with structure {got}, expected {tree}",
                              source=_def_source(rule), hint="return one value per output (per input for "
                              "cotangents), in the same pytree structure")
    tnp = numpy_namespace()
    out = []
    for i, (leaf, aval) in enumerate(zip(leaves, avals)):
        if leaf is None:
            out.append(None)
            continue
        if not _is_array_leaf(leaf):
            raise CustomRuleError(f"{_fn_name(rule)} returned a {type(leaf).__name__} as {what} leaf {i}",
                                  source=_def_source(rule))
        a = aval_of(leaf)
        if a.shape != aval.shape:
            if isinstance(leaf, int | float):  # a Python scalar (e.g. 0.0): broadcast, as a convenience
                leaf = np.full(aval.shape, leaf, aval.dtype)
            else:
                raise CustomRuleError(f"{_fn_name(rule)} returned {what} leaf {i} of shape {a.shape}, "
                                      f"expected {aval.shape}", source=_def_source(rule),
                                      hint="each tangent/cotangent has the shape of its primal")
        if aval_of(leaf).dtype != aval.dtype:
            leaf = tnp.astype(leaf, aval.dtype) if isinstance(leaf, Tracer) else np.asarray(leaf, aval.dtype)
        out.append(leaf)
    return out


class custom_jvp(_CustomFunction):
    """``@custom_jvp`` on a function, then ``@f.defjvp`` on its rule
    ``rule(primals, tangents) -> (primal_out, tangent_out)`` (with ``nondiff_argnums``:
    ``rule(*nondiff, primals, tangents)``). The rule replaces automatic differentiation of
    ``f`` in every transform: forward mode calls it per direction; reverse mode contracts
    its basis-direction results (small inputs only; see the module docstring)."""

    kind = "custom_jvp"

    def __init__(self, fun: Callable[..., Any], nondiff_argnums: Sequence[int] = ()):
        super().__init__(fun, nondiff_argnums)
        self.jvp_rule: Callable[..., Any] | None = None

    def defjvp(self, jvp: Callable[..., Any]) -> Callable[..., Any]:
        """Set the JVP rule (usable as a decorator); returns it."""
        self.jvp_rule = jvp
        self._cr_prims.clear()
        return jvp

    def _rule(self) -> Callable[..., Any]:
        if self.jvp_rule is None:
            raise TangentError(f"custom_jvp function {_fn_name(self.fun)} has no JVP rule",
                               source=_def_source(self.fun), hint=f"define one with @{_fn_name(self.fun)}.defjvp")
        return self.jvp_rule

    def _call_rule(self, static: tuple[Any, ...], in_tree: TreeDef, traced: _Traced,
                   primals: list[Any], tangents: list[Any]) -> tuple[list[Any], list[Any]]:
        """One call of the user's rule with one tangent direction; checked leaves."""
        rule = self._rule()
        p = tree_unflatten(in_tree, list(primals))
        t = tree_unflatten(in_tree, list(tangents))
        result = rule(*static, p, t)
        if not (isinstance(result, tuple | list) and len(result) == 2):
            raise CustomRuleError(f"{_fn_name(rule)} must return a pair (primal_out, tangent_out), got "
                                  f"{type(result).__name__}", source=_def_source(rule))
        p_out = _check_leaves("a primal output", rule, result[0], traced.out_tree, traced.out_avals)
        t_out = _check_leaves("a tangent output", rule, result[1], traced.out_tree, traced.out_avals)
        return p_out, t_out

    def _jvp_rule(self, static: tuple[Any, ...], in_tree: TreeDef, traced: _Traced, multiple: bool) -> Any:
        def jvp(primals: list[Any], tangents: list[T.Tangent]) -> Any:
            tnp = numpy_namespace()
            dirs = T.directions()
            dense = []
            for p, t in zip(primals, tangents):
                a = aval_of(p)
                if t.is_zero or not a.is_float:
                    dense.append(None)
                else:
                    dense.append(tnp.broadcast_to(t.dense(), dirs + a.shape))
            per_dir: list[list[Any]] = []
            p_out: list[Any] = []
            for idx in np.ndindex(*dirs) if dirs else [()]:
                ts = [np.zeros(aval_of(p).shape, aval_of(p).dtype) if d is None else (d[idx] if idx else d)
                      for p, d in zip(primals, dense)]
                p_out, t_out = self._call_rule(static, in_tree, traced, primals, ts)
                per_dir.append(t_out)
            out_t: list[Any] = []
            for j, aval in enumerate(traced.out_avals):
                if not aval.is_float:
                    out_t.append(T.Zero(aval))
                    continue
                vals = [d[j] for d in per_dir]
                if not dirs:
                    out_t.append(T.Dense(vals[0]))
                else:
                    out_t.append(T.Dense(tnp.reshape(tnp.stack(vals), dirs + aval.shape)))
            return (p_out, out_t) if multiple else (p_out[0], out_t[0])

        return jvp

    def _vjp_rule(self, static: tuple[Any, ...], in_tree: TreeDef, traced: _Traced, multiple: bool) -> Any:
        def vjp(ct: Any, primals: list[Any], out: Any) -> list[Any]:
            tnp = numpy_namespace()
            cts = list(ct) if multiple else [ct]
            avals = [aval_of(p) for p in primals]
            n = sum(a.size for a in avals if a.is_float)
            if n > MAX_BASIS:
                raise GradientError(
                    f"reverse mode through custom_jvp function {_fn_name(self.fun)} with {n} input elements: "
                    f"tracegrad transposes a custom JVP rule by calling it on basis directions, at most "
                    f"{MAX_BASIS} of them", source=_def_source(self.fun),
                    hint="define the function with tracegrad.custom_vjp (fwd/bwd) for reverse mode, "
                    "or differentiate it in forward mode (jvp, forward_grad, jacfwd)")
            grads: list[Any] = []
            for i, a in enumerate(avals):
                if not a.is_float:
                    grads.append(None)
                    continue
                entries = []
                for e in range(a.size):
                    basis = np.zeros(a.size, a.dtype)
                    basis[e] = 1
                    ts = [basis.reshape(a.shape) if k == i else np.zeros(b.shape, b.dtype)
                          for k, b in enumerate(avals)]
                    _, t_out = self._call_rule(static, in_tree, traced, primals, ts)
                    terms = [tnp.sum(tnp.multiply(c, t)) for c, t, oa in zip(cts, t_out, traced.out_avals)
                             if oa.is_float]
                    entries.append(functools.reduce(tnp.add, terms) if terms else a.dtype.type(0))
                g = tnp.reshape(tnp.stack(entries), a.shape)
                grads.append(tnp.astype(g, a.dtype) if isinstance(g, Tracer) else np.asarray(g, a.dtype))
            return grads

        return vjp


class custom_vjp(_CustomFunction):
    """``@custom_vjp`` on a function, then ``f.defvjp(fwd, bwd)``: ``fwd(*args) -> (out,
    residuals)``, ``bwd(residuals, ct) -> tuple`` of one cotangent per differentiable
    argument (``None`` for zero); with ``nondiff_argnums``, ``bwd(*nondiff, residuals, ct)``.
    Reverse mode (``grad``, ``value_and_grad``, ``jacrev``) uses them; forward mode raises."""

    kind = "custom_vjp"

    def __init__(self, fun: Callable[..., Any], nondiff_argnums: Sequence[int] = ()):
        super().__init__(fun, nondiff_argnums)
        self.fwd: Callable[..., Any] | None = None
        self.bwd: Callable[..., Any] | None = None

    def defvjp(self, fwd: Callable[..., Any], bwd: Callable[..., Any]) -> None:
        """Set the forward (``(out, residuals)``) and backward (input cotangents) rules."""
        self.fwd, self.bwd = fwd, bwd
        self._cr_prims.clear()

    def _jvp_rule(self, static: tuple[Any, ...], in_tree: TreeDef, traced: _Traced, multiple: bool) -> Any:
        name = _fn_name(self.fun)

        def jvp(primals: list[Any], tangents: list[Any]) -> Any:
            raise TangentError(f"custom_vjp function {name} cannot be differentiated in forward mode "
                               "(jvp, forward_grad, jacfwd): it only defines a reverse-mode rule",
                               source=_def_source(self.fun),
                               hint="define it with tracegrad.custom_jvp instead (a JVP rule serves forward "
                               "mode and, for small inputs, reverse mode)")

        return jvp

    def _vjp_rule(self, static: tuple[Any, ...], in_tree: TreeDef, traced: _Traced, multiple: bool) -> Any:
        def vjp(ct: Any, primals: list[Any], out: Any) -> list[Any]:
            if self.fwd is None or self.bwd is None:
                raise GradientError(f"custom_vjp function {_fn_name(self.fun)} has no VJP rule",
                                    source=_def_source(self.fun),
                                    hint=f"define one with {_fn_name(self.fun)}.defvjp(fwd, bwd)")
            fwd, bwd = self.fwd, self.bwd
            args = self._merge(static, tree_unflatten(in_tree, list(primals)))
            result = fwd(*args)
            if not (isinstance(result, tuple | list) and len(result) == 2):
                raise CustomRuleError(f"{_fn_name(fwd)} must return a pair (output, residuals), got "
                                      f"{type(result).__name__}", source=_def_source(fwd))
            _check_leaves("an output", fwd, result[0], traced.out_tree, traced.out_avals)
            ct_tree = tree_unflatten(traced.out_tree, list(ct) if multiple else [ct])
            cts = bwd(*static, result[1], ct_tree)
            n_diff = len(args) - len(static)
            if not (isinstance(cts, tuple | list) and len(cts) == n_diff):
                raise CustomRuleError(f"{_fn_name(bwd)} must return a tuple of {n_diff} cotangent(s), one per "
                                      f"differentiable argument, got {cts!r:.80}", source=_def_source(bwd),
                                      hint="return a tuple even for one argument: return (ct_x,)")
            avals = [aval_of(p) for p in primals]
            leaves: list[Any] = []
            diff_args = tree_unflatten(in_tree, list(range(len(primals))))
            for arg_positions, c in zip(diff_args, cts):
                pos, sub_tree = tree_flatten(arg_positions)
                sub_avals = [avals[k] for k in pos]
                leaves.extend(_check_leaves("a cotangent", bwd, c, sub_tree, sub_avals, allow_none=True))
            return leaves

        return vjp
