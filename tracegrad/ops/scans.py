"""Scans along one axis (cumsum, cumprod) and argsort.

Params: ``axis`` is a non-negative int (the ``axis=None`` forms flatten first, in the
``@numpy_function`` wrappers). ``sort``, ``median`` and ``quantile`` are composites in
``tracegrad.numpy``: ``argsort`` (piecewise constant, so non-differentiable) followed by
``take_along_axis``, whose rules carry the derivative.

cumprod's derivative is right where inputs are zero: ``d y_i / d x_j`` (``j <= i``) is the
product of every factor of ``y_i`` but ``x_j``; it is formed from running products of the
nonzero entries and running zero counts (``_cumprod_parts``), never as ``y_i / x_j`` with
``x_j = 0``, in ``O(n)`` work and memory along the axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ad import tangents as T
from ..ir import Aval
from ..tracing.tracer import aval_of, bind
from ._rules import declare, input_size_flops, normalize_axes, numpy_function
from .elementwise import add, astype, div, equal, mul, where
from .indexing import index
from .shape import reshape


def _scan_abstract(name: str):
    def rule(avals: list[Aval], params: dict[str, Any]) -> Aval:
        (x,) = avals
        # NumPy widens small integers and booleans to the platform integer
        dtype = getattr(np, name)(np.ones(1, x.dtype)).dtype
        return Aval(x.shape, dtype)

    return rule


cumsum_p = declare("cumsum", lambda x, axis: f"np.cumsum({x}, axis={axis})", _scan_abstract("cumsum"),
                   flops=input_size_flops, numpy_names=("cumsum",))
cumprod_p = declare("cumprod", lambda x, axis: f"np.cumprod({x}, axis={axis})", _scan_abstract("cumprod"),
                    flops=input_size_flops, numpy_names=("cumprod",))


def cumsum(x: Any, axis: int) -> Any:
    return bind(cumsum_p, x, axis=int(axis))


def cumprod(x: Any, axis: int) -> Any:
    return bind(cumprod_p, x, axis=int(axis))


def _scan_wrapper(prim: Any, scan: Any, name: str) -> Any:
    @numpy_function(prim)
    def fn(a: Any, axis: int | None = None, dtype: Any = None, out: None = None) -> Any:
        if out is not None:
            raise TypeError(f"np.{name}: out= is not supported on traced values; use the result")
        if dtype is not None:
            a = astype(a, dtype)  # NumPy accumulates in dtype: the same as converting first
        if axis is None:
            a, axis = reshape(a, (-1,)), 0
        return scan(a, normalize_axes(axis, len(aval_of(a).shape), name)[0])

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``np.{name}``; ``axis=None`` scans the flattened array."
    return fn


np_cumsum = _scan_wrapper(cumsum_p, cumsum, "cumsum")
np_cumprod = _scan_wrapper(cumprod_p, cumprod, "cumprod")


def _flip(x: Any, axis: int) -> Any:
    nd = len(aval_of(x).shape)
    full = ("slice", None, None, None)
    return index(x, (full,) * axis + (("slice", None, None, -1),) + (full,) * (nd - axis - 1), [])


def cumsum_jvp(primals, tangents, *, axis):
    y = cumsum(primals[0], axis)
    return y, T.apply(tangents[0], lambda v, nb: cumsum(v, axis + nb), aval_of(y))


def cumsum_vjp(ct, primals, y, *, axis):
    # The transpose of a prefix sum is a suffix sum.
    return (_flip(cumsum(_flip(ct, axis), axis), axis),)


cumsum_p.jvp, cumsum_p.vjp = cumsum_jvp, cumsum_vjp


def _cumprod_parts(x: Any, axis: int) -> tuple[Any, Any, Any, Any]:
    """The pieces of ``d cumprod(x)``: ``p`` the running product of the nonzero entries,
    ``inv`` = 1/x at nonzero entries (0 at zeros), ``at_zero`` marking the zeros, and the
    running count of zeros ``c``. For a prefix without zeros the product of every factor but
    ``x_j`` is ``p_i / x_j``; with one zero only the zero's own term survives, and its
    coefficient is ``p_i`` itself; with two or more every term has a zero factor."""
    dtype = aval_of(x).dtype
    at_zero = equal(x, 0)
    one, zero = np.ones((), dtype), np.zeros((), dtype)
    p = cumprod(where(at_zero, one, x), axis)
    inv = where(at_zero, zero, div(one, where(at_zero, one, x)))
    c = cumsum(astype(at_zero, np.intp), axis)
    return p, inv, astype(at_zero, dtype), c


def cumprod_jvp(primals, tangents, *, axis):
    (x,) = primals
    y = cumprod(x, axis)
    out = aval_of(y)
    if T.is_zero(tangents[0]) or not out.is_float:
        return y, T.Zero(out)
    p, inv, at_zero, c = _cumprod_parts(x, axis)
    none, one = mul(p, astype(equal(c, 0), out.dtype)), mul(p, astype(equal(c, 1), out.dtype))

    def fn(v: Any, nb: int) -> Any:
        return add(mul(none, cumsum(mul(v, inv), axis + nb)), mul(one, cumsum(mul(v, at_zero), axis + nb)))

    return y, T.apply(tangents[0], fn, out)


def cumprod_vjp(ct, primals, y, *, axis):
    # The transpose of fn above: each cumsum becomes a suffix sum (flip, cumsum, flip).
    (x,) = primals
    dtype = aval_of(ct).dtype
    p, inv, at_zero, c = _cumprod_parts(x, axis)

    def suffix(v: Any) -> Any:
        return _flip(cumsum(_flip(v, axis), axis), axis)

    none = suffix(mul(ct, mul(p, astype(equal(c, 0), dtype))))
    one = suffix(mul(ct, mul(p, astype(equal(c, 1), dtype))))
    return (add(mul(none, inv), mul(one, at_zero)),)


cumprod_p.jvp, cumprod_p.vjp = cumprod_jvp, cumprod_vjp


# ---------------------------------------------------------------- argsort
def _argsort_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    return Aval(avals[0].shape, np.dtype(np.intp))


def _argsort_lowering(x: str, axis: int, kind: str | None) -> str:
    return f"np.argsort({x}, axis={axis}{'' if kind is None else f', kind={kind!r}'})"


def _sort_flops(in_avals: list[Aval], out_avals: list[Aval], params: dict[str, Any]) -> int:
    """Comparisons of a comparison sort: about n log2 n per sorted row."""
    x = in_avals[0]
    n = x.shape[params["axis"]] if x.shape else 1
    return int(x.size * max(1.0, float(np.log2(max(n, 1)))))


argsort_p = declare("argsort", _argsort_lowering, _argsort_abstract, differentiable=False, flops=_sort_flops,
                    numpy_names=("argsort",))


def argsort(x: Any, axis: int, kind: str | None = None) -> Any:
    return bind(argsort_p, x, axis=int(axis), kind=kind)


@numpy_function(argsort_p)
def np_argsort(a: Any, axis: int | None = -1, kind: str | None = None, order: None = None,
               *, stable: bool | None = None) -> Any:
    """``np.argsort``; ``axis=None`` sorts the flattened array, ``stable=True`` is ``kind='stable'``."""
    if order is not None:
        raise TypeError("np.argsort: order= (structured arrays) is not supported on traced values")
    if stable:
        kind = "stable"
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    return argsort(a, normalize_axes(axis, len(aval_of(a).shape), "argsort")[0], kind)
