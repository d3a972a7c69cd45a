"""Neural-network primitives on NCHW images: conv2d, max_pool2d, avg_pool2d.

Params are normalized pairs of ints: ``stride`` and ``padding`` (rows, cols) for conv2d,
``window`` and ``stride`` for the pools (which never pad; a partial last window is
dropped, like PyTorch). NumPy lowerings:

- conv2d is one call of ``tg_conv2d`` (a runtime helper put in the generated module's
  globals, so the line stays readable and a debugger can step in): im2col + one GEMM per
  image: ``sliding_window_view`` of the padded input (a view), one copy into
  ``(N, C*kh*kw, H'*W')`` and ``w.reshape(O, -1) @ cols``, which lands directly in NCHW
  order (measured 2x faster than one big NHWC GEMM followed by a transpose on 2 cores).
- the pools combine the kh*kw strided slices ``x[:, :, i::sh, j::sw]`` elementwise (a
  max or a sum over a window axis of size 2-9 is ~20x slower in NumPy than that).

JVP rules: conv2d is bilinear (``conv(x_dot, w) + conv(x, w_dot)``; the direction axes
of a tangent are folded into the batch axis N of x, or into the output-channel axis O
of w, and unfolded after); avg_pool2d is linear (directions folded into N); max_pool2d
routes the tangent of the first arg-max of each window (row-major order) with a chain
of ``where`` over the same strided slices the primal uses, so it costs kh*kw - 1
elementwise selects and no reductions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ad import tangents as T
from ..ad.linear import LinearMap
from ..ad.rules import defbilinear, deflinear
from ..errors import DTypeError, ShapeError
from ..ir import Aval
from ..tracing.tracer import aval_of, bind
from ._rules import declare, fmt_shape
from .elementwise import add, equal, logical_and, logical_not, logical_or, where
from .indexing import index, scatter_add
from .linalg import matmul
from .reductions import reduce_sum
from .shape import broadcast_to, concatenate, reshape, transpose

__all__ = [
    "avg_pool2d",
    "avg_pool2d_p",
    "conv2d",
    "conv2d_p",
    "conv_output_size",
    "max_pool2d",
    "max_pool2d_p",
    "pair",
]


# ---------------------------------------------------------------- shared helpers
def pair(value: Any, name: str, op: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints as ``(rows, cols)``, each at least ``minimum``."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        out = (int(value), int(value))
    else:
        try:
            out = tuple(int(v) for v in value)
        except TypeError:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None
        if len(out) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return out  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Output length of a window of ``kernel`` sliding with ``stride`` over ``size + 2 padding``."""
    return (size + 2 * padding - kernel) // stride + 1


def _check_image(op: str, what: str, a: Aval, layout: str) -> None:
    if len(a.shape) != 4:
        raise ShapeError(f"{op}: {what} must be 4-D {layout}, got shape {fmt_shape(a.shape)}",
                         hint="add a channel axis with x[:, None] or reshape to (N, C, H, W)")


def _check_float(op: str, *avals: Aval) -> None:
    for a in avals:
        if a.dtype.kind != "f":
            raise DTypeError(f"{op}: operands must be floating point, got dtype {a.dtype}",
                             hint="cast with .astype(np.float32)")


def _window_slices(window: tuple[int, int], stride: tuple[int, int]) -> list[tuple[tuple, tuple]]:
    """The kh*kw strided slices (start, stop, step) along H and W, in row-major window order.

    Offset ``i`` takes rows ``i, i + sh, ...`` up to ``H - (kh - 1 - i)`` (exclusive), which
    is exactly H' = (H - kh) // sh + 1 rows for every H >= kh, so no shape is needed."""
    (kh, kw), (sh, sw) = window, stride

    def axis(i: int, k: int, s: int) -> tuple:
        return (i, -(k - 1 - i) if i < k - 1 else None, s)

    return [(axis(i, kh, sh), axis(j, kw, sw)) for i in range(kh) for j in range(kw)]


def _slice_src(s: tuple) -> str:
    start, stop, step = s
    text = f"{start or ''}:{'' if stop is None else stop}"
    return text + (f":{step}" if step != 1 else "")


