"""``tracegrad.numpy``: the user-facing array functions.

Every function works on traced values and plain NumPy arrays alike (on plain arrays it
computes eagerly), and accepts NumPy's argument conventions (``axis`` as an int, tuple or
None, negative axes, ``keepdims``, -1 in shapes). Composites (mean, var, softmax,
cross-entropy, ...) are written here from primitives, so they need no derivative rules
of their own. NumPy's own functions called on a traced value dispatch here too.
"""

from __future__ import annotations

import builtins
import math
import operator as _operator
import string
import sys
import types as _types
from collections.abc import Sequence
from typing import Any

import numpy as _np

from .errors import ShapeError, UnsupportedOperationError
from .ir import PRIMITIVES as _PRIMITIVES
from .ops import decompositions as _dec
from .ops import elementwise as _ew
from .ops import indexing as _ix
from .ops import linalg as _la
from .ops import reductions as _red
from .ops import shape as _sh
from .ops._rules import normalize_axes
from .tracing import dispatch as _dispatch
from .tracing.dispatch import implements as _implements
from .tracing.source import user_source
from .tracing.tracer import Tracer, aval_of

ndarray = _np.ndarray
float32, float64, int32, int64, bool_ = _np.float32, _np.float64, _np.int32, _np.int64, _np.bool_
pi, e, inf, nan, newaxis = _np.pi, _np.e, _np.inf, _np.nan, None

# Every primitive's NumPy-facing function, under each NumPy name it declares
# (``declare(..., numpy_names=...)`` in tracegrad/ops): np.add -> add, np.sum -> sum, ...
for _prim in _PRIMITIVES.values():
    for _name in _prim.numpy_names:
        if "." not in _name:
            globals()[_name] = _prim.numpy_fn
del _prim, _name


def _nd(x: Any) -> int:
    return len(aval_of(x).shape)


def _shape(x: Any) -> tuple[int, ...]:
    return aval_of(x).shape


@_implements("asarray")
def asarray(x: Any, dtype: Any = None) -> Any:
    """Tracers pass through (cast if ``dtype`` differs); anything else becomes a NumPy array."""
    if isinstance(x, Tracer):
        return x if dtype is None else astype(x, dtype)
    return _np.asarray(x, dtype=dtype)


@_implements("shape")
def shape(x: Any) -> tuple[int, ...]:
    return _shape(x)


@_implements("ndim")
def ndim(x: Any) -> int:
    return _nd(x)


@_implements("size")
def size(x: Any) -> int:
    return aval_of(x).size


# ---------------------------------------------------------------- elementwise (tracegrad's own)
astype, stop_gradient = _ew.astype, _ew.stop_gradient
sigmoid = logistic = _ew.logistic


@_implements("positive")
def positive(x: Any) -> Any:
    return x


@_implements("square")
def square(x: Any) -> Any:
    return _ew.mul(x, x)


@_implements("reciprocal")
def reciprocal(x: Any) -> Any:
    return _ew.div(1, x)


@_implements("log2")
def log2(x: Any) -> Any:
    return _ew.mul(_ew.log(x), 1 / math.log(2))


@_implements("log10")
def log10(x: Any) -> Any:
    return _ew.mul(_ew.log(x), 1 / math.log(10))


def relu(x: Any) -> Any:
    return _ew.maximum(x, 0)


@_implements("logaddexp")
def logaddexp(a: Any, b: Any) -> Any:
    """log(e^a + e^b) without overflow."""
    m = _ew.maximum(a, b)
    return _ew.add(m, _ew.log1p(_ew.exp(_ew.neg(_ew.abs(_ew.sub(a, b))))))


def softplus(x: Any) -> Any:
    return logaddexp(x, 0.0)


# ---------------------------------------------------------------- reductions
def _reduce_count(x: Any, axes: tuple[int, ...]) -> int:
    return math.prod(_shape(x)[a] for a in axes)


