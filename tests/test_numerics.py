"""Numerical classes that used to be silently wrong or crash (issue 10).

Each test compares with plain NumPy values and with central finite differences in float64,
in forward mode (``check_jvp``) and reverse mode (``check_grad``), at the points where the
old rules broke: ties, constant functions, zeros, unselected non-finite branches.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.errors import TracegradError
from tracegrad.testing import check_grad, check_jvp

# NumPy warns (divide by zero, invalid value) exactly where these tests probe; that is expected.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _jvp(fn, *args):
    """Value and JVP of ``fn`` at ``args`` with all-ones tangents on float arguments."""
    tangents = tuple(np.ones_like(a) if np.asarray(a).dtype.kind == "f" else None for a in args)
    return tg.compile(fn).jvp(args, tangents)


def _grad(fn, *args, argnums=0):
    return tg.grad(lambda *a: np.sum(fn(*a)), argnums)(*args)


def _check_all(fn, *args, argnums=(0,)):
    """Value equals NumPy's; JVP and gradient match central finite differences."""
    np.testing.assert_allclose(tg.compile(fn)(*args), fn(*args), rtol=1e-12)
    check_jvp(fn, args, argnums)
    check_grad(lambda *a: np.sum(fn(*a)), args, argnums)


# ---------------------------------------------------------------- ties in smooth functions
def test_logaddexp_tie_has_symmetric_derivative():
    x = np.array([0.0, 1.5, -2.0])
    _, t = tg.compile(np.logaddexp).jvp((x, x.copy()), (np.ones(3), np.zeros(3)))
    np.testing.assert_allclose(t, 0.5)  # d/dx log(e^x + e^y) = e^(x - y_out) = 1/2 at x == y
    gx, gy = _grad(np.logaddexp, x, x.copy(), argnums=(0, 1))
    np.testing.assert_allclose(gx, 0.5)
    np.testing.assert_allclose(gy, 0.5)
    _check_all(np.logaddexp, x, x.copy(), argnums=(0, 1))
    _check_all(np.logaddexp, x, np.array([[0.0], [1.5]]), argnums=(0, 1))  # broadcasting, some ties