def _fold_directions(op: Any, v: Any, nb: int, core: tuple[int, ...], out_shape: tuple[int, ...]) -> Any:
    """``op`` on a tangent ``v`` of shape (directions..., N, ...) with the directions folded
    into the batch axis N (one call for all of them), unfolded again after."""
    lead = tuple(np.shape(v)[:nb])
    r = op(reshape(v, (math.prod(lead) * core[0],) + core[1:]))
    return reshape(r, lead + out_shape)


def _slice_template(rows: tuple, cols: tuple, nbatch: int = 0) -> tuple:
    full = ("slice", None, None, None)
    return (full,) * (2 + nbatch) + (("slice", *rows), ("slice", *cols))


def _pool_abstract(op: str):
    def rule(avals: list[Aval], params: dict[str, Any]) -> Aval:
        (x,) = avals
        _check_image(op, "input", x, "(N, C, H, W)")
        (kh, kw), (sh, sw) = params["window"], params["stride"]
        n, c, h, w = x.shape
        if kh > h or kw > w:
            raise ShapeError(f"{op}: window {fmt_shape((kh, kw))} is larger than the input image "
                             f"{fmt_shape((h, w))} of the input of shape {fmt_shape(x.shape)}",
                             hint="use a smaller window, or fewer pooling layers for small images")
        shape = (n, c, conv_output_size(h, kh, sh), conv_output_size(w, kw, sw))
        if x.dtype.kind not in "biuf":
            raise DTypeError(f"{op}: unsupported dtype {x.dtype}")
        dtype = x.dtype if op == "max_pool2d" else np.result_type(x.dtype, 1.0)
        return Aval(shape, np.dtype(dtype))

    return rule


# ---------------------------------------------------------------- conv2d
def _conv_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    x, w = avals
    _check_image("conv2d", "input", x, "(N, C, H, W)")
    _check_image("conv2d", "weight", w, "(O, C, kh, kw)")
    _check_float("conv2d", x, w)
    (sh, sw), (ph, pw) = params["stride"], params["padding"]
    n, c, h, wd = x.shape
    o, wc, kh, kw = w.shape
    if c != wc:
        raise ShapeError(
            f"conv2d: input of shape {fmt_shape(x.shape)} has {c} channels but the weight of shape "
            f"{fmt_shape(w.shape)} expects {wc} (weights are (out_channels, in_channels, kh, kw))",
            hint="check the layer's in_channels, or transpose a weight stored as (kh, kw, C, O)")
    if kh > h + 2 * ph or kw > wd + 2 * pw:
        raise ShapeError(
            f"conv2d: kernel {fmt_shape((kh, kw))} of the weight of shape {fmt_shape(w.shape)} is larger "
            f"than the padded image {fmt_shape((h + 2 * ph, wd + 2 * pw))} of the input of shape "
            f"{fmt_shape(x.shape)}", hint="pad the input (padding=...) or use a smaller kernel")
    shape = (n, o, conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw))
    return Aval(shape, np.result_type(x.dtype, w.dtype))


def tg_conv2d(x: np.ndarray, w: np.ndarray, stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """NumPy conv2d (NCHW): im2col over a ``sliding_window_view`` of the padded input, then
    ``w.reshape(O, -1) @ cols`` per image, which lands directly in NCHW order."""
    (sh, sw), (ph, pw) = stride, padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::sh, ::sw]
    n, _, ho, wo = windows.shape[:4]
    cols = np.transpose(windows, (0, 1, 4, 5, 2, 3)).reshape(n, -1, ho * wo)  # (N, C*kh*kw, H'*W')
    return np.matmul(w.reshape(w.shape[0], -1), cols).reshape(n, w.shape[0], ho, wo)


def _conv_lowering(x: str, w: str, stride: tuple[int, int], padding: tuple[int, int]) -> str:
    return f"tg_conv2d({x}, {w}, stride={stride}, padding={padding})"


def _format_conv(params: dict[str, Any]) -> str:
    return f"stride={params['stride']}, padding={params['padding']}"


