"""Scans along one axis (cumsum, cumprod) and argsort.

Params: ``axis`` is a non-negative int (the ``axis=None`` forms flatten first, in the
``@numpy_function`` wrappers). ``sort``, ``median`` and ``quantile`` are composites in
``tracegrad.numpy``: ``argsort`` (piecewise constant, so non-differentiable) followed by
``take_along_axis``, whose rules carry the derivative.

cumprod's derivative is exact where inputs are zero: ``d y_i / d x_j`` (``j <= i``) is the
product of every factor of ``y_i`` but ``x_j``, formed as exclusive prefix times exclusive
suffix products of the masked factor matrix, never as ``y_i / x_j``. That matrix has
``n^2`` entries per scanned row, so the rules cost ``O(n^2)`` there (scans in models are short).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ad import tangents as T
from ..ir import Aval
from ..tracing.tracer import aval_of, bind
from ._rules import declare, input_size_flops, normalize_axes, numpy_function
from .elementwise import astype, where
from .indexing import index
from .linalg import matmul
from .shape import concatenate, reshape, transpose


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


def _to_last(x: Any, axis: int) -> Any:
    nd = len(aval_of(x).shape)
    return transpose(x, tuple(i for i in range(nd) if i != axis) + (axis,))


def _from_last(x: Any, axis: int, nb: int = 0) -> Any:
    nd = len(aval_of(x).shape)
    perm = list(range(nd - 1))
    perm.insert(axis + nb, nd - 1)
    return transpose(x, tuple(perm))


def _cumprod_weights(x: Any, axis: int) -> Any:
    """``W[..., i, j] = d cumprod(x)_i / d x_j`` along ``axis`` (moved last): the product of
    ``x_k`` for ``k <= i``, ``k != j`` when ``j <= i``, else 0 — exact at zeros."""
    xl = _to_last(x, axis)
    shape = aval_of(xl).shape
    n = shape[-1]
    lower = np.tril(np.ones((n, n), bool))  # [i, j]: j <= i
    m = where(lower, reshape(xl, shape[:-1] + (1, n)), np.ones((), aval_of(xl).dtype))
    ones = np.ones(shape[:-1] + (n, 1), aval_of(m).dtype)
    last = len(shape)  # the j axis of m
    before = cumprod(m, last)
    left = concatenate([ones, index(before, (("slice", None, None, None),) * last + (("slice", None, -1, None),), [])],
                       last)
    after = _flip(cumprod(_flip(m, last), last), last)
    right = concatenate([index(after, (("slice", None, None, None),) * last + (("slice", 1, None, None),), []), ones],
                        last)
    return where(lower, left * right, np.zeros((), aval_of(m).dtype))


def cumprod_jvp(primals, tangents, *, axis):
    (x,) = primals
    y = cumprod(x, axis)
    out = aval_of(y)
    if T.is_zero(tangents[0]) or not out.is_float:
        return y, T.Zero(out)
    w = _cumprod_weights(x, axis)

    def fn(v: Any, nb: int) -> Any:
        vl = _to_last(v, axis + nb)
        dy = matmul(w, reshape(vl, aval_of(vl).shape + (1,)))
        dy = reshape(dy, aval_of(dy).shape[:-1])
        return _from_last(dy, axis, nb)

    return y, T.apply(tangents[0], fn, out)


def cumprod_vjp(ct, primals, y, *, axis):
    (x,) = primals
    w = _cumprod_weights(x, axis)
    cl = _to_last(ct, axis)
    shape = aval_of(cl).shape
    g = matmul(reshape(cl, shape[:-1] + (1, shape[-1])), w)
    return (_from_last(reshape(g, shape), axis),)


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
