"""The NumPy coverage of issue 10 beyond the op-case table: dtypes and edge values against
NumPy, second derivatives of the new rules, and the clear errors for what cannot be traced."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import errors
from tracegrad.ad import jvp_graph, vjp_graph
from tracegrad.testing import check_jvp
from tracegrad.transforms import optimize

R = np.random.default_rng(99)
F64 = R.standard_normal((4, 5))
F32 = F64.astype(np.float32)
I32 = R.integers(-20, 20, (4, 5)).astype(np.int32)
B = F64 > 0

# (name, fn, args): compiled value, shape and dtype must equal NumPy's exactly
VALUE_CASES = [
    ("cumsum_int32", lambda a: np.cumsum(a, axis=0), [I32]),
    ("cumsum_bool", lambda a: np.cumsum(a), [B]),
    ("cumprod_f32", lambda a: np.cumprod(a, axis=1), [F32]),
    ("round_int", lambda a: np.round(a, -1) + np.round(a), [I32]),
    ("round_half_even", lambda a: np.round(a) + np.round(a * 0.1, 1), [np.array([0.5, 1.5, 2.5, -0.5, 0.25])]),
    ("ceil_trunc_int", lambda a: np.ceil(a) + np.trunc(a), [I32]),
    ("rint_int", lambda a: np.rint(a), [I32]),
    ("reciprocal_int", lambda a: np.reciprocal(a), [I32[I32 != 0]]),
    ("log2_exact", lambda a: np.log2(a) + np.log10(a * 10), [np.array([1.0, 2.0, 8.0, 1024.0])]),
    ("trig_f32", lambda a: np.arcsin(a * 0.1) + np.cosh(a) + np.arctan2(a, 1.5) + np.hypot(a, a), [F32]),
    ("any_all_count", lambda a: (np.any(a, axis=0), np.all(a > -1, axis=1), np.count_nonzero(a),
                                 np.any(a[:0], axis=0)), [F64]),
    ("quantile_int", lambda a: np.quantile(a, [0.25, 0.5], axis=0) + np.median(a), [I32]),
    ("median_even_odd", lambda a: (np.median(a), np.median(a[:, :3], axis=1)), [F64]),
    ("median_nan", lambda a: (np.median(a, axis=1), np.percentile(a, 50)), [np.where(F64 > 1.0, np.nan, F64)]),
    ("sort_int_stable", lambda a: (np.sort(a, axis=0), np.argsort(a, axis=1, kind="stable")), [I32 % 3]),
    ("diff_bool", lambda a: np.diff(a, axis=0), [B]),
    ("ptp_int", lambda a: np.ptp(a, axis=1), [I32]),
    ("pad_int", lambda a: np.pad(a, ((0, 2), (1, 1)), constant_values=7), [I32]),
    ("pad_large_reflect", lambda a: (np.pad(a, 7, mode="reflect"), np.pad(a, (6, 5), mode="symmetric")), [F64[:2, :3]]),
    ("tril_bool", lambda a: (np.tril(a), np.triu(a, 2)), [B]),
    ("diag_offsets", lambda a: (np.diag(a[0], -2), np.diag(a, 3), np.diagonal(a, -3)), [F64]),
    ("nan_to_num_f32", lambda a: np.nan_to_num(a), [np.array([np.nan, np.inf, -np.inf, 1.5], np.float32)]),
    ("fmax_nan_both", lambda a, b: (np.fmax(a, b), np.fmin(a, b)), [np.array([np.nan, 1.0]), np.array([np.nan, np.nan])]),
    ("copysign_zero", lambda a, b: np.copysign(a, b), [np.array([0.0, 2.0, -3.0]), np.array([-0.0, -1.0, 0.0])]),
    ("sinc_zero", lambda a: np.sinc(a), [np.array([0.0, 0.5, -1.0, 1e-9])]),
    ("split_list", lambda a: np.array_split(a, 3, axis=1), [F64]),
    ("einsum_forms", lambda a: (np.einsum("ij->", a), np.einsum("...j->j...", a), np.einsum("ii->i", a[:, :4])), [F64]),
    ("array_methods", lambda a: (a.cumsum(), a.cumprod(0), a.argsort(), a.any(0), (a > 0).all(keepdims=True),
                                 a.repeat(2, axis=1), a.diagonal(1), a.trace(), a.round(1)), [F64]),
    ("nan_reductions", lambda a: (np.nanmax(a, axis=1), np.nanmin(a), np.nanvar(a, axis=1), np.nanstd(a),
                                  np.nanmean(a, axis=1)), [np.where(F64 > 0.5, np.nan, F64).astype(np.float32)]),
    ("nan_all_nan", lambda a: (np.nanmax(a, axis=0), np.nanmean(a, axis=0)), [np.array([[np.nan, 1.0], [np.nan, 2.0]])]),
    ("quantile_f32", lambda a: (np.quantile(a, [0.3, 0.5], axis=1), np.median(a, axis=0), np.quantile(a, 0.3),
                                np.percentile(a, 40, axis=0), np.quantile(a, np.float32(0.2)),
                                np.quantile(a, [0.5], method="lower")), [F32]),
    ("average_weights_int", lambda a: np.average(a, axis=1, weights=[1, 2, 3, 4, 5]), [I32]),
]


@pytest.mark.parametrize(("name", "fn", "args"), VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_values_and_dtypes_match_numpy(name, fn, args):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's all-NaN slice notices
        want = fn(*args)
        got = tg.compile(fn)(*args)
    want_leaves = want if isinstance(want, tuple | list) else [want]
    got_leaves = got if isinstance(got, tuple | list) else [got]
    assert len(got_leaves) == len(want_leaves)
    for g, w in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-6 if w.dtype == np.float32 else 1e-13, atol=0)
        np.testing.assert_array_equal(np.signbit(g), np.signbit(w))


def test_eager_calls_on_plain_arrays_match_numpy():
    """tracegrad.numpy's functions also compute eagerly on NumPy arrays."""
    x = F64
    np.testing.assert_allclose(tnp.cumprod(x, 1), np.cumprod(x, 1))
    np.testing.assert_allclose(tnp.quantile(x, [0.1, 0.9], axis=0), np.quantile(x, [0.1, 0.9], axis=0))
    np.testing.assert_allclose(tnp.pad(x, 2, mode="wrap"), np.pad(x, 2, mode="wrap"))
    np.testing.assert_allclose(tnp.rot90(x, 3), np.rot90(x, 3))
    np.testing.assert_allclose(tnp.kron(x[:2, :2], x[:2]), np.kron(x[:2, :2], x[:2]))


