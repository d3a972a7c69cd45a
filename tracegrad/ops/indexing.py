"""Indexing primitives: NumPy basic + integer-array indexing, and take_along_axis.

``index`` takes the array and any integer index arrays as operands; ``template`` holds
the static part of the index, one entry per position: ``("slice", start, stop, step)``,
``("int", i)``, ``("arr", k)`` (the k-th index operand) or ``("none",)`` (newaxis).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._namespace import array_namespace
from ..ad.linear import LinearMap
from ..ad.rules import deflinear
from ..errors import DTypeError, IndexOutOfBoundsError, ShapeError
from ..ir import Aval
from ..tracing.source import user_source
from ..tracing.tracer import Tracer, aval_of, bind
from ._rules import broadcast_shapes, declare, fmt_shape, no_flops, normalize_axes, numpy_function
from .shape import reshape, transpose


def _entry_src(entry: tuple, arrays: list[str]) -> str:
    kind = entry[0]
    if kind == "int":
        return str(entry[1])
    if kind == "none":
        return "None"
    if kind == "arr":
        return arrays[entry[1]]
    _, start, stop, step = entry
    text = ("" if start is None else str(start)) + ":" + ("" if stop is None else str(stop))
    if step is not None:
        text += f":{step}"
    return text


def _index_lowering(x: str, *arrays: str, template: tuple) -> str:
    parts = [_entry_src(e, list(arrays)) for e in template]
    if len(parts) == 1:
        return f"{x}[{parts[0]}]" if template[0][0] != "slice" or parts[0] != ":" else f"{x}[:]"
    return f"{x}[{', '.join(parts)}]"


def _concrete_index(template: tuple, arrays: list[Any]) -> tuple:
    out = []
    for e in template:
        if e[0] == "int":
            out.append(e[1])
        elif e[0] == "none":
            out.append(None)
        elif e[0] == "arr":
            out.append(arrays[e[1]])
        else:
            out.append(slice(*e[1:]))
    return tuple(out)


def _index_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    x, *idx = avals
    for a in idx:
        if a.dtype.kind not in "iu":
            raise DTypeError(f"indexing: index arrays must be integers, got dtype {a.dtype}",
                             hint="cast with .astype(np.int64), or use np.where for boolean masks")
    dummy = np.broadcast_to(np.zeros((), np.int8), x.shape)
    stand_ins = [np.zeros(a.shape, np.intp) for a in idx]
    try:
        shape = dummy[_concrete_index(params["template"], stand_ins)].shape
    except IndexError as err:
        raise IndexOutOfBoundsError(f"indexing an array of shape {fmt_shape(x.shape)}: {err}") from None
    except ValueError as err:
        raise ShapeError(f"indexing an array of shape {fmt_shape(x.shape)}: {err}") from None
    return Aval(shape, x.dtype)


def _format_template(params: dict[str, Any]) -> str:
    """``[1:, #0, None]``: the index as written, ``#k`` standing for the k-th index operand."""
    template = params["template"]
    arrays = [f"#{k}" for k in range(sum(1 for e in template if e[0] == "arr"))]
    return ", ".join(_entry_src(e, arrays) for e in template)


def _is_view(avals: list[Aval], template: tuple) -> bool:
    """Basic indexing returns a view unless integers consume every axis (a scalar copy)."""
    ints = sum(1 for e in template if e[0] == "int")
    return len(avals) == 1 and avals[0].ndim - ints + sum(1 for e in template if e[0] == "none") > 0


index_p = declare("index", _index_lowering, _index_abstract, param_format=_format_template,
                  flops=no_flops, view=lambda avals, params: _is_view(avals, params["template"]),
                  cupy=lambda layout, params, n: layout.index(params["template"]) if n == 1 else None)


def _check_constant_indices(shape: tuple[int, ...], template: tuple, arrays: list[Any], what: str = "index") -> None:
    """Index arrays known at trace time are checked now, so an out-of-bounds one names the
    user's line instead of failing inside the generated code."""
    axis = 0
    for e in template:
        if e[0] == "none":
            continue
        if e[0] == "arr" and not isinstance(arrays[e[1]], Tracer) and np.size(arrays[e[1]]) and axis < len(shape):
            a, d = np.asarray(arrays[e[1]]), shape[axis]
            bad = a[(a >= d) | (a < -d)]
            if bad.size:
                raise IndexOutOfBoundsError(
                    f"{what} {int(bad.flat[0])} is out of bounds for axis {axis} with size {d}",
                    source=user_source(), hint=f"valid indices along axis {axis} are {-d} to {d - 1}")
        axis += 1


def index(x: Any, template: tuple, arrays: list[Any]) -> Any:
    _check_constant_indices(aval_of(x).shape, template, arrays)
    return bind(index_p, x, *arrays, template=tuple(template))


def _advanced_positions(template: tuple) -> list[int]:
    has_arr = any(e[0] == "arr" for e in template)
    if not has_arr:
        return []
    # With an index array present, NumPy treats integer scalars as advanced indices too.
    return [i for i, e in enumerate(template) if e[0] in ("arr", "int")]


def index_map(x, *arrays, template):
    """``v -> v[template]`` (direction axes kept in front); transpose: ``scatter_add``."""
    adv = _advanced_positions(template)
    separated = bool(adv) and adv != list(range(adv[0], adv[0] + len(adv)))
    adv_ndim = len(broadcast_shapes("indexing", *[aval_of(a).shape for a in arrays])) if separated else 0

    def fn(v: Any, nb: int) -> Any:
        out = index(v, (("slice", None, None, None),) * nb + template, arrays)
        if separated and nb:
            # NumPy moved the broadcast index dimensions in front of the direction axes.
            nd = len(np.shape(out))
            perm = tuple(range(adv_ndim, adv_ndim + nb)) + tuple(range(adv_ndim)) + tuple(range(adv_ndim + nb, nd))
            out = transpose(out, perm)
        return out

    return LinearMap("index", fn, lambda ct: scatter_add(ct, list(arrays), template, aval_of(x).shape),
                     template=template, arrays=arrays)



# ---------------------------------------------------------------- scatter_add (transpose of index)
def _scatter_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    v, *idx = avals
    shape = tuple(params["shape"])
    want = _index_abstract([Aval(shape, v.dtype), *idx], params)
    if v.shape != want.shape:
        raise ShapeError(f"scatter_add: values of shape {fmt_shape(v.shape)} do not fit the index "
                         f"[{_format_template(params)}] of an array of shape {fmt_shape(shape)}, "
                         f"which selects shape {fmt_shape(want.shape)}")
    return Aval(shape, v.dtype)


def tg_scatter_add(values: Any, index: Any, shape: tuple[int, ...], accumulate: bool) -> Any:
    """Zeros of ``shape`` with ``values`` added at ``index`` (a runtime helper of the NumPy
    lowering; NumPy or CuPy arrays). Basic indices select each element at most once: plain
    assignment. Index arrays may repeat an element, so those accumulate (``add.at``)."""
    xp = array_namespace(values)
    out = xp.zeros(shape, values.dtype if hasattr(values, "dtype") else np.result_type(values))
    if accumulate:
        xp.add.at(out, index, values)
    else:
        out[index] = values
    return out


def _scatter_lowering(v: str, *arrays: str, template: tuple, shape: tuple) -> str:
    idx = "np.s_[" + ", ".join(_entry_src(e, list(arrays)) for e in template) + "]"
    return f"tg_scatter_add({v}, {idx}, {shape!r}, accumulate={bool(arrays)})"


scatter_add_p = declare("scatter_add", _scatter_lowering, _scatter_abstract, runtime={"tg_scatter_add": tg_scatter_add},
                        param_format=lambda p: _format_template(p) + f"; shape={p['shape']}",
                        flops=lambda ins, outs, p: ins[0].size)  # one addition per scattered value


def scatter_add(values: Any, arrays: list[Any], template: tuple, shape: tuple[int, ...]) -> Any:
    """Zeros of ``shape`` with ``values`` added at ``[template]`` (repeated indices accumulate):
    the transpose of ``index``, which reverse mode needs for gathers."""
    return bind(scatter_add_p, values, *arrays, template=tuple(template), shape=tuple(int(d) for d in shape))


def _separated_adv_ndim(template: tuple, arrays: list[Any]) -> int:
    """Rank of the broadcast index arrays when NumPy moves them to the front, else 0."""
    adv = _advanced_positions(template)
    if not adv or adv == list(range(adv[0], adv[0] + len(adv))):
        return 0
    return len(broadcast_shapes("indexing", *[aval_of(a).shape for a in arrays]))


def scatter_add_map(v, *arrays, template, shape):
    """``t -> zeros(shape)[template] += t`` (directions kept in front); transpose: ``index``."""
    arrays = list(arrays)
    adv_ndim = _separated_adv_ndim(template, arrays)

    def fn(t: Any, nb: int) -> Any:
        batch = tuple(np.shape(t))[:nb]
        if adv_ndim and nb:
            # NumPy expects the broadcast index dimensions in front of the direction axes.
            nd = len(np.shape(t))
            t = transpose(t, tuple(range(nb, nb + adv_ndim)) + tuple(range(nb)) + tuple(range(nb + adv_ndim, nd)))
        return scatter_add(t, arrays, (("slice", None, None, None),) * nb + template, batch + shape)

    return LinearMap("scatter_add", fn, lambda ct: index(ct, template, arrays),
                     template=template, arrays=arrays, shape=shape)


deflinear(index_p, index_map)
deflinear(scatter_add_p, scatter_add_map)


# ---------------------------------------------------------------- take_along_axis
def _take_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    x, idx = avals
    axis = params["axis"]
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"take_along_axis: indices must be integers, got dtype {idx.dtype}")
    if len(idx.shape) != len(x.shape):
        raise ShapeError(f"take_along_axis: indices of shape {fmt_shape(idx.shape)} must have as many "
                         f"dimensions as the array of shape {fmt_shape(x.shape)}",
                         hint="add axes with indices[..., None]")
    rest = broadcast_shapes("take_along_axis",
                            tuple(d for i, d in enumerate(x.shape) if i != axis),
                            tuple(d for i, d in enumerate(idx.shape) if i != axis))
    shape = list(rest)
    shape.insert(axis, idx.shape[axis])
    return Aval(tuple(shape), x.dtype)


