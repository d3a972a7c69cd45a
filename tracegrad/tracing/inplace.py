"""NumPy's in-place semantics for traced arrays, built from existing primitives.

``x[idx] = v`` becomes ``where(M, v_flat[src], x)``: ``M`` marks the elements the index
writes and ``src`` says which element of ``v`` (broadcast to the selection) lands there.
Both are computed from NumPy's own indexing of a position array, so slices, negative
indices, boolean masks, Ellipsis and broadcast index arrays mean exactly what they mean in
NumPy; where an index array repeats an element the LAST write wins, as in NumPy (``a[[0,
0]] -= 1`` subtracts once). Index arrays that are traced values (``P[np.arange(N), y] -=
1`` with labels ``y`` an argument) are handled with traced ops: ``scatter_add`` builds
``M`` and ``src``, and repeated positions are resolved to the last write unless constant
index arrays already make every position distinct. Derivatives come from ``where``,
gathers and ``scatter_add``, whose JVP and VJP rules exist, so nothing here has rules of
its own.

Views: ``write_through`` carries a write on a view into its base (basic indexing,
transposes and reshapes that only add or drop axes of length 1); any other view refuses
an in-place write rather than differ from NumPy.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError, UnsupportedOperationError
from .source import user_source
from .tracer import Tracer, aval_of

__all__ = ["fit_inplace", "inplace_function", "is_basic_index", "rederivable", "set_index", "traced_like",
           "ufunc_at", "write_through"]

_MAX_TRACED_WRITES = 4096  # pairwise duplicate check for traced index arrays: n*n booleans


def _tnp() -> Any:
    from .dispatch import (
        numpy_namespace,  # tracegrad.numpy, registered there (tracing sits below it)
    )

    return numpy_namespace()


def scatter_add(values: Any, arrays: list[Any], template: tuple, shape: tuple[int, ...]) -> Any:
    """The ``scatter_add`` primitive (declared in ``ops/indexing.py``), found in the registry:
    the tracing layer sits below the ops."""
    from ..ir import PRIMITIVES
    from .tracer import bind

    return bind(PRIMITIVES["scatter_add"], values, *arrays, template=tuple(template),
                shape=tuple(int(d) for d in shape))


def _shape_str(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def is_basic_index(idx: Any) -> bool:
    """Ints, slices, None and Ellipsis only: NumPy returns a view."""
    parts = idx if isinstance(idx, tuple) else (idx,)
    return all(p is None or p is Ellipsis or isinstance(p, slice)
               or (isinstance(p, int | np.integer) and not isinstance(p, bool)) for p in parts)


def fit_inplace(x: Tracer, result: Any, op: str) -> Tracer:
    """The result of ``x op= y`` checked and cast as NumPy does: the shape of ``x`` cannot
    change, and the promoted result is cast back with the ``same_kind`` rule."""
    r = aval_of(result)
    if r.shape != x.shape:
        raise ShapeError(
            f"{op}: non-broadcastable output operand with shape {_shape_str(x.shape)} doesn't match "
            f"the broadcast shape {_shape_str(r.shape)}",
            source=user_source(), hint=f"an in-place operator cannot change the array's shape; write x = x {op[:-1]} y")
    if r.dtype != x.dtype:
        if not np.can_cast(r.dtype, x.dtype, "same_kind"):
            raise DTypeError(
                f"{op}: cannot cast the result from {r.dtype} to {x.dtype} with casting rule 'same_kind' "
                "(NumPy raises here too)",
                source=user_source(), hint=f"write x = x {op[:-1]} y to get a new array of dtype {r.dtype}")
        result = _tnp().astype(result, x.dtype)
    if not isinstance(result, Tracer):
        result = Tracer(x._builder, x._builder.atom(result))  # pragma: no cover - ops on tracers give tracers
    return result


# ---------------------------------------------------------------- views
def _unit_reshape(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return [d for d in a if d != 1] == [d for d in b if d != 1]


def rederivable(view_tracer: Tracer) -> bool:
    """Whether an op-made view is a view in NumPy whatever the memory layout of its base."""
    _, base, _, prim, _ = view_tracer._view  # type: ignore[misc]
    if prim.name in ("transpose", "broadcast_to"):
        return True
    return prim.name == "reshape" and _unit_reshape(base.shape, view_tracer.shape)


def detach_if_unshared(t: Tracer) -> None:
    """Forget that ``t`` is a view when nothing else can see its base: the base is a
    temporary (e.g. the matmul inside ``tensordot``, or ``(x @ w)[0]``), so the view
    relation cannot be observed and writing through it would only cost work."""
    if t._view is not None and sys.getrefcount(t._view[1]) <= 2:
        t._view = None  # refs: the view tuple and getrefcount's argument


def write_through(t: Tracer, new: Tracer, what: str) -> None:
    """Write ``new`` into the view ``t`` and through it into its base (recursively)."""
    tnp = _tnp()
    view = t._view
    assert view is not None
    base = view[1]
    if view[0] == "index":
        base._assign(set_index(base, view[2], new), what)
        t._v = new._var
        t._view = ("index", base, view[2], base._version)
        return
    _, base, _, prim, params = view
    if prim.name == "transpose":
        back = tnp.transpose(new, tuple(int(i) for i in np.argsort(params["perm"])))
    elif prim.name == "reshape" and _unit_reshape(base.shape, t.shape):
        back = tnp.reshape(new, base.shape)
    elif prim.name == "broadcast_to":
        raise UnsupportedOperationError(
            f"in-place update ({what}) of a broadcast view: it is read-only (NumPy raises too)",
            source=user_source(), hint="copy it first: y = np.broadcast_to(x, shape).copy()")
    else:
        raise UnsupportedOperationError(
            f"in-place update ({what}) of an array made by {prim.name} from another array: NumPy "
            "changes that array too when it returned a view, which depends on memory layout that "
            "tracegrad does not model",
            source=user_source(),
            hint="copy first (y = x.reshape(...).copy()) or write it functionally (y = y + ...)")
    base._assign(back, what)
    t._v = new._var
    t._view = ("op", base, base._version, prim, params)


# ---------------------------------------------------------------- item assignment
def _index_error(x: Tracer, idx: Any, err: Exception) -> UnsupportedOperationError:
    return UnsupportedOperationError(
        f"item assignment x[{idx!r}] = ... into an array of shape {_shape_str(x.shape)}: {err}",
        source=user_source(), hint="index with ints, slices, None, ..., boolean masks or integer arrays in bounds")


def _value_for(x: Tracer, value: Any, sel_shape: tuple[int, ...]) -> Any:
    """``value`` cast to ``x``'s dtype and broadcast to the selection, as NumPy's setitem."""
    tnp = _tnp()
    if isinstance(value, list | tuple):
        if any(isinstance(e, Tracer) for e in np.ravel(np.asarray(value, dtype=object))):
            value = tnp.stack([tnp.asarray(e) for e in value]) if all(
                isinstance(e, Tracer) or np.ndim(e) == np.ndim(value[0]) for e in value) else value
        else:
            value = np.asarray(value)
    if not isinstance(value, Tracer):
        try:
            value = np.asarray(value).astype(x.dtype)
        except (TypeError, ValueError) as err:
            raise DTypeError(f"item assignment: cannot store {value!r} into an array of dtype {x.dtype}: {err}",
                             source=user_source()) from None
    elif value.dtype != x.dtype:
        value = tnp.astype(value, x.dtype)
    vshape = aval_of(value).shape
    while len(vshape) > len(sel_shape) and vshape[0] == 1:  # NumPy drops leading length-1 axes
        vshape = vshape[1:]
        value = tnp.reshape(value, vshape)
    try:
        ok = np.broadcast_shapes(vshape, sel_shape) == tuple(sel_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"item assignment: could not broadcast input array from shape {_shape_str(vshape)} "
                         f"into shape {_shape_str(tuple(sel_shape))}", source=user_source())
    if vshape != tuple(sel_shape):
        value = tnp.broadcast_to(value, tuple(sel_shape))
    return value


def _mask_assign(x: Tracer, mask: Tracer, value: Any) -> Tracer:
    """``x[mask] = v`` with a traced boolean mask and a single value: ``where``."""
    tnp = _tnp()
    if not isinstance(value, Tracer):
        value = np.asarray(value)
    if aval_of(value).size != 1:
        raise UnsupportedOperationError(
            "x[mask] = values with a traced mask: how many values are needed depends on the data",
            source=user_source(), hint="assign one value, or use x = np.where(mask, full_size_values, x)")
    value = tnp.reshape(value, ())
    if not isinstance(value, Tracer):
        value = np.asarray(value).astype(x.dtype)[()]
    elif value.dtype != x.dtype:
        value = tnp.astype(value, x.dtype)
    m = tnp.reshape(mask, mask.shape + (1,) * (x.ndim - mask.ndim))
    return tnp.where(m, value, x)


def _mask_and_box_assign(x: Tracer, parts: tuple, value: Any) -> Tracer:
    """``x[..., mask, 1:3] = v``: one traced boolean mask among ints and slices, one value."""
    tnp = _tnp()
    masks = [k for k, p in enumerate(parts) if isinstance(p, Tracer)]
    basic = all(p is Ellipsis or isinstance(p, slice) or (isinstance(p, int | np.integer) and not isinstance(p, bool))
                for k, p in enumerate(parts) if k not in masks)
    if len(masks) != 1 or not basic or parts[masks[0]].dtype != bool:
        raise UnsupportedOperationError(
            "item assignment with a traced boolean mask combined with index arrays",
            source=user_source(), hint="use x = np.where(mask, value, x)")
    k = masks[0]
    mask = parts[k]
    consumed = sum(1 for p in parts if p is not Ellipsis) - 1 + mask.ndim
    axis = 0
    for p in parts[:k]:
        axis += x.ndim - consumed if p is Ellipsis else 1
    if mask.shape != x.shape[axis:axis + mask.ndim]:
        raise ShapeError(f"item assignment: boolean mask of shape {_shape_str(mask.shape)} does not match "
                         f"axes {axis}.. of the array of shape {_shape_str(x.shape)}", source=user_source())
    box = np.zeros(x.shape, bool)
    box[parts[:k] + (slice(None),) * mask.ndim + parts[k + 1:]] = True  # what the other indices select
    m = tnp.logical_and(tnp.reshape(mask, (1,) * axis + mask.shape + (1,) * (x.ndim - axis - mask.ndim)), box)
    return _mask_assign(x, m, value)


def traced_like(builder: Any, func: Any, args: tuple, kwargs: dict) -> Any:
    """``np.zeros_like(x)`` (and ones/full/empty) of a traced ``x`` as a traced array, so the
    common ``out = np.zeros_like(x); out[i] = ...`` pattern can assign traced values into it."""
    a = aval_of(args[0])
    try:
        out = func(np.zeros(a.shape, a.dtype), *args[1:], **kwargs)
    except (TypeError, ValueError):
        return None
    if not isinstance(out, np.ndarray):
        return None
    if func is np.empty_like:
        out = np.zeros_like(out)
    flat = out.reshape(-1)
    if flat.size and not np.all(flat == flat[0]):
        return None
    return traced_constant(builder, np.asarray(flat[0] if flat.size else 0, out.dtype), tuple(out.shape))


def traced_constant(builder: Any, fill: np.ndarray, shape: tuple[int, ...]) -> Tracer:
    """A traced array of ``shape`` holding the constant ``fill`` broadcast (one node)."""
    from ..ir import PRIMITIVES, Aval

    return builder.add_node(PRIMITIVES["broadcast_to"], [builder.atom(fill)], {"shape": tuple(shape)},
                            Aval(tuple(shape), fill.dtype), user_source())


# ---------------------------------------------------------------- NumPy's in-place functions
def _target(func_name: str, dst: Any) -> Tracer:
    if not isinstance(dst, Tracer):
        raise UnsupportedOperationError(
            f"{func_name} would write traced values into a NumPy array, which cannot hold them",
            source=user_source(), hint="start from a traced array (out = np.zeros_like(x)) or build the result "
            "functionally")
    return dst


def _scatter_into(x: Tracer, idx: Any, values: Any, sign: int) -> Tracer:
    """``x`` plus (``sign=1``) or minus ``values`` added at ``idx``, repeated indices
    accumulating: ``np.add.at`` / ``np.subtract.at``."""
    tnp = _tnp()
    pos = np.arange(x.size).reshape(x.shape)
    parts = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(p, Tracer) for p in parts):
        sel = tnp.getitem(pos, idx)
    else:
        try:
            sel = pos[idx]
        except (IndexError, TypeError, ValueError) as err:
            raise _index_error(x, idx, err) from None
    shape = tuple(aval_of(sel).shape)
    v = _value_for(x, values, shape)
    if not isinstance(v, Tracer):
        v = traced_constant(x._builder, np.asarray(v), shape) if np.ndim(v) == 0 else \
            traced_constant(x._builder, np.asarray(v), tuple(np.shape(v)))
    flat_sel = tnp.reshape(sel, (-1,))
    added = scatter_add(tnp.reshape(v, (-1,)), [flat_sel], (("arr", 0),), (x.size,))
    added = tnp.reshape(added, x.shape)
    return tnp.add(x, added) if sign > 0 else tnp.subtract(x, added)


def ufunc_at(ufunc: Any, args: tuple) -> Any:
    """``np.add.at(x, idx, v)`` and ``np.subtract.at`` on a traced ``x``: in place, repeated
    indices accumulating (as NumPy). Returns None as NumPy does."""
    if ufunc not in (np.add, np.subtract) or len(args) != 3:
        raise UnsupportedOperationError(f"np.{ufunc.__name__}.at is not supported on traced values",
                                        source=user_source(), hint="np.add.at and np.subtract.at are")
    x = _target(f"np.{ufunc.__name__}.at", args[0])
    x._assign(_scatter_into(x, args[1], args[2], 1 if ufunc is np.add else -1), f"np.{ufunc.__name__}.at")
    return None


def inplace_function(func: Any, args: tuple, kwargs: dict) -> tuple[bool, Any]:
    """NumPy functions that write into their first argument: ``(handled, result)``."""
    tnp = _tnp()
    if func is np.copyto:
        dst = _target("np.copyto", args[0])
        src = args[1] if len(args) > 1 else kwargs.get("src")
        if kwargs.get("where", True) is not True:
            dst[...] = tnp.where(kwargs["where"], src, dst)
        else:
            dst[...] = src
        return True, None
    if func is np.put_along_axis:
        arr = _target("np.put_along_axis", args[0])
        indices, values = args[1], args[2]
        axis = args[3] if len(args) > 3 else kwargs.get("axis")
        if axis is None:
            raise UnsupportedOperationError("np.put_along_axis with axis=None on a traced array",
                                            source=user_source(), hint="pass an axis")
        pos = np.arange(arr.size).reshape(arr.shape)
        sel = tnp.take_along_axis(pos, indices, int(axis)) if isinstance(indices, Tracer) else \
            np.take_along_axis(pos, np.asarray(indices), int(axis))
        flat = tnp.reshape(arr, (-1,))
        written = set_index(flat, sel, values)
        arr._assign(tnp.reshape(written, arr.shape), "np.put_along_axis")
        return True, None
    if func is np.fill_diagonal:
        a = _target("np.fill_diagonal", args[0])
        val = args[1] if len(args) > 1 else kwargs.get("val")
        if a.ndim < 2 or len(set(a.shape)) != 1 or kwargs.get("wrap") or np.size(aval_of(val).shape) > 1:
            raise UnsupportedOperationError("np.fill_diagonal on a traced array supports square arrays and one value",
                                            source=user_source(), hint="use x[np.arange(n), np.arange(n)] = values")
        n = a.shape[0]
        a[(np.arange(n),) * a.ndim] = val
        return True, None
    return False, None


def _adv_axes(parts: tuple, ndim: int) -> list[tuple[Any, int]]:
    """(index array, axis it indexes) for the array-like parts of an index."""
    consumed = sum(1 for p in parts if p is not None and p is not Ellipsis)
    out, axis = [], 0
    for p in parts:
        if p is Ellipsis:
            axis += ndim - consumed
        elif p is None:
            continue
        else:
            if isinstance(p, Tracer | np.ndarray | list):
                out.append((p, axis))
            elif isinstance(p, int | np.integer) and not isinstance(p, bool):
                out.append((np.asarray(p), axis))
            axis += 1
    return out


def _provably_distinct(parts: tuple, shape: tuple[int, ...]) -> bool:
    """Whether the constant index arrays alone already pick distinct positions, so traced
    ones cannot repeat an element (``P[np.arange(N), y]``)."""
    adv = _adv_axes(parts, len(shape))
    const = [(np.asarray(a), ax) for a, ax in adv if not isinstance(a, Tracer)]
    if not const:
        return False
    try:
        b = np.broadcast_shapes(*[aval_of(a).shape if isinstance(a, Tracer) else np.shape(a) for a, _ in adv])
    except ValueError:
        return False
    if any(a.dtype.kind not in "iu" for a, _ in const):
        return False
    rows = np.stack([np.broadcast_to(a % shape[ax], b).reshape(-1) for a, ax in const], axis=1)
    return len(np.unique(rows, axis=0)) == rows.shape[0]


def set_index(x: Tracer, idx: Any, value: Any) -> Tracer:
    """The new value of ``x`` after NumPy's ``x[idx] = value`` (``x`` itself is unchanged)."""
    out = _set_index(x, idx, value)
    if not isinstance(out, Tracer):  # every written value was a constant
        out = traced_constant(x._builder, np.asarray(out, x.dtype), x.shape)
    elif out.dtype != x.dtype:
        out = _tnp().astype(out, x.dtype)
    return out


