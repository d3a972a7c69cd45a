"""Shape primitives: reshape, transpose, broadcast_to, concatenate.

All are linear, so each JVP applies the same primitive to the tangent with its axes
shifted past the tangent's leading direction axes. squeeze/expand_dims/swapaxes/stack
and friends are composites in ``tracegrad.numpy``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ad import tangents as T
from ..ad.linear import LinearMap
from ..ad.rules import deflinear, unbroadcast
from ..errors import ShapeError, UnsupportedOperationError
from ..ir import Aval
from ..ir.fusion import reshape_role
from ..tracing.source import user_source
from ..tracing.tracer import aval_of, bind
from ._rules import declare, fmt_shape, no_flops, normalize_axes, numpy_function


# ---------------------------------------------------------------- reshape
def _reshape_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (x,) = avals
    shape = params["shape"]
    if math.prod(shape) != x.size or any(d < 0 for d in shape):
        raise ShapeError(f"reshape: cannot reshape an array of shape {fmt_shape(x.shape)} "
                         f"(size {x.size}) into shape {fmt_shape(shape)}")
    return Aval(shape, x.dtype)


reshape_p = declare("reshape", lambda x, shape: f"np.reshape({x}, {shape!r})", _reshape_abstract,
                    flops=no_flops, view=True, numpy_names=("reshape",), fusion=reshape_role,
                    cupy=lambda layout, params, n: layout.reshape(params["shape"]))


def resolve_shape(size: int, shape: tuple[int, ...], old: tuple[int, ...]) -> tuple[int, ...]:
    """Fill in a single -1 the way NumPy does."""
    shape = tuple(int(d) for d in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: can only specify one unknown dimension in {fmt_shape(shape)}")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or size % known:
            raise ShapeError(f"reshape: cannot reshape an array of shape {fmt_shape(old)} into shape {fmt_shape(shape)}")
        shape = tuple(size // known if d == -1 else d for d in shape)
    return shape


def reshape(x: Any, shape: tuple[int, ...]) -> Any:
    a = aval_of(x)
    shape = resolve_shape(a.size, tuple(shape), a.shape)
    if shape == a.shape:
        return x
    return bind(reshape_p, x, shape=shape)


def reshape_map(x, *, shape):
    return LinearMap("reshape", lambda v, nb: reshape(v, np.shape(v)[:nb] + shape),
                     lambda ct: reshape(ct, aval_of(x).shape), shape=shape)


deflinear(reshape_p, reshape_map)


@numpy_function(reshape_p)
def np_reshape(x: Any, shape: Any, order: str = "C") -> Any:
    """``np.reshape``: ``shape`` an int or a tuple with at most one -1; C order only."""
    if order != "C":
        raise UnsupportedOperationError(f"reshape with order={order!r}", source=user_source(),
                                        hint="only C order is supported")
    if isinstance(shape, int | np.integer):
        shape = (int(shape),)
    return reshape(x, tuple(shape))


# ---------------------------------------------------------------- transpose
def _transpose_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (x,) = avals
    perm = params["perm"]
    if sorted(perm) != list(range(len(x.shape))):
        raise ShapeError(f"transpose: axes {perm} are not a permutation of the {len(x.shape)} axes "
                         f"of an array of shape {fmt_shape(x.shape)}")
    return Aval(tuple(x.shape[p] for p in perm), x.dtype)


transpose_p = declare("transpose", lambda x, perm: f"np.transpose({x}, {perm!r})", _transpose_abstract,
                      flops=no_flops, view=True, numpy_names=("transpose",),
                      cupy=lambda layout, params, n: layout.transpose(params["perm"]))


def transpose(x: Any, perm: tuple[int, ...]) -> Any:
    perm = tuple(int(p) for p in perm)
    if perm == tuple(range(len(perm))):
        return x
    return bind(transpose_p, x, perm=perm)


def transpose_map(x, *, perm):
    return LinearMap("transpose", lambda v, nb: transpose(v, tuple(range(nb)) + tuple(p + nb for p in perm)),
                     lambda ct: transpose(ct, tuple(int(i) for i in np.argsort(perm))), perm=perm)


deflinear(transpose_p, transpose_map)


@numpy_function(transpose_p)
def np_transpose(x: Any, axes: Any = None) -> Any:
    """``np.transpose``: reverses the axes by default; negative axes allowed."""
    nd = len(aval_of(x).shape)
    perm = tuple(range(nd))[::-1] if axes is None else tuple(int(a) % nd if nd else int(a) for a in axes)
    return transpose(x, perm)


# ---------------------------------------------------------------- broadcast_to
def _broadcast_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (x,) = avals
    shape = params["shape"]
    ok = len(shape) >= len(x.shape) and all(
        d == s or d == 1 for d, s in zip(x.shape[::-1], shape[::-1]))
    if not ok:
        raise ShapeError(f"broadcast_to: an array of shape {fmt_shape(x.shape)} cannot be broadcast "
                         f"to shape {fmt_shape(shape)}")
    return Aval(shape, x.dtype)


broadcast_to_p = declare("broadcast_to", lambda x, shape: f"np.broadcast_to({x}, {shape!r})",
                         _broadcast_abstract, flops=no_flops, view=True, numpy_names=("broadcast_to",),
                         fusion="view", cupy=lambda layout, params, n: layout.broadcast(params["shape"]))


def broadcast_to(x: Any, shape: tuple[int, ...]) -> Any:
    shape = tuple(int(d) for d in shape)
    if aval_of(x).shape == shape:
        return x
    return bind(broadcast_to_p, x, shape=shape)


def broadcast_to_map(x, *, shape):
    x_aval = aval_of(x)

    def dense(v: Any, nb: int) -> Any:
        batch = np.shape(v)[:nb]
        v = reshape(v, batch + (1,) * (len(shape) - len(x_aval.shape)) + x_aval.shape)
        return broadcast_to(v, batch + shape)

    return LinearMap("broadcast_to", dense, lambda ct: unbroadcast(ct, x_aval), shape=shape)


deflinear(broadcast_to_p, broadcast_to_map)


@numpy_function(broadcast_to_p)
def np_broadcast_to(x: Any, shape: Any) -> Any:
    return broadcast_to(x, (shape,) if isinstance(shape, int) else tuple(shape))


# ---------------------------------------------------------------- concatenate
def _concat_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    axis = params["axis"]
    first = avals[0]
    for a in avals[1:]:
        if len(a.shape) != len(first.shape) or any(
                d != e for i, (d, e) in enumerate(zip(a.shape, first.shape)) if i != axis):
            shown = ", ".join(fmt_shape(b.shape) for b in avals)
            raise ShapeError(f"concatenate: shapes {shown} differ outside axis {axis}")
    shape = list(first.shape)
    shape[axis] = sum(a.shape[axis] for a in avals)
    dtype = np.result_type(*[a.dtype for a in avals])
    return Aval(tuple(shape), dtype)


concatenate_p = declare(
    "concatenate", lambda *xs, axis: f"np.concatenate(({', '.join(xs)}{',' if len(xs) == 1 else ''}), axis={axis})",
    _concat_abstract, flops=no_flops, numpy_names=("concatenate",))


def concatenate(xs: list[Any], axis: int) -> Any:
    return bind(concatenate_p, *xs, axis=int(axis))


def concatenate_jvp(primals, tangents, *, axis):
    y = concatenate(primals, axis)
    out = aval_of(y)
    nb = len(T.directions())
    vals = [astype_if_needed(t.dense(), out.dtype) for t in tangents]
    return y, T.Dense(concatenate(vals, axis + nb))


def astype_if_needed(v: Any, dtype: np.dtype) -> Any:
    from .elementwise import astype

    return astype(v, dtype) if aval_of(v).dtype != dtype else v


concatenate_p.jvp = concatenate_jvp


@numpy_function(concatenate_p)
def np_concatenate(arrays: Any, axis: int | None = 0) -> Any:
    """``np.concatenate``; ``axis=None`` flattens the arrays first."""
    arrays = list(arrays)
    if axis is None:
        arrays, axis = [reshape(a, (-1,)) for a in arrays], 0
    axis = normalize_axes(axis, len(aval_of(arrays[0]).shape), "concatenate")[0]
    return concatenate(arrays, axis)


def concatenate_vjp(ct, primals, y, *, axis):
    # Each operand's cotangent is its own slab of ct along the axis.
    from .indexing import index

    full = ("slice", None, None, None)
    cts, start = [], 0
    for x in primals:
        stop = start + aval_of(x).shape[axis]
        cts.append(index(ct, (full,) * axis + (("slice", start, stop, None),), []))
        start = stop
    return tuple(cts)


concatenate_p.vjp = concatenate_vjp