def _conv_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """2*N*O*H'*W'*C*kh*kw: each output element is a dot product of length C*kh*kw."""
    _, c, kh, kw = avals[1].shape
    return 2 * outs[0].size * c * kh * kw


def _pool_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """One operation per window element read (a reduction over each kh*kw window)."""
    kh, kw = params["window"]
    return outs[0].size * kh * kw


conv2d_p = declare("conv2d", _conv_lowering, _conv_abstract, param_format=_format_conv, flops=_conv_flops,
                   runtime={"tg_conv2d": tg_conv2d}, cupy="im2col_gemm")


def conv2d(x: Any, w: Any, stride: Any = 1, padding: Any = 0) -> Any:
    """2-D cross-correlation of ``x`` (N, C, H, W) with ``w`` (O, C, kh, kw), like PyTorch."""
    return bind(conv2d_p, x, w, stride=pair(stride, "stride", "conv2d", 1),
                padding=pair(padding, "padding", "conv2d", 0))


_FULL = ("slice", None, None, None)


def conv2d_input(x, w, *, stride, padding):
    """``v -> conv2d(v, w)``: the map of the input's tangent, directions folded into N.
    Transpose: ``ct`` spread onto the stride-1 output grid (zeros between strided positions),
    fully convolved with the flipped, channel-swapped kernel."""
    x_core, w_core = aval_of(x).shape, aval_of(w).shape
    out_shape = _conv_abstract([aval_of(x), aval_of(w)], {"stride": stride, "padding": padding}).shape

    def dense(v: Any, nb: int) -> Any:  # (K, N, C, H, W): directions folded into N
        return _fold_directions(lambda u: conv2d(u, w, stride, padding), v, nb, x_core, out_shape)

    def transpose_(ct: Any) -> Any:
        (n, _, h, wd), (o, _, kh, kw) = x_core, w_core
        (sh, sw), (ph, pw) = stride, padding
        grid = (h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1)
        ctd = ct
        if tuple(aval_of(ct).shape[2:]) != grid:
            ctd = scatter_add(ct, [], (_FULL, _FULL, ("slice", 0, None, sh), ("slice", 0, None, sw)), (n, o) + grid)
        flipped = index(w, (_FULL, _FULL, ("slice", None, None, -1), ("slice", None, None, -1)), [])
        flipped = transpose(flipped, (1, 0, 2, 3))
        if ph < kh and pw < kw:  # pad only as far as the unpadded input reaches: no crop needed
            return conv2d(ctd, flipped, 1, (kh - 1 - ph, kw - 1 - pw))
        ct_x = conv2d(ctd, flipped, 1, (kh - 1, kw - 1))
        return index(ct_x, (_FULL, _FULL, ("slice", ph, ph + h, None), ("slice", pw, pw + wd, None)), [])

    return LinearMap("conv2d_input", dense, transpose_, w=w, stride=stride, padding=padding)


def conv2d_weight(x, w, *, stride, padding):
    """``v -> conv2d(x, v)``: the map of the kernel's tangent, directions folded into O.
    Transpose: per image, ``ct`` (O, H'W') times the transposed im2col matrix of the padded
    input (C kh kw, H'W'), summed over images — the forward pass's own GEMM shape (measured
    2.3x faster than correlating x with ct)."""
    w_core = aval_of(w).shape
    out_shape = _conv_abstract([aval_of(x), aval_of(w)], {"stride": stride, "padding": padding}).shape

    def dense(v: Any, nb: int) -> Any:  # (K, O, C, kh, kw): directions folded into O
        lead = tuple(np.shape(v)[:nb])
        r = conv2d(x, reshape(v, (math.prod(lead) * w_core[0],) + w_core[1:]), stride, padding)
        r = reshape(r, out_shape[:1] + lead + out_shape[1:])  # (N, K, O, H', W')
        return transpose(r, tuple(range(1, nb + 1)) + (0,) + tuple(range(nb + 1, nb + 4)))

    def transpose_(ct: Any) -> Any:
        (n, c, h, wd), (o, _, kh, kw) = aval_of(x).shape, w_core
        (sh, sw), (ph, pw) = stride, padding
        ho, wo = aval_of(ct).shape[2:]
        xp = x
        if (ph, pw) != (0, 0):
            xp = scatter_add(x, [], (_FULL, _FULL, ("slice", ph, ph + h, None), ("slice", pw, pw + wd, None)),
                             (n, c, h + 2 * ph, wd + 2 * pw))
        taps = [index(xp, (_FULL, _FULL, ("slice", a, a + sh * (ho - 1) + 1, sh),
                           ("slice", b, b + sw * (wo - 1) + 1, sw)), [])
                for a in range(kh) for b in range(kw)]
        cols = concatenate([reshape(t, (n, c, 1, ho, wo)) for t in taps], 2)  # (N, C, kh kw, H', W')
        cols = transpose(reshape(cols, (n, c * kh * kw, ho * wo)), (0, 2, 1))
        per_image = matmul(reshape(ct, (n, o, ho * wo)), cols)  # (N, O, C kh kw)
        return reshape(reduce_sum(per_image, (0,)), (o, c, kh, kw))

    return LinearMap("conv2d_weight", dense, transpose_, x=x, stride=stride, padding=padding)


