"""Helpers that write derivative rules in one line (JAX ``ad.defjvp`` / ``deflinear``).

A rule is a short function written with traced ops, so the JVP of a JVP comes for free.
The helpers here cover the common shapes of a derivative so that a primitive's file
states only the mathematics:

- ``defjvp_unary(prim, d)`` / ``defvjp_unary(prim)``: ``y = f(x)`` with ``dy = d(x, y) dx``;
  forward and reverse mode share the one derivative factor.
- ``unbroadcast(ct, aval)``: the transpose of NumPy broadcasting, for VJP rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..ir import Aval, Primitive
from ..tracing.dispatch import numpy_namespace
from ..tracing.tracer import aval_of, bind
from . import tangents as T

__all__ = ["defjvp_unary", "defvjp_unary", "unbroadcast"]


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
