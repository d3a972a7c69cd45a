"""Writing values into a copy of an array: ``put_along_axis``.

NumPy's ``np.put_along_axis`` writes in place, which a traced array cannot do without
changing what every other name for it sees; the traced form returns the written copy
(``tracegrad.numpy.put_along_axis(..., inplace=False)``, JAX's convention) and the in-place
call raises a clear error. Repeated indices follow NumPy: the last write wins, in value
and in derivative.

The primitive takes ``values`` already broadcast to the selected shape, so its rules are
plain: the output is linear in ``(arr, values)`` for fixed indices, hence its JVP is the
same write applied to the tangents; reverse mode sends the cotangent of each written
position to the value that won it, and zero to ``arr`` there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ad import tangents as T
from ..errors import DTypeError, ShapeError, UnsupportedOperationError
from ..ir import Aval
from ..tracing.source import user_source
from ..tracing.tracer import aval_of, bind
from ._rules import declare, fmt_shape, normalize_axes, numpy_function
from .elementwise import astype, equal, where
from .indexing import _take_abstract, take_along_axis
from .shape import broadcast_to, reshape


def _put_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    x, idx, v = avals
    want = _take_abstract([x, idx], params).shape
    if idx.shape != want or v.shape != want:
        raise ShapeError(f"put_along_axis: indices {fmt_shape(idx.shape)} and values {fmt_shape(v.shape)} "
                         f"must both have the selected shape {fmt_shape(want)}")
    return Aval(x.shape, x.dtype)


def _put_lowering(x: str, idx: str, v: str, axis: int) -> str:
    return f"(lambda _z: (np.put_along_axis(_z, {idx}, {v}, axis={axis}), _z)[1])(np.array({x}, copy=True))"


put_along_axis_p = declare("put_along_axis", _put_lowering, _put_abstract, numpy_names=("put_along_axis",),
                           flops=lambda ins, outs, p: 0)  # data movement: writes, no arithmetic


def put_along_axis(x: Any, indices: Any, values: Any, axis: int) -> Any:
    """``x`` with ``values`` written at ``indices`` along ``axis`` (a new array)."""
    return bind(put_along_axis_p, x, indices, values, axis=int(axis))


def put_along_axis_jvp(primals, tangents, *, axis):
    x, idx, v = primals
    tx, _, tv = tangents
    y = put_along_axis(x, idx, v, axis)
    out = aval_of(y)
    if (T.is_zero(tx) and T.is_zero(tv)) or not out.is_float:
        return y, T.Zero(out)
    batch = T.directions()
    idx_b = broadcast_to(idx, batch + aval_of(idx).shape)
    return y, T.dense(put_along_axis(T.instantiate(tx), idx_b, T.instantiate(tv), axis + len(batch)))


def put_along_axis_vjp(ct, primals, y, *, axis):
    x, idx, v = primals
    shape = aval_of(v).shape
    ids = np.arange(int(np.prod(shape)), dtype=np.intp).reshape(shape)
    winner = put_along_axis(np.full(aval_of(x).shape, -1, np.intp), idx, ids, axis)  # who wrote each slot
    won = equal(take_along_axis(winner, idx, axis), ids)
    ct_v = where(won, take_along_axis(ct, idx, axis), np.zeros((), aval_of(ct).dtype))
    ct_x = put_along_axis(ct, idx, np.zeros(shape, aval_of(ct).dtype), axis)
    if aval_of(v).is_float and aval_of(v).dtype != aval_of(ct_v).dtype:
        ct_v = astype(ct_v, aval_of(v).dtype)
    return ct_x, None, ct_v


put_along_axis_p.jvp, put_along_axis_p.vjp = put_along_axis_jvp, put_along_axis_vjp


@numpy_function(put_along_axis_p)
def np_put_along_axis(arr: Any, indices: Any, values: Any, axis: int | None, inplace: bool = True) -> Any:
    """``np.put_along_axis``. Traced code cannot write in place: pass ``inplace=False`` to
    ``tracegrad.numpy.put_along_axis`` and use the returned array."""
    if inplace:
        raise UnsupportedOperationError(
            "np.put_along_axis writes into its argument in place, which is not traceable",
            source=user_source(),
            hint="use the functional form: arr = tracegrad.numpy.put_along_axis(arr, indices, values, axis, "
                 "inplace=False)")
    if axis is None:
        shape = aval_of(arr).shape
        flat = np_put_along_axis(reshape(arr, (-1,)), reshape(indices, (-1,)), values, 0, inplace=False)
        return reshape(flat, shape)
    if aval_of(indices).dtype.kind not in "iu":
        raise DTypeError(f"put_along_axis: indices must be integers, got dtype {aval_of(indices).dtype}")
    axis = normalize_axes(axis, len(aval_of(arr).shape), "put_along_axis")[0]
    sel = _take_abstract([aval_of(arr), aval_of(indices)], {"axis": axis}).shape
    return put_along_axis(arr, broadcast_to(indices, sel), broadcast_to(values, sel), axis)
