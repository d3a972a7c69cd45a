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
import sys as _sys
import types as _types
from collections.abc import Sequence
from itertools import pairwise as _pairwise
from typing import Any

import numpy as _np

from .errors import IndexOutOfBoundsError as _IndexOutOfBoundsError
from .errors import ShapeError, UnsupportedOperationError
from .ir import PRIMITIVES as _PRIMITIVES
from .ops import decompositions as _dec
from .ops import elementwise as _ew
from .ops import indexing as _ix
from .ops import linalg as _la
from .ops import reductions as _red
from .ops import rounding as _rd
from .ops import scans as _scan
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
    """Tracers pass through (cast if ``dtype`` differs); lists holding tracers are stacked;
    anything else becomes a NumPy array."""
    if isinstance(x, list | tuple) and _contains_tracer(x):
        return array(x, dtype)
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
astype, stop_gradient, perturb_point = _ew.astype, _ew.stop_gradient, _ew.perturb_point
sigmoid = logistic = _ew.logistic


@_implements("logical_xor")
def logical_xor(a: Any, b: Any) -> Any:
    return _ew.not_equal(astype(a, bool), astype(b, bool))


@_implements("divmod")
def divmod(a: Any, b: Any) -> tuple[Any, Any]:
    return _ew.floor_divide(a, b), _ew.remainder(a, b)


@_implements("positive")
def positive(x: Any) -> Any:
    return x


@_implements("square")
def square(x: Any) -> Any:
    return _ew.mul(x, x)


@_implements("reciprocal")
def reciprocal(x: Any) -> Any:
    """1/x; on integers NumPy's integer 1/x: x for x = +-1, else 0 (NumPy's 1/0 is undefined)."""
    if aval_of(x).dtype.kind in "iu":
        return _ew.where(_ew.equal(_ew.abs(x), 1), x, _np.zeros((), aval_of(x).dtype))
    return _ew.div(1, x)


def relu(x: Any) -> Any:
    return _ew.maximum(x, 0)




def softplus(x: Any) -> Any:
    return _ew.logaddexp(x, 0.0)


# ---------------------------------------------------------------- reductions
def _reduce_count(x: Any, axes: tuple[int, ...]) -> int:
    return math.prod(_shape(x)[a] for a in axes)