def _take_along_axis_cuda(read: Any, idx: list[str], i: str, *, axis: int) -> str:
    """CUDA: read x where the output index has the (wrapped) index value along ``axis``."""
    coords = list(idx)
    coords[axis] = f"({i} < 0 ? {i} + {read.shape[axis]} : {i})"
    return read(coords)


_ALONG: dict[tuple[Any, ...], tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]] = {}


def tg_take_along_axis(x: Any, indices: Any, axis: int) -> Any:
    """``np.take_along_axis(x, indices, axis)`` as one fancy index ``x[r_0, .., indices, .., r_n]``
    with the broadcasting ranges ``r_k`` built once per shape (NumPy's wrapper rebuilds them
    in Python on every call: 3-5 µs, twice per cross-entropy JVP). The same elements and
    the same errors for out-of-range indices; other array types go to their namespace's
    ``take_along_axis``."""
    if type(x) is not np.ndarray or type(indices) is not np.ndarray:
        return array_namespace(x, indices).take_along_axis(x, indices, axis=axis)
    key = (x.shape, axis)
    ranges = _ALONG.get(key)
    if ranges is None:
        nd = len(x.shape)
        r = [np.arange(d).reshape((1,) * k + (d,) + (1,) * (nd - k - 1)) for k, d in enumerate(x.shape)]
        ranges = (tuple(r[:axis]), tuple(r[axis + 1:]))
        if len(_ALONG) < 1024:
            _ALONG[key] = ranges
    return x[ranges[0] + (indices,) + ranges[1]]