defbilinear(conv2d_p, conv2d_input, conv2d_weight)


# ---------------------------------------------------------------- max_pool2d
def _max_pool_lowering(x: str, window: tuple[int, int], stride: tuple[int, int]) -> str:
    parts = [f"{x}[:, :, {_slice_src(r)}, {_slice_src(c)}]" for r, c in _window_slices(window, stride)]
    expr = parts[0]
    for p in parts[1:]:
        expr = f"np.maximum({expr}, {p})"
    return expr


def _format_pool(params: dict[str, Any]) -> str:
    return f"window={params['window']}, stride={params['stride']}"


def _window_reads(read: Any, idx: list[str], window: tuple[int, int], stride: tuple[int, int]) -> list[str]:
    """CUDA: the kh*kw inputs of output (n, c, oh, ow), in the NumPy lowering's order."""
    n, c, oh, ow = idx
    (kh, kw), (sh, sw) = window, stride
    return [read([n, c, f"{oh} * {sh} + {i}", f"{ow} * {sw} + {j}"]) for i in range(kh) for j in range(kw)]


def _max_pool_cuda(read: Any, idx: list[str], *, window: tuple[int, int], stride: tuple[int, int]) -> str:
    vals = _window_reads(read, idx, window, stride)
    expr = vals[0]
    for v in vals[1:]:
        expr = f"tg_maximum({expr}, {v})"
    return expr


max_pool2d_p = declare("max_pool2d", _max_pool_lowering, _pool_abstract("max_pool2d"), param_format=_format_pool,
                       flops=_pool_flops, cuda=_max_pool_cuda, fusion="gather", gathered=(0,))


def _pool_params(op: str, window: Any, stride: Any) -> dict[str, tuple[int, int]]:
    window = pair(window, "window", op, 1)
    return {"window": window, "stride": window if stride is None else pair(stride, "stride", op, 1)}


def max_pool2d(x: Any, window: Any, stride: Any = None) -> Any:
    """Max over ``window`` (kh, kw) patches of ``x`` (N, C, H, W); ``stride`` defaults to ``window``."""
    return bind(max_pool2d_p, x, **_pool_params("max_pool2d", window, stride))


def max_pool2d_jvp(primals, tangents, *, window, stride):
    (x,) = primals
    y = max_pool2d(x, window, stride)
    out = aval_of(y)
    slices = _window_slices(window, stride)

    def tangent_at(rows: tuple, cols: tuple) -> Any:
        return tangents[0].map(LinearMap("index", lambda v, nb: index(v, _slice_template(rows, cols, nb), []),
                                         template=_slice_template(rows, cols), arrays=()), out)

    # Walk the window backwards so the earliest position holding the max wins ties.
    t = tangent_at(*slices[-1])
    for rows, cols in reversed(slices[:-1]):
        is_max = equal(index(x, _slice_template(rows, cols), []), y)
        t = T.select(is_max, tangent_at(rows, cols), t, out)
    return y, t


max_pool2d_p.jvp = max_pool2d_jvp