@_implements("mean")
def mean(x: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    axes = normalize_axes(axis, _nd(x), "mean")
    out = _ew.div(_red.reduce_sum(x, axes, keepdims), _reduce_count(x, axes))
    return astype(out, dtype) if dtype is not None else out


@_implements("prod")
def prod(x: Any, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    """Product over ``axis``, as a balanced tree of elementwise multiplications: exact JVPs and
    gradients with zeros in ``x`` (unlike y / x), from the rules of ``mul`` alone."""
    nd = _nd(x)
    axes = normalize_axes(axis, nd, "prod")
    kind = aval_of(x).dtype.kind
    if dtype is not None:
        x = astype(x, dtype)
    elif kind in "biu" and aval_of(x).dtype.itemsize < 8:
        x = astype(x, _np.uint64 if kind == "u" else _np.int64)  # NumPy's integer accumulator
    kept = [i for i in range(nd) if i not in axes]
    out_shape = tuple(_shape(x)[i] for i in kept)
    n = _reduce_count(x, axes)
    if n == 0:  # the empty product is 1 (a constant: zero derivative)
        acc = _ew.add(_ew.mul(_red.reduce_sum(x, axes, False), 0), 1)
    else:
        acc = _sh.reshape(_sh.transpose(x, tuple(kept) + axes), out_shape + (n,))
        while n > 1:
            half = n // 2
            pairs = _ew.mul(getitem(acc, (Ellipsis, slice(0, half))), getitem(acc, (Ellipsis, slice(half, 2 * half))))
            acc = pairs if n % 2 == 0 else _sh.np_concatenate([pairs, getitem(acc, (Ellipsis, slice(2 * half, n)))], -1)
            n = half + n % 2
        acc = _sh.reshape(acc, out_shape)
    if keepdims:
        acc = _sh.reshape(acc, tuple(1 if i in axes else d for i, d in enumerate(_shape(x))))
    return acc


@_implements("var")
def var(x: Any, axis: Any = None, ddof: int = 0, keepdims: bool = False) -> Any:
    axes = normalize_axes(axis, _nd(x), "var")
    centered = _ew.sub(x, mean(x, axes, keepdims=True))
    n = _reduce_count(x, axes)
    if n == 1:  # one element (or axis=()): the variance is constant, so its tangent is 0 (std's too, not nan)
        centered = stop_gradient(centered)
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
    # like NumPy: a single array is a sequence of its rows, each made at least 1-d
    arrays = [_sh.reshape(a, (1,)) if _nd(a) == 0 else a for a in arrays]
    return _sh.np_concatenate(arrays, 0 if _nd(arrays[0]) == 1 else 1)


@_implements("vstack")
def vstack(arrays: Sequence[Any]) -> Any:
    return _sh.np_concatenate([_sh.reshape(a, (1, -1)) if _nd(a) <= 1 else a for a in arrays], 0)


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
            if isinstance(i, list | range):  # a Python range indexes like the integer array it holds
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
                at = builtins.sum(1 for e in template if e[0] != "none")  # x's axis the mask starts at
                if tuple(i.shape) != _shape(x)[at:at + i.ndim]:
                    raise _IndexOutOfBoundsError(
                        f"boolean index of shape {i.shape} does not match the indexed array's axes "
                        f"{_shape(x)[at:at + i.ndim]} (from axis {at})", source=user_source(),
                        hint="a boolean mask must have the shape of the axes it selects from")
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
    return tensordot(a, b, ([na - 1], [nb - 2]))


def _tensordot_matmul(a: Any, b: Any, ax_a: list[int], ax_b: list[int]) -> Any:
    """tensordot as one matmul of (free_a, K) by (K, free_b): any rank, no einsum letters."""
    free_a = [i for i in range(_nd(a)) if i not in ax_a]
    free_b = [j for j in range(_nd(b)) if j not in ax_b]
    k = math.prod(_shape(a)[i] for i in ax_a)
    a2 = _sh.reshape(_sh.transpose(a, tuple(free_a + ax_a)), (math.prod(_shape(a)[i] for i in free_a), k))
    b2 = _sh.reshape(_sh.transpose(b, tuple(ax_b + free_b)), (k, math.prod(_shape(b)[j] for j in free_b)))
    return _sh.reshape(_la.matmul(a2, b2), tuple(_shape(a)[i] for i in free_a) + tuple(_shape(b)[j] for j in free_b))


@_implements("tensordot")
def tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    na, nb = _nd(a), _nd(b)
    if isinstance(axes, int | _np.integer):
        ax_a, ax_b = list(range(na - axes, na)), list(range(int(axes)))
    else:
        ax_a, ax_b = [_np.atleast_1d(x).tolist() for x in axes]
    if len(ax_a) != len(ax_b):
        raise ShapeError(f"tensordot: {len(ax_a)} axes of a against {len(ax_b)} axes of b")
    ax_a = [normalize_axes(x, na, "tensordot")[0] for x in ax_a]
    ax_b = [normalize_axes(x, nb, "tensordot")[0] for x in ax_b]
    if na + nb > len(string.ascii_letters):  # einsum has 52 letters; ranks up to NumPy's 64 each
        return _tensordot_matmul(a, b, ax_a, ax_b)
    la = list(string.ascii_letters[:na])
    lb = list(string.ascii_letters[na:na + nb])
    for i, j in zip(ax_a, ax_b):
        lb[j] = la[i]
    out = [c for i, c in enumerate(la) if i not in ax_a] + [c for j, c in enumerate(lb) if j not in ax_b]
    return _la.einsum(f"{''.join(la)},{''.join(lb)}->{''.join(out)}", a, b)


@_implements("outer")
def outer(a: Any, b: Any) -> Any:
    return _ew.mul(_sh.reshape(a, (-1, 1)), _sh.reshape(b, (1, -1)))


@_implements("inner")
def inner(a: Any, b: Any) -> Any:
    if _nd(a) == 0 or _nd(b) == 0:  # NumPy: a scalar operand multiplies
        return _ew.mul(a, b)
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


# ================================================================ coverage (issue 10)
# Composites of primitives: their derivatives come from the primitives' rules, and each is
# written so its value is NumPy's to rounding (the same operations in the same order).

# ---------------------------------------------------------------- elementwise composites
@_implements("sinc")
def sinc(x: Any) -> Any:
    """sin(pi x) / (pi x), 1 at 0; the 0 is kept out of the quotient (no NaN derivative)."""
    zero = _ew.equal(x, 0)
    px = _ew.mul(_ew.where(zero, 1.0, x), _np.pi)
    return _ew.where(zero, 1.0, _ew.div(_ew.sin(px), px))


@_implements("logaddexp2")
def logaddexp2(a: Any, b: Any) -> Any:
    """log2(2^a + 2^b) = logaddexp(a ln 2, b ln 2) / ln 2 (ties are logaddexp's)."""
    ln2 = math.log(2)
    return _ew.div(_ew.logaddexp(_ew.mul(a, ln2), _ew.mul(b, ln2)), ln2)


@_implements("fmax")
def fmax(a: Any, b: Any) -> Any:
    """np.maximum that ignores a NaN operand (NaN only when both are)."""
    return _ew.where(_rd.isnan(b), a, _ew.where(_rd.isnan(a), b, _ew.maximum(a, b)))


@_implements("fmin")
def fmin(a: Any, b: Any) -> Any:
    """np.minimum that ignores a NaN operand (NaN only when both are)."""
    return _ew.where(_rd.isnan(b), a, _ew.where(_rd.isnan(a), b, _ew.minimum(a, b)))


@_implements("copysign")
def copysign(a: Any, b: Any) -> Any:
    """|a| with the sign bit of b (derivative sign(a) sign(b) in a, zero in b)."""
    return _ew.mul(_ew.abs(a), _ew.where(_rd.signbit(b), -1.0, 1.0))


@_implements("deg2rad", "radians")
def deg2rad(x: Any) -> Any:
    return _ew.mul(x, _np.pi / 180.0)  # NumPy multiplies by the same rounded constant


@_implements("rad2deg", "degrees")
def rad2deg(x: Any) -> Any:
    return _ew.mul(x, 180.0 / _np.pi)


radians, degrees = deg2rad, rad2deg


@_implements("isposinf")
def isposinf(x: Any) -> Any:
    return _ew.logical_and(_rd.isinf(x), _ew.logical_not(_rd.signbit(x)))


@_implements("isneginf")
def isneginf(x: Any) -> Any:
    return _ew.logical_and(_rd.isinf(x), _rd.signbit(x))


@_implements("nan_to_num")
def nan_to_num(x: Any, copy: bool = True, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> Any:
    """NaN -> ``nan``, +-inf -> ``posinf``/``neginf`` (default: the dtype's largest finite
    values); finite entries pass through with their derivative."""
    dt = aval_of(x).dtype
    if dt.kind not in "fc":
        return x
    info = _np.finfo(dt)
    big = _np.asarray(info.max if posinf is None else posinf, dt)
    small = _np.asarray(info.min if neginf is None else neginf, dt)
    out = _ew.where(_rd.isnan(x), _np.asarray(nan, dt), x)
    out = _ew.where(isposinf(x), big, out)
    return _ew.where(isneginf(x), small, out)


# ---------------------------------------------------------------- reductions
def _axes_kd(x: Any, axis: Any, keepdims: bool, op: str, out: Any = None) -> tuple[tuple[int, ...], bool]:
    if out is not None:
        raise UnsupportedOperationError(f"np.{op} with out=", source=user_source(),
                                        hint="traced code is functional: drop out= and use the result")
    return normalize_axes(axis, _nd(x), op), bool(keepdims)


@_implements("ptp")
def ptp(a: Any, axis: Any = None, out: None = None, keepdims: bool = False) -> Any:
    axes, kd = _axes_kd(a, axis, keepdims, "ptp", out)
    return _ew.sub(_red.reduce_max(a, axes, kd), _red.reduce_min(a, axes, kd))


@_implements("any")
def any(a: Any, axis: Any = None, out: None = None, keepdims: bool = False) -> Any:
    """True where some element is nonzero (NaN counts), as a count > 0 (empty axes give False)."""
    axes, kd = _axes_kd(a, axis, keepdims, "any", out)
    return _ew.greater(_red.reduce_sum(astype(_ew.not_equal(a, 0), _np.intp), axes, kd), 0)


@_implements("all")
def all(a: Any, axis: Any = None, out: None = None, keepdims: bool = False) -> Any:
    axes, kd = _axes_kd(a, axis, keepdims, "all", out)
    return _ew.equal(_red.reduce_sum(astype(_ew.equal(a, 0), _np.intp), axes, kd), 0)


@_implements("count_nonzero")
def count_nonzero(a: Any, axis: Any = None, *, keepdims: bool = False) -> Any:
    axes, kd = _axes_kd(a, axis, keepdims, "count_nonzero")
    return _red.reduce_sum(astype(_ew.not_equal(a, 0), _np.intp), axes, kd)


@_implements("nansum")
def nansum(a: Any, axis: Any = None, dtype: Any = None, out: None = None, keepdims: bool = False) -> Any:
    """Sum with NaNs counted as zero (their derivative is zero too)."""
    _axes_kd(a, axis, keepdims, "nansum", out)
    zeroed = _ew.where(_rd.isnan(a), _np.zeros((), aval_of(a).dtype), a) if aval_of(a).is_float else a
    return _red.np_sum(zeroed, axis, dtype=dtype, keepdims=keepdims)


@_implements("nanmean")
def nanmean(a: Any, axis: Any = None, dtype: Any = None, out: None = None, keepdims: bool = False) -> Any:
    """Mean over the non-NaN elements (NaN where there are none, as NumPy warns and returns)."""
    _axes_kd(a, axis, keepdims, "nanmean", out)
    if not aval_of(a).is_float:
        return mean(a, axis, dtype=dtype, keepdims=keepdims)
    count = _red.np_sum(astype(_ew.logical_not(_rd.isnan(a)), aval_of(a).dtype), axis, keepdims=keepdims)
    out = _ew.div(nansum(a, axis, keepdims=keepdims), count)
    return astype(out, dtype) if dtype is not None else out


def _nan_extremum(a: Any, axis: Any, keepdims: bool, out: Any, op: str, fill: float, reduce: Any) -> Any:
    axes, kd = _axes_kd(a, axis, keepdims, op, out)
    if not aval_of(a).is_float:
        return reduce(a, axes, kd)
    nan = _rd.isnan(a)
    best = reduce(_ew.where(nan, _np.asarray(fill, aval_of(a).dtype), a), axes, kd)
    all_nan = _ew.equal(_red.reduce_sum(astype(_ew.logical_not(nan), _np.intp), axes, kd), 0)
    return _ew.where(all_nan, _np.asarray(_np.nan, aval_of(a).dtype), best)


@_implements("nanmax")
def nanmax(a: Any, axis: Any = None, out: None = None, keepdims: bool = False) -> Any:
    """Max ignoring NaNs (NaN where all are NaN); ties share the derivative as in np.max."""
    return _nan_extremum(a, axis, keepdims, out, "nanmax", -_np.inf, _red.reduce_max)


@_implements("nanmin")
def nanmin(a: Any, axis: Any = None, out: None = None, keepdims: bool = False) -> Any:
    return _nan_extremum(a, axis, keepdims, out, "nanmin", _np.inf, _red.reduce_min)


@_implements("nanvar")
def nanvar(a: Any, axis: Any = None, dtype: Any = None, out: None = None, ddof: int = 0,
           keepdims: bool = False) -> Any:
    """Variance of the non-NaN elements (NumPy's two passes: their mean, then squared deviations)."""
    if not aval_of(a).is_float:
        return var(a, axis, ddof=ddof, keepdims=keepdims)
    axes, kd = _axes_kd(a, axis, keepdims, "nanvar", out)
    ok = _ew.logical_not(_rd.isnan(a))
    zero = _np.zeros((), aval_of(a).dtype)
    count = _red.reduce_sum(astype(ok, aval_of(a).dtype), axes, True)
    centered = _ew.where(ok, _ew.sub(a, _ew.div(_red.reduce_sum(_ew.where(ok, a, zero), axes, True), count)), zero)
    sq = _red.reduce_sum(_ew.mul(centered, centered), axes, kd)
    out_ = _ew.div(sq, _ew.sub(count if kd else squeeze(count, axes), ddof))
    return astype(out_, dtype) if dtype is not None else out_


@_implements("nanstd")
def nanstd(a: Any, axis: Any = None, dtype: Any = None, out: None = None, ddof: int = 0,
           keepdims: bool = False) -> Any:
    return _ew.sqrt(nanvar(a, axis, dtype, out, ddof, keepdims))


@_implements("average")
def average(a: Any, axis: Any = None, weights: Any = None, returned: bool = False, *,
            keepdims: bool = False) -> Any:
    """Weighted mean sum(a w) / sum(w); 1-D ``weights`` with an int ``axis`` lie along it."""
    if weights is None:
        avg = mean(a, axis, keepdims=keepdims)
        if not returned:
            return avg
        axes = normalize_axes(axis, _nd(a), "average")
        scl = _np.full(_shape(avg), float(_reduce_count(a, axes)), aval_of(avg).dtype)
        return avg, scl
    w = asarray(weights)
    if _shape(w) != _shape(a):
        if axis is None:
            raise ShapeError("average: weights differ in shape from a; give axis= to weight along one axis")
        if _nd(w) != 1:
            raise ShapeError("average: 1-D weights are required when shapes of a and weights differ")
        ax = normalize_axes(axis, _nd(a), "average")
        if len(ax) != 1 or _shape(w)[0] != _shape(a)[ax[0]]:
            raise ShapeError("average: length of weights differs from the length of a along axis")
        w = _sh.reshape(w, tuple(_shape(a)[ax[0]] if i == ax[0] else 1 for i in range(_nd(a))))
        w = _sh.broadcast_to(w, _shape(a))
    scl = _red.np_sum(w, axis, keepdims=keepdims)
    avg = _ew.div(_red.np_sum(_ew.mul(a, w), axis, keepdims=keepdims), scl)
    if returned:
        return avg, _sh.broadcast_to(scl, _shape(avg))
    return avg


@_implements("sort")
def sort(a: Any, axis: int | None = -1, kind: str | None = None, order: None = None, *,
         stable: bool | None = None) -> Any:
    """Values in sorted order: argsort (no derivative) then a gather, which carries it."""
    if axis is None:
        a, axis = ravel(a), 0
    axis = normalize_axes(axis, _nd(a), "sort")[0]
    return _ix.take_along_axis(a, _scan.np_argsort(a, axis, kind, order, stable=stable), axis)


_QUANTILE_METHODS = ("linear", "lower", "higher", "midpoint", "nearest")


def _sorted_along(a: Any, axis: Any) -> tuple[Any, int]:
    if axis is None:
        return sort(ravel(a), 0), 0
    axes = normalize_axes(axis, _nd(a), "quantile")
    if len(axes) != 1:  # several axes: move them to the end and merge them
        rest = [i for i in range(_nd(a)) if i not in axes]
        a = _sh.reshape(_sh.transpose(a, tuple(rest) + axes), tuple(_shape(a)[i] for i in rest) + (-1,))
        return sort(a, -1), _nd(a) - 1
    return sort(a, axes[0]), axes[0]


def _quantile(a: Any, q: Any, axis: Any, method: str, keepdims: bool, op: str, weak: bool) -> Any:
    """``weak``: q was a Python number, so (as in NumPy) it does not widen a float32 result."""
    if isinstance(q, Tracer):
        raise UnsupportedOperationError(f"np.{op} with a traced q: the positions picked would depend on data",
                                        source=user_source(), hint="pass q as a constant (a number or NumPy array)")
    if method not in _QUANTILE_METHODS:
        raise UnsupportedOperationError(f"np.{op} with method={method!r}", source=user_source(),
                                        hint=f"use one of {', '.join(_QUANTILE_METHODS)}")
    q = _np.asarray(q)
    q = q if q.dtype.kind == "f" else q.astype(_np.float64)
    if _np.any((q < 0) | (q > 1)):
        raise ValueError(f"{op}: quantiles must be in the range [0, 1] (percentiles in [0, 100])")
    nd = _nd(a)
    s, ax = _sorted_along(a, axis)
    n = _shape(s)[ax]
    virtual = q * (n - 1)
    lo = _np.floor(virtual).astype(_np.intp)
    hi = _np.minimum(lo + 1, n - 1)
    gamma = virtual - lo
    if method == "lower":
        hi, gamma = lo, _np.zeros_like(gamma)
    elif method == "higher":
        lo, gamma = _np.ceil(virtual).astype(_np.intp), _np.zeros_like(gamma)
    elif method == "nearest":
        lo, gamma = _np.around(virtual).astype(_np.intp), _np.zeros_like(gamma)
    elif method == "midpoint":
        gamma = _np.where(virtual % 1 == 0, 0.0, 0.5)

    def pick(i: _np.ndarray) -> Any:  # the sorted values at positions i (q's shape in front)
        taken = take(s, _np.ravel(i), axis=ax)
        return moveaxis(_sh.reshape(moveaxis(taken, ax, -1), _shape(taken)[:ax] + _shape(taken)[ax + 1:] + q.shape),
                        tuple(range(-q.ndim, 0)), tuple(range(q.ndim)))

    a_lo = pick(lo)
    s_dtype = aval_of(s).dtype
    if weak:
        dtype = s_dtype if s_dtype.kind == "f" else _np.dtype(_np.float64)
    else:
        dtype = _np.result_type(s_dtype, q.dtype, _np.float16)  # at least a float
    g = _np.asarray(gamma, dtype).reshape(q.shape + (1,) * (_nd(a_lo) - q.ndim))
    if method in ("lower", "higher", "nearest"):
        out = a_lo
    else:
        # NumPy's _lerp: a + (b - a) g, or b - (b - a)(1 - g) when g >= 1/2 (exact at g = 1)
        a_hi = pick(hi)
        diff = _ew.sub(a_hi, a_lo)  # in the input dtype, then widened by g, as NumPy does
        out = _ew.where(g >= 0.5, _ew.sub(a_hi, _ew.mul(diff, 1 - g)), _ew.add(a_lo, _ew.mul(diff, g)))
    if aval_of(s).is_float:  # NaN anywhere along the axis makes the quantile NaN, as in NumPy
        has_nan = any(_rd.isnan(s), ax)
        out = _ew.where(_sh.reshape(has_nan, (1,) * q.ndim + _shape(has_nan)), _np.nan, out)
    if keepdims:
        kept = [1 if (axis is None or i in normalize_axes(axis, nd, op)) else d for i, d in enumerate(_shape(a))]
        out = _sh.reshape(out, q.shape + tuple(kept))
    return out


@_implements("quantile")
def quantile(a: Any, q: Any, axis: Any = None, out: None = None, overwrite_input: bool = False,
             method: str = "linear", keepdims: bool = False) -> Any:
    """Quantiles of the sorted values (NumPy's methods linear, lower, higher, midpoint, nearest)."""
    return _quantile(a, q, axis, method, keepdims, "quantile", type(q) in (int, float))


@_implements("percentile")
def percentile(a: Any, q: Any, axis: Any = None, out: None = None, overwrite_input: bool = False,
               method: str = "linear", keepdims: bool = False) -> Any:
    if isinstance(q, Tracer):
        return _quantile(a, q, axis, method, keepdims, "percentile", False)
    return _quantile(a, _np.true_divide(q, 100), axis, method, keepdims, "percentile", type(q) in (int, float))


@_implements("median")
def median(a: Any, axis: Any = None, out: None = None, overwrite_input: bool = False,
           keepdims: bool = False) -> Any:
    """The middle sorted value (mean of the two middle ones for even counts); NaN propagates."""
    return _quantile(a, 0.5, axis, "linear", keepdims, "median", True)


@_implements("diff")
def diff(a: Any, n: int = 1, axis: int = -1, prepend: Any = None, append: Any = None) -> Any:
    """n-th forward difference along ``axis`` (``prepend``/``append`` join first)."""
    axis = normalize_axes(axis, _nd(a), "diff")[0]
    parts = []
    for extra in (prepend, a, append):
        if extra is None:
            continue
        if extra is not a and _nd(extra) == 0:
            shp = list(_shape(a))
            shp[axis] = 1
            extra = _sh.broadcast_to(extra, tuple(shp))
        parts.append(extra)
    if len(parts) > 1:
        a = _sh.concatenate(parts, axis)
    pre = (slice(None),) * axis
    for _ in range(n):
        hi, lo = getitem(a, pre + (slice(1, None),)), getitem(a, pre + (slice(None, -1),))
        a = _ew.not_equal(hi, lo) if aval_of(a).dtype == bool else _ew.sub(hi, lo)
    return a


# ---------------------------------------------------------------- building arrays from traced parts
def _contains_tracer(obj: Any) -> bool:
    if isinstance(obj, Tracer):
        return True
    return isinstance(obj, list | tuple) and builtins.any(_contains_tracer(e) for e in obj)


def _from_nested(obj: Any) -> Any:
    if not _contains_tracer(obj):
        return _np.asarray(obj)
    if isinstance(obj, Tracer):
        return obj
    parts = [_from_nested(e) for e in obj]
    shapes = {_shape(p) for p in parts}
    if len(shapes) != 1:
        raise ShapeError(f"array: the nested sequence is ragged (element shapes {sorted(shapes)})",
                         hint="every element of a list that becomes an array must have the same shape")
    return stack(parts, 0)


def array(object: Any, dtype: Any = None, copy: bool = True, ndmin: int = 0) -> Any:
    """``np.array`` for nested lists that hold traced values (stacked); NumPy's own
    ``np.array`` cannot be intercepted, so call ``tracegrad.numpy.array`` for those."""
    out = _from_nested(object)
    if dtype is not None:
        out = astype(out, dtype)
    if _nd(out) < ndmin:
        out = _sh.reshape(out, (1,) * (ndmin - _nd(out)) + _shape(out))
    return out


# ---------------------------------------------------------------- diagonals and triangles
@_implements("diagonal")
def diagonal(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
    """The (offset) diagonal of axes axis1, axis2, as a new last axis (a gather)."""
    nd = _nd(a)
    ax1, ax2 = (normalize_axes(x, nd, "diagonal")[0] for x in (axis1, axis2))
    if ax1 == ax2:
        raise ShapeError("diagonal: axis1 and axis2 cannot be the same")
    a = moveaxis(a, (ax1, ax2), (-2, -1))
    d1, d2 = _shape(a)[-2:]
    k = int(offset)
    count = builtins.max(0, builtins.min(d1, d2 - k) if k >= 0 else builtins.min(d1 + k, d2))
    i = _np.arange(count)
    return getitem(a, (Ellipsis, i + builtins.max(-k, 0), i + builtins.max(k, 0)))


@_implements("diag")
def diag(v: Any, k: int = 0) -> Any:
    """1-D: a square matrix with ``v`` on diagonal ``k`` (a scatter into zeros); 2-D: diagonal ``k``."""
    if _nd(v) == 2:
        return diagonal(v, k)
    if _nd(v) != 1:
        raise ShapeError("diag: input must be 1- or 2-d")
    n = _shape(v)[0]
    m = n + builtins.abs(int(k))
    i = _np.arange(n)
    return _ix.scatter_add(v, [i + builtins.max(-k, 0), i + builtins.max(k, 0)], (("arr", 0), ("arr", 1)), (m, m))


@_implements("trace")
def trace(a: Any, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype: Any = None) -> Any:
    return _red.np_sum(diagonal(a, offset, axis1, axis2), -1, dtype=dtype)


def _triangle(m: Any, keep: _np.ndarray) -> Any:
    return _ew.where(keep, m, _np.zeros((), aval_of(m).dtype))


@_implements("tril")
def tril(m: Any, k: int = 0) -> Any:
    n, c = _shape(m)[-2:] if _nd(m) >= 2 else (_shape(m)[0],) * 2
    return _triangle(m, _np.tri(n, c, k, dtype=bool))


@_implements("triu")
def triu(m: Any, k: int = 0) -> Any:
    n, c = _shape(m)[-2:] if _nd(m) >= 2 else (_shape(m)[0],) * 2
    return _triangle(m, ~_np.tri(n, c, k - 1, dtype=bool))


# ---------------------------------------------------------------- reordering
@_implements("flip")
def flip(m: Any, axis: Any = None) -> Any:
    axes = normalize_axes(axis, _nd(m), "flip")
    return getitem(m, tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(_nd(m))))


@_implements("fliplr")
def fliplr(m: Any) -> Any:
    if _nd(m) < 2:
        raise ShapeError("fliplr: the input must be at least 2-d")
    return flip(m, 1)


@_implements("flipud")
def flipud(m: Any) -> Any:
    if _nd(m) < 1:
        raise ShapeError("flipud: the input must be at least 1-d")
    return flip(m, 0)


@_implements("rot90")
def rot90(m: Any, k: int = 1, axes: tuple[int, int] = (0, 1)) -> Any:
    """Rotation by 90 degrees k times in the plane of ``axes`` (NumPy's flip/transpose steps)."""
    nd = _nd(m)
    a0, a1 = (normalize_axes(x, nd, "rot90")[0] for x in axes)
    if a0 == a1:
        raise ShapeError("rot90: axes must be different")
    k %= 4
    if k == 0:
        return m
    if k == 2:
        return flip(flip(m, a0), a1)
    perm = list(range(nd))
    perm[a0], perm[a1] = perm[a1], perm[a0]
    if k == 1:
        return _sh.transpose(flip(m, a1), tuple(perm))
    return flip(_sh.transpose(m, tuple(perm)), a1)


@_implements("roll")
def roll(a: Any, shift: Any, axis: Any = None) -> Any:
    """Elements shifted along axes with wrap-around (two slices joined per axis)."""
    if axis is None:
        return _sh.reshape(roll(ravel(a), shift, 0), _shape(a))
    shifts, axes = _np.broadcast_arrays(_np.atleast_1d(shift), _np.atleast_1d(axis))
    nd = _nd(a)
    total: dict[int, int] = {}
    for s, ax in zip(shifts.tolist(), axes.tolist()):
        ax = normalize_axes(ax, nd, "roll")[0]
        total[ax] = total.get(ax, 0) + int(s)
    for ax, s in total.items():
        n = _shape(a)[ax]
        s = s % n if n else 0
        if s:
            pre = (slice(None),) * ax
            a = _sh.concatenate([getitem(a, pre + (slice(n - s, None),)), getitem(a, pre + (slice(None, n - s),))], ax)
    return a


# ---------------------------------------------------------------- repetition and padding
@_implements("repeat")
def repeat(a: Any, repeats: Any, axis: int | None = None) -> Any:
    """Each element repeated along ``axis`` (a gather with a constant index)."""
    if isinstance(repeats, Tracer):
        raise UnsupportedOperationError("np.repeat with traced repeats gives a data-dependent shape",
                                        source=user_source(), hint="pass repeats as Python ints or a NumPy array")
    if axis is None:
        a, axis = ravel(a), 0
    axis = normalize_axes(axis, _nd(a), "repeat")[0]
    idx = _np.repeat(_np.arange(_shape(a)[axis]), repeats)
    return take(a, idx, axis=axis)


@_implements("tile")
def tile(A: Any, reps: Any) -> Any:
    """``A`` repeated ``reps`` times per axis: broadcast against interleaved unit axes, then reshape."""
    reps = (int(reps),) if _np.ndim(reps) == 0 else tuple(int(r) for r in reps)
    shp = _shape(A)
    d = builtins.max(len(shp), len(reps))
    shp = (1,) * (d - len(shp)) + shp
    reps = (1,) * (d - len(reps)) + reps
    inter = tuple(x for s in shp for x in (1, s))
    wide = tuple(x for r, s in zip(reps, shp) for x in (r, s))
    out = _sh.broadcast_to(_sh.reshape(A, inter), wide)
    return _sh.reshape(out, tuple(r * s for r, s in zip(reps, shp)))


def _pad_source(n: int, before: int, after: int, mode: str) -> _np.ndarray:
    """For each output position along an axis, the input position it copies (non-constant modes)."""
    j = _np.arange(-before, n + after)
    if mode == "edge":
        return _np.clip(j, 0, n - 1)
    if mode == "wrap":
        return j % n
    if mode == "symmetric":
        j = j % (2 * n)
        return _np.where(j < n, j, 2 * n - 1 - j)
    if n == 1:  # reflect
        return _np.zeros_like(j)
    j = j % (2 * n - 2)
    return _np.where(j < n, j, 2 * n - 2 - j)


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


@_implements("pad")
def pad(array: Any, pad_width: Any, mode: str = "constant", **kwargs: Any) -> Any:
    """Padding per axis: constant blocks joined on, or a gather for edge/reflect/symmetric/wrap."""
    if mode not in _PAD_MODES:
        raise UnsupportedOperationError(f"np.pad with mode={mode!r}", source=user_source(),
                                        hint=f"use one of {', '.join(_PAD_MODES)}")
    allowed = {"constant_values"} if mode == "constant" else {"reflect_type"} if mode in ("reflect", "symmetric") else set()
    if set(kwargs) - allowed or kwargs.get("reflect_type", "even") != "even":
        raise UnsupportedOperationError(f"np.pad(mode={mode!r}) with {sorted(kwargs)}", source=user_source(),
                                        hint="only constant_values (mode='constant') and reflect_type='even' are supported")
    nd = _nd(array)
    widths = _np.broadcast_to(_np.asarray(pad_width, dtype=_np.intp), (nd, 2))
    if _np.any(widths < 0):
        raise ValueError("pad: index can't contain negative values")
    dtype = aval_of(array).dtype
    values = _np.broadcast_to(_np.asarray(kwargs.get("constant_values", 0)), (nd, 2))
    for ax in range(nd):
        before, after = (int(w) for w in widths[ax])
        if not before and not after:
            continue
        n = _shape(array)[ax]
        if mode == "constant":
            parts = []
            for width, value in ((before, values[ax][0]), (None, None), (after, values[ax][1])):
                if width is None:
                    parts.append(array)
                elif width:
                    shp = list(_shape(array))
                    shp[ax] = width
                    parts.append(_np.full(shp, value, dtype))
            array = _sh.concatenate(parts, ax)
        else:
            if n == 0:
                raise ValueError(f"pad: can't extend empty axis {ax} using mode {mode!r}")
            array = take(array, _pad_source(n, before, after, mode), axis=ax)
    return array


# ---------------------------------------------------------------- dimensions and stacking
def _atleast(arys: tuple[Any, ...], fix: Any) -> Any:
    out = tuple(fix(asarray(a)) for a in arys)
    return out[0] if len(out) == 1 else out


@_implements("atleast_1d")
def atleast_1d(*arys: Any) -> Any:
    return _atleast(arys, lambda a: _sh.reshape(a, (1,)) if _nd(a) == 0 else a)


@_implements("atleast_2d")
def atleast_2d(*arys: Any) -> Any:
    return _atleast(arys, lambda a: _sh.reshape(a, (1,) * (2 - _nd(a)) + _shape(a)) if _nd(a) < 2 else a)


def _to_3d(a: Any) -> Any:
    nd = _nd(a)
    if nd == 0:
        return _sh.reshape(a, (1, 1, 1))
    if nd == 1:
        return _sh.reshape(a, (1,) + _shape(a) + (1,))
    if nd == 2:
        return _sh.reshape(a, _shape(a) + (1,))
    return a


@_implements("atleast_3d")
def atleast_3d(*arys: Any) -> Any:
    return _atleast(arys, _to_3d)


@_implements("dstack")
def dstack(tup: Sequence[Any]) -> Any:
    return _sh.concatenate([_to_3d(asarray(a)) for a in tup], 2)


@_implements("column_stack")
def column_stack(tup: Sequence[Any]) -> Any:
    cols = []
    for a in tup:
        a = asarray(a)
        cols.append(_sh.reshape(a, (-1, 1)) if _nd(a) < 2 else a)
    return _sh.concatenate(cols, 1)


def _split_bounds(n: int, sections: Any, even: bool) -> list[int]:
    if _np.ndim(sections) == 0:
        k = int(sections)
        if k <= 0:
            raise ValueError("number sections must be larger than 0.")
        if even and n % k:
            raise ValueError("array split does not result in an equal division")
        q, r = divmod(n, k)
        sizes = [q + 1] * r + [q] * (k - r)
        return [0, *_np.cumsum(sizes).tolist()]
    return [0, *[int(i) for i in sections], n]


def _split(ary: Any, sections: Any, axis: int, even: bool) -> list[Any]:
    axis = normalize_axes(axis, _nd(ary), "split")[0]
    n = _shape(ary)[axis]
    bounds = _split_bounds(n, sections, even)
    pre = (slice(None),) * axis
    return [getitem(ary, pre + (slice(lo, hi),)) for lo, hi in _pairwise(bounds)]


@_implements("split")
def split(ary: Any, indices_or_sections: Any, axis: int = 0) -> list[Any]:
    return _split(ary, indices_or_sections, axis, True)


@_implements("array_split")
def array_split(ary: Any, indices_or_sections: Any, axis: int = 0) -> list[Any]:
    return _split(ary, indices_or_sections, axis, False)


@_implements("hsplit")
def hsplit(ary: Any, indices_or_sections: Any) -> list[Any]:
    if _nd(ary) == 0:
        raise ShapeError("hsplit only works on arrays of 1 or more dimensions")
    return _split(ary, indices_or_sections, 1 if _nd(ary) > 1 else 0, True)


@_implements("vsplit")
def vsplit(ary: Any, indices_or_sections: Any) -> list[Any]:
    if _nd(ary) < 2:
        raise ShapeError("vsplit only works on arrays of 2 or more dimensions")
    return _split(ary, indices_or_sections, 0, True)


@_implements("dsplit")
def dsplit(ary: Any, indices_or_sections: Any) -> list[Any]:
    if _nd(ary) < 3:
        raise ShapeError("dsplit only works on arrays of 3 or more dimensions")
    return _split(ary, indices_or_sections, 2, True)


@_implements("rollaxis")
def rollaxis(a: Any, axis: int, start: int = 0) -> Any:
    """NumPy's older moveaxis: ``axis`` rolled back until it lies before ``start``."""
    nd = _nd(a)
    axis = normalize_axes(axis, nd, "rollaxis")[0]
    if start < 0:
        start += nd
    if not 0 <= start <= nd:
        raise ShapeError(f"rollaxis: start {start} is out of bounds for an array of dimension {nd}")
    if axis < start:
        start -= 1
    if axis == start:
        return a
    order = [i for i in range(nd) if i != axis]
    order.insert(start, axis)
    return _sh.transpose(a, tuple(order))


@_implements("select")
def select(condlist: Sequence[Any], choicelist: Sequence[Any], default: Any = 0) -> Any:
    """The choice of the first true condition, else ``default`` (nested wheres, last first)."""
    if len(condlist) != len(choicelist):
        raise ValueError("list of cases must be same length as list of conditions")
    out = default
    for cond, choice in reversed(list(zip(condlist, choicelist))):
        out = _ew.where(cond, choice, out)
    return out


def _real_only(x: Any, op: str) -> None:
    if aval_of(x).dtype.kind == "c":
        raise UnsupportedOperationError(f"np.{op} of a complex array", source=user_source(),
                                        hint="tracegrad differentiates real arrays")


@_implements("real")
def real(val: Any) -> Any:
    _real_only(val, "real")
    return val


@_implements("imag")
def imag(val: Any) -> Any:
    _real_only(val, "imag")
    return _np.zeros(_shape(val), aval_of(val).dtype)


@_implements("conjugate", "conj")
def conjugate(x: Any) -> Any:
    _real_only(x, "conjugate")
    return x


conj = conjugate


# ---------------------------------------------------------------- products
@_implements("kron")
def kron(a: Any, b: Any) -> Any:
    """Kronecker product: an outer product over interleaved axes, reshaped."""
    nd = builtins.max(_nd(a), _nd(b))
    sa = (1,) * (nd - _nd(a)) + _shape(a)
    sb = (1,) * (nd - _nd(b)) + _shape(b)
    prod = _ew.mul(_sh.reshape(a, tuple(x for s in sa for x in (s, 1))),
                   _sh.reshape(b, tuple(x for s in sb for x in (1, s))))
    return _sh.reshape(prod, tuple(x * y for x, y in zip(sa, sb)))


@_implements("cross")
def cross(a: Any, b: Any, axisa: int = -1, axisb: int = -1, axisc: int = -1, axis: int | None = None) -> Any:
    """Cross product of 3-vectors (or the z component for 2-vectors), with NumPy's products."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a = moveaxis(a, axisa, -1)
    b = moveaxis(b, axisb, -1)
    na, nb_ = _shape(a)[-1], _shape(b)[-1]
    if na not in (2, 3) or nb_ not in (2, 3):
        raise ShapeError("cross: incompatible dimensions for cross product (dimension must be 2 or 3)")
    a0, a1 = a[..., 0], a[..., 1]
    b0, b1 = b[..., 0], b[..., 1]
    z = _ew.sub(_ew.mul(a0, b1), _ew.mul(a1, b0))
    if na == 2 and nb_ == 2:
        return z
    a2 = a[..., 2] if na == 3 else 0.0
    b2 = b[..., 2] if nb_ == 3 else 0.0
    x = _ew.sub(_ew.mul(a1, b2), _ew.mul(a2, b1))
    y = _ew.sub(_ew.mul(a2, b0), _ew.mul(a0, b2))
    shape = _np.broadcast_shapes(_shape(x), _shape(y), _shape(z))
    c = stack([_sh.broadcast_to(t, shape) if _shape(t) != shape else t for t in (x, y, z)], -1)
    return moveaxis(c, -1, axisc)


@_implements("vdot")
def vdot(a: Any, b: Any) -> Any:
    """Dot product of the flattened arrays (real arrays: no conjugation needed)."""
    if aval_of(a).dtype.kind == "c" or aval_of(b).dtype.kind == "c":
        raise UnsupportedOperationError("np.vdot of complex arrays", source=user_source(),
                                        hint="tracegrad differentiates real arrays")
    return _la.matmul(ravel(a), ravel(b))


# NumPy submodule names (``"linalg.inv"``) are exported as ``tracegrad.numpy.linalg.inv``
for _name, _fn in _dispatch.registered_names().items():
    if "." in _name:
        *_path, _leaf = _name.split(".")
        _ns = _sys.modules[__name__]
        for _part in _path:
            if not hasattr(_ns, _part):
                setattr(_ns, _part, _types.ModuleType(f"{_ns.__name__}.{_part}"))
            _ns = getattr(_ns, _part)
        setattr(_ns, _leaf, _fn)
        del _path, _leaf, _ns, _part
del _name, _fn
linalg = globals()["linalg"]  # made by the loop above
linalg.__doc__ = "``np.linalg`` on traced and concrete arrays."
linalg.__all__ = sorted(n for n in vars(linalg) if not n.startswith("_"))
_sys.modules[linalg.__name__] = linalg  # ``import tracegrad.numpy.linalg`` works too
del matrix_power, multi_dot, norm  # NumPy has them only under np.linalg

# tracegrad's own additions (not NumPy names): dtypes and constants, array creation,
# dtype and gradient control, neural-network helpers, and ``x[idx]`` as a function
_EXTRAS = ("ndarray", "float32", "float64", "int32", "int64", "bool_", "pi", "e", "inf", "nan", "newaxis",
           "zeros", "ones", "full", "arange", "astype", "stop_gradient", "perturb_point", "sigmoid", "logistic", "relu",
           "softplus", "logsumexp", "softmax", "log_softmax", "one_hot", "cross_entropy", "getitem")
__all__ = [n for n in sorted({n.partition(".")[0] for n in _dispatch.registered_names()} | set(_EXTRAS))]


def __dir__() -> list[str]:
    """Only the public names: NumPy's (derived from the declarations) and tracegrad's extras."""
    return list(__all__)


_dispatch.register_namespace(_sys.modules[__name__])
