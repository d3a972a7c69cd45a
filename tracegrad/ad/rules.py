"""Helpers that write derivative rules in one line (JAX ``ad.defjvp`` / ``deflinear``).

A rule is a short function written with traced ops, so the JVP of a JVP comes for free.
The helpers here cover the common shapes of a derivative so that a primitive's file
states only the mathematics:

- ``defjvp_unary(prim, d)`` / ``defvjp_unary(prim)``: ``y = f(x)`` with ``dy = d(x, y) dx``;
  forward and reverse mode share the one derivative factor.
- ``defjvp(prim, *rules)``: the JVP as a sum of one term per operand (JAX ``ad.defjvp``);
  zero tangents skip their term.
- ``deflinear(prim, map_fn)``: linear in operand 0 (the others are constant, e.g. index
  arrays): the JVP is the named map, the VJP its transpose.
- ``defbilinear(prim, lhs, rhs)`` / ``defmultilinear(prim, operand_map)``: linear in each
  operand separately (matmul, einsum, conv2d, mul): the JVP is the sum of the named maps
  of the operand tangents, the VJP their transposes — one definition for both modes.
- ``scale_map(factor, x_aval, out)``: the named map ``v * factor`` (elementwise, with
  broadcasting) and its transpose.
- ``unbroadcast(ct, aval)``: the transpose of NumPy broadcasting, for VJP rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..ir import Aval, Primitive
from ..tracing.dispatch import numpy_namespace
from ..tracing.tracer import aval_of, bind
from . import tangents as T
from .linear import LinearMap

__all__ = ["defbilinear", "defjvp", "defjvp_unary", "deflinear", "defmultilinear", "defvjp_unary", "scale_map",
           "unbroadcast"]


def defjvp_unary(prim: Primitive, derivative: Callable[[Any, Any], Any]) -> None:
    """JVP of ``y = f(x)`` as ``derivative(x, y) * x_dot`` (the factor is primal work)."""

    def rule(primals: list[Any], tangents: list[Any], **params: Any) -> Any:
        (x,) = primals
        y = bind(prim, x, **params)
        return y, T.scale(tangents[0], derivative(x, y), aval_of(y))

    rule.derivative = derivative  # type: ignore[attr-defined]  # reused by defvjp_unary
    prim.jvp = rule


def defvjp_unary(prim: Primitive, derivative: Callable[[Any, Any], Any] | None = None) -> None:
    """VJP of ``y = f(x)`` as ``ct * derivative(x, y)``; by default the same derivative factor
    that ``defjvp_unary`` registered, so forward and reverse mode share one definition."""
    if derivative is None:
        derivative = prim.jvp.derivative  # type: ignore[union-attr]

    def rule(ct: Any, primals: list[Any], y: Any, **params: Any) -> tuple[Any]:
        return (ct * derivative(primals[0], y),)

    prim.vjp = rule


def unbroadcast(ct: Any, aval: Aval) -> Any:
    """Transpose of NumPy broadcasting: sum ``ct`` (shaped like a broadcast result) over the
    leading axes ``aval`` lacks and the axes where ``aval`` has size 1, down to ``aval.shape``."""
    tnp = numpy_namespace()
    shape = aval_of(ct).shape
    if shape == aval.shape:
        return ct
    lead = len(shape) - len(aval.shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(aval.shape) if d == 1 and shape[lead + i] != 1)
    return tnp.reshape(tnp.sum(ct, axis=axes, keepdims=True), aval.shape)


def defjvp(prim: Primitive, *rules: Callable[..., Any] | None) -> None:
    """JVP as ``sum_i rules[i](g_i, ans, *primals, **params)`` over the operands whose tangent
    ``g_i`` is not zero; a rule returns a ``Tangent`` shaped like ``ans``. ``None`` marks an
    operand with no derivative (an index array, a condition)."""

    def jvp(primals: list[Any], tangents: list[Any], **params: Any) -> Any:
        ans = bind(prim, *primals, **params)
        terms = [rule(t, ans, *primals, **params) for rule, t in zip(rules, tangents)
                 if rule is not None and not t.is_zero]
        return ans, T.add(aval_of(ans), *terms)

    prim.jvp = jvp


def defmultilinear(prim: Primitive, operand_map: Callable[..., LinearMap]) -> None:
    """For a primitive linear in each operand separately: ``operand_map(i, primals, **params)``
    is the named map ``x_i -> f(..., x_i, ...)`` (the other operands fixed). The JVP is the
    sum of the maps of the operand tangents; the VJP applies each map's ``transpose``."""

    def jvp(primals: list[Any], tangents: list[Any], **params: Any) -> Any:
        ans = bind(prim, *primals, **params)
        out = aval_of(ans)
        terms = [t.map(operand_map(i, primals, **params), out) for i, t in enumerate(tangents) if not t.is_zero]
        return ans, T.add(out, *terms)

    def vjp(ct: Any, primals: list[Any], y: Any, **params: Any) -> tuple[Any, ...]:
        return tuple(operand_map(i, primals, **params).transpose(ct) for i in range(len(primals)))

    prim.jvp, prim.vjp = jvp, vjp


def defbilinear(prim: Primitive, lhs: Callable[..., LinearMap], rhs: Callable[..., LinearMap]) -> None:
    """``f(a, b)`` bilinear (JAX ``ad.defbilinear``): ``lhs(a, b, **params)`` is the named map
    of ``a``'s tangent (``v -> f(v, b)``), ``rhs(a, b, **params)`` that of ``b``'s
    (``v -> f(a, v)``); each map's ``transpose`` gives that operand's cotangent. The map of
    an operand may read that operand's aval, never its value."""

    def operand_map(i: int, primals: list[Any], **params: Any) -> LinearMap:
        return (lhs if i == 0 else rhs)(*primals, **params)

    defmultilinear(prim, operand_map)


def deflinear(prim: Primitive, map_fn: Callable[..., LinearMap]) -> None:
    """Linear in operand 0, the other operands constant (index arrays): ``map_fn(*primals,
    **params)`` is the named map; JVP = the map, VJP = its transpose (None for the rest)."""

    def jvp(primals: list[Any], tangents: list[Any], **params: Any) -> Any:
        ans = bind(prim, *primals, **params)
        return ans, tangents[0].map(map_fn(*primals, **params), aval_of(ans))

    def vjp(ct: Any, primals: list[Any], y: Any, **params: Any) -> tuple[Any, ...]:
        return (map_fn(*primals, **params).transpose(ct),) + (None,) * (len(primals) - 1)

    prim.jvp, prim.vjp = jvp, vjp


def scale_map(factor: Any, x_aval: Aval, out_ndim: int) -> LinearMap:
    """``v -> v * factor`` for the tangent of an operand ``x`` of an elementwise product whose
    result has ``out_ndim`` dimensions; the transpose sums ``ct * factor`` back to ``x``."""

    def dense(v: Any, nb: int) -> Any:
        pad = out_ndim - len(x_aval.shape)
        if nb and pad > 0:
            shape = tuple(aval_of(v).shape)
            v = numpy_namespace().reshape(v, shape[:nb] + (1,) * pad + shape[nb:])
        return v * factor

    return LinearMap("scale", dense, lambda ct: unbroadcast(ct * factor, x_aval), factor=factor)
