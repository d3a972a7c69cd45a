"""Block-sparse activity tangents for image pre-activations (issue 12, the CNN).

A conv layer's pre-activation ``z`` (B, C, H, W) has ``C * H * W`` units per example. Grouped
activity perturbation splits them into G blocks, one direction each; the variance of each
block's estimate grows with the units it holds, so a conv layer needs many small blocks —
channel groups x spatial blocks, e.g. one channel x 2x2 pixels. Materialized densely that is
a ``(K*G, B, C, H, W)`` tangent: G times the work of one.

``Cells`` keeps the G directions in *one* array ``values`` (K, B, C, H, W): unit
``(ch, y, x)`` belongs to block ``(ch // c, y // ph, x // pw)`` (``c`` channels x ``ph`` x
``pw`` pixels per block) and direction ``k * G + block`` is ``values[k]`` there, zero
elsewhere. What a local head does to it stays one array's work:

- an elementwise scale (the ReLU derivative, the mask) multiplies ``values``;
- an average pool whose windows hold whole blocks sums each block: ``Pooled`` holds, per
  direction, the ``c`` channels of its block at the one pooled cell it lands in;
- flattening keeps ``Pooled``; the head's ``@ W`` contracts those ``c`` channels with the
  matching rows of ``W`` — ``(K*G, B, n)``, dense from there on (n = the classes).

Everything else densifies (``Tangent``'s defaults): correct, at the old cost. The estimate of
the layer's parameters needs the cotangent ``Σ_k d[k, block] ⊙ values[k]``: ``cotangent``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Aval, Var
from ..tracing.dispatch import numpy_namespace
from . import tangents as T

__all__ = ["Cells", "Pooled", "Units", "cell_layout", "cotangent", "pool_window", "units_cotangent"]


def cell_layout(shape: tuple[int, ...], groups: int,
                window: tuple[int, int] | None = None) -> tuple[int, int, int] | None:
    """``(c, ph, pw)``: blocks of ``c`` channels x ``ph`` x ``pw`` pixels splitting a ``(B, C, H,
    W)`` pre-activation into exactly ``groups`` blocks, each inside one window of the average
    pool ``window`` that follows (if any); None when there is none. Prefers the fewest
    channels per block, then the squarest pixel block (every choice perturbs the same number
    of units per direction, ``C*H*W / G``)."""
    if len(shape) != 4 or groups < 2:
        return None
    _, C, H, W = shape
    best = None
    for c in (d for d in range(1, C + 1) if C % d == 0):
        for ph in (d for d in range(1, H + 1) if H % d == 0):
            rest = groups * c * ph
            if (C * H * W) % rest or W % ((C * H * W) // rest) or (C * H * W) // rest < 1:
                continue
            pw = (C * H * W) // rest
            if (C // c) * (H // ph) * (W // pw) != groups:
                continue
            if window is not None and (window[0] % ph or window[1] % pw):
                continue
            key = (c, abs(ph - pw))
            if best is None or key < best[0]:
                best = (key, (c, ph, pw))
    return None if best is None else best[1]


class Cells(T.Tangent):
    """G block-sparse directions of a ``(B, C, H, W)`` value in one ``(K, B, C, H, W)`` array
    (module docstring); ``layout`` is ``(c, ph, pw)``."""

    __slots__ = ("_aval", "layout", "values")

    def __init__(self, values: Any, aval: Aval, layout: tuple[int, int, int]):
        self.values, self._aval, self.layout = values, aval, layout

    @property
    def aval(self) -> Aval:
        return self._aval

    def grid(self) -> tuple[int, int, int]:
        """The number of blocks along channels, rows and columns (their product is G)."""
        _, C, H, W = self._aval.shape
        c, ph, pw = self.layout
        return C // c, H // ph, W // pw

    def _split(self) -> Any:
        """``values`` as (K, B, Gc, c, Gh, ph, Gw, pw)."""
        k = np.shape(self.values)[0]
        b = self._aval.shape[0]
        (gc, gh, gw), (c, ph, pw) = self.grid(), self.layout
        return numpy_namespace().reshape(self.values, (k, b, gc, c, gh, ph, gw, pw))

    def dense(self) -> Any:
        tnp = numpy_namespace()
        k = np.shape(self.values)[0]
        b, C, H, W = self._aval.shape
        (gc, gh, gw), (c, ph, pw) = self.grid(), self.layout
        g = gc * gh * gw
        # one-hot of the block: (G, Gc, 1, Gh, 1, Gw, 1) -> direction (k, block) keeps its block only
        eye = np.eye(g, dtype=self._aval.dtype).reshape(g, gc, 1, gh, 1, gw, 1)
        v = tnp.reshape(self._split(), (k, 1, b, gc, c, gh, ph, gw, pw))
        return tnp.reshape(tnp.multiply(v, eye.reshape(1, g, 1, gc, 1, gh, 1, gw, 1)), (k * g, b, C, H, W))

    def scale(self, factor: Any, out: Aval) -> T.Tangent:
        if out.shape != self._aval.shape or not out.is_float or len(np.shape(factor)) > len(out.shape):
            return super().scale(factor, out)
        tnp = numpy_namespace()
        v = tnp.multiply(self.values, factor)
        if tuple(np.shape(v))[1:] != out.shape:
            return super().scale(factor, out)
        return Cells(tnp.astype(v, out.dtype) if np.dtype(v.dtype) != out.dtype else v, out, self.layout)

    def map(self, lm: Any, out: Aval) -> T.Tangent:
        if lm.name != "avg_pool2d" or not out.is_float:
            return super().map(lm, out)
        window, stride = tuple(lm.params["window"]), tuple(lm.params["stride"])
        _, _, H, W = self._aval.shape
        c, ph, pw = self.layout
        if window != stride or H % window[0] or W % window[1] or window[0] % ph or window[1] % pw:
            return super().map(lm, out)
        tnp = numpy_namespace()
        k = np.shape(self.values)[0]
        (gc, gh, gw) = self.grid()
        si, sj = window[0] // ph, window[1] // pw  # blocks per window along rows, columns
        hq, wq = gh // si, gw // sj
        b, C = self._aval.shape[:2]
        # sum each block's ph x pw pixels: one slice-add per pixel offset (a reduce over two short
        # strided axes of a 10-d array is ~30x slower in NumPy)
        v = _sum_axis(tnp.reshape(self.values, (k, b, C, H, W // pw, pw)), 5)
        v = _sum_axis(tnp.reshape(v, (k, b, C, H // ph, ph, W // pw)), 4)
        v = tnp.multiply(tnp.reshape(v, (k, b, gc, c, hq, si, wq, sj)), 1.0 / (window[0] * window[1]))
        return Pooled(v, out)

    def neg(self) -> T.Tangent:
        return Cells(-self.values, self._aval, self.layout)


def _sum_axis(v: Any, axis: int) -> Any:
    """``v`` summed over its (short) ``axis``, by slices (dropping the axis)."""
    shape = tuple(np.shape(v))
    if shape[axis] == 1:
        return numpy_namespace().reshape(v, shape[:axis] + shape[axis + 1:])
    at = (slice(None),) * axis
    total = v[at + (0,)]
    for i in range(1, shape[axis]):
        total = total + v[at + (i,)]
    return total


class Pooled(T.Tangent):
    """``Cells`` after an average pool: ``values`` (K, B, Gc, c, Hq, si, Wq, sj); direction
    ``(k, gc, hq, si, wq, sj)`` (that order, the blocks' order) is the ``c``-vector
    ``values[k, :, gc, :, hq, si, wq, sj]`` on channels ``gc*c ... gc*c + c - 1`` at pooled cell
    ``(hq, wq)``, zero elsewhere. ``aval``: (B, C, Hq, Wq) or, flattened, (B, C*Hq*Wq)."""

    __slots__ = ("_aval", "values")

    def __init__(self, values: Any, aval: Aval):
        self.values, self._aval = values, aval

    @property
    def aval(self) -> Aval:
        return self._aval

    def _dims(self) -> tuple[int, ...]:
        return tuple(np.shape(self.values))

    def dense(self) -> Any:
        tnp = numpy_namespace()
        k, b, gc, c, hq, si, wq, sj = self._dims()
        g = gc * hq * si * wq * sj
        # direction (gc, hq, si, wq, sj) lands on channel block gc at pooled cell (hq, wq)
        eye = np.einsum("ad,be,cf->abcdef", np.eye(gc), np.eye(hq), np.eye(wq)).astype(self._aval.dtype)
        v = tnp.reshape(tnp.transpose(self.values, (0, 2, 4, 5, 6, 7, 1, 3)), (k, gc, hq, si, wq, sj, b, 1, c, 1, 1))
        full = tnp.multiply(v, eye.reshape(1, gc, hq, 1, wq, 1, 1, gc, 1, hq, wq))
        return tnp.reshape(full, (k * g,) + self._aval.shape)

    def map(self, lm: Any, out: Aval) -> T.Tangent:
        tnp = numpy_namespace()
        k, b, gc, c, hq, si, wq, sj = self._dims()
        if lm.name == "reshape" and out.shape == (b, gc * c * hq * wq) and out.dtype == self._aval.dtype:
            return Pooled(self.values, out)  # the flatten a head applies: same numbers
        w = lm.params.get("w") if lm.name == "matmul_left" else None
        if w is None or len(np.shape(w)) != 2 or len(self._aval.shape) != 2 or not out.is_float \
                or np.shape(w)[0] != gc * c * hq * wq:
            return super().map(lm, out)
        n = np.shape(w)[1]
        w5 = tnp.reshape(w, (gc, c, hq, wq, n))  # rows in flatten order (channel, row, col)
        r = tnp.einsum("kbgihsjt,gihjn->kghsjtbn", self.values, w5)
        return T.Dense(tnp.reshape(r, (k * gc * hq * si * wq * sj, b, n))).fit(out)

    def neg(self) -> T.Tangent:
        return Pooled(-self.values, self._aval)


def cotangent(d: Any, u: Cells) -> Any:
    """``Σ_k d[k*G + block(unit), b] * values[k, b, unit]``: the cotangent ``Σ_n d_n ⊙ u_n``
    of the point's output for the G block-sparse directions of ``u``, at one array's cost
    (``d``: (K*G, B), the per-example directional derivatives)."""
    tnp = numpy_namespace()
    k = np.shape(u.values)[0]
    b = u.aval.shape[0]
    gc, gh, gw = u.grid()
    dd = tnp.transpose(tnp.reshape(d, (k, gc, gh, gw, b)), (0, 4, 1, 2, 3))
    dd = tnp.reshape(dd, (k, b, gc, 1, gh, 1, gw, 1))
    ct = tnp.sum(tnp.multiply(dd, u._split()), axis=0)
    return tnp.reshape(ct, u.aval.shape)


def pool_window(graph: Any, start: Any) -> tuple[int, int] | None:
    """The window of the first average pool that ``start``'s value reaches through
    single-use elementwise ops (a local head: ReLU, then the pool), else None."""
    uses: dict[Var, list[Any]] = {}
    for node in graph.nodes:
        for a in node.inputs:
            if isinstance(a, Var):
                uses.setdefault(a, []).append(node)
    v = start
    for _ in range(len(graph.nodes)):
        users = [n for n in uses.get(v, []) if n.primitive.differentiable]
        if len(users) != 1:
            return None
        n = users[0]
        if n.primitive.name == "avg_pool2d":
            return tuple(n.params["window"]) if tuple(n.params["window"]) == tuple(n.params["stride"]) else None
        if not n.primitive.elementwise or n.outputs[0].aval.shape != start.aval.shape:
            return None
        v = n.outputs[0]
    return None


class Units(T.Tangent):
    """One unit per direction for a ``(B, w)`` value narrower than G: ``values`` (K, B, w);
    direction ``k * G + j`` is unit j (``values[k, :, j]``) for j < w and zero for j >= w —
    what ``tracegrad.activity``'s grouping gives such a layer, without the ``(K*G, B, w)``
    array (in a CNN with many blocks per conv layer, G is far above the hidden width)."""

    __slots__ = ("_aval", "groups", "values")

    def __init__(self, values: Any, aval: Aval, groups: int):
        self.values, self._aval, self.groups = values, aval, groups

    @property
    def aval(self) -> Aval:
        return self._aval

    def dense(self) -> Any:
        tnp = numpy_namespace()
        k = np.shape(self.values)[0]
        b, w = self._aval.shape
        eye = np.eye(self.groups, w, dtype=self._aval.dtype).reshape(1, self.groups, 1, w)
        return tnp.reshape(tnp.multiply(tnp.reshape(self.values, (k, 1, b, w)), eye), (k * self.groups, b, w))

    def scale(self, factor: Any, out: Aval) -> T.Tangent:
        if out.shape != self._aval.shape or not out.is_float or tuple(np.shape(factor)) not in ((), out.shape):
            return super().scale(factor, out)
        v = numpy_namespace().multiply(self.values, factor)
        return Units(v, out, self.groups) if np.dtype(v.dtype) == out.dtype else super().scale(factor, out)

    def map(self, lm: Any, out: Aval) -> T.Tangent:
        w = lm.params.get("w") if lm.name == "matmul_left" else None
        if w is None or len(np.shape(w)) != 2 or not out.is_float or np.shape(w)[0] != self._aval.shape[1]:
            return super().map(lm, out)
        tnp = numpy_namespace()
        k = np.shape(self.values)[0]
        b, width = self._aval.shape
        n = np.shape(w)[1]
        r = tnp.multiply(tnp.reshape(tnp.transpose(self.values, (0, 2, 1)), (k, width, b, 1)),
                         tnp.reshape(w, (1, width, 1, n)))  # (K, w, B, n): direction j is row j of W
        if self.groups > width:  # the directions past the width perturb nothing
            r = tnp.concatenate([r, np.zeros((k, self.groups - width, b, n), out.dtype)], axis=1)
        return T.Dense(tnp.reshape(r, (k * self.groups, b, n))).fit(out)

    def neg(self) -> T.Tangent:
        return Units(-self.values, self._aval, self.groups)


def units_cotangent(d: Any, u: Units) -> Any:
    """``Σ_k d[k*G + j, b] * values[k, b, j]`` for a ``Units`` tangent (``d``: (K*G, B))."""
    tnp = numpy_namespace()
    k = np.shape(u.values)[0]
    b, width = u.aval.shape
    dd = tnp.reshape(d, (k, u.groups, b))[:, :width]
    return tnp.sum(tnp.multiply(tnp.transpose(dd, (0, 2, 1)), u.values), axis=0)
