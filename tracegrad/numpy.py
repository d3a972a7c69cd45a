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
import string
import sys as _sys
import types as _types
from collections.abc import Sequence
from typing import Any

import numpy as _np

from .errors import IndexOutOfBoundsError as _IndexOutOfBoundsError
from .errors import ShapeError, UnsupportedOperationError
from .ir import PRIMITIVES as _PRIMITIVES
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
    return _ew.div(1, x)


@_implements("log2")
def log2(x: Any) -> Any:
    return _ew.mul(_ew.log(x), 1 / math.log(2))


@_implements("log10")
def log10(x: Any) -> Any:
    return _ew.mul(_ew.log(x), 1 / math.log(10))


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

# tracegrad's own additions (not NumPy names): dtypes and constants, array creation,
# dtype and gradient control, neural-network helpers, and ``x[idx]`` as a function
_EXTRAS = ("ndarray", "float32", "float64", "int32", "int64", "bool_", "pi", "e", "inf", "nan", "newaxis",
           "zeros", "ones", "full", "arange", "astype", "stop_gradient", "sigmoid", "logistic", "relu",
           "softplus", "logsumexp", "softmax", "log_softmax", "one_hot", "cross_entropy", "getitem")
__all__ = [n for n in sorted({n.partition(".")[0] for n in _dispatch.registered_names()} | set(_EXTRAS))]


def __dir__() -> list[str]:
    """Only the public names: NumPy's (derived from the declarations) and tracegrad's extras."""
    return list(__all__)


_dispatch.register_namespace(_sys.modules[__name__])