def _pool_scatter(parts: list[Any], x_shape: tuple[int, ...], window: tuple[int, int],
                  stride: tuple[int, int]) -> Any:
    """Place each window offset's cotangent (one array of the output's shape per offset, in
    ``_window_slices`` order) back at the input positions that offset read, summing overlaps."""
    (kh, kw), (sh, sw) = window, stride
    n, c, h, w = x_shape
    if (kh, kw) != (sh, sw):  # overlapping or gapped windows: one scatter per offset
        total = None
        for part, (rows, cols) in zip(parts, _window_slices(window, stride)):
            placed = scatter_add(part, [], _slice_template(rows, cols), x_shape)
            total = placed if total is None else add(total, placed)
        return total
    # Windows tile the input: interleave the offsets with one concatenate, transpose and reshape.
    ho, wo = aval_of(parts[0]).shape[2:]
    if all(p is parts[0] for p in parts):
        tiles = broadcast_to(reshape(parts[0], (n, c, ho, 1, wo, 1)), (n, c, ho, kh, wo, kw))
    else:
        tiles = concatenate([reshape(p, (n, c, ho, wo, 1)) for p in parts], 4)
        tiles = transpose(reshape(tiles, (n, c, ho, wo, kh, kw)), (0, 1, 2, 4, 3, 5))
    out = reshape(tiles, (n, c, ho * kh, wo * kw))
    if (ho * kh, wo * kw) != (h, w):  # rows/cols of a dropped partial window get nothing
        out = scatter_add(out, [], _slice_template((0, ho * kh, 1), (0, wo * kw, 1)), x_shape)
    return out


def max_pool2d_vjp(ct, primals, y, *, window, stride):
    # Like max_pool2d_jvp, the first arg-max of each window (row-major) takes the cotangent.
    (x,) = primals
    parts, taken = [], None
    for rows, cols in _window_slices(window, stride):
        hit = equal(index(x, _slice_template(rows, cols), []), y)
        first = hit if taken is None else logical_and(hit, logical_not(taken))
        taken = hit if taken is None else logical_or(taken, hit)
        parts.append(where(first, ct, 0.0))
    return (_pool_scatter(parts, aval_of(x).shape, window, stride),)


max_pool2d_p.vjp = max_pool2d_vjp


# ---------------------------------------------------------------- avg_pool2d
def _avg_pool_lowering(x: str, window: tuple[int, int], stride: tuple[int, int]) -> str:
    parts = [f"{x}[:, :, {_slice_src(r)}, {_slice_src(c)}]" for r, c in _window_slices(window, stride)]
    return f"({' + '.join(parts)}) / {len(parts)}"


avg_pool2d_p = declare("avg_pool2d", _avg_pool_lowering, _pool_abstract("avg_pool2d"),
                       param_format=_format_pool, flops=_pool_flops, fusion="gather", gathered=(0,),
                       cuda=lambda read, idx, *, window, stride: (
                           f"({' + '.join(_window_reads(read, idx, window, stride))}) / {window[0] * window[1]}"))


def avg_pool2d(x: Any, window: Any, stride: Any = None) -> Any:
    """Mean over ``window`` (kh, kw) patches of ``x`` (N, C, H, W); ``stride`` defaults to ``window``."""
    return bind(avg_pool2d_p, x, **_pool_params("avg_pool2d", window, stride))


def avg_pool2d_map(x, *, window, stride):
    """Linear: directions folded into N; the transpose shares ``ct`` over each window."""
    core = aval_of(x).shape
    out_shape = _pool_abstract("avg_pool2d")([aval_of(x)], {"window": window, "stride": stride}).shape

    def dense(v: Any, nb: int) -> Any:  # (K, N, C, H, W): directions folded into N
        return _fold_directions(lambda u: avg_pool2d(u, window, stride), v, nb, core, out_shape)

    def transpose_(ct: Any) -> Any:
        share = ct / (window[0] * window[1])
        return _pool_scatter([share] * (window[0] * window[1]), core, window, stride)

    return LinearMap("avg_pool2d", dense, transpose_, window=window, stride=stride)


deflinear(avg_pool2d_p, avg_pool2d_map)
