"""``np.linalg`` on traced values beyond the op-case table (tests/linalg_cases.py): every
``np.linalg.norm`` form, NumPy's result types and dtypes, errors that name ``np.linalg.*``
and the user's line, FLOP rules, second order, and the decomposition rules' assumptions."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from op_cases import CASES  # noqa: F401 - imported first: it loads linalg_cases

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import errors
from tracegrad.ad import jvp_graph, vjp_graph
from tracegrad.testing import check_jvp, numerical_grad
from tracegrad.transforms import optimize

RNG = np.random.default_rng(77)
X1 = RNG.standard_normal(5) + np.sign(RNG.standard_normal(5)) * 0.3  # no zeros, no ties
X2 = RNG.standard_normal((4, 3))
X3 = RNG.standard_normal((3, 4, 2))


def _check_value_jvp_grad(fn, x):
    want = fn(x)
    got = tg.compile(fn)(x)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert np.shape(got) == np.shape(want) and np.asarray(got).dtype == np.asarray(want).dtype
    check_jvp(fn, [x], seed=3)
    u = np.random.default_rng(4).standard_normal(np.shape(want))

    def scalar(a):
        return np.sum(fn(a) * u)

    _, (grad,) = tg.value_and_grad(scalar, argnums=(0,))(x)
    np.testing.assert_allclose(grad, numerical_grad(scalar, [x], 0), rtol=1e-5, atol=1e-6)


VECTOR_ORDS = [None, 2, 1, -1, np.inf, -np.inf, 0, 3, 0.5, -2.5]


@pytest.mark.parametrize("ord", VECTOR_ORDS, ids=str)
def test_norm_of_a_vector(ord):
    _check_value_jvp_grad(lambda x: np.linalg.norm(x, ord), X1)
    _check_value_jvp_grad(lambda x: np.linalg.norm(x, ord, keepdims=True), X1)


@pytest.mark.parametrize("ord", VECTOR_ORDS, ids=str)
@pytest.mark.parametrize("axis", [0, (-1,)], ids=str)
def test_norm_of_vectors_along_an_axis(ord, axis):
    _check_value_jvp_grad(lambda x: np.linalg.norm(x, ord, axis=axis, keepdims=axis == 0), X2)


MATRIX_ORDS = [None, "fro", "f", "nuc", np.inf, -np.inf, 1, -1, 2, -2]


@pytest.mark.parametrize("ord", MATRIX_ORDS, ids=str)
def test_norm_of_a_matrix(ord):
    _check_value_jvp_grad(lambda x: np.linalg.norm(x, ord), X2)


@pytest.mark.parametrize("ord", MATRIX_ORDS, ids=str)
@pytest.mark.parametrize("axis", [(1, 0), (2, 0), (-1, -3)], ids=str)
def test_norm_of_matrices_along_two_axes(ord, axis):
    _check_value_jvp_grad(lambda x: np.linalg.norm(x, ord, axis=axis, keepdims=axis == (2, 0)), X3)


def test_norm_default_flattens_any_rank_and_converts_integers():
    _check_value_jvp_grad(lambda x: np.linalg.norm(x), X3)
    _check_value_jvp_grad(lambda x: np.linalg.norm(x, keepdims=True), X3)
    ints = np.arange(6).reshape(2, 3)
    got = tg.compile(lambda x: np.linalg.norm(x, axis=1))(ints)
    np.testing.assert_allclose(got, np.linalg.norm(ints, axis=1), rtol=1e-15)
    assert got.dtype == np.float64


def test_norm_bad_orders_raise_like_numpy():
    for fn, x in [(lambda x: np.linalg.norm(x, "fro", axis=0), X2), (lambda x: np.linalg.norm(x, 3, axis=(0, 1)), X2),
                  (lambda x: np.linalg.norm(x, axis=(0, 0)), X2), (lambda x: np.linalg.norm(x, axis=(0, 1, 2)), X3)]:
        with pytest.raises(ValueError) as want:
            fn(x)
        with pytest.raises(ValueError) as got:
            tg.compile(fn)(x)
        assert str(got.value) == str(want.value)


# ---------------------------------------------------------------- results, dtypes, the namespace
def test_named_results_and_concrete_calls_match_numpy():
    a = RNG.standard_normal((3, 3))
    spd = a @ a.T + 3 * np.eye(3)

    def f(x):
        q, r = np.linalg.qr(x)
        w, v = np.linalg.eigh(x)
        u, s, vh = np.linalg.svd(x)
        sl = np.linalg.slogdet(x)
        return (np.linalg.qr(x).Q, np.linalg.qr(x).R, np.linalg.eigh(x).eigenvalues, np.linalg.svd(x).S,
                sl.sign, sl.logabsdet, q @ r, (v * w) @ v.T, (u * s) @ vh)

    got, want = tg.compile(f)(spd), f(spd)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    # tracegrad.numpy.linalg works on plain arrays too (eagerly)
    for name in ["inv", "det", "cholesky", "pinv", "svdvals"]:
        np.testing.assert_allclose(getattr(tnp.linalg, name)(spd), getattr(np.linalg, name)(spd), rtol=1e-13)
    np.testing.assert_allclose(tnp.linalg.solve(spd, a[0]), np.linalg.solve(spd, a[0]), rtol=1e-13)
    np.testing.assert_allclose(tnp.linalg.matrix_power(spd, -3), np.linalg.matrix_power(spd, -3), rtol=1e-13)
    assert isinstance(tnp.linalg.qr(spd), type(np.linalg.qr(spd)))
    assert {"norm", "inv", "solve", "det", "slogdet", "cholesky", "qr", "eigh", "svd", "pinv",
            "matrix_power"} <= set(dir(tnp.linalg))
    import tracegrad.numpy.linalg as tla  # importable as a module, like numpy.linalg

    assert tla is tnp.linalg
    assert not hasattr(tnp, "matrix_power") and not hasattr(tnp, "slogdet")


def test_float32_stays_float32_and_integers_become_float64():
    a = (RNG.standard_normal((3, 3)) + 3 * np.eye(3)).astype(np.float32)
    f = tg.compile(lambda x: np.linalg.inv(x) + np.linalg.det(x) + np.linalg.svd(x)[1])
    y, t = f.jvp((a,), (np.ones_like(a),))
    assert y.dtype == np.float32 and t.dtype == np.float32
    np.testing.assert_allclose(y, np.linalg.inv(a) + np.linalg.det(a) + np.linalg.svd(a)[1], rtol=1e-5)
    ints = np.array([[2, 1], [1, 3]])
    for fn in [np.linalg.inv, np.linalg.det, np.linalg.cholesky, lambda x: np.linalg.solve(x, x[0])]:
        got = tg.compile(lambda x, fn=fn: fn(x) * 1.0)(ints)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, fn(ints), rtol=1e-14)
    got = tg.compile(lambda x: np.linalg.matrix_power(x, 3))(ints)  # stays integer, as in NumPy
    assert got.dtype == ints.dtype and np.array_equal(got, np.linalg.matrix_power(ints, 3))


def test_matrix_power_of_every_small_exponent():
    a = RNG.standard_normal((2, 3, 3)) / 2 + np.eye(3)
    for n in range(-5, 9):
        fn = (lambda x, n=n: np.linalg.matrix_power(x, n) * 1.0)
        np.testing.assert_allclose(tg.compile(fn)(a), fn(a), rtol=1e-13, atol=1e-13)
    check_jvp(lambda x: np.linalg.matrix_power(x, 6), [a], seed=1)
    _, t = tg.jvp(lambda x: np.linalg.matrix_power(x, 0), (a,), (np.ones_like(a),))
    assert np.array_equal(t, np.zeros_like(a))


# ---------------------------------------------------------------- errors
def _line_of(fn) -> str:
    return f"{__file__.rsplit('/', 1)[1]}:{inspect.getsourcelines(fn)[1]}"


def test_shape_errors_name_np_linalg_and_the_line():
    def f(x):
        return np.linalg.inv(x)

    with pytest.raises(errors.ShapeError) as err:
        tg.compile(f)(np.ones((2, 3)))
    text = str(err.value)
    assert "np.linalg.inv" in text and "square" in text and f"test_linalg.py:{inspect.getsourcelines(f)[1] + 1}" in text
    with pytest.raises(errors.ShapeError, match=r"np\.linalg\.det: 1-dimensional"):
        tg.compile(lambda x: np.linalg.det(x))(np.ones(3))
    with pytest.raises(errors.ShapeError, match=r"np\.linalg\.solve: .*b needs 3 rows"):
        tg.compile(lambda x: np.linalg.solve(x, np.ones(2)))(np.eye(3))
    with pytest.raises(errors.ShapeError, match=r"np\.linalg\.matrix_power"):
        tg.compile(lambda x: np.linalg.matrix_power(x, 2))(np.ones((2, 3)))
    with pytest.raises(TypeError, match="exponent must be an integer"):
        tg.compile(lambda x: np.linalg.matrix_power(x, 1.5))(np.eye(2))


def test_unsupported_calls_name_np_linalg():
    with pytest.raises(errors.UnsupportedOperationError, match=r"np\.linalg\.eig is not supported"):
        tg.compile(lambda x: np.linalg.eig(x)[0])(np.eye(2))
    with pytest.raises(errors.UnsupportedOperationError, match=r"np\.linalg\.qr\(mode='complete'\)"):
        tg.compile(lambda x: np.linalg.qr(x, mode="complete")[0])(np.ones((3, 2)))
    wide = RNG.standard_normal((2, 3))
    q, r = tg.compile(lambda x: tuple(np.linalg.qr(x, mode="complete")))(wide)  # the same as reduced
    np.testing.assert_allclose(q @ r, wide, atol=1e-14)
    with pytest.raises(errors.UnsupportedOperationError, match="hermitian"):
        tg.compile(lambda x: np.linalg.svd(x, hermitian=True)[1])(np.eye(2))
    with pytest.raises(errors.UnsupportedOperationError, match="hermitian"):
        tg.compile(lambda x: np.linalg.pinv(x, hermitian=True))(np.eye(2))
    with pytest.raises(errors.DTypeError, match="float16"):
        tg.compile(lambda x: np.linalg.inv(x))(np.eye(2, dtype=np.float16))
    with pytest.raises(ValueError, match="UPLO"):
        tg.compile(lambda x: np.linalg.eigh(x, UPLO="X")[0])(np.eye(2))


# ---------------------------------------------------------------- costs, second order, assumptions
def test_flop_rules_follow_the_lapack_counts():
    def flops(fn, x):
        return tg.compile(fn).graph(x).stats().flops

    a = np.eye(6)[None].repeat(2, 0)  # a stack of two 6x6 matrices
    assert flops(np.linalg.inv, a) == 2 * 2 * 6**3
    assert flops(np.linalg.det, a) == 2 * (2 * 6**3 // 3 + 6)
    assert flops(np.linalg.cholesky, a) == 2 * 6**3 // 3
    assert flops(lambda x: np.linalg.eigh(x)[0], a) == 2 * 9 * 6**3
    assert flops(lambda x: np.linalg.solve(x, x), a) == 2 * (2 * 6**3 // 3 + 2 * 6 * 6 * 6)
    tall = np.ones((10, 4))
    assert flops(lambda x: np.linalg.svd(x, full_matrices=False)[1], tall) == 6 * 10 * 16 + 20 * 64
    assert flops(lambda x: np.linalg.svd(x, compute_uv=False), tall) == 4 * 10 * 16 + 8 * 64


def test_second_order_through_logdet_and_inv():
    """Forward over reverse: the Hessian-vector product of log|det A| + sum(inv(A))."""
    def f(a):
        return np.linalg.slogdet(a)[1] + np.sum(np.linalg.inv(a))

    a = RNG.standard_normal((3, 3)) / 3 + 2 * np.eye(3)
    v = RNG.standard_normal((3, 3))
    primal = tg.compile(f).graph(a, optimized=False)
    hvp_graph, _ = jvp_graph(optimize(vjp_graph(primal, [True])), [True])
    hvp = hvp_graph.validate().interpret(a, v)[-1]
    grad, eps = tg.grad(f), 1e-6
    np.testing.assert_allclose(hvp, (grad(a + eps * v) - grad(a - eps * v)) / (2 * eps), rtol=1e-6)


def test_gradient_of_logdet_is_the_inverse_transpose():
    a = RNG.standard_normal((2, 4, 4)) / 4 + 2 * np.eye(4)
    g = tg.grad(lambda x: np.sum(np.linalg.slogdet(x)[1]))(a)
    np.testing.assert_allclose(g, np.swapaxes(np.linalg.inv(a), -1, -2), rtol=1e-12)


def test_cholesky_and_eigh_differentiate_the_triangle_numpy_reads():
    """A tangent in the triangle NumPy ignores changes nothing, in both modes."""
    a = RNG.standard_normal((4, 4))
    spd = a @ a.T + 4 * np.eye(4)
    upper_only = np.triu(RNG.standard_normal((4, 4)), 1)
    for fn in [np.linalg.cholesky, lambda x: np.linalg.eigh(x)[0]]:
        _, t = tg.jvp(fn, (spd,), (upper_only,))
        np.testing.assert_array_equal(t, 0.0)
    g = tg.grad(lambda x: np.sum(np.linalg.cholesky(x, upper=True) ** 2))(spd)
    np.testing.assert_array_equal(np.tril(g, -1), 0.0)
    g = tg.grad(lambda x: np.sum(np.linalg.eigh(x, UPLO="L")[1][0] ** 2))(spd)
    np.testing.assert_array_equal(np.triu(g, 1), 0.0)


def test_degenerate_eigenvalues_give_non_finite_eigenvector_tangents():
    """With repeated eigenvalues the eigenvectors are not a function of the matrix: their
    tangent is inf/nan (never a finite wrong number); the documented assumption."""
    d = np.diag([0.3, -1.0, 2.0]) + np.ones((3, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        _, t = tg.jvp(lambda x: np.linalg.eigh(x)[1], (np.eye(3),), (d,))
    assert not np.all(np.isfinite(t))


def test_k_directions_share_one_factorization():
    """The K tangent systems of solve/slogdet ride as extra right-hand sides of one solve
    with the primal matrix (not K broadcast copies of it)."""
    a, b = RNG.standard_normal((4, 4)) + 4 * np.eye(4), RNG.standard_normal(4)
    for fn in [np.linalg.solve, lambda a, b: np.linalg.slogdet(a)[1] * b]:
        g = tg.compile(fn).jvp_graph(a, b, argnums=(0, 1), directions=5)
        solves = [n for n in g.nodes if n.primitive.name == "solve"]
        assert solves and all(n.inputs[0].aval.shape == (4, 4) for n in solves)


def test_det_derivatives_at_singular_matrices_are_the_cofactors():
    """d det = tr(adj(A) dA) with the adjugate from the SVD: finite and right where A⁻¹ does
    not exist (rank n-1: the cofactor matrix; rank <= n-2: zero)."""
    def cofactors(a):
        n = len(a)
        return np.array([[(-1) ** (i + j) * np.linalg.det(np.delete(np.delete(a, i, 0), j, 1)) for j in range(n)]
                         for i in range(n)])

    for a in [np.array([[1.0, 2, 3], [2, 4, 6], [1, 0, 1]]), np.outer([1.0, 2, 3], [1.0, -1, 2]), np.zeros((3, 3))]:
        g = tg.grad(np.linalg.det)(a)
        np.testing.assert_allclose(g, cofactors(a), atol=1e-13)
        v = RNG.standard_normal((3, 3))
        _, t = tg.jvp(np.linalg.det, (a,), (v,))
        np.testing.assert_allclose(t, np.sum(cofactors(a) * v), atol=1e-13)


def test_values_alone_have_gradients_at_repeated_eigen_and_singular_values():
    """A function of the eigenvalues (singular values) only needs no eigenvalue gaps, so it
    has its gradient even where values repeat (the identity): trace and the sum of squares."""
    eye = np.eye(3)
    g = tg.grad(lambda a: np.sum(np.linalg.eigh(a)[0]))(eye)
    np.testing.assert_allclose(g, eye, atol=1e-15)
    g = tg.grad(lambda a: np.sum(np.linalg.eigh(a).eigenvalues ** 2))(eye)
    np.testing.assert_allclose(g, 2 * eye, atol=1e-15)
    g = tg.grad(lambda a: np.sum(np.linalg.svd(a)[1] ** 2))(2 * eye)
    np.testing.assert_allclose(g, 4 * eye, atol=1e-14)
    g = tg.grad(lambda a: np.sum(np.linalg.svd(a, full_matrices=False).S))(np.ones((4, 2)) * [1.0, -1.0])
    np.testing.assert_allclose(g, tg.grad(lambda a: np.linalg.norm(a, "nuc"))(np.ones((4, 2)) * [1.0, -1.0]))


def test_constant_list_operands():
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(tg.compile(lambda x: np.linalg.solve(x, [1.0, 2.0]))(a), np.linalg.solve(a, [1.0, 2.0]))
    np.testing.assert_allclose(tg.compile(lambda b: np.linalg.solve([[2.0, 1.0], [1.0, 3.0]], b))(np.ones(2)),
                               np.linalg.solve(a, np.ones(2)))
    np.testing.assert_allclose(tnp.linalg.norm([3.0, 4.0]), 5.0)
    np.testing.assert_allclose(tnp.linalg.matrix_power([[1, 1], [0, 1]], 3), [[1, 3], [0, 1]])
