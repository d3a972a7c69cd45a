"""One declarative table of op cases, shared by the per-primitive tests.

Each case is plain NumPy code (as a user would write it), its float64 arguments, the
argument positions that get tangents, and the primitives it exercises. Unary elementwise
cases also carry a hand-derived derivative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import tracegrad.numpy as tnp
from tracegrad.nn import functional as F
from tracegrad.ops.indexing import scatter_add

R = np.random.default_rng(1234)


def n(*shape):
    return R.standard_normal(shape)


def pos(*shape):
    return R.uniform(0.5, 2.0, shape)


def labels(*shape, k=5):
    return R.integers(0, k, shape)


@dataclass
class Case:
    name: str
    fn: Callable[..., Any]
    args: list[Any]
    argnums: tuple[int, ...] = (0,)
    prims: tuple[str, ...] = ()
    deriv: Callable[[np.ndarray], np.ndarray] | None = None  # hand-derived f'(x), unary only
    extra: dict = field(default_factory=dict)


CASES = [
    # elementwise binary, with broadcasting
    Case("add", lambda a, b: a + b, [n(3, 4), n(4)], (0, 1), ("add",)),
    Case("add_bcast_both", lambda a, b: a + b, [n(3, 1), n(1, 4)], (0, 1), ("add",)),
    Case("add_scalar_arr", lambda a, b: a + b, [n(), n(2, 3)], (0, 1), ("add",)),
    Case("sub", lambda a, b: a - b, [n(2, 3), n(3)], (0, 1), ("sub",)),
    Case("rsub_scalar", lambda a: 2.5 - a, [n(4)], (0,), ("sub",)),
    Case("mul", lambda a, b: a * b, [n(3, 1), n(4)], (0, 1), ("mul",)),
    Case("div", lambda a, b: a / b, [n(3, 4), pos(3, 1)], (0, 1), ("div",)),
    Case("rdiv_scalar", lambda a: 1.0 / a, [pos(5)], (0,), ("div",), deriv=lambda x: -1 / x**2),
    Case("neg", lambda a: -a, [n(2, 3)], (0,), ("neg",), deriv=lambda x: -np.ones_like(x)),
    Case("pow_scalar", lambda a: a**3, [n(4)], (0,), ("pow",), deriv=lambda x: 3 * x**2),
    Case("pow_array", lambda a, b: a**b, [pos(3, 2), n(2)], (0, 1), ("pow",)),
    Case("pow_base_scalar", lambda b: 2.0**b, [n(3)], (0,), ("pow",), deriv=lambda x: np.log(2) * 2.0**x),
    Case("maximum", lambda a, b: np.maximum(a, b), [n(3, 4), n(4)], (0, 1), ("maximum",)),
    Case("relu", lambda a: np.maximum(a, 0), [n(6)], (0,), ("maximum",), deriv=lambda x: (x > 0) * 1.0),
    Case("minimum", lambda a, b: np.minimum(a, b), [n(3, 4), n(3, 1)], (0, 1), ("minimum",)),
    # elementwise unary
    Case("exp", np.exp, [n(3, 2)], (0,), ("exp",), deriv=np.exp),
    Case("log", np.log, [pos(4)], (0,), ("log",), deriv=lambda x: 1 / x),
    Case("log1p", np.log1p, [pos(4)], (0,), ("log1p",), deriv=lambda x: 1 / (1 + x)),
    Case("expm1", np.expm1, [n(4)], (0,), ("expm1",), deriv=np.exp),
    Case("sqrt", np.sqrt, [pos(4)], (0,), ("sqrt",), deriv=lambda x: 0.5 / np.sqrt(x)),
    Case("abs", np.abs, [n(5)], (0,), ("abs",), deriv=np.sign),
    Case("sin", np.sin, [n(5)], (0,), ("sin",), deriv=np.cos),
    Case("cos", np.cos, [n(5)], (0,), ("cos",), deriv=lambda x: -np.sin(x)),
    Case("tanh", np.tanh, [n(5)], (0,), ("tanh",), deriv=lambda x: 1 - np.tanh(x) ** 2),
    Case("arctan", np.arctan, [n(5)], (0,), ("arctan",), deriv=lambda x: 1 / (1 + x**2)),
    Case("sigmoid", lambda x: tnp.sigmoid(x), [n(5)], (0,), ("logistic",),
         deriv=lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2, extra={"numpy": lambda x: 1 / (1 + np.exp(-x))}),
    Case("square", np.square, [n(5)], (0,), ("mul",), deriv=lambda x: 2 * x),
    Case("sign_times", lambda x: np.sign(x) * x, [n(5)], (0,), ("sign", "mul")),
    Case("floor_mix", lambda x: np.floor(x) + x, [n(5)], (0,), ("floor", "add")),
    # selection and comparisons
    Case("where", lambda c, a, b: np.where(c > 0, a, b), [n(3, 4), n(3, 4), n(4)], (1, 2), ("where", "gt")),
    Case("where_scalar_branch", lambda a: np.where(a > 0, a, 0.1 * a), [n(7)], (0,), ("where", "gt")),
    Case("clip", lambda a: np.clip(a, -0.5, 0.5), [n(8)], (0,), ("clip",)),
    Case("clip_arrays", lambda a, lo, hi: np.clip(a, lo, hi), [n(6), n(6) - 1, n(6) + 1], (0, 1, 2), ("clip",)),
    Case("compare", lambda a, b: ((a < b) | (a >= 1.0)) * a + (a == b) * 1.0 + (a != b) * b
         + (a <= 0) * 0.5 + ~(a > b) * a + np.logical_and(a > 0, b > 0) * 2.0,
         [n(6), n(6)], (0, 1), ("lt", "ge", "logical_or", "eq", "ne", "le", "logical_not", "gt", "logical_and")),
    Case("isfinite", lambda a: np.where(np.isfinite(a), a, 0.0), [n(4)], (0,), ("isfinite", "where")),
    Case("astype", lambda a: a.astype(np.float32).astype(np.float64) * 2, [n(4)], (0,), ("astype",),
         extra={"fd": {"eps": 1e-2, "rtol": 1e-4, "atol": 1e-4}}),  # linear: a large step is exact
    Case("astype_int", lambda a: a * a.astype(np.int64), [n(4) * 3], (0,), ("astype",)),
    Case("stop_gradient", lambda a: a * tnp.stop_gradient(a), [n(4)], (0,), ("stop_gradient",),
         extra={"numpy": lambda a: a * a, "skip_fd": True}),
    # reductions
    Case("sum_all", np.sum, [n(3, 4)], (0,), ("reduce_sum",)),
    Case("sum_axis", lambda a: np.sum(a, axis=1), [n(3, 4, 2)], (0,), ("reduce_sum",)),
    Case("sum_keepdims", lambda a: a.sum(axis=(0, -1), keepdims=True), [n(3, 4, 2)], (0,), ("reduce_sum",)),
    Case("mean", lambda a: np.mean(a, axis=0), [n(5, 3)], (0,), ("reduce_sum", "div")),
    Case("max", lambda a: np.max(a, axis=1), [n(4, 6)], (0,), ("reduce_max",)),
    Case("max_all_keep", lambda a: a.max(keepdims=True), [n(4, 6)], (0,), ("reduce_max",)),
    Case("min", lambda a: np.min(a, axis=0), [n(4, 6)], (0,), ("reduce_min",)),
    Case("var", lambda a: np.var(a, axis=1), [n(4, 6)], (0,), ("reduce_sum",)),
    Case("std_ddof", lambda a: np.std(a, axis=0, ddof=1), [n(5, 3)], (0,), ("sqrt",)),
    Case("logsumexp", lambda a: tnp.logsumexp(a, axis=1), [n(4, 6) * 3], (0,), ("reduce_max", "exp", "log"),
         extra={"numpy": lambda a: np.log(np.sum(np.exp(a), axis=1))}),
    Case("argmax", lambda a: a[np.arange(4), np.argmax(a, axis=1)] * 1.0, [n(4, 6)], (0,), ("argmax", "index")),
    Case("argmin", lambda a: np.argmin(a, axis=0) * 1.0 + np.sum(a), [n(4, 6)], (0,), ("argmin",)),
    # linear algebra
    Case("matmul", lambda a, b: a @ b, [n(3, 4), n(4, 5)], (0, 1), ("matmul",)),
    Case("matmul_vec_mat", lambda a, b: a @ b, [n(4), n(4, 5)], (0, 1), ("matmul",)),
    Case("matmul_mat_vec", lambda a, b: a @ b, [n(3, 4), n(4)], (0, 1), ("matmul",)),
    Case("matmul_vec_vec", lambda a, b: a @ b, [n(4), n(4)], (0, 1), ("matmul",)),
    Case("matmul_batched", lambda a, b: np.matmul(a, b), [n(2, 3, 4), n(4, 5)], (0, 1), ("matmul",)),
    Case("matmul_bcast", lambda a, b: a @ b, [n(3, 4), n(2, 4, 5)], (0, 1), ("matmul",)),
    Case("matmul_vec_batch", lambda a, b: a @ b, [n(4), n(2, 4, 5)], (0, 1), ("matmul",)),
    Case("matmul_batch_vec", lambda a, b: a @ b, [n(2, 3, 4), n(4)], (0, 1), ("matmul",)),
    Case("dot", lambda a, b: np.dot(a, b), [n(3, 4), n(4, 2)], (0, 1), ("matmul",)),
    Case("dot_nd", lambda a, b: np.dot(a, b), [n(2, 3), n(2, 3, 4)], (0, 1), ("einsum",)),
    Case("einsum", lambda a, b: np.einsum("ij,kj->ik", a, b), [n(3, 4), n(5, 4)], (0, 1), ("einsum",)),
    Case("einsum_ellipsis", lambda a, b: np.einsum("...ij,...jk", a, b), [n(2, 3, 4), n(2, 4, 5)], (0, 1), ("einsum",)),
    Case("tensordot", lambda a, b: np.tensordot(a, b, axes=([1, 2], [0, 1])), [n(2, 3, 4), n(3, 4, 5)], (0, 1), ("einsum",)),
    # shapes
    Case("reshape", lambda a: a.reshape(4, -1) * 1.0, [n(2, 3, 2)], (0,), ("reshape",)),
    Case("transpose", lambda a: a.T, [n(2, 3, 4)], (0,), ("transpose",)),
    Case("transpose_axes", lambda a: np.transpose(a, (1, 0, 2)), [n(2, 3, 4)], (0,), ("transpose",)),
    Case("swapaxes", lambda a: np.swapaxes(a, 0, 2), [n(2, 3, 4)], (0,), ("transpose",)),
    Case("moveaxis", lambda a: np.moveaxis(a, 0, -1), [n(2, 3, 4)], (0,), ("transpose",)),
    Case("expand_squeeze", lambda a: np.squeeze(np.expand_dims(a, 1), 1) + np.expand_dims(a, 0), [n(3)], (0,), ("reshape",)),
    Case("broadcast_to", lambda a: np.broadcast_to(a, (4, 2, 3)), [n(2, 1)], (0,), ("broadcast_to",)),
    Case("concatenate", lambda a, b: np.concatenate([a, b], axis=1), [n(2, 3), n(2, 2)], (0, 1), ("concatenate",)),
    Case("concatenate_const", lambda a: np.concatenate([a, np.ones((1, 3))]), [n(2, 3)], (0,), ("concatenate",)),
    Case("stack", lambda a, b: np.stack([a, b], axis=-1), [n(2, 3), n(2, 3)], (0, 1), ("concatenate", "reshape")),
    Case("ravel", lambda a: np.ravel(a), [n(2, 3)], (0,), ("reshape",)),
    # indexing
    Case("slice", lambda a: a[1:, ::2], [n(4, 5)], (0,), ("index",)),
    Case("slice_neg_step", lambda a: a[::-1, 1], [n(4, 5)], (0,), ("index",)),
    Case("int_newaxis_ellipsis", lambda a: a[..., 0, None], [n(2, 3, 4)], (0,), ("index",)),
    Case("int_array", lambda a, i: a[i], [n(5, 3), labels(4)], (0,), ("index",)),
    Case("int_array_2d", lambda a, i, j: a[i, j], [n(5, 3), labels(4), labels(4, k=3)], (0,), ("index",)),
    Case("int_array_separated", lambda a, i: a[i, :, 1], [n(5, 3, 4), labels(2)], (0,), ("index",)),
    Case("int_array_const", lambda a: a[:, np.array([2, 0, 2])], [n(3, 4)], (0,), ("index",)),
    Case("take_along_axis", lambda a, i: np.take_along_axis(a, i[:, None], axis=1), [n(4, 5), labels(4)], (0,), ("take_along_axis",)),
    Case("take", lambda a, i: np.take(a, i, axis=1), [n(3, 5), labels(4)], (0,), ("index",)),
    # scatter_add: the transpose of index (reverse mode emits it; called directly here)
    Case("scatter_add_arrays", lambda v, i: scatter_add(v, [i], (("arr", 0),), (5, 3)),
         [n(6, 3), np.array([0, 4, 0, 2, 4, 0])], (0,), ("scatter_add",),
         extra={"numpy": lambda v, i: _np_add_at((5, 3), (i,), v)}),
    Case("scatter_add_slices", lambda v: scatter_add(v, [], (("slice", 1, None, None), ("slice", None, None, 2)), (4, 5)),
         [n(3, 3)], (0,), ("scatter_add",),
         extra={"numpy": lambda v: _np_add_at((4, 5), np.s_[1:, ::2], v)}),
    Case("scatter_add_separated", lambda v, i: scatter_add(v, [i], (("arr", 0), ("slice", None, None, None), ("int", 1)), (5, 3, 4)),
         [n(2, 3), labels(2)], (0,), ("scatter_add",),
         extra={"numpy": lambda v, i: _np_add_at((5, 3, 4), (i, slice(None), 1), v)}),
    # neural-network helpers
    Case("softmax", lambda a: tnp.softmax(a, axis=-1), [n(3, 5)], (0,), ("exp",),
         extra={"numpy": lambda a: np.exp(a) / np.exp(a).sum(-1, keepdims=True)}),
    Case("log_softmax", lambda a: tnp.log_softmax(a), [n(3, 5)], (0,), ("exp",),
         extra={"numpy": lambda a: a - np.log(np.exp(a).sum(-1, keepdims=True))}),
    Case("cross_entropy", lambda a, y: tnp.cross_entropy(a, y), [n(4, 5), labels(4)], (0,), ("take_along_axis",),
         extra={"numpy": lambda a, y: -np.mean((a - np.log(np.exp(a).sum(-1, keepdims=True)))[np.arange(4), y])}),
    Case("one_hot", lambda a, y: np.sum(a * tnp.one_hot(y, 5, np.float64)), [n(4, 5), labels(4)], (0,), ("eq", "astype"),
         extra={"numpy": lambda a, y: np.sum(a * np.eye(5)[y])}),
    Case("logaddexp", lambda a, b: np.logaddexp(a, b), [n(4), n(4)], (0, 1), ("log1p",)),
    Case("mlp_layer", lambda x, w, b: np.tanh(x @ w + b), [n(6, 4), n(4, 3), n(3)], (1, 2), ("matmul", "tanh")),
    # neural-network primitives (NCHW), against naive loop references below
    Case("conv2d", lambda x, w: F.conv2d(x, w), [n(2, 3, 5, 6), n(4, 3, 3, 2)], (0, 1), ("conv2d",),
         extra={"numpy": lambda x, w: naive_conv2d(x, w, (1, 1), (0, 0))}),
    Case("conv2d_stride_pad", lambda x, w: F.conv2d(x, w, stride=(2, 1), padding=(1, 2)),
         [n(2, 2, 5, 4), n(3, 2, 3, 3)], (0, 1), ("conv2d",),
         extra={"numpy": lambda x, w: naive_conv2d(x, w, (2, 1), (1, 2))}),
    Case("conv2d_wide_pad", lambda x, w: F.conv2d(x, w, stride=2, padding=3), [n(1, 2, 5, 4), n(2, 2, 2, 2)],
         (0, 1), ("conv2d",), extra={"numpy": lambda x, w: naive_conv2d(x, w, (2, 2), (3, 3))}),
    Case("max_pool2d", lambda x: F.max_pool2d(x, 2), [n(2, 3, 5, 4)], (0,), ("max_pool2d",),
         extra={"numpy": lambda x: naive_pool(x, (2, 2), (2, 2), np.max)}),
    Case("max_pool2d_overlap", lambda x: F.max_pool2d(x, (3, 2), stride=1), [n(1, 2, 4, 5)], (0,), ("max_pool2d",),
         extra={"numpy": lambda x: naive_pool(x, (3, 2), (1, 1), np.max)}),
    Case("avg_pool2d_tiled", lambda x: F.avg_pool2d(x, 2), [n(1, 2, 5, 6)], (0,), ("avg_pool2d",),
         extra={"numpy": lambda x: naive_pool(x, (2, 2), (2, 2), np.mean)}),
    Case("avg_pool2d", lambda x: F.avg_pool2d(x, 2, stride=(1, 2)), [n(2, 2, 4, 5)], (0,), ("avg_pool2d",),
         extra={"numpy": lambda x: naive_pool(x, (2, 2), (1, 2), np.mean)}),
]

from linalg_cases import LINALG_CASES

CASES += LINALG_CASES
CASE_IDS = [c.name for c in CASES]


def naive_conv2d(x, w, stride, padding):
    """Cross-correlation by explicit loops over output positions (the definition)."""
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    o, _, kh, kw = w.shape
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.zeros((x.shape[0], o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out


def naive_pool(x, window, stride, reduce):
    (kh, kw), (sh, sw) = window, stride
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = reduce(x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw], axis=(2, 3))
    return out


def _np_add_at(shape, idx, v):
    out = np.zeros(shape, v.dtype)
    np.add.at(out, idx, v)
    return out


def numpy_reference(case: Case) -> Callable[..., Any]:
    return case.extra.get("numpy", case.fn)