def test_softplus_at_zero_is_one_half():
    x = np.array([0.0, -3.0, 2.0])
    _, t = _jvp(tnp.softplus, x)
    np.testing.assert_allclose(t, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(_grad(tnp.softplus, x), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(tg.compile(tnp.softplus)(x), np.logaddexp(x, 0.0))


# ---------------------------------------------------------------- constant reductions
@pytest.mark.parametrize("fn", [
    lambda x: np.std(x, axis=1), lambda x: np.var(x, axis=1), lambda x: np.std(x, axis=()),
    lambda x: np.var(x, axis=(), ddof=0), lambda x: np.std(x[0]) + np.std(x, axis=1, keepdims=True, ddof=0),
], ids=["std_one", "var_one", "std_empty_axes", "var_empty_axes", "std_mixed"])
def test_std_var_of_one_element_have_zero_derivative(fn):
    x = np.array([[1.5], [-0.25]])
    out, t = _jvp(fn, x)
    np.testing.assert_allclose(out, fn(x))
    assert np.all(np.isfinite(t)) and np.all(t == 0)
    g = _grad(fn, x)
    assert np.all(g == 0)


def test_std_of_several_elements_unchanged():
    _check_all(lambda x: np.std(x, axis=0), np.array([[1.0, 2.0], [3.0, 5.0], [0.5, -1.0]]))


def test_reductions_over_an_empty_axis_give_nan_like_numpy():
    x = np.zeros((0, 3))
    for fn in (lambda x: np.mean(x, axis=0), lambda x: np.var(x, axis=0), lambda x: np.std(x, axis=0),
               lambda x: x.mean()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = fn(x)
            got, _ = _jvp(fn, x)
        np.testing.assert_array_equal(got, want)  # nan, no ZeroDivisionError


# ---------------------------------------------------------------- powers at zero
@pytest.mark.parametrize("p", [0, 0.0, np.float64(0.0), np.array([0.0, 0.0, 0.0])])
def test_power_zero_at_zero_has_zero_derivative(p):
    x = np.array([0.0, 2.0, -1.5])
    out, t = _jvp(lambda x: x ** p, x)
    np.testing.assert_array_equal(out, np.ones(3))
    np.testing.assert_array_equal(t, np.zeros(3))
    np.testing.assert_array_equal(_grad(lambda x: x ** p, x), np.zeros(3))


def test_power_with_traced_zero_exponent_at_zero():
    x, p = np.array([0.0, 0.0, 2.0]), np.array([0.0, 2.0, 0.0])
    _, t = tg.compile(lambda x, p: x ** p).jvp((x, p), (np.ones(3), np.zeros(3)))
    np.testing.assert_array_equal(t, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(_grad(lambda x, p: x ** p, x, p), [0.0, 0.0, 0.0])


@pytest.mark.parametrize("p", [1, 2, 3, 2.0, np.array([1.0, 2.0, 3.0])])
def test_power_integer_exponent_is_finite_at_zero(p):
    x = np.array([0.0, 0.0, 0.0])
    _, t = _jvp(lambda x: x ** p, x)
    np.testing.assert_array_equal(t, np.where(np.asarray(p) == 1, 1.0, 0.0) * np.ones(3))
    _check_all(lambda x: x ** p, np.array([0.0, 1.5, -2.0]))


def test_power_of_negative_float_is_nan_not_complex():
    for x in (-1.0, np.float64(-1.0), np.array(-1.0), np.array([-1.0, 4.0])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = tg.compile(lambda x: np.power(x, 0.5))(x)
            got_op = tg.compile(lambda x: x ** 0.5)(x)
            want = np.power(x, 0.5)
        assert not np.iscomplexobj(got) and not np.iscomplexobj(got_op)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_op, want)


def test_division_by_python_zero_is_inf_like_numpy():
    x = np.array([1.0, -2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for fn in (lambda x: x / 0.0, lambda x: x / 0, lambda x: 1.0 / (x * 0.0)):
            got, t = _jvp(fn, x)
            np.testing.assert_array_equal(got, fn(x))
        got, t = tg.compile(lambda s: s / 0.0).jvp((3.0,), (1.0,))
        assert got == np.inf and t == np.inf


# ---------------------------------------------------------------- where with a non-finite unselected branch
# name: (fn, its derivative or None, the points, the index of a point on the constant branch)
WHERE_CASES = {
    "sqrt": (lambda x: np.where(x > 0, np.sqrt(x), 0.0),
             lambda x: np.where(x > 0, 0.5 / np.sqrt(np.where(x > 0, x, 1)), 0.0), [-1.0, 0.0, 0.5, 2.0], 0),
    "sinc": (lambda x: np.where(x != 0, np.sin(x) / x, 1.0), None, [-1.0, 0.0, 0.5, 2.0], 1),
    "log": (lambda x: np.where(x > 0, np.log(x), -1.0),
            lambda x: np.where(x > 0, 1 / np.where(x > 0, x, 1), 0.0), [-1.0, 0.0, 0.5, 2.0], 0),
    "log1p": (lambda x: np.where(x > -1, np.log1p(x), 0.0), None, [-2.0, -1.0, 0.5, 2.0], 0),
    "reciprocal": (lambda x: np.where(x != 0, 1.0 / x, 0.0),
                   lambda x: np.where(x != 0, -1 / np.where(x != 0, x, 1) ** 2, 0), [-1.0, 0.0, 0.5, 2.0], 1),
    "fractional_power": (lambda x: np.where(x > 0, x ** 0.5, 0.0), None, [-1.0, 0.0, 0.5, 2.0], 0),
    "traced_power": (lambda x: np.where(x > 0, x ** x, 1.0), None, [-1.0, 0.0, 0.5, 2.0], 0),
}


@pytest.mark.parametrize("name", sorted(WHERE_CASES))
def test_reverse_mode_through_where_ignores_the_unselected_branch(name):
    fn, deriv, points, const_at = WHERE_CASES[name]
    x = np.array(points)
    g = _grad(fn, x)
    assert np.all(np.isfinite(g)), g
    assert g[const_at] == 0.0 and g[1] == 0.0  # constant branch (and the branch point): exactly 0
    _, t = _jvp(fn, x)
    assert np.all(np.isfinite(t)), t
    np.testing.assert_allclose(g, t)  # a direction of ones: for elementwise fn the JVP is the gradient
    if deriv is not None:
        np.testing.assert_allclose(g, deriv(x))
    _check_all(fn, x[2:])  # away from the branch points, both agree with finite differences


def test_where_select_gradient_is_exact_zero_on_constant_branch():
    # the cotangent arriving at sqrt where x <= 0 is an exact zero and must stay zero
    fn = lambda x: np.sum(np.where(x > 0, np.sqrt(x) * 3.0, x * 2.0))
    g = tg.grad(fn)(np.array([-4.0, 0.0, 4.0]))
    np.testing.assert_array_equal(g, [2.0, 2.0, 0.75])


def test_double_where_trick_for_a_product_with_a_non_finite_factor():
    # documented in docs/architecture.md: mul keeps IEEE 0 * inf = nan, the safe input avoids it
    def entropy(p):
        safe = np.where(p > 0, p, 1.0)
        return -np.sum(np.where(p > 0, p * np.log(safe), 0.0))

    p = np.array([0.0, 0.25, 0.75])
    g = tg.grad(entropy)(p)
    np.testing.assert_allclose(g, [0.0, -np.log(0.25) - 1, -np.log(0.75) - 1])


# ---------------------------------------------------------------- bitwise operators
BITWISE = {
    "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
    "invert": lambda a, b: ~a, "lshift": lambda a, b: a << (b & 3), "rshift": lambda a, b: a >> (b & 3),
    "np_and": np.bitwise_and, "np_or": np.bitwise_or, "np_xor": np.bitwise_xor,
    "np_invert": lambda a, b: np.invert(a), "np_shifts": lambda a, b: np.left_shift(a, 2) + np.right_shift(b, 1),
    "scalar_left": lambda a, b: 6 & a, "scalar_right": lambda a, b: a ^ 5,
    "logical_xor": lambda a, b: np.logical_xor(a, b) & np.logical_xor(a > 2, True),
}


@pytest.mark.parametrize("name", sorted(BITWISE))
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_bitwise_operators_match_numpy(name, dtype):
    fn = BITWISE[name]
    a = np.array([3, 5, 12, 0, 7, 1]).astype(dtype)
    b = np.array([6, 3, 10, 1, 0, 1]).astype(dtype)
    if dtype == np.bool_ and name in ("lshift", "rshift", "np_shifts"):
        return  # NumPy shifts promote booleans to int8; not a case worth pinning
    want = fn(a, b)
    got = tg.compile(fn)(a, b)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_bitwise_result_feeds_float_math_with_a_gradient():
    fn = lambda x, i: np.sum(x * (i & 6) + x * (~i))
    x, i = np.array([1.0, 2.0, -1.0]), np.array([3, 5, 4])
    np.testing.assert_allclose(tg.compile(fn)(x, i), fn(x, i))
    np.testing.assert_array_equal(tg.grad(fn)(x, i), (i & 6) + ~i)


def test_bitwise_on_floats_is_a_clear_error():
    with pytest.raises(TracegradError, match="bitwise_and"):
        tg.compile(lambda x: x & x)(np.array([1.0]))


# ---------------------------------------------------------------- floor division and remainders
MOD_FNS = {
    "mod_op": lambda a, b: a % b, "floordiv_op": lambda a, b: a // b, "np_mod": np.mod,
    "np_remainder": np.remainder, "np_fmod": np.fmod, "np_floor_divide": np.floor_divide,
    "rmod_scalar": lambda a, b: 7.4 % b, "mod_scalar": lambda a, b: a % 1.5,
    "divmod": lambda a, b: divmod(a, b)[0] * 0.5 + divmod(a, b)[1],
    "np_divmod": lambda a, b: np.divmod(a, b)[0] * 0.5 + np.divmod(a, b)[1],
}
MOD_A = np.array([5.3, -5.3, 5.3, -5.3, 0.7, 2.2])
MOD_B = np.array([2.0, 2.0, -2.0, -2.0, 0.3, 1.65])  # no quotient is an integer: away from the jumps


@pytest.mark.parametrize("name", sorted(MOD_FNS))
def test_mod_family_values_and_derivatives(name):
    fn = MOD_FNS[name]
    _check_all(fn, MOD_A, MOD_B, argnums=(0, 1))


def test_mod_family_derivatives_are_the_piecewise_formulas():
    ga, gb = _grad(np.remainder, MOD_A, MOD_B, argnums=(0, 1))
    np.testing.assert_array_equal(ga, np.ones(6))
    np.testing.assert_array_equal(gb, -np.floor(MOD_A / MOD_B))
    ga, gb = _grad(np.fmod, MOD_A, MOD_B, argnums=(0, 1))
    np.testing.assert_array_equal(gb, -np.trunc(MOD_A / MOD_B))
    _, t = tg.compile(lambda a, b: a // b).jvp((MOD_A, MOD_B), (np.ones(6), np.ones(6)))
    np.testing.assert_array_equal(t, np.zeros(6))


def test_mod_family_on_integers_and_by_zero_matches_numpy():
    a, b = np.array([5, -5, 7, 7, 0]), np.array([3, 3, -2, 0, 4])
    for fn in MOD_FNS.values():
        want = fn(a, b)
        got = tg.compile(fn)(a, b)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)
    x = np.array([5.0, -1.0, 0.0])
    for fn in (lambda x: x % 0.0, lambda x: x // 0.0, lambda x: np.fmod(x, 0.0), lambda x: 2.0 // (x * 0)):
        np.testing.assert_array_equal(tg.compile(fn)(x), fn(x))


# ---------------------------------------------------------------- prod
@pytest.mark.parametrize("x", [
    np.array([0.5, -2.0, 3.0, 1.5, -0.75]),  # no zero
    np.array([0.5, 0.0, 3.0, 1.5, -0.75]),   # one zero: only its own partial derivative survives
    np.array([0.0, 2.0, 0.0, 1.5, -0.75]),   # two zeros: every partial derivative is 0
], ids=["no_zero", "one_zero", "two_zeros"])
def test_prod_with_zeros(x):
    _check_all(lambda x: x.prod(), x)
    _check_all(np.prod, x)
    g = _grad(np.prod, x)
    want = np.array([np.prod(np.delete(x, i)) for i in range(len(x))])
    np.testing.assert_allclose(g, want, atol=0)


@pytest.mark.parametrize("kw", [{"axis": 0}, {"axis": 1}, {"axis": (0, 2)}, {"axis": -1, "keepdims": True},
                                {"axis": ()}, {}])
def test_prod_axes(kw):
    x = np.random.default_rng(0).uniform(0.5, 1.5, (3, 4, 5)) * np.where(np.arange(5) == 2, 0.0, 1.0)
    _check_all(lambda x: np.prod(x, **kw), x)


def test_prod_dtypes_and_empty():
    i = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    for fn in (lambda i: np.prod(i), lambda i: i.prod(axis=1), lambda i: np.prod(i > 2, axis=0)):
        want, got = fn(i), tg.compile(fn)(i)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got, want)
    e = np.zeros((0, 3))
    out, t = _jvp(lambda e: np.prod(e, axis=0), e)
    np.testing.assert_array_equal(out, np.ones(3))
    np.testing.assert_array_equal(t, np.zeros(3))


# ---------------------------------------------------------------- crashes that now work
def test_constant_out_of_bounds_index_is_a_clear_error_at_trace_time():
    x = np.arange(4.0)
    for fn in (lambda x: x[np.array([0, 4])], lambda x: x[[1, -5]], lambda x: x[:, None][np.array([0, 9]), 0],
               lambda x: np.take(x, np.array([7])), lambda x: x[7], lambda x: x[np.array([True, False, True, True, True])],
               lambda x: np.take_along_axis(x[None], np.array([[0, 4]]), axis=1)):
        with pytest.raises(IndexError, match="out of bounds|does not match") as info:
            tg.compile(fn)(x)
        assert isinstance(info.value, TracegradError)
        assert "test_numerics.py" in str(info.value)  # the user's line, not generated code
    assert tg.compile(lambda x: x[np.array([0, -4, 3])])(x).tolist() == [0.0, 0.0, 3.0]


@pytest.mark.parametrize("fn, args", [
    (lambda a, b: np.tensordot(a, b, 1), (np.ones((1,) * 27 + (2,)), np.ones((2,) + (1,) * 26))),
    (lambda a, b: np.tensordot(a, b, ([27, 0], [0, 1])), (np.ones((3,) + (1,) * 26 + (2,)), np.ones((2, 3, 2)))),
    (lambda a, b: np.dot(a, b), (np.ones((1,) * 27 + (2,)), np.ones((1, 2, 3)))),
    (lambda a, b: np.dot(a, b), (np.arange(6.0).reshape(2, 3), np.arange(24.0).reshape(2, 3, 4))),
    (lambda a, b: np.tensordot(a, b, ([-1, 0], [0, 1])), (np.arange(6.0).reshape(2, 3), np.arange(24.0).reshape(3, 2, 4))),
], ids=["tensordot_27", "tensordot_axes_28", "dot_27", "dot_nd", "tensordot_neg_axes"])
def test_tensordot_and_dot_of_any_rank(fn, args):
    rng = np.random.default_rng(0)
    args = tuple(rng.standard_normal(a.shape) for a in args)
    _check_all(fn, *args, argnums=(0, 1))


def test_tensordot_beyond_einsum_letters():
    a, b = np.ones((1,) * 30 + (2,)), np.ones((2,) + (1,) * 30)
    a[..., 1] = 3.0
    f = lambda a, b: np.tensordot(a, b, 1)
    np.testing.assert_allclose(tg.compile(f)(a, b), f(a, b))
    check_jvp(f, (a, b))


def test_inner_with_a_scalar():
    x = np.array([1.0, -2.0, 3.0])
    _check_all(lambda x: np.inner(x, 2.5), x)
    _check_all(lambda x: np.inner(2.5, x), x)
    _check_all(lambda x: np.inner(x, x), x)


def test_einsum_sublist_form():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    _check_all(lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [0, 2]), a, b, argnums=(0, 1))
    _check_all(lambda a, b: np.einsum(a, [0, 1], b, [1, 2]), a, b, argnums=(0, 1))
    _check_all(lambda a: np.einsum(a, [0, 1], [1]), a)
    _check_all(lambda a: np.einsum(a, [Ellipsis, 1], [1, Ellipsis]), a)


@pytest.mark.parametrize("fn", [np.vstack, np.hstack, lambda x: np.vstack([x]), lambda x: np.hstack([x]),
                                lambda x: np.vstack((x, x)), lambda x: np.hstack((x, 2 * x))],
                         ids=["vstack_array", "hstack_array", "vstack_list", "hstack_list", "vstack_two", "hstack_two"])
def test_stacking_a_single_1d_array(fn):
    _check_all(fn, np.array([1.0, -2.0, 3.0]))


def test_arrays_of_rank_above_32():
    x = np.random.default_rng(0).standard_normal((2,) + (1,) * 38 + (3,))  # NumPy allows 64 dimensions
    for fn in (lambda x: np.sum(x * 2 + x[:1], axis=0), lambda x: np.var(x, axis=(0, 39)), lambda x: x.T[..., None] * x / 2 + x @ np.ones((3, 2))[:, :1]):
        np.testing.assert_allclose(tg.compile(fn)(x), fn(x))
        check_jvp(fn, (x,))
    with pytest.raises(TracegradError, match="cannot be broadcast"):
        tg.compile(lambda x: x + np.ones(4))(x)


@pytest.mark.parametrize("fn", [lambda x: np.max(x, axis=0), lambda x: np.min(x), lambda x: np.argmax(x, axis=0),
                                lambda x: x.argmin(), lambda x: np.amax(x, axis=(0, 1))])
def test_extremum_over_nothing_is_a_clear_error(fn):
    with pytest.raises(ValueError, match="zero-size") as info:
        tg.compile(fn)(np.zeros((0, 3)))
    assert isinstance(info.value, TracegradError) and "test_numerics.py" in str(info.value)
    np.testing.assert_array_equal(tg.compile(lambda x: np.max(x, axis=1))(np.zeros((0, 3))), np.zeros(0))
