"""Shared shape/dtype rules and declaration helpers for primitive families."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import Aval, Primitive, freeze, register
from ..tracing.tracer import aval_of, bind
from ..transforms import tangents as T

__all__ = [
    "CudaReduction",
    "broadcast_shapes",
    "declare",
    "defjvp_unary",
    "defvjp_unary",
    "elementwise_abstract",
    "fmt_shape",
    "input_size_flops",
    "no_flops",
    "normalize_axes",
    "probe_dtype",
    "unbroadcast",
]


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _broadcast(shapes: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """NumPy's broadcasting rule, for any rank (``np.broadcast_shapes`` stops at 32 dimensions,
    arrays at 64)."""
    nd = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(nd):
        dims = {s[i - nd + len(s)] for s in shapes if i - nd + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise ValueError("shape mismatch")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcast_shapes(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return _broadcast(shapes)
    except ValueError:
        shown = " and ".join(fmt_shape(s) for s in shapes)
        raise ShapeError(
            f"{op}: operands with shapes {shown} cannot be broadcast together",
            hint="NumPy broadcasting aligns trailing dimensions, which must be equal or 1; "
            "reshape or transpose one operand (e.g. x[:, None])",
        ) from None


def _probe_value(aval: Aval) -> Any:
    if aval.weak:
        return {"b": True, "i": 1, "u": 1, "f": 1.0, "c": 1.0 + 0j}[aval.dtype.kind]
    return np.ones(1, aval.dtype)


@functools.cache
def _probe_cached(prim: Primitive, avals: tuple[Aval, ...], params: Any) -> tuple[np.dtype, bool]:
    with np.errstate(all="ignore"):
        try:
            out = prim.impl(*[_probe_value(a) for a in avals], **dict(params))
        except TypeError as err:
            dtypes = ", ".join(str(a.dtype) for a in avals)
            raise DTypeError(f"{prim.name} does not support operands of dtype {dtypes}: {err}") from None
    if isinstance(out, np.ndarray | np.generic):
        return out.dtype, False
    return aval_of(out).dtype, True


def probe_dtype(prim: Primitive, avals: list[Aval], params: dict[str, Any]) -> tuple[np.dtype, bool]:
    """Result dtype (and weakness) exactly as NumPy computes it, by running the primitive's
    NumPy lowering on one-element stand-ins (Python scalars for weak operands)."""
    return _probe_cached(prim, tuple(avals), freeze(params))


def elementwise_abstract(name: str) -> Callable[[list[Aval], dict[str, Any]], Aval]:
    def rule(avals: list[Aval], params: dict[str, Any]) -> Aval:
        from ..ir import PRIMITIVES

        shape = broadcast_shapes(name, *[a.shape for a in avals])
        dtype, weak = probe_dtype(PRIMITIVES[name], avals, params)
        return Aval(shape, dtype, weak and not shape)

    return rule


def no_flops(in_avals: list[Aval], out_avals: list[Aval], params: dict[str, Any]) -> int:
    """FLOP rule of data movement (indexing, reshapes, copies): no arithmetic."""
    return 0


def input_size_flops(in_avals: list[Aval], out_avals: list[Aval], params: dict[str, Any]) -> int:
    """FLOP rule of a reduction: one operation per element reduced."""
    return in_avals[0].size


class CudaReduction(NamedTuple):
    """CUDA lowering of a reduction: ``combine(acc, x)`` as a C expression, and the start
    value: ``"zero"``, ``"lowest"`` or ``"highest"`` of the output dtype."""

    combine: Callable[[str, str], str]
    identity: str


def declare(name: str, numpy: Callable[..., str], abstract_eval: Any = None, *,
            cuda: Any = None, **kw: Any) -> Primitive:
    """Create and register a primitive; elementwise ones get the broadcasting shape rule.

    ``cuda``: the primitive's CUDA C template for fused kernels (``lowerings["cuda"]``): for
    elementwise ops ``(*operand_exprs, **params) -> C expression`` (operands arrive converted
    to the op's compute type); for gathers ``(read, index, *other_operands, **params)`` where
    ``read(coords)`` loads the gathered operand; for reductions a ``CudaReduction``."""
    if abstract_eval is None:
        abstract_eval = elementwise_abstract(name)
    lowerings = {"numpy": numpy} if cuda is None else {"numpy": numpy, "cuda": cuda}
    return register(Primitive(name, abstract_eval, lowerings=lowerings, **kw))


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
    from .. import numpy as tnp  # lazily: tracegrad.numpy imports the ops

    shape = aval_of(ct).shape
    if shape == aval.shape:
        return ct
    lead = len(shape) - len(aval.shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(aval.shape) if d == 1 and shape[lead + i] != 1)
    return tnp.reshape(tnp.sum(ct, axis=axes, keepdims=True), aval.shape)


def normalize_axes(axis: Any, ndim: int, op: str) -> tuple[int, ...]:
    """``None`` -> all axes; ints or tuples -> sorted non-negative tuple (validated)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ShapeError(f"{op}: axis {a} is out of bounds for an array of dimension {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))