take_along_axis_p = declare(
    "take_along_axis", lambda x, i, axis: f"tg_take_along_axis({x}, {i}, {axis})", _take_abstract,
    flops=no_flops, cuda=_take_along_axis_cuda, fusion="gather", gathered=(0,), numpy_names=("take_along_axis",),
    runtime={"tg_take_along_axis": tg_take_along_axis})


def take_along_axis(x: Any, indices: Any, axis: int) -> Any:
    shape = aval_of(x).shape
    if 0 <= int(axis) < len(shape):
        template = (("slice", None, None, None),) * int(axis) + (("arr", 0),)
        _check_constant_indices(shape, template, [indices], "take_along_axis: index")
    return bind(take_along_axis_p, x, indices, axis=int(axis))


def take_along_axis_map(x, idx, *, axis):
    idx_shape = aval_of(idx).shape

    def fn(v: Any, nb: int) -> Any:
        return take_along_axis(v, reshape(idx, (1,) * nb + idx_shape), axis + nb)

    return LinearMap("take_along_axis", fn, lambda ct: _take_along_axis_transpose(ct, x, idx, axis),
                     indices=idx, axis=axis)


deflinear(take_along_axis_p, take_along_axis_map)


@numpy_function(take_along_axis_p)
def np_take_along_axis(arr: Any, indices: Any, axis: int | None) -> Any:
    """``np.take_along_axis``; ``axis=None`` works on the flattened array."""
    if axis is None:
        from .shape import reshape

        return np_take_along_axis(reshape(arr, (-1,)), indices, 0)
    return take_along_axis(arr, indices, normalize_axes(axis, len(aval_of(arr).shape), "take_along_axis")[0])



def _take_along_axis_transpose(ct, x, idx, axis):
    # take_along_axis(x, i, axis) is x[r_0, ..., i, ..., r_n] with r_k = arange(x.shape[k])
    # shaped to broadcast along axis k, so its transpose is a scatter_add through that index.
    shape = aval_of(x).shape
    nd = len(shape)
    arrays = [idx if k == axis else np.arange(d).reshape((1,) * k + (d,) + (1,) * (nd - k - 1))
              for k, d in enumerate(shape)]
    template = tuple(("arr", k) for k in range(nd))
    return scatter_add(ct, arrays, template, shape)
