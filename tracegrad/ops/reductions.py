"""Reductions over axes (sum, max, min) and argmax/argmin.

Params: ``axes`` is a sorted tuple of non-negative axes, ``keepdims`` a bool. Mean, var,
std and logsumexp are composites built from these in ``tracegrad.numpy``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ad.linear import LinearMap
from ..ad.rules import deflinear
from ..errors import ShapeError
from ..ir import Aval
from ..tracing.source import user_source
from ..tracing.tracer import aval_of, bind
from ._rules import (
    CudaReduction,
    declare,
    input_size_flops,
    normalize_axes,
    numpy_function,
    probe_dtype,
)
from .elementwise import astype, div, equal
from .shape import broadcast_to, reshape


def _reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_abstract(name: str):
    def rule(avals: list[Aval], params: dict[str, Any]) -> Aval:
        from ..ir import PRIMITIVES

        (x,) = avals
        dtype, _ = probe_dtype(PRIMITIVES[name], [Aval((), x.dtype)], params | {"axes": None})
        return Aval(_reduced_shape(x.shape, params["axes"], params["keepdims"]), dtype)

    return rule


def _reduce_lowering(fn: str):
    """``np.add.reduce`` rather than ``np.sum``: the same C reduction without ``np.sum``'s
    Python wrapper (a few µs per call, which a small model's step pays a dozen times).
    The CuPy backend writes these back as ``cp.sum``/``cp.max``/``cp.min``."""

    def lower(x: str, axes: Any, keepdims: bool) -> str:
        axis = "None" if axes is None else repr(tuple(axes))
        return f"{fn}({x}, axis={axis}{', keepdims=True' if keepdims else ''})"

    return lower


reduce_sum_p = declare("reduce_sum", _reduce_lowering("np.add.reduce"), _reduce_abstract("reduce_sum"), fresh=True,
                       flops=input_size_flops, cuda=CudaReduction(lambda a, b: f"{a} + {b}", "zero"),
                       fusion="reduction", numpy_names=("sum",))
reduce_max_p = declare("reduce_max", _reduce_lowering("np.maximum.reduce"), _reduce_abstract("reduce_max"), fresh=True,
                       flops=input_size_flops, cuda=CudaReduction(lambda a, b: f"tg_maximum({a}, {b})", "lowest"),
                       fusion="reduction", numpy_names=("max", "amax"))
reduce_min_p = declare("reduce_min", _reduce_lowering("np.minimum.reduce"), _reduce_abstract("reduce_min"), fresh=True,
                       flops=input_size_flops, cuda=CudaReduction(lambda a, b: f"tg_minimum({a}, {b})", "highest"),
                       fusion="reduction", numpy_names=("min", "amin"))


def reduce_sum(x: Any, axes: tuple[int, ...], keepdims: bool = False) -> Any:
    return bind(reduce_sum_p, x, axes=tuple(axes), keepdims=bool(keepdims))


def reduce_max(x: Any, axes: tuple[int, ...], keepdims: bool = False) -> Any:
    return bind(reduce_max_p, x, axes=tuple(axes), keepdims=bool(keepdims))


def reduce_min(x: Any, axes: tuple[int, ...], keepdims: bool = False) -> Any:
    return bind(reduce_min_p, x, axes=tuple(axes), keepdims=bool(keepdims))


def _nd(x: Any) -> int:
    return len(aval_of(x).shape)


@numpy_function(reduce_sum_p)
def np_sum(x: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    """``np.sum``: ``axis`` an int, a tuple or None, negative axes allowed."""
    out = reduce_sum(x, normalize_axes(axis, _nd(x), "sum"), keepdims)
    return astype(out, dtype) if dtype is not None else out


def _no_empty_extremum(x: Any, axes: tuple[int, ...], op: str) -> tuple[int, ...]:
    """NumPy refuses max/min/argmax over nothing; say so at trace time, at the user's line."""
    shape = aval_of(x).shape
    if aval_of(x).size == 0 and math.prod(shape[a] for a in axes) == 0:
        raise ShapeError(f"{op}: zero-size array to a reduction that has no identity "
                         f"(shape {shape}, axis {axes})", source=user_source(),
                         hint="reduce over a non-empty axis, or use np.where with a default value")
    return axes


@numpy_function(reduce_max_p)
def np_max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return reduce_max(x, _no_empty_extremum(x, normalize_axes(axis, _nd(x), "max"), "max"), keepdims)


@numpy_function(reduce_min_p)
def np_min(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return reduce_min(x, _no_empty_extremum(x, normalize_axes(axis, _nd(x), "min"), "min"), keepdims)


def _shift(axes: tuple[int, ...], nb: int) -> tuple[int, ...]:
    return tuple(a + nb for a in axes)


def reduce_sum_map(x, *, axes, keepdims):
    return LinearMap("reduce_sum", lambda v, nb: reduce_sum(v, _shift(axes, nb), keepdims),
                     lambda ct: _spread(ct, aval_of(x), axes), axes=axes, keepdims=keepdims)


def _extremum_jvp(reduce):
    def rule(primals, tangents, *, axes, keepdims):
        # The tangent of a max is the tangent at the arg-max; ties share it equally.
        (x,) = primals
        y = reduce(x, axes, keepdims)
        x_aval = aval_of(x)
        y_keep = reshape(y, _reduced_shape(x_aval.shape, axes, True))
        mask = astype(equal(x, y_keep), x_aval.dtype)
        weights = div(mask, reduce_sum(mask, axes, True))
        t = tangents[0].scale(weights, x_aval)
        return y, t.map(reduce_sum_map(x, axes=axes, keepdims=keepdims), aval_of(y))

    return rule


deflinear(reduce_sum_p, reduce_sum_map)
reduce_max_p.jvp = _extremum_jvp(reduce_max)
reduce_min_p.jvp = _extremum_jvp(reduce_min)


def _spread(ct, x_aval, axes):
    """The transpose of a sum over ``axes``: ``ct`` broadcast back to the operand's shape."""
    return broadcast_to(reshape(ct, _reduced_shape(x_aval.shape, axes, True)), x_aval.shape)


def _extremum_vjp(ct, primals, y, *, axes, keepdims):
    # Same weights as _extremum_jvp: the arg-max positions share the cotangent equally.
    (x,) = primals
    x_aval = aval_of(x)
    mask = astype(equal(x, reshape(y, _reduced_shape(x_aval.shape, axes, True))), x_aval.dtype)
    weights = div(mask, reduce_sum(mask, axes, True))
    return (weights * reshape(ct, _reduced_shape(x_aval.shape, axes, True)),)


reduce_max_p.vjp = reduce_min_p.vjp = _extremum_vjp


def _arg_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (x,) = avals
    axis, keepdims = params["axis"], params["keepdims"]
    if axis is None:
        shape = (1,) * len(x.shape) if keepdims else ()
    else:
        shape = _reduced_shape(x.shape, (axis,), keepdims)
    return Aval(shape, np.dtype(np.intp))


def _arg_lowering(fn: str):
    def lower(x: str, axis: Any, keepdims: bool) -> str:
        return f"{fn}({x}, axis={axis!r}{', keepdims=True' if keepdims else ''})"

    return lower


argmax_p = declare("argmax", _arg_lowering("np.argmax"), _arg_abstract, differentiable=False, flops=input_size_flops,
                   numpy_names=("argmax",))
argmin_p = declare("argmin", _arg_lowering("np.argmin"), _arg_abstract, differentiable=False, flops=input_size_flops,
                   numpy_names=("argmin",))


def argmax(x: Any, axis: int | None, keepdims: bool = False) -> Any:
    return bind(argmax_p, x, axis=axis, keepdims=bool(keepdims))


def argmin(x: Any, axis: int | None, keepdims: bool = False) -> Any:
    return bind(argmin_p, x, axis=axis, keepdims=bool(keepdims))


@numpy_function(argmax_p)
def np_argmax(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    _no_empty_extremum(x, normalize_axes(axis, _nd(x), "argmax"), "argmax")
    return argmax(x, None if axis is None else normalize_axes(axis, _nd(x), "argmax")[0], keepdims)


@numpy_function(argmin_p)
def np_argmin(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    _no_empty_extremum(x, normalize_axes(axis, _nd(x), "argmin"), "argmin")
    return argmin(x, None if axis is None else normalize_axes(axis, _nd(x), "argmin")[0], keepdims)