@_implements("mean")
def mean(x: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    axes = normalize_axes(axis, _nd(x), "mean")
    out = _ew.div(_red.reduce_sum(x, axes, keepdims), _reduce_count(x, axes))
    return astype(out, dtype) if dtype is not None else out


@_implements("var")
def var(x: Any, axis: Any = None, ddof: int = 0, keepdims: bool = False) -> Any:
    axes = normalize_axes(axis, _nd(x), "var")
    centered = _ew.sub(x, mean(x, axes, keepdims=True))
    n = _reduce_count(x, axes)
    return _ew.div(_red.reduce_sum(_ew.mul(centered, centered), axes, keepdims), n - ddof)


@_implements("std")
def std(x: Any, axis: Any = None, ddof: int = 0, keepdims: bool = False) -> Any:
    return _ew.sqrt(var(x, axis, ddof=ddof, keepdims=keepdims))


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """log(sum(exp(x))) computed stably (the shift by the max needs no derivative)."""
    axes = normalize_axes(axis, _nd(x), "logsumexp")
    m = stop_gradient(_red.reduce_max(x, axes, True))
    s = _ew.log(_red.reduce_sum(_ew.exp(_ew.sub(x, m)), axes, True))
    out = _ew.add(s, m)
    return out if keepdims else squeeze(out, axes)


# ---------------------------------------------------------------- shapes
@_implements("ravel")
def ravel(x: Any) -> Any:
    return _sh.reshape(x, (-1,))


@_implements("swapaxes")
def swapaxes(x: Any, axis1: int, axis2: int) -> Any:
    nd = _nd(x)
    perm = list(range(nd))
    a, b = normalize_axes(axis1, nd, "swapaxes")[0], normalize_axes(axis2, nd, "swapaxes")[0]
    perm[a], perm[b] = perm[b], perm[a]
    return _sh.transpose(x, tuple(perm))


@_implements("moveaxis")
def moveaxis(x: Any, source: Any, destination: Any) -> Any:
    nd = _nd(x)
    src = [normalize_axes(s, nd, "moveaxis")[0] for s in _np.atleast_1d(source)]
    dst = [normalize_axes(d, nd, "moveaxis")[0] for d in _np.atleast_1d(destination)]
    order = [n for n in range(nd) if n not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return _sh.transpose(x, tuple(order))


@_implements("expand_dims")
def expand_dims(x: Any, axis: Any) -> Any:
    axes = (axis,) if isinstance(axis, int | _np.integer) else tuple(axis)
    nd = _nd(x) + len(axes)
    axes = normalize_axes(axes, nd, "expand_dims")
    it = iter(_shape(x))
    return _sh.reshape(x, tuple(1 if i in axes else next(it) for i in range(nd)))


@_implements("squeeze")
def squeeze(x: Any, axis: Any = None) -> Any:
    shp = _shape(x)
    if axis is None:
        axes = tuple(i for i, d in enumerate(shp) if d == 1)
    else:
        axes = normalize_axes(axis, len(shp), "squeeze")
        for a in axes:
            if shp[a] != 1:
                raise ShapeError(f"squeeze: cannot select axis {a} of size {shp[a]} (only size-1 axes)")
    return _sh.reshape(x, tuple(d for i, d in enumerate(shp) if i not in axes))


@_implements("stack")
def stack(arrays: Sequence[Any], axis: int = 0) -> Any:
    arrays = list(arrays)
    axis = normalize_axes(axis, _nd(arrays[0]) + 1, "stack")[0]
    return _sh.concatenate([expand_dims(a, axis) for a in arrays], axis)


@_implements("hstack")
def hstack(arrays: Sequence[Any]) -> Any:
    arrays = list(arrays)
    return _sh.np_concatenate(arrays, 0 if _nd(arrays[0]) == 1 else 1)


@_implements("vstack")
def vstack(arrays: Sequence[Any]) -> Any:
    return _sh.np_concatenate([_sh.reshape(a, (1, -1)) if _nd(a) == 1 else a for a in arrays], 0)


# ---------------------------------------------------------------- indexing
def _is_int_scalar(i: Any) -> bool:
    return isinstance(i, int | _np.integer) and not isinstance(i, bool)


def getitem(x: Any, idx: Any) -> Any:
    """``x[idx]``: ints, slices, None, Ellipsis and integer arrays (NumPy semantics)."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    consumed = builtins.sum(1 for i in idx if i is not None and i is not Ellipsis)
    if builtins.sum(1 for i in idx if i is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    nd = _nd(x)
    template: list[tuple] = []
    arrays: list[Any] = []
    for i in idx:
        if i is Ellipsis:
            template.extend([("slice", None, None, None)] * (nd - consumed))
        elif i is None:
            template.append(("none",))
        elif isinstance(i, slice):
            for part in (i.start, i.stop, i.step):
                if part is not None and not _is_int_scalar(part):
                    raise UnsupportedOperationError(
                        "slice bounds must be Python ints; a traced slice bound would make the shape "
                        "depend on data", source=user_source(), hint="use a mask with np.where instead")
            template.append(("slice", *(None if p is None else int(p) for p in (i.start, i.stop, i.step))))
        elif _is_int_scalar(i):
            template.append(("int", int(i)))
        else:
            if isinstance(i, list):
                i = _np.asarray(i)
            a = aval_of(i) if isinstance(i, Tracer | _np.ndarray) else None
            if a is None:
                raise UnsupportedOperationError(f"indexing with a {type(i).__name__}", source=user_source(),
                                                hint="index with ints, slices, None, ... or integer arrays")
            if a.dtype == bool:
                if isinstance(i, Tracer):
                    raise UnsupportedOperationError(
                        "boolean-mask indexing with a traced mask gives a data-dependent shape",
                        source=user_source(), hint="use np.where(mask, x, 0) (and a masked sum/mean)")
                nz = _np.nonzero(i)
                for k in nz:
                    template.append(("arr", len(arrays)))
                    arrays.append(k)
                continue
            template.append(("arr", len(arrays)))
            arrays.append(i)
    return _ix.index(x, tuple(template), arrays)


@_implements("take")
def take(a: Any, indices: Any, axis: int | None = None) -> Any:
    if axis is None:
        return getitem(ravel(a), indices)
    axis = normalize_axes(axis, _nd(a), "take")[0]
    return getitem(a, (slice(None),) * axis + (indices,))


# ---------------------------------------------------------------- linear algebra
@_implements("dot")
def dot(a: Any, b: Any) -> Any:
    na, nb = _nd(a), _nd(b)
    if na == 0 or nb == 0:
        return _ew.mul(a, b)
    if nb <= 2:
        return _la.matmul(a, b)
    # N-D: sum over the last axis of a and the second-to-last of b.
    la, lb = string.ascii_lowercase[:na], string.ascii_uppercase[:nb]
    lb = lb[:-2] + la[-1] + lb[-1]
    return _la.einsum(f"{la},{lb}->{la[:-1]}{lb[:-2]}{lb[-1]}", a, b)


@_implements("tensordot")
def tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    na, nb = _nd(a), _nd(b)
    if isinstance(axes, int | _np.integer):
        ax_a, ax_b = list(range(na - axes, na)), list(range(int(axes)))
    else:
        ax_a, ax_b = [_np.atleast_1d(x).tolist() for x in axes]
    ax_a = [x % na for x in ax_a]
    ax_b = [x % nb for x in ax_b]
    la = list(string.ascii_lowercase[:na])
    lb = list(string.ascii_uppercase[:nb])
    for i, j in zip(ax_a, ax_b):
        lb[j] = la[i]
    out = [c for i, c in enumerate(la) if i not in ax_a] + [c for j, c in enumerate(lb) if j not in ax_b]
    return _la.einsum(f"{''.join(la)},{''.join(lb)}->{''.join(out)}", a, b)


@_implements("outer")
def outer(a: Any, b: Any) -> Any:
    return _ew.mul(_sh.reshape(a, (-1, 1)), _sh.reshape(b, (1, -1)))


@_implements("inner")
def inner(a: Any, b: Any) -> Any:
    return tensordot(a, b, axes=([-1], [-1]))


# ---------------------------------------------------------------- np.linalg composites
# (the primitives, inv/solve/det/slogdet/cholesky/qr/eigh/svd/svdvals/pinv, are declared in
# ops/decompositions.py; these two are exact compositions of them, written as NumPy does)
@_implements("linalg.matrix_power")
def matrix_power(a: Any, n: Any) -> Any:
    """``a`` to the integer power ``n`` by repeated squaring, NumPy's exact sequence of
    products (so values match to the bit); ``n < 0`` inverts first, ``n == 0`` is the identity."""
    a = _dec.operand("np.linalg.matrix_power", a)
    shp = _shape(a)
    if len(shp) < 2 or shp[-1] != shp[-2]:
        raise ShapeError(f"np.linalg.matrix_power: the last two dimensions must be square, got shape {shp}",
                         hint="matrix_power needs a (..., n, n) stack of square matrices")
    try:
        n = _operator.index(n)
    except TypeError as err:
        raise TypeError("exponent must be an integer") from err
    if n == 0:
        return _np.broadcast_to(_np.eye(shp[-1], dtype=aval_of(a).dtype), shp).copy()
    if n < 0:
        a = _dec.np_inv(a)
        n = -n
    if n <= 3:
        out = a
        for _ in range(n - 1):
            out = _la.matmul(out, a)
        return out
    z = result = None
    while n > 0:
        z = a if z is None else _la.matmul(z, z)
        n, bit = divmod(n, 2)
        if bit:
            result = z if result is None else _la.matmul(result, z)
    return result


@_implements("linalg.multi_dot")
def multi_dot(arrays: Sequence[Any], *, out: Any = None) -> Any:
    """A chain of matrix products in the order NumPy picks (fewest multiplications; the
    matrix-chain algorithm, Cormen 15.2), so values match NumPy's."""
    if out is not None:
        raise UnsupportedOperationError("np.linalg.multi_dot(out=...) is not supported on traced values",
                                        source=user_source(), hint="use the returned array")
    arrays = [_dec.operand("np.linalg.multi_dot", a) for a in arrays]
    n = len(arrays)
    if n < 2:
        raise ValueError("Expecting at least two arrays.")
    if n == 2:
        return dot(arrays[0], arrays[1])
    nd_first, nd_last = _nd(arrays[0]), _nd(arrays[-1])
    if nd_first == 1:
        arrays[0] = _sh.reshape(arrays[0], (1, -1))
    if nd_last == 1:
        arrays[-1] = _sh.reshape(arrays[-1], (-1, 1))
    for a in arrays:
        if _nd(a) != 2:
            raise ShapeError(f"np.linalg.multi_dot: {_nd(a)}-dimensional array given; every array must be "
                             "two-dimensional (the first and last may be 1-D)")
    p = [_shape(a)[0] for a in arrays] + [_shape(arrays[-1])[1]]
    if n == 3:
        first = p[0] * p[2] * (p[1] + p[3]) < p[1] * p[3] * (p[0] + p[2])  # (AB)C cheaper than A(BC)
        ab, c = (_la.matmul(arrays[0], arrays[1]), arrays[2]) if first else (arrays[0], _la.matmul(arrays[1], arrays[2]))
        result = _la.matmul(ab, c)
    else:
        cost = [[0.0] * n for _ in range(n)]
        split = [[0] * n for _ in range(n)]
        for length in range(1, n):
            for i in range(n - length):
                j = i + length
                cost[i][j] = _np.inf
                for k in range(i, j):
                    q = cost[i][k] + cost[k + 1][j] + p[i] * p[k + 1] * p[j + 1]
                    if q < cost[i][j]:
                        cost[i][j], split[i][j] = q, k

        def chain(i: int, j: int) -> Any:
            return arrays[i] if i == j else _la.matmul(chain(i, split[i][j]), chain(split[i][j] + 1, j))

        result = chain(0, n - 1)
    if nd_first == 1 and nd_last == 1:
        return _sh.reshape(result, ())
    if nd_first == 1 or nd_last == 1:
        return ravel(result)
    return result


_VECTOR_ORDS = (None, 2)


@_implements("linalg.norm")
def norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    """Vector and matrix norms with NumPy's exact rules for ``ord``, ``axis`` and ``keepdims``
    (the spectral and nuclear norms through the singular values)."""
    x = _dec.operand("np.linalg.norm", x)
    if aval_of(x).dtype.kind in "biu":
        x = astype(x, _np.float64)
    nd = _nd(x)
    if axis is None and (ord is None or (ord in ("f", "fro") and nd == 2) or (ord == 2 and nd == 1)):
        flat = ravel(x)
        ret = _ew.sqrt(_la.matmul(flat, flat))
        return _sh.reshape(ret, (1,) * nd) if keepdims else ret
    if axis is None:
        axes = tuple(range(nd))
    elif isinstance(axis, tuple):
        axes = axis
    else:
        try:
            axes = (_operator.index(axis),)
        except TypeError as err:
            raise TypeError("'axis' must be None, an integer or a tuple of integers") from err
    if len(axes) == 1:
        (ax,) = normalize_axes(axes, nd, "np.linalg.norm")
        if isinstance(ord, str):
            raise ValueError(f"Invalid norm order '{ord}' for vectors")
        if ord == _np.inf:
            return _red.np_max(_ew.abs(x), ax, keepdims=keepdims)
        if ord == -_np.inf:
            return _red.np_min(_ew.abs(x), ax, keepdims=keepdims)
        if ord == 0:
            return _red.np_sum(astype(_ew.not_equal(x, 0), aval_of(x).dtype), ax, keepdims=keepdims)
        if ord == 1:
            return _red.np_sum(_ew.abs(x), ax, keepdims=keepdims)
        if ord is None or ord == 2:
            return _ew.sqrt(_red.np_sum(_ew.mul(x, x), ax, keepdims=keepdims))
        ret = _red.np_sum(_ew.power(_ew.abs(x), ord), ax, keepdims=keepdims)
        return _ew.power(ret, _np.reciprocal(_np.asarray(ord, dtype=aval_of(ret).dtype)))
    if len(axes) == 2:
        row, col = (normalize_axes(a, nd, "np.linalg.norm")[0] for a in axes)
        if row == col:
            raise ValueError("Duplicate axes given.")
        if ord in (2, -2, "nuc"):
            s = _dec.svdvals(moveaxis(x, (row, col), (-2, -1)))
            ret = (_red.np_max(s, -1) if ord == 2 else _red.np_min(s, -1) if ord == -2 else _red.np_sum(s, -1))
        elif ord in (1, -1):
            reduce = _red.np_max if ord == 1 else _red.np_min
            ret = reduce(_red.np_sum(_ew.abs(x), row), col - 1 if col > row else col)
        elif ord in (_np.inf, -_np.inf):
            reduce = _red.np_max if ord == _np.inf else _red.np_min
            ret = reduce(_red.np_sum(_ew.abs(x), col), row - 1 if row > col else row)
        elif ord in (None, "fro", "f"):
            ret = _ew.sqrt(_red.np_sum(_ew.mul(x, x), (row, col)))
        else:
            raise ValueError("Invalid norm order for matrices.")
        if keepdims:
            shp = list(_shape(x))
            shp[row] = shp[col] = 1
            ret = _sh.reshape(ret, tuple(shp))
        return ret
    raise ValueError("Improper number of dimensions to norm.")


# ---------------------------------------------------------------- constants
def zeros(shape: Any, dtype: Any = float) -> _np.ndarray:
    return _np.zeros(shape, dtype)


def ones(shape: Any, dtype: Any = float) -> _np.ndarray:
    return _np.ones(shape, dtype)


def full(shape: Any, fill_value: Any, dtype: Any = None) -> _np.ndarray:
    return _np.full(shape, fill_value, dtype)


def arange(*args: Any, **kwargs: Any) -> _np.ndarray:
    return _np.arange(*args, **kwargs)


@_implements("zeros_like")
def zeros_like(x: Any, dtype: Any = None) -> _np.ndarray:
    a = aval_of(x)
    return _np.zeros(a.shape, dtype or a.dtype)


@_implements("ones_like")
def ones_like(x: Any, dtype: Any = None) -> _np.ndarray:
    a = aval_of(x)
    return _np.ones(a.shape, dtype or a.dtype)


@_implements("full_like")
def full_like(x: Any, fill_value: Any, dtype: Any = None) -> _np.ndarray:
    a = aval_of(x)
    return _np.full(a.shape, fill_value, dtype or a.dtype)


# ---------------------------------------------------------------- neural-network helpers
def softmax(x: Any, axis: int = -1) -> Any:
    z = _ew.exp(_ew.sub(x, stop_gradient(_red.np_max(x, axis, keepdims=True))))
    return _ew.div(z, _red.np_sum(z, axis, keepdims=True))


def log_softmax(x: Any, axis: int = -1) -> Any:
    return _ew.sub(x, logsumexp(x, axis, keepdims=True))


def one_hot(labels: Any, num_classes: int, dtype: Any = _np.float32) -> Any:
    return astype(_ew.equal(expand_dims(labels, -1), _np.arange(num_classes)), dtype)


def cross_entropy(logits: Any, labels: Any, axis: int = -1) -> Any:
    """Mean softmax cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,)."""
    logp = log_softmax(logits, axis)
    picked = _ix.np_take_along_axis(logp, expand_dims(labels, axis), axis)
    return _ew.neg(mean(picked))


# ``tracegrad.numpy.linalg``: every ``linalg.*`` name a primitive declares or a composite registers
linalg = _types.ModuleType(__name__ + ".linalg", "``np.linalg`` on traced and concrete arrays.")
for _name, _fn in _dispatch.registered_names().items():
    if _name.startswith("linalg."):
        setattr(linalg, _name.partition(".")[2], _fn)
linalg.__all__ = sorted(n for n in vars(linalg) if not n.startswith("_"))
sys.modules[linalg.__name__] = linalg
del _name, _fn
del matrix_power, multi_dot, norm  # NumPy has them only under np.linalg

__all__ = [n for n in sorted(globals())
           if not n.startswith("_") and n not in ("annotations", "builtins", "math", "string", "sys", "Any",
                                                 "Sequence", "ShapeError", "UnsupportedOperationError",
                                                 "Tracer", "aval_of", "normalize_axes", "user_source")]
_dispatch.register_namespace(sys.modules[__name__])