@pytest.mark.parametrize("fn", [
    lambda x: np.sum(np.cumprod(x) ** 2),
    lambda x: np.sum(np.sort(x) * np.arange(5.0)) + np.median(x) ** 2,
    lambda x: np.sum(np.arcsinh(x) * np.cosh(x)) + np.sum(np.arctan2(x, 1.5) ** 2),
    lambda x: np.sum(tnp.put_along_axis(x, np.array([1, 3, 1]), x[:3] ** 2, 0, inplace=False) ** 2),
], ids=["cumprod", "sort_median", "trig", "put_along_axis"])
def test_second_order_forward_over_reverse(fn):
    """The new rules are written with traced ops, so Hessian-vector products come for free."""
    x = np.array([0.3, -0.8, 0.0, 1.1, 0.5])
    v = np.array([1.0, -2.0, 0.5, 0.25, -0.7])
    primal = tg.compile(fn).graph(x, optimized=False)
    hvp_graph, _ = jvp_graph(optimize(vjp_graph(primal, [True])), [True])
    hvp = hvp_graph.validate().interpret(x, v)[-1]
    grad = tg.grad(fn)
    eps = 1e-6
    np.testing.assert_allclose(hvp, (grad(x + eps * v) - grad(x - eps * v)) / (2 * eps), rtol=1e-5, atol=1e-7)


def test_cumprod_gradient_is_exact_at_zero():
    """d/dx_j of prod(x) with x_j = 0 is the product of the others, not 0/0."""
    x = np.array([2.0, 0.0, 3.0, -1.5])
    g = tg.grad(lambda x: np.cumprod(x)[-1])(x)
    np.testing.assert_allclose(g, [0.0, 2.0 * 3.0 * -1.5, 0.0, 0.0])
    _, t = tg.jvp(lambda x: np.cumprod(x), (x,), (np.ones(4),))
    np.testing.assert_allclose(t, [1.0, 2.0, 6.0, -9.0])


def _raises(exc, fn, *args, match: str):
    with pytest.raises(exc, match=match) as info:
        tg.compile(fn)(*args)
    assert "test_coverage.py" in str(info.value)  # names the user's line
    return info.value


def test_untraceable_forms_raise_clear_errors():
    x = np.arange(6.0)
    # np.put_along_axis writes in place: into an argument it is refused (NumPy would modify the
    # caller's array); into a copy it works (tests/test_inplace_semantics.py)
    _raises(errors.UnsupportedOperationError, lambda x: np.put_along_axis(x, np.array([1]), 0.0, 0), x,
            match="in-place update")
    _raises(errors.UnsupportedOperationError, lambda x: x[x > 2], x, match="data-dependent shape")
    _raises(errors.UnsupportedOperationError, lambda x: np.quantile(x, x[0] * 0 + 0.5), x, match="traced q")
    _raises(errors.UnsupportedOperationError, lambda x: np.repeat(x, x.astype(int)), x, match="repeats")
    _raises(errors.UnsupportedOperationError, lambda x: x.sort(), x, match="in-place update")  # an argument
    _raises(errors.UnsupportedOperationError, lambda x: np.pad(x, 1, mode="mean"), x, match="mode='mean'")
    _raises(errors.UnsupportedOperationError, lambda x: np.quantile(x, 0.5, method="weibull"), x, match="weibull")
    err = _raises(errors.ConcretizationError, lambda x: np.array([x[0], x[1]]), x, match="concrete")
    assert "tracegrad.numpy.array" in str(err)


def test_sort_method_sorts_in_place_like_numpy():
    def f(x):
        y = x.copy()
        alias = y
        y.sort()
        return alias * 2 + x

    x = np.array([3.0, -1.0, 2.0, 0.5])
    np.testing.assert_allclose(tg.compile(f)(x), f(x))
    check_jvp(f, (x,))


def test_constant_boolean_mask_and_range_index():
    x = np.arange(5.0)
    mask = np.array([True, False, True, False, True])
    f = tg.compile(lambda x: x[mask] * 2 + x[range(0, 5, 2)])
    np.testing.assert_allclose(f(x), x[mask] * 2 + x[range(0, 5, 2)])
    g = tg.grad(lambda x: np.sum(x[mask] ** 2))(x)
    np.testing.assert_allclose(g, np.where(mask, 2 * x, 0.0))


def test_cumprod_rules_are_linear_in_the_length():
    """No n x n intermediate: a long scan differentiates in O(n) memory."""
    x = np.full(200_000, 1.0)
    x[7] = 0.0
    g = tg.grad(lambda x: np.cumprod(x)[-1])(x)
    want = np.zeros_like(x)
    want[7] = 1.0
    np.testing.assert_array_equal(g, want)
