"""Primitives and their registry.

A ``Primitive`` holds everything tracegrad knows about one operation, declared in one
place (a file under ``tracegrad/ops``): its shape/dtype rule, its JVP and VJP rules, its
lowering for each backend, and every other fact a later stage needs — the NumPy names it
answers to (``tracing.dispatch`` and the ``tracegrad.numpy`` exports are derived from
them), its fusion role, its folding identities, the CUDA helper its template calls. No
table elsewhere lists primitives by name, so none can forget one. The NumPy lowering is a function from operand expressions
(strings) and params to a Python expression; the reference implementation used for
eager evaluation, constant folding and ``Graph.interpret`` is compiled from that same
template, so there is exactly one definition of what a primitive computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .core import Aval

__all__ = ["FUSION_ROLES", "PRIMITIVES", "Primitive", "freeze", "register"]

FUSION_ROLES = ("elementwise", "view", "gather", "reduction")

PRIMITIVES: dict[str, Primitive] = {}


def freeze(value: Any) -> Any:
    """Make params hashable (lists become tuples, dicts sorted item tuples)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


@dataclass(eq=False)
class Primitive:
    """One operation of the IR.

    - ``abstract_eval(avals, params) -> Aval | tuple[Aval, ...]``: the shape/dtype rule;
      it raises ``ShapeError``/``DTypeError`` for operands that do not fit.
    - ``jvp(primals, tangents, **params) -> (primal_out, tangent_out)``: written with
      traceable ops; ``None`` for a primitive whose output has a zero tangent.
    - ``vjp(ct, primals, out, **params) -> tuple`` (reverse mode): given the cotangent ``ct``
      of the output ``out`` (both traced), one cotangent per operand (``None`` for none),
      written with traceable ops so the backward pass is an ordinary graph.
    - ``lowerings[backend](*operand_exprs, **params) -> str``: a Python expression.
    - ``flops(in_avals, out_avals, params) -> int``: the cost rule used by ``Graph.stats()``;
      ``None`` means the elementwise default (one FLOP per output element), which only an
      ``elementwise`` primitive may rely on.
    - ``view``: the output aliases operand 0's memory in NumPy (no copy, no bytes moved);
      a bool or a function ``(in_avals, params) -> bool`` when it depends on the call.
    - ``numpy_ufunc``: the NumPy ufunc the lowering calls (``"np.add"``), so the NumPy
      backend may write the result into a dying operand (``out=``) instead of allocating;
      ``declare`` derives it from the first of ``numpy_names`` for elementwise ufuncs.
    - ``fresh``: the NumPy lowering always returns a newly allocated array for a non-0-d
      output (never an operand or a view of one); implied by ``numpy_ufunc``. Only such
      outputs are ever overwritten in place.
    - ``numpy_names``: the NumPy functions/ufuncs it answers to (``("abs", "absolute")``;
      dotted for submodules, ``"linalg.norm"``); ``numpy_fn`` is the function called for
      them (set by ``ops._rules.declare`` / ``numpy_function``).
    - ``fusion``: its role in a fusion group (``FUSION_ROLES``), or a function
      ``node -> role | None`` when it depends on the call; ``None`` derives ``"elementwise"``
      from ``elementwise``. ``gathered``: operand positions a gather reads at other indices.
    - ``units``: folding identities ``((position, c), ...)``: with operand ``position`` the
      constant ``c``, the result is the other operand (``x + 0``, ``x * 1``);
      ``involution``: ``f(f(x)) == x`` (``neg``).
    - ``cuda_helper``: C source of the helper functions its CUDA template calls (joined,
      once each, into the generated translation unit's preamble).
    - ``lowerings["cupy"]``: how the CuPy backend lowers it when that is not the fused
      elementwise template: a strategy name the backend implements (``"gemm"``, ``"blas"``,
      ``"im2col_gemm"``) or a view rule ``(layout, params, n_operands) -> layout | None``.
    """

    name: str
    abstract_eval: Callable[[list[Aval], dict[str, Any]], Any]
    jvp: Callable[..., Any] | None = None
    vjp: Callable[..., Any] | None = None
    lowerings: dict[str, Callable[..., str]] = field(default_factory=dict)
    multiple_results: bool = False
    differentiable: bool = True  # False: outputs are integer/boolean or piecewise constant
    elementwise: bool = False  # output[i] depends on input[i] only (with broadcasting)
    param_format: Callable[[dict[str, Any]], str] | None = None  # custom listing of params
    flops: Callable[[list[Aval], list[Aval], dict[str, Any]], int] | None = None
    view: bool | Callable[[list[Aval], dict[str, Any]], bool] = False
    numpy_ufunc: str | None = None
    fresh: bool = False
    # Python helpers the NumPy lowering calls by name (e.g. ``tg_conv2d``): they join the
    # generated module's globals, so a long expression becomes one readable call that a
    # debugger can step into.
    runtime: dict[str, Callable[..., Any]] = field(default_factory=dict)
    numpy_names: tuple[str, ...] = ()
    numpy_fn: Callable[..., Any] | None = field(default=None, repr=False)
    fusion: str | Callable[[Any], str | None] | None = None
    gathered: tuple[int, ...] = ()
    units: tuple[tuple[int, float], ...] = ()
    involution: bool = False
    cuda_helper: str = ""
    _impl_cache: dict[Any, Callable[..., Any]] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"Primitive({self.name})"

    def fusion_role(self, node: Any) -> str | None:
        """How ``node`` (an application of this primitive) may join a fusion group."""
        if self.multiple_results:
            return None
        if self.fusion is None:
            return "elementwise" if self.elementwise else None
        return self.fusion(node) if callable(self.fusion) else self.fusion

    def format_params(self, params: dict[str, Any]) -> str:
        if not params:
            return ""
        if self.param_format is not None:
            return "[" + self.param_format(params) + "]"
        return "[" + ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) + "]"

    def lower(self, backend: str, args: list[str], params: dict[str, Any]) -> str:
        try:
            rule = self.lowerings[backend]
        except KeyError:
            raise NotImplementedError(f"primitive {self.name!r} has no {backend} lowering") from None
        return rule(*args, **params)

    def has_cost_rule(self) -> bool:
        return self.flops is not None or self.elementwise

    def flop_count(self, in_avals: list[Aval], out_avals: list[Aval], params: dict[str, Any]) -> int:
        """Floating-point operations of one application (conventions in ``tracegrad.viz.stats``)."""
        if self.flops is not None:
            return int(self.flops(in_avals, out_avals, params))
        if self.elementwise:
            return sum(a.size for a in out_avals)  # one operation per output element
        raise NotImplementedError(f"primitive {self.name!r} declares no FLOP rule (flops=...)")

    def is_view(self, in_avals: list[Aval], params: dict[str, Any]) -> bool:
        """Whether NumPy returns a view of operand 0 (so the output allocates nothing)."""
        return bool(self.view(in_avals, params) if callable(self.view) else self.view)

    def returns_fresh(self) -> bool:
        """Whether a non-0-d NumPy result is always a new array that nothing else references."""
        return (self.fresh or self.numpy_ufunc is not None) and not self.multiple_results and not self.view

    def impl(self, *args: Any, **params: Any) -> Any:
        """Evaluate with NumPy, through the NumPy lowering compiled into a lambda."""
        key = (len(args), freeze(params))
        fn = self._impl_cache.get(key)
        if fn is None:
            names = [f"_x{i}" for i in range(len(args))]
            expr = self.lower("numpy", names, params)
            namespace = {"np": np, **self.runtime}
            fn = eval(f"lambda {', '.join(names)}: {expr}", namespace)
            self._impl_cache[key] = fn
        return fn(*args)


def _fmt(v: Any) -> str:
    if isinstance(v, np.dtype):
        return v.name
    if isinstance(v, type) and issubclass(v, np.generic):
        return np.dtype(v).name
    return repr(v)


def register(prim: Primitive) -> Primitive:
    if prim.name in PRIMITIVES:
        raise ValueError(f"primitive {prim.name!r} registered twice")
    PRIMITIVES[prim.name] = prim
    return prim
