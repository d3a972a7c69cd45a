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
from tracegrad import perturb_point
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
    Case("mod_ops", lambda a, b: a % b + np.fmod(a, b) * 2.0 + (a // b) * a + np.remainder(3.7, b),
         [n(2, 5) * 3, np.array([0.7, -1.3, 2.1, -0.45, 1.9])], (0, 1), ("remainder", "fmod", "floor_divide", "mul")),
    Case("bitwise", lambda a, i: a * ((i & 6) | (i ^ 3)) + a * (~i) + a * ((i << 2) >> 1),
         [n(4), labels(4, k=9)], (0,), ("bitwise_and", "bitwise_or", "bitwise_xor", "invert", "left_shift",
                                        "right_shift", "mul")),
    Case("astype", lambda a: a.astype(np.float32).astype(np.float64) * 2, [n(4)], (0,), ("astype",),
         extra={"fd": {"eps": 1e-2, "rtol": 1e-4, "atol": 1e-4}}),  # linear: a large step is exact
    Case("astype_int", lambda a: a * a.astype(np.int64), [n(4) * 3], (0,), ("astype",)),
    Case("stop_gradient", lambda a: a * tnp.stop_gradient(a), [n(4)], (0,), ("stop_gradient",),
         extra={"numpy": lambda a: a * a, "skip_fd": True}),
    Case("perturb_point", lambda a: a * perturb_point(a), [n(4)], (0,), ("perturb_point",),
         extra={"numpy": lambda a: a * a}),
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
    Case("logaddexp", lambda a, b: np.logaddexp(a, b), [n(3, 4), n(4)], (0, 1), ("logaddexp",)),
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

# ---- coverage (issue 10): smooth elementwise
def unit(*shape):
    return R.uniform(-0.9, 0.9, shape)


def _product(pair):
    return pair[0] * pair[1]


def _finite_part(x):
    return np.where(np.isfinite(x), x, 0.0)


def with_specials(x, *specials):
    x = np.array(x, dtype=np.float64)
    x.flat[: len(specials)] = specials
    return x


CASES += [
    Case("tan", np.tan, [unit(5)], (0,), ("tan",), deriv=lambda x: 1 / np.cos(x) ** 2),
    Case("arcsin", np.arcsin, [unit(5)], (0,), ("arcsin",), deriv=lambda x: 1 / np.sqrt(1 - x**2)),
    Case("arccos", np.arccos, [unit(5)], (0,), ("arccos",), deriv=lambda x: -1 / np.sqrt(1 - x**2)),
    Case("sinh", np.sinh, [n(5)], (0,), ("sinh",), deriv=np.cosh),
    Case("cosh", np.cosh, [n(5)], (0,), ("cosh",), deriv=np.sinh),
    Case("arcsinh", np.arcsinh, [n(5)], (0,), ("arcsinh",), deriv=lambda x: 1 / np.sqrt(x**2 + 1)),
    Case("arccosh", np.arccosh, [R.uniform(1.5, 3.0, 5)], (0,), ("arccosh",), deriv=lambda x: 1 / np.sqrt(x**2 - 1)),
    Case("arctanh", np.arctanh, [unit(5)], (0,), ("arctanh",), deriv=lambda x: 1 / (1 - x**2)),
    Case("log2", np.log2, [pos(5)], (0,), ("log2",), deriv=lambda x: 1 / (x * np.log(2))),
    Case("log10", np.log10, [pos(5)], (0,), ("log10",), deriv=lambda x: 1 / (x * np.log(10))),
    Case("exp2", np.exp2, [n(5)], (0,), ("exp2",), deriv=lambda x: np.log(2) * np.exp2(x)),
    Case("cbrt", np.cbrt, [n(5) + np.sign(n(5)) * 0.5], (0,), ("cbrt",), deriv=lambda x: 1 / (3 * np.cbrt(x) ** 2)),
    Case("reciprocal", np.reciprocal, [pos(5)], (0,), ("div",), deriv=lambda x: -1 / x**2),
    Case("sinc", np.sinc, [with_specials(n(6), 0.0)], (0,), ("sin", "where")),
    Case("deg_rad", lambda x: np.deg2rad(x) + np.rad2deg(x) * 2 + np.radians(x) + np.degrees(x), [n(4)], (0,), ("mul",)),
    Case("arctan2", np.arctan2, [n(3, 4), n(4)], (0, 1), ("arctan2",)),
    Case("hypot", np.hypot, [n(3, 1), n(4)], (0, 1), ("hypot",)),
    Case("logaddexp2", np.logaddexp2, [n(4), n(3, 4)], (0, 1), ("log1p",)),
    Case("fmax", np.fmax, [with_specials(n(5), np.nan, 1.0), with_specials(n(5), 0.5, np.nan)], (0, 1), ("isnan", "where")),
    Case("fmin", np.fmin, [with_specials(n(5), np.nan, np.nan), with_specials(n(5), 0.5)], (0, 1), ("isnan", "where")),
    Case("copysign", lambda a, b: np.copysign(a, b), [n(5) + 3.0 * np.sign(n(5)), n(5)], (0, 1), ("signbit",)),
    Case("nan_to_num", lambda x: np.nan_to_num(x) * 1e-308 + np.nan_to_num(x, nan=1.5, posinf=2.0, neginf=-3.0),
         [with_specials(n(6), np.nan, np.inf, -np.inf)], (0,), ("isinf", "isnan")),
    Case("isnan_isinf_signbit", lambda x: _finite_part(x) * (np.signbit(x) + 2.0 * np.isnan(x) + 3.0 * np.isinf(x))
         + np.isposinf(x) * 1.0 - np.isneginf(x) * 2.0 + _finite_part(x),
         [with_specials(n(7), np.nan, np.inf, -np.inf)], (0,), ("isnan", "isinf", "signbit", "isfinite")),
    # piecewise constant: zero derivative, exact NumPy values and dtypes
    Case("rounding", lambda x: np.ceil(x) + np.trunc(x) * 2 + np.rint(x) * 3 + np.floor(x) + np.fix(x) + x,
         [n(6) * 3], (0,), ("ceil", "trunc", "rint", "floor")),
    Case("round", lambda x: np.round(x) + np.round(x, 2) * 2 + np.around(x * 100, -1) + x.round(1) + x,
         [n(6) * 3], (0,), ("round",)),
    Case("rounding_int", lambda x, i: x * np.ceil(i) + x * np.round(i, -1) + x * np.trunc(i), [n(5), labels(5, k=50)],
         (0,), ("ceil", "round", "trunc")),
]

# ---- coverage: reductions, scans and sorting
CASES += [
    Case("cumsum", lambda a: np.cumsum(a, axis=1) + a.cumsum(0), [n(3, 4)], (0,), ("cumsum",)),
    Case("cumsum_flat", lambda a: np.cumsum(a, dtype=np.float64), [n(2, 3)], (0,), ("cumsum",)),
    Case("cumprod", lambda a: np.cumprod(a, axis=-1), [with_specials(n(3, 4), 0.7, -1.2, 0.0)], (0,), ("cumprod",)),
    Case("cumprod_flat", lambda a: np.cumprod(a) + a.cumprod(axis=0).sum(), [with_specials(n(2, 3), 0.0)], (0,),
         ("cumprod",)),
    Case("diff", lambda a: np.diff(a) * 1.0, [n(3, 5)], (0,), ("sub",)),
    Case("diff_n_axis_prepend", lambda a: np.diff(a, n=2, axis=0, prepend=0.5, append=a[:1]), [n(4, 3)], (0,),
         ("sub", "concatenate")),
    Case("average", lambda a: np.average(a, axis=1) + np.average(a), [n(3, 4)], (0,), ("reduce_sum",)),
    Case("average_weights", lambda a, w: np.average(a, axis=0, weights=w), [n(4, 3), pos(4)], (0, 1), ("reduce_sum",)),
    Case("average_returned", lambda a, w: _product(np.average(a, axis=1, weights=w, returned=True)), [n(2, 3), pos(2, 3)], (0, 1),
         ("div",)),
    Case("ptp", lambda a: np.ptp(a, axis=1) + np.ptp(a), [n(3, 5)], (0,), ("reduce_max", "reduce_min")),
    Case("nansum_nanmean", lambda a: np.nansum(a, axis=0) + np.nanmean(a, axis=0) + np.nanmean(a),
         [with_specials(n(4, 3), np.nan, 0.5, np.nan)], (0,), ("isnan", "reduce_sum")),
    Case("nanmax_nanmin_nanvar", lambda a: np.nanmax(a, axis=0) - np.nanmin(a, axis=1, keepdims=True)
         + np.nanvar(a, axis=0) + np.nanstd(a, axis=1, ddof=1, keepdims=True) + np.nanvar(a),
         [with_specials(n(4, 3), np.nan, 0.5, 1.5, np.nan)], (0,), ("isnan", "reduce_max", "reduce_min")),
    Case("amax_amin", lambda a: np.amax(a, axis=0) - np.amin(a, axis=1, keepdims=True), [n(4, 4)], (0,),
         ("reduce_max", "reduce_min")),
    Case("any_all_count", lambda a, b: a * np.any(b > 1, axis=0) + np.all(b > -2, axis=0) * a
         + np.count_nonzero(b > 0, axis=0) * a + np.any(b) * 1.0 + np.all(b > 0) * 1.0 + np.count_nonzero(b > 0),
         [n(3), n(4, 3)], (0,), ("ne", "eq", "reduce_sum")),
    Case("sort", lambda a: np.sort(a) + np.sort(a, axis=0) * 2, [n(4, 5)], (0,), ("argsort", "take_along_axis")),
    Case("sort_flat", lambda a: np.sort(a, axis=None), [n(3, 2)], (0,), ("argsort",)),
    Case("argsort", lambda a: np.take_along_axis(a, np.argsort(-a, axis=1), axis=1) + np.argsort(a, axis=0),
         [n(3, 4)], (0,), ("argsort",)),
    Case("median", lambda a: np.median(a) + np.median(a, axis=0) + np.median(a, axis=1, keepdims=True),
         [n(4, 5)], (0,), ("argsort",)),
    Case("percentile", lambda a: np.percentile(a, [10, 50, 95], axis=1), [n(3, 7)], (0,), ("argsort",)),
    Case("quantile_methods", lambda a: sum(np.quantile(a, [0.2, 0.5, 0.7], axis=0, method=m)
                                           for m in ("linear", "lower", "higher", "midpoint", "nearest")),
         [n(6, 2)], (0,), ("argsort",)),
    Case("quantile_keepdims", lambda a: np.quantile(a, 0.3, axis=(0, 2), keepdims=True), [n(3, 2, 4)], (0,),
         ("argsort",)),
]

# ---- coverage: shapes, indexing and products
CASES += [
    Case("diagonal", lambda a: np.diagonal(a, 1)[:, :3] + np.diagonal(a, -1, 2, 0)[:4], [n(4, 5, 4)], (0,), ("index",)),
    Case("diag", lambda v, m: np.diag(v) + np.diag(v[:3], 1) + np.diag(np.diag(m)) + np.diag(m, -1).sum(),
         [n(4), n(4, 4)], (0, 1), ("scatter_add", "index")),
    Case("trace", lambda a: np.trace(a) + np.trace(a, 1) + a.trace(), [n(4, 4)], (0,), ("index", "reduce_sum")),
    Case("tril_triu", lambda a: np.tril(a) + 2 * np.triu(a, 1) + np.tril(a, -1)[..., ::-1], [n(2, 4, 3)], (0,),
         ("where",)),
    Case("flip", lambda a: np.flip(a) + np.flip(a, 1) * 2 + np.fliplr(a) + np.flipud(a), [n(3, 4)], (0,), ("index",)),
    Case("rot90", lambda a: np.rot90(a) + np.rot90(a, 2) + np.rot90(a, 3) + np.rot90(a, -4), [n(3, 3)], (0,),
         ("index", "transpose")),
    Case("rot90_axes", lambda a: np.rot90(a, 1, axes=(2, 0)), [n(2, 3, 4)], (0,), ("index", "transpose")),
    Case("roll", lambda a: np.roll(a, 2) + np.roll(a, -1, axis=1) + np.roll(a, (1, 5), axis=(0, 1)), [n(3, 4)],
         (0,), ("concatenate",)),
    Case("pad_constant", lambda a: np.pad(a, ((1, 0), (2, 1)), constant_values=((0.5, 1.5), (2.5, 3.5)))[:, 1:] + 1
         + np.pad(a, 1)[1:], [n(2, 3)], (0,), ("concatenate",)),
    Case("pad_modes", lambda a: sum(np.pad(a, ((2, 3), (1, 4)), mode=m) for m in ("edge", "reflect", "symmetric", "wrap")),
         [n(3, 2)], (0,), ("index",)),
    Case("tile_repeat", lambda a: np.tile(a, (2, 1, 2)).sum(0)[:, 1:4] + np.repeat(a, 2, axis=1)[:, ::2] + np.repeat(a, [1, 0, 2], axis=1),
         [n(2, 3)], (0,), ("broadcast_to", "index")),
    Case("repeat_flat", lambda a: np.repeat(a, 3) + a.repeat(3), [n(2, 2)], (0,), ("index",)),
    Case("atleast", lambda a, s: np.atleast_1d(s) * np.atleast_2d(a) + np.atleast_3d(a)[..., 0] + np.atleast_3d(s),
         [n(3), n()], (0, 1), ("reshape",)),
    Case("dstack_column_stack", lambda a, b: np.dstack([a, b]).sum(-1) + np.column_stack([a[0], b[0], a[1]]).T[:2],
         [n(2, 3), n(2, 3)], (0, 1), ("concatenate",)),
    Case("split", lambda a: sum(p * (k + 1) for k, p in enumerate(np.split(a, 2, axis=1)))
         + np.concatenate(np.split(a, [1, 3], axis=1), axis=1)[:, :2], [n(3, 4)], (0,), ("index",)),
    Case("hvdsplit", lambda a: np.hsplit(a, 2)[1].sum(1) + np.vsplit(a, [1])[1].sum(0)[:3] + np.dsplit(a, 3)[2][:, :3, 0],
         [n(3, 4, 3)], (0,), ("index",)),
    Case("rollaxis", lambda a: np.rollaxis(a, 2) + np.rollaxis(a, 0, 3).transpose(2, 0, 1), [n(3, 3, 3)], (0,),
         ("transpose",)),
    Case("select_real_conj", lambda a, b: np.select([a > 0.5, b > 0], [a * b, np.conj(b)], default=np.real(a))
         + np.conjugate(a) + np.imag(a), [n(6), n(6)], (0, 1), ("where",)),
    Case("array_split", lambda a: np.concatenate([p[:1] * (k + 1) for k, p in enumerate(np.array_split(a, 3))]),
         [n(7)], (0,), ("index",)),
    Case("array_of_traced", lambda a, b: tnp.array([[a[0], b], [1.0, a[1] * b]]) + tnp.asarray([a[1], a[0]]),
         [n(2), n()], (0, 1), ("concatenate",), extra={"numpy": lambda a, b: np.array([[a[0], b], [1.0, a[1] * b]])
                                                        + np.asarray([a[1], a[0]])}),
    Case("index_range_mask", lambda a: a[range(1, 4)] * 2 + a[np.array([True, False, True, True, False])]
         + a[[True, True, False, False, True]], [n(5)], (0,), ("index",)),
    Case("ravel_flatten", lambda a: a.flatten() + np.ravel(a) + a.ravel(), [n(2, 3)], (0,), ("reshape",)),
    Case("outer_inner", lambda a, b: np.outer(a, b).sum(0) + np.inner(a, b), [n(3), n(3)], (0, 1), ("mul",)),
    Case("kron", lambda a, b: np.kron(a, b), [n(2, 3), n(3, 2)], (0, 1), ("mul", "reshape")),
    Case("kron_ranks", lambda a, b: np.kron(a, b), [n(3), n(2, 2)], (0, 1), ("mul",)),
    Case("cross", lambda a, b: np.cross(a, b), [n(4, 3), n(3)], (0, 1), ("sub",)),
    Case("cross_axes", lambda a, b: np.cross(a, b, axisa=0, axisb=0, axisc=0), [n(3, 2), n(3, 2)], (0, 1), ("sub",)),
    Case("vdot", lambda a, b: np.vdot(a, b), [n(2, 3), n(3, 2)], (0, 1), ("matmul",)),
    Case("einsum_trace_diag", lambda a: np.einsum("ii", a) + np.einsum("ii->i", a).sum() + np.einsum("iji->j", a[None][[0, 0, 0]].transpose(2, 1, 0)[:3, :, :3]).sum(),
         [n(3, 3)], (0,), ("einsum",)),
    Case("einsum_implicit", lambda a, b: np.einsum("ij,jk", a, b) + np.einsum("ba", a @ b), [n(3, 4), n(4, 3)], (0, 1),
         ("einsum",)),
    Case("einsum_ellipsis_bcast", lambda a, b: np.einsum("...i,i...->...", a, b), [n(2, 3), n(3, 2)], (0, 1),
         ("einsum",)),
    Case("einsum_outer_sum", lambda a, b: np.einsum("i,j->ij", a, b) + np.einsum("ij->", a[:, None] * b), [n(3), n(2)],
         (0, 1), ("einsum",)),
]



def _np_put(a, i, v, axis):
    out = a.copy()
    np.put_along_axis(out, i, v, axis)
    return out


CASES += [
    Case("put_along_axis", lambda a, v, i: tnp.put_along_axis(a, i[:, None], v[:, None], axis=1, inplace=False),
         [n(4, 5), n(4), labels(4)], (0, 1), ("put_along_axis",),
         extra={"numpy": lambda a, v, i: _np_put(a, i[:, None], v[:, None], 1)}),
    # repeated indices: the last write wins, in value and in derivative
    Case("put_along_axis_repeats", lambda a, v: tnp.put_along_axis(a, np.array([[0, 2, 0], [1, 1, 3]]), v, axis=1,
                                                                   inplace=False),
         [n(2, 4), n(2, 3)], (0, 1), ("put_along_axis",),
         extra={"numpy": lambda a, v: _np_put(a, np.array([[0, 2, 0], [1, 1, 3]]), v, 1)}),
    Case("put_along_axis_scalar", lambda a, i: tnp.put_along_axis(a, i[None, :], 0.5, axis=0, inplace=False),
         [n(5, 3), labels(3)], (0,), ("put_along_axis",),
         extra={"numpy": lambda a, i: _np_put(a, i[None, :], 0.5, 0)}),
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