def _set_index(x: Tracer, idx: Any, value: Any) -> Any:
    tnp = _tnp()
    parts = idx if isinstance(idx, tuple) else (idx,)
    parts = tuple(np.asarray(p) if isinstance(p, list) and not any(isinstance(e, Tracer) for e in p) else p
                  for p in parts)
    traced = [p for p in parts if isinstance(p, Tracer)]
    size, shape = x.size, x.shape
    if traced:
        if len(parts) == 1 and traced[0].dtype == bool:
            mask = traced[0]
            if mask.shape != shape[:mask.ndim]:
                raise ShapeError(f"item assignment: boolean mask of shape {_shape_str(mask.shape)} does not match "
                                 f"the array of shape {_shape_str(shape)}", source=user_source())
            return _mask_assign(x, mask, value)
        if any(p.dtype.kind not in "iu" for p in traced):
            return _mask_and_box_assign(x, parts, value)
        sel = tnp.getitem(np.arange(size).reshape(shape), parts)  # flat positions, traced
        sel_shape = sel.shape
    else:
        try:
            sel = np.arange(size).reshape(shape)[parts]
        except (IndexError, TypeError, ValueError) as err:
            raise _index_error(x, idx, err) from None
        sel_shape = sel.shape
    v = _value_for(x, value, sel_shape)
    n = int(np.prod(sel_shape, dtype=np.int64))
    if n == 0:
        return x._fresh()
    scalar = not isinstance(v, Tracer) and np.ndim(v) == 0 or (
        not isinstance(v, Tracer) and np.all(np.asarray(v) == np.asarray(v).reshape(-1)[0]))
    if not traced:
        flat = sel.reshape(-1)
        _, first_from_end = np.unique(flat[::-1], return_index=True)
        winners = n - 1 - first_from_end  # the last write to each position wins, as in NumPy
        targets = flat[winners]
        mask = np.zeros(size, bool)
        mask[targets] = True
        mask = mask.reshape(shape)
        if scalar:
            c = np.asarray(v).reshape(-1)[0]
            if mask.all():
                return traced_constant(x._builder, np.asarray(c, x.dtype), shape)
            return tnp.astype(tnp.where(mask, c, x), x.dtype)
        src = np.zeros(size, np.intp)
        src[targets] = winners
        src = src.reshape(shape)
        vflat = tnp.reshape(v, (-1,))
        if mask.all() and np.array_equal(src.reshape(-1), np.arange(size)):
            return tnp.reshape(vflat, shape)
        gathered = tnp.getitem(vflat, src)
        return gathered if mask.all() else tnp.where(mask, gathered, x)
    # traced index arrays: positions, which of them win, and where each value lands
    flat = tnp.reshape(sel, (-1,))
    order = np.arange(n)
    if _provably_distinct(parts, shape):
        ids = order
    elif n <= _MAX_TRACED_WRITES:
        later = np.triu(np.ones((n, n), bool), k=1)
        repeated = tnp.logical_and(tnp.equal(tnp.reshape(flat, (n, 1)), tnp.reshape(flat, (1, n))), later)
        overwritten = tnp.greater(tnp.sum(tnp.astype(repeated, np.int64), axis=1), 0)
        ids = tnp.where(overwritten, -1, order)  # -1: a later write to the same position wins
    else:
        raise UnsupportedOperationError(
            f"item assignment through traced index arrays selecting {n} elements: NumPy's last-write-wins "
            f"rule for repeated indices is checked pairwise, up to {_MAX_TRACED_WRITES} elements",
            source=user_source(), hint="add a constant index array that makes the positions distinct "
            "(e.g. x[np.arange(N), y]), or pass the index as a constant")
    template = (("arr", 0),)
    won = tnp.greater_equal(ids, 0) if not isinstance(ids, np.ndarray) else np.ones(n, bool)
    hits = scatter_add(tnp.astype(won, np.int64) if isinstance(won, Tracer) else won.astype(np.int64),
                       [flat], template, (size,))
    mask = tnp.reshape(tnp.greater(hits, 0), shape)
    if scalar:
        c = np.asarray(v).reshape(-1)[0]
        return tnp.astype(tnp.where(mask, c, x), x.dtype)
    src = scatter_add(tnp.where(won, ids, 0) if isinstance(won, Tracer) else ids, [flat], template, (size,))
    gathered = tnp.getitem(tnp.reshape(v, (-1,)), tnp.reshape(src, shape))
    return tnp.where(mask, gathered, x)
