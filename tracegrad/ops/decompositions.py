"""``np.linalg`` primitives: inverse, solve, determinants and the matrix decompositions.

Every primitive works on stacks of matrices (the last two axes; leading axes are batch
axes, broadcast like NumPy's gufuncs) and lowers to the NumPy call of the same name, so
values are NumPy's to the bit. The CuPy backend runs the same lowering with ``cp`` for
``np`` (``cupy.linalg`` has each call with the same signature; cholesky's ``upper`` form
is written with transposes for that reason).

Derivative rules are the standard matrix-calculus identities (Giles 2008, "An extended
collection of matrix derivative results"; eigh/svd as in JAX; the SVD reverse rule as in
Townsend 2016, "Differentiating the singular value decomposition"). Each VJP is the exact
transpose of its JVP (the op-case tests check ``<grad, v> == jvp(v)``). Assumptions, the
same as JAX's, stated once here:

- inv, solve, slogdet, cholesky: the matrix is non-singular (positive definite for
  cholesky); at a singular matrix the rules divide by zero (inf/nan, never a finite lie).
  det's first derivative is ``tr(adj(A) dA)`` with the adjugate computed from an SVD, right
  at singular matrices too (the cofactors); its second derivative needs det(A) != 0.
- cholesky and eigh read ONE triangle of the input, as NumPy does (lower by default;
  ``upper=True`` / ``UPLO='U'`` the upper one), so the derivative is taken with respect to
  that triangle: a tangent in the other triangle has no effect, exactly like a finite
  difference of NumPy's function.
- eigh: the eigenvalues are distinct. With repeated eigenvalues the eigenvectors are not
  a function of the matrix (any rotation within the eigenspace is valid) and the
  eigenvector derivative divides by zero; eigenvalue derivatives stay correct only when
  the tangent does not split the degenerate eigenvalues. Eigenvectors are determined up
  to sign; the rules differentiate the vectors NumPy returns (LAPACK's sign choice is
  locally constant), so sign-invariant functions of them are safe everywhere.
- svd: the singular values are distinct and, for a non-square matrix, non-zero. With
  ``full_matrices=True`` the extra columns of U (rows of Vh) span the orthogonal
  complement, which is determined only up to a rotation; their tangent is the one with no
  component inside the complement (``dU_perp = -U_k dU_kᵀ U_perp``), exact for every
  function invariant to that rotation (projectors, the first k columns).
- qr: the matrix has full rank in its first min(m, n) columns (R is invertible there).
- pinv: the rank is constant near the point (Golub & Pereyra 1973 formula); at a rank
  change the pseudo-inverse is discontinuous.

FLOP rules use the usual LAPACK operation counts (Golub & Van Loan, "Matrix
Computations", 4th ed.): LU 2/3 n³, inverse 2n³, Cholesky 1/3 n³, Householder QR
2mn² - 2/3 n³ plus as much again to form Q, symmetric eigendecomposition 9n³ (4/3 n³ for
the tridiagonal reduction alone), R-SVD 4mn² + 8n³ for values and 6mn² + 20n³ with the
thin factors (4m²n + 22n³ with the full U), each times the number of matrices in the stack.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ad import tangents as T
from ..errors import DTypeError, ShapeError, UnsupportedOperationError
from ..ir import Aval
from ..tracing.dispatch import numpy_namespace
from ..tracing.source import user_source
from ..tracing.tracer import Tracer, aval_of, bind
from ._rules import broadcast_shapes, declare, fmt_shape, numpy_function

__all__ = [
    "adjugate", "cholesky", "det", "eigh", "eigvalsh", "inv", "linalg_dtype", "operand", "pinv", "qr", "slogdet", "solve", "svd",
    "svdvals",
]


# ---------------------------------------------------------------- shared helpers
def _tnp() -> Any:
    return numpy_namespace()


def linalg_dtype(op: str, *xs: Any) -> np.dtype:
    """The dtype NumPy's linalg computes in: float32 when every operand is float32,
    float64 otherwise (integers and booleans are converted, as NumPy does)."""
    dtypes = [aval_of(x).dtype for x in xs]
    for d in dtypes:
        if d.kind == "c":
            raise DTypeError(f"{op}: complex matrices are not supported by tracegrad",
                             source=user_source(), hint="split into real and imaginary parts")
        if d == np.float16 or d.kind not in "biuf" or (d.kind == "f" and d.itemsize > 8):
            raise DTypeError(f"{op}: array type {d} is unsupported in linalg (as in NumPy)",
                             source=user_source(), hint="cast to float32 or float64 first")
    return np.dtype(np.float32) if all(d == np.float32 for d in dtypes) else np.dtype(np.float64)


def operand(op: str, x: Any) -> Any:
    """A traced value as it is; anything else (lists, scalars) as a NumPy array."""
    if isinstance(x, Tracer):
        return x
    arr = np.asarray(x)
    if arr.dtype == object:
        raise UnsupportedOperationError(f"{op}: a list or tuple containing traced values cannot be used as an array",
                                        source=user_source(), hint="build the array with np.stack([...]) first")
    return arr


def _as_linalg(op: str, *xs: Any) -> list[Any]:
    xs = tuple(operand(op, x) for x in xs)
    dtype = linalg_dtype(op, *xs)
    tnp = _tnp()
    return [x if aval_of(x).dtype == dtype else tnp.astype(x, dtype) for x in xs]


def _check_float(op: str, *avals: Aval) -> np.dtype:
    for a in avals:
        if a.dtype not in (np.float32, np.float64):
            raise DTypeError(f"{op}: expected float32 or float64 matrices, got {a.dtype}",
                             hint=f"call {op} through np.linalg (it converts integer input)")
    return np.result_type(*[a.dtype for a in avals])


def _check_stacked(op: str, a: Aval, square: bool) -> tuple[int, int]:
    if len(a.shape) < 2:
        raise ShapeError(f"{op}: {len(a.shape)}-dimensional array given; the array must be at least "
                         "two-dimensional (a matrix or a stack of matrices)", hint="reshape it to (n, n)")
    m, n = a.shape[-2:]
    if square and m != n:
        raise ShapeError(f"{op}: the last two dimensions must be square, got shape {fmt_shape(a.shape)}",
                         hint="use np.linalg.pinv or np.linalg.lstsq-style normal equations for non-square systems")
    return m, n


def _batch(a: Aval) -> int:
    return math.prod(a.shape[:-2])


def _mT(x: Any) -> Any:
    """Transpose of the last two axes (a stack of matrices, possibly with direction axes)."""
    return _tnp().swapaxes(x, -1, -2)


def _eye(n: int, dtype: np.dtype) -> np.ndarray:
    return np.eye(n, dtype=dtype)


def _diag(x: Any, dtype: np.dtype) -> Any:
    """The diagonal of the last two (square) axes."""
    return _tnp().sum(x * _eye(np.shape(x)[-1], dtype), axis=-1)


def _diag_embed(v: Any, dtype: np.dtype) -> Any:
    return _tnp().expand_dims(v, -1) * _eye(np.shape(v)[-1], dtype)


def _tril_mask(n: int, k: int, dtype: np.dtype) -> np.ndarray:
    return np.tril(np.ones((n, n), dtype), k)


def _sym_from_triangle(x: Any, lower: bool, dtype: np.dtype) -> Any:
    """The symmetric matrix NumPy actually factors: one triangle of ``x`` mirrored."""
    n = np.shape(x)[-1]
    if lower:
        return x * _tril_mask(n, 0, dtype) + _mT(x * _tril_mask(n, -1, dtype))
    return x * _tril_mask(n, 0, dtype).T + _mT(x * _tril_mask(n, -1, dtype).T)


def _sym_from_triangle_T(s: Any, lower: bool, dtype: np.dtype) -> Any:
    """Transpose (adjoint) of ``_sym_from_triangle``: the cotangent lands in the triangle read."""
    n = np.shape(s)[-1]
    if lower:
        return s * _tril_mask(n, 0, dtype) + _mT(s) * _tril_mask(n, -1, dtype)
    return s * _tril_mask(n, 0, dtype).T + _mT(s) * _tril_mask(n, -1, dtype).T


def _trace_of(x: Any, dtype: np.dtype) -> Any:
    return _tnp().sum(_diag(x, dtype), axis=-1)


def _lift(v: Any, nb: int, ndim: int) -> Any:
    """A tangent value with unit axes inserted after its ``nb`` direction axes, so that its
    matrix axes right-align with a primal of ``ndim`` dimensions (a stack it broadcasts to)."""
    shape = tuple(np.shape(v))
    pad = ndim - (len(shape) - nb)
    return _tnp().reshape(v, shape[:nb] + (1,) * pad + shape[nb:]) if nb and pad > 0 else v


def _like(t: Any, value: Any, out: Aval) -> Any:
    """``value`` (computed from the dense tangent ``t``) as the tangent of an output ``out``."""
    return T.apply(t, lambda _v, _nb: value, out)


# ---------------------------------------------------------------- inv
def _inv_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (a,) = avals
    _check_stacked("np.linalg.inv", a, True)
    return Aval(a.shape, _check_float("np.linalg.inv", a))


def _inv_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """LU factorization (2/3 n³) and inversion from it (4/3 n³): 2n³ per matrix."""
    n = avals[0].shape[-1]
    return _batch(avals[0]) * 2 * n**3


inv_p = declare("inv", lambda a: f"np.linalg.inv({a})", _inv_abstract, flops=_inv_flops, fresh=True,
                numpy_names=("linalg.inv",))


def inv(a: Any) -> Any:
    return bind(inv_p, a)


@numpy_function(inv_p)
def np_inv(a: Any) -> Any:
    """``np.linalg.inv``: integer input is converted to float64, as in NumPy."""
    (a,) = _as_linalg("np.linalg.inv", a)
    return inv(a)


def inv_jvp(primals, tangents):
    (a,), (ta,) = primals, tangents
    x = inv(a)
    return x, T.apply(ta, lambda v, nb: -(x @ v @ x), aval_of(x))


def inv_vjp(ct, primals, x):
    xt = _mT(x)
    return (-(xt @ ct @ xt),)


inv_p.jvp, inv_p.vjp = inv_jvp, inv_vjp


# ---------------------------------------------------------------- solve
def _solve_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    a, b = avals
    n, _ = _check_stacked("np.linalg.solve", a, True)
    _check_stacked("np.linalg.solve", b, False)
    if b.shape[-2] != n:
        raise ShapeError(f"np.linalg.solve: a of shape {fmt_shape(a.shape)} and b of shape "
                         f"{fmt_shape(b.shape)} do not match: b needs {n} rows",
                         hint="b is (..., n) for one right-hand side or (..., n, k) for k of them")
    if a.shape[:-2] != b.shape[:-2]:  # ``solve`` broadcasts them first (cupy.linalg.solve does not)
        raise ShapeError(f"solve: batch axes of {fmt_shape(a.shape)} and {fmt_shape(b.shape)} differ",
                         hint="call np.linalg.solve, which broadcasts them")
    return Aval(b.shape, _check_float("np.linalg.solve", a, b))


def _solve_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """LU (2/3 n³) plus forward and back substitution (2n² per right-hand side)."""
    n, k = outs[0].shape[-2:]
    return _batch(outs[0]) * (2 * n**3 // 3 + 2 * n * n * k)


solve_p = declare("solve", lambda a, b: f"np.linalg.solve({a}, {b})", _solve_abstract, flops=_solve_flops,
                  fresh=True, numpy_names=("linalg.solve",))


def solve(a: Any, b: Any) -> Any:
    """``a⁻¹ b`` for a matrix (stack) ``b`` of shape (..., n, k); the batch axes of ``a`` and
    ``b`` are broadcast first, as NumPy's gufunc does."""
    sa, sb = aval_of(a).shape, aval_of(b).shape
    if len(sa) >= 2 and len(sb) >= 2 and sa[:-2] != sb[:-2]:
        batch = broadcast_shapes("np.linalg.solve", sa[:-2], sb[:-2])
        tnp = _tnp()
        a = a if sa[:-2] == batch else tnp.broadcast_to(a, batch + sa[-2:])
        b = b if sb[:-2] == batch else tnp.broadcast_to(b, batch + sb[-2:])
    return bind(solve_p, a, b)


def _solve_directions(a: Any, v: Any, nb: int) -> Any:
    """``a⁻¹ v`` for a tangent ``v`` with ``nb`` direction axes in front of ``a``'s shape: the
    directions become extra right-hand sides, so the K directions share one factorization."""
    if nb == 0:
        return solve(a, v)
    tnp = _tnp()
    shape = tuple(np.shape(v))
    dirs, core = shape[:nb], shape[nb:]
    lead = list(range(nb))
    moved = tnp.moveaxis(v, lead, [len(shape) - 1 - nb + i for i in lead])  # batch, n, dirs, k
    flat = tnp.reshape(moved, core[:-1] + (math.prod(dirs) * core[-1],))
    x = tnp.reshape(solve(a, flat), core[:-1] + dirs + core[-1:])
    return tnp.moveaxis(x, [len(shape) - 1 - nb + i for i in lead], lead)


@numpy_function(solve_p)
def np_solve(a: Any, b: Any) -> Any:
    """``np.linalg.solve``: ``b`` is one right-hand side when it is 1-D (NumPy 2 rule),
    otherwise a stack of (n, k) matrices."""
    a, b = _as_linalg("np.linalg.solve", a, b)
    if len(aval_of(b).shape) == 1:
        tnp = _tnp()
        return tnp.squeeze(solve(a, tnp.expand_dims(b, -1)), -1)
    return solve(a, b)


def solve_jvp(primals, tangents):
    # x = A⁻¹ b:  ẋ = A⁻¹ (ḃ - Ȧ x)
    (a, b), (ta, tb) = primals, tangents
    x = solve(a, b)
    out = aval_of(x)
    rhs = T.add(out, tb, T.apply(ta, lambda v, nb: -(_lift(v, nb, out.ndim) @ x), out))
    return x, T.apply(rhs, lambda v, nb: _solve_directions(a, v, nb), out)


def solve_vjp(ct, primals, x):
    a, _ = primals
    ct_b = solve(_mT(a), ct)
    return -(ct_b @ _mT(x)), ct_b


solve_p.jvp, solve_p.vjp = solve_jvp, solve_vjp


# ---------------------------------------------------------------- det, slogdet
def _det_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (a,) = avals
    _check_stacked("np.linalg.det", a, True)
    return Aval(a.shape[:-2], _check_float("np.linalg.det", a))


def _slogdet_abstract(avals: list[Aval], params: dict[str, Any]) -> tuple[Aval, Aval]:
    (a,) = avals
    _check_stacked("np.linalg.slogdet", a, True)
    dtype = _check_float("np.linalg.slogdet", a)
    return Aval(a.shape[:-2], dtype), Aval(a.shape[:-2], dtype)


def _lu_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """LU factorization, 2/3 n³, and the product (or log-sum) of the n pivots."""
    n = avals[0].shape[-1]
    return _batch(avals[0]) * (2 * n**3 // 3 + n)


det_p = declare("det", lambda a: f"np.linalg.det({a})", _det_abstract, flops=_lu_flops,
                numpy_names=("linalg.det",))
slogdet_p = declare("slogdet", lambda a: f"np.linalg.slogdet({a})", _slogdet_abstract, flops=_lu_flops,
                    multiple_results=True, numpy_names=("linalg.slogdet",))


def det(a: Any) -> Any:
    return bind(det_p, a)


def slogdet(a: Any) -> Any:
    return _SlogdetResult(*bind(slogdet_p, a))


# NumPy's named results (their classes are not public, so take them from a call)
_SlogdetResult = type(np.linalg.slogdet(np.eye(1)))
_QRResult = type(np.linalg.qr(np.eye(1)))
_EighResult = type(np.linalg.eigh(np.eye(1)))
_SVDResult = type(np.linalg.svd(np.eye(1)))


@numpy_function(det_p)
def np_det(a: Any) -> Any:
    (a,) = _as_linalg("np.linalg.det", a)
    return det(a)


@numpy_function(slogdet_p)
def np_slogdet(a: Any) -> Any:
    """``np.linalg.slogdet``: ``(sign, logabsdet)`` as NumPy's named result."""
    (a,) = _as_linalg("np.linalg.slogdet", a)
    return slogdet(a)


def _dlogdet(a: Any, v: Any, nb: int, dtype: np.dtype) -> Any:
    """d log|det A| in direction v: tr(A⁻¹ v) (Jacobi's formula)."""
    return _trace_of(_solve_directions(a, v, nb), dtype)


def det_jvp(primals, tangents):
    # Jacobi: d det A = tr(adj(A) dA), with the adjugate defined at singular matrices too
    (a,), (ta,) = primals, tangents
    d = det(a)
    adj_t = _mT(adjugate(a))
    return d, T.apply(ta, lambda v, nb: _tnp().sum(v * adj_t, axis=(-2, -1)), aval_of(d))


def det_vjp(ct, primals, d):
    (a,) = primals
    tnp = _tnp()
    return (tnp.expand_dims(tnp.expand_dims(ct, -1), -1) * _mT(adjugate(a)),)


# ---------------------------------------------------------------- adjugate (det's derivative)
def _adjugate_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (a,) = avals
    _check_stacked("adjugate", a, True)
    return Aval(a.shape, _check_float("adjugate", a))


def _adjugate_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """A thin SVD of a square matrix (26n³), the product V diag(c) Uᵀ (2n³) and two 2/3 n³ LUs."""
    n = avals[0].shape[-1]
    return _batch(avals[0]) * (28 * n**3 + 4 * n**3 // 3)


def _adjugate_lower(a: str) -> str:
    # adj(A) = det(U) det(Vᵀ) V diag(c) Uᵀ for A = U diag(s) Vᵀ, c_i = prod_{j != i} s_j (exclusive
    # prefix times suffix products): exact at singular matrices, where det(A) A⁻¹ is not defined
    one = "np.ones_like(s[..., :1])"
    prefix = f"np.cumprod(np.concatenate([{one}, s[..., :-1]], -1), -1)"
    suffix = f"np.flip(np.cumprod(np.concatenate([{one}, np.flip(s, -1)[..., :-1]], -1), -1), -1)"
    return (f"(lambda u, s, vt: np.sign(np.linalg.det(u) * np.linalg.det(vt))[..., None, None] * "
            f"((np.swapaxes(vt, -1, -2) * ({prefix} * {suffix})[..., None, :]) @ np.swapaxes(u, -1, -2)))"
            f"(*np.linalg.svd({a}))")


adjugate_p = declare("adjugate", _adjugate_lower, _adjugate_abstract, flops=_adjugate_flops, fresh=True)


def adjugate(a: Any) -> Any:
    """adj(A) = det(A) A⁻¹, the transposed cofactor matrix (also of singular matrices)."""
    return bind(adjugate_p, a)


def adjugate_jvp(primals, tangents):
    # d adj = (tr(adj dA) adj - adj dA adj) / det A  (non-singular A; used for second order)
    (a,), (ta,) = primals, tangents
    y = adjugate(a)
    tnp = _tnp()
    d = tnp.expand_dims(tnp.expand_dims(det(a), -1), -1)

    def tangent(v: Any, nb: int) -> Any:
        tr = tnp.expand_dims(tnp.expand_dims(tnp.sum(_mT(y) * v, axis=(-2, -1)), -1), -1)
        return (tr * y - y @ v @ y) / d

    return y, T.apply(ta, tangent, aval_of(y))


def adjugate_vjp(ct, primals, y):
    (a,) = primals
    tnp = _tnp()
    d = tnp.expand_dims(tnp.expand_dims(det(a), -1), -1)
    inner = tnp.expand_dims(tnp.expand_dims(tnp.sum(ct * y, axis=(-2, -1)), -1), -1)
    yt = _mT(y)
    return ((inner * yt - yt @ ct @ yt) / d,)


det_p.jvp, det_p.vjp = det_jvp, det_vjp
adjugate_p.jvp, adjugate_p.vjp = adjugate_jvp, adjugate_vjp


def slogdet_jvp(primals, tangents):
    (a,), (ta,) = primals, tangents
    sign, logabsdet = bind(slogdet_p, a)
    dtype = aval_of(logabsdet).dtype
    t = T.apply(ta, lambda v, nb: _dlogdet(a, v, nb, dtype), aval_of(logabsdet))
    return [sign, logabsdet], [T.Zero(aval_of(sign)), t]  # the sign is piecewise constant


def slogdet_vjp(cts, primals, outs):
    (a,) = primals
    _ct_sign, ct_log = cts
    tnp = _tnp()
    return (tnp.expand_dims(tnp.expand_dims(ct_log, -1), -1) * _mT(inv(a)),)


slogdet_p.jvp, slogdet_p.vjp = slogdet_jvp, slogdet_vjp


# ---------------------------------------------------------------- cholesky
def _cholesky_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (a,) = avals
    _check_stacked("np.linalg.cholesky", a, True)
    return Aval(a.shape, _check_float("np.linalg.cholesky", a))


def _cholesky_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """1/3 n³ per matrix."""
    n = avals[0].shape[-1]
    return _batch(avals[0]) * n**3 // 3


def _cholesky_lower(a: str, upper: bool) -> str:
    # upper=True factors the upper triangle: the transpose of the lower factor of aᵀ
    # (written this way because cupy.linalg.cholesky has no ``upper`` argument)
    if not upper:
        return f"np.linalg.cholesky({a})"
    return f"np.swapaxes(np.linalg.cholesky(np.swapaxes({a}, -1, -2)), -1, -2)"


cholesky_p = declare("cholesky", _cholesky_lower, _cholesky_abstract, flops=_cholesky_flops,
                     numpy_names=("linalg.cholesky",))


def cholesky(a: Any, upper: bool = False) -> Any:
    return bind(cholesky_p, a, upper=bool(upper))


@numpy_function(cholesky_p)
def np_cholesky(a: Any, /, *, upper: bool = False) -> Any:
    """``np.linalg.cholesky``: reads the lower triangle (the upper one with ``upper=True``)."""
    (a,) = _as_linalg("np.linalg.cholesky", a)
    return cholesky(a, upper)


def _phi(x: Any, dtype: np.dtype) -> Any:
    """The strictly lower triangle plus half the diagonal."""
    n = np.shape(x)[-1]
    return x * (_tril_mask(n, -1, dtype) + 0.5 * _eye(n, dtype))


def cholesky_jvp(primals, tangents, *, upper):
    # A = L Lᵀ:  L̇ = L Φ(L⁻¹ Ȧ L⁻ᵀ), Ȧ the symmetric matrix from the triangle NumPy reads
    (a,), (ta,) = primals, tangents
    y = cholesky(a, upper)
    dtype = aval_of(y).dtype
    low = _mT(y) if upper else y
    linv = inv(low)

    def tangent(v: Any, nb: int) -> Any:
        dl = low @ _phi(linv @ _sym_from_triangle(v, not upper, dtype) @ _mT(linv), dtype)
        return _mT(dl) if upper else dl

    return y, T.apply(ta, tangent, aval_of(y))


def cholesky_vjp(ct, primals, y, *, upper):
    dtype = aval_of(y).dtype
    low, ct_low = (_mT(y), _mT(ct)) if upper else (y, ct)
    linv = inv(low)
    s = _mT(linv) @ _phi(_mT(low) @ ct_low, dtype) @ linv
    return (_sym_from_triangle_T(s, not upper, dtype),)


cholesky_p.jvp, cholesky_p.vjp = cholesky_jvp, cholesky_vjp


# ---------------------------------------------------------------- qr (reduced)
def _qr_abstract(avals: list[Aval], params: dict[str, Any]) -> tuple[Aval, Aval]:
    (a,) = avals
    m, n = _check_stacked("np.linalg.qr", a, False)
    k = min(m, n)
    dtype = _check_float("np.linalg.qr", a)
    return Aval(a.shape[:-2] + (m, k), dtype), Aval(a.shape[:-2] + (k, n), dtype)


def _qr_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """Householder QR, 2mk² - 2/3 k³ (k = min(m, n), plus 2(n-k)mk for the rest of R when
    wide), and as much again to form the reduced Q."""
    m, n = avals[0].shape[-2:]
    k = min(m, n)
    factor = 2 * m * k * k - 2 * k**3 // 3
    return _batch(avals[0]) * (2 * factor + 2 * (n - k) * m * k)


qr_p = declare("qr", lambda a: f"np.linalg.qr({a}, mode='reduced')", _qr_abstract, flops=_qr_flops,
               multiple_results=True, numpy_names=("linalg.qr",))


def qr(a: Any) -> Any:
    return _QRResult(*bind(qr_p, a))


@numpy_function(qr_p)
def np_qr(a: Any, mode: str = "reduced") -> Any:
    """``np.linalg.qr`` with ``mode='reduced'`` (the default), ``'r'``, or ``'complete'`` when
    that is the same factorization (m <= n)."""
    (a,) = _as_linalg("np.linalg.qr", a)
    m, n = aval_of(a).shape[-2:] if len(aval_of(a).shape) >= 2 else (0, 0)
    if mode == "reduced" or (mode == "complete" and m <= n):
        return qr(a)
    if mode == "r":
        return qr(a)[1]
    raise UnsupportedOperationError(
        f"np.linalg.qr(mode={mode!r}) is not supported on traced values" +
        (" for a tall matrix: the extra columns of Q are not a function of a" if mode == "complete" else ""),
        source=user_source(), hint="use mode='reduced' (or 'r')")


def _qr_square_tangent(q: Any, r: Any, da: Any, dtype: np.dtype) -> tuple[Any, Any]:
    """(dQ, dR) of A = QR with m >= n columns of full rank, for the tangent ``da``."""
    k = np.shape(r)[-1]
    c = da @ inv(r)  # dA R⁻¹
    b = _mT(q) @ c
    low = b * _tril_mask(k, -1, dtype)
    omega = low - _mT(low)  # skew-symmetric: Qᵀ dQ
    dq = q @ (omega - b) + c
    dr = (b - omega) @ r
    return dq, dr


def _qr_square_cotangent(q: Any, r: Any, ct_q: Any, ct_r: Any, dtype: np.dtype) -> Any:
    k = np.shape(r)[-1]
    g = _mT(q) @ ct_q - ct_r @ _mT(r)
    ct_b = (g - _mT(g)) * _tril_mask(k, -1, dtype) - g
    ct_c = ct_q + q @ ct_b
    return _mT(solve(r, _mT(ct_c)))  # ct_c R⁻ᵀ


def qr_jvp(primals, tangents):
    (a,), (ta,) = primals, tangents
    q, r = bind(qr_p, a)
    dtype = aval_of(q).dtype
    m, n = aval_of(a).shape[-2:]
    if m >= n:
        def parts(v: Any) -> tuple[Any, Any]:
            return _qr_square_tangent(q, r, v, dtype)
    else:
        # A = [X | Y] with X square: X = Q R1 and R2 = Qᵀ Y
        y, r1 = a[..., m:], r[..., :m]

        def parts(v: Any) -> tuple[Any, Any]:
            dq, dr1 = _qr_square_tangent(q, r1, v[..., :m], dtype)
            dr2 = _mT(dq) @ y + _mT(q) @ v[..., m:]
            return dq, _tnp().concatenate([dr1, dr2], axis=-1)

    if T.is_zero(ta):
        return [q, r], [T.Zero(aval_of(q)), T.Zero(aval_of(r))]
    dq, dr = parts(ta.value)
    return [q, r], [_like(ta, dq, aval_of(q)), _like(ta, dr, aval_of(r))]


def qr_vjp(cts, primals, outs):
    (a,) = primals
    q, r = outs
    ct_q, ct_r = cts
    dtype = aval_of(q).dtype
    m, n = aval_of(a).shape[-2:]
    if m >= n:
        return (_qr_square_cotangent(q, r, ct_q, ct_r, dtype),)
    y = a[..., m:]
    ct_r1, ct_r2 = ct_r[..., :m], ct_r[..., m:]
    ct_x = _qr_square_cotangent(q, r[..., :m], ct_q + y @ _mT(ct_r2), ct_r1, dtype)
    return (_tnp().concatenate([ct_x, q @ ct_r2], axis=-1),)


qr_p.jvp, qr_p.vjp = qr_jvp, qr_vjp


# ---------------------------------------------------------------- eigh
def _eigh_abstract(avals: list[Aval], params: dict[str, Any]) -> tuple[Aval, Aval]:
    (a,) = avals
    _check_stacked("np.linalg.eigh", a, True)
    dtype = _check_float("np.linalg.eigh", a)
    return Aval(a.shape[:-1], dtype), Aval(a.shape, dtype)


def _eigh_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """Symmetric QR algorithm with eigenvectors: about 9n³ per matrix."""
    n = avals[0].shape[-1]
    return _batch(avals[0]) * 9 * n**3


eigh_p = declare("eigh", lambda a, UPLO: f"np.linalg.eigh({a}, UPLO={UPLO!r})", _eigh_abstract,
                 flops=_eigh_flops, multiple_results=True, numpy_names=("linalg.eigh",))


def eigh(a: Any, UPLO: str = "L") -> Any:
    return _EighResult(*bind(eigh_p, a, UPLO=UPLO))


@numpy_function(eigh_p)
def np_eigh(a: Any, UPLO: str = "L") -> Any:
    """``np.linalg.eigh``: eigenvalues ascending and eigenvectors (columns) of the symmetric
    matrix built from the lower (``UPLO='L'``) or upper (``'U'``) triangle."""
    if UPLO not in ("L", "U"):
        raise ValueError("UPLO argument must be 'L' or 'U'")
    (a,) = _as_linalg("np.linalg.eigh", a)
    return eigh(a, UPLO)


def _eig_gaps(w: Any, dtype: np.dtype) -> Any:
    """F[i, j] = 1 / (w[j] - w[i]) off the diagonal, 0 on it."""
    eye = _eye(np.shape(w)[-1], dtype)
    tnp = _tnp()
    return 1 / (tnp.expand_dims(w, -2) - tnp.expand_dims(w, -1) + eye) - eye


def eigh_jvp(primals, tangents, *, UPLO):
    # A = V diag(w) Vᵀ:  ẇ = diag(Vᵀ Ȧ V),  V̇ = V (F ∘ Vᵀ Ȧ V)
    (a,), (ta,) = primals, tangents
    w, v = bind(eigh_p, a, UPLO=UPLO)
    dtype = aval_of(w).dtype
    if T.is_zero(ta):
        return [w, v], [T.Zero(aval_of(w)), T.Zero(aval_of(v))]
    m = _mT(v) @ _sym_from_triangle(ta.value, UPLO == "L", dtype) @ v
    dw = _diag(m, dtype)
    dv = v @ (_eig_gaps(w, dtype) * m)
    return [w, v], [_like(ta, dw, aval_of(w)), _like(ta, dv, aval_of(v))]


def eigh_vjp(cts, primals, outs, *, UPLO):
    w, v = outs
    ct_w, ct_v = cts
    dtype = aval_of(w).dtype
    m = _diag_embed(ct_w, dtype)
    if not _zero_ct(ct_v):  # eigenvalues alone need no (possibly infinite) eigenvalue gaps
        m = m + _eig_gaps(w, dtype) * (_mT(v) @ ct_v)
    return (_sym_from_triangle_T(v @ m @ _mT(v), UPLO == "L", dtype),)


eigh_p.jvp, eigh_p.vjp = eigh_jvp, eigh_vjp


def _eigvalsh_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (a,) = avals
    _check_stacked("np.linalg.eigvalsh", a, True)
    return Aval(a.shape[:-1], _check_float("np.linalg.eigvalsh", a))


def _eigvalsh_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """Tridiagonal reduction, 4/3 n³, and its eigenvalues (O(n²))."""
    n = avals[0].shape[-1]
    return _batch(avals[0]) * 4 * n**3 // 3


eigvalsh_p = declare("eigvalsh", lambda a, UPLO: f"np.linalg.eigvalsh({a}, UPLO={UPLO!r})",
                     _eigvalsh_abstract, flops=_eigvalsh_flops, fresh=True, numpy_names=("linalg.eigvalsh",))


def eigvalsh(a: Any, UPLO: str = "L") -> Any:
    return bind(eigvalsh_p, a, UPLO=UPLO)


@numpy_function(eigvalsh_p)
def np_eigvalsh(a: Any, UPLO: str = "L") -> Any:
    """``np.linalg.eigvalsh``: the eigenvalues (ascending) of the symmetric matrix from one triangle."""
    if UPLO not in ("L", "U"):
        raise ValueError("UPLO argument must be 'L' or 'U'")
    (a,) = _as_linalg("np.linalg.eigvalsh", a)
    return eigvalsh(a, UPLO)


def eigvalsh_jvp(primals, tangents, *, UPLO):
    # ẇ = diag(Vᵀ Ȧ V) with the eigenvectors of a second (full) decomposition
    (a,), (ta,) = primals, tangents
    w = eigvalsh(a, UPLO)
    dtype = aval_of(w).dtype
    _, v = bind(eigh_p, a, UPLO=UPLO)
    return w, T.apply(ta, lambda t, nb: _diag(_mT(v) @ _sym_from_triangle(t, UPLO == "L", dtype) @ v, dtype),
                      aval_of(w))


def eigvalsh_vjp(ct, primals, w, *, UPLO):
    (a,) = primals
    dtype = aval_of(w).dtype
    _, v = bind(eigh_p, a, UPLO=UPLO)
    return (_sym_from_triangle_T((v * _tnp().expand_dims(ct, -2)) @ _mT(v), UPLO == "L", dtype),)


eigvalsh_p.jvp, eigvalsh_p.vjp = eigvalsh_jvp, eigvalsh_vjp


# ---------------------------------------------------------------- svd, svdvals
def _svd_abstract(avals: list[Aval], params: dict[str, Any]) -> tuple[Aval, Aval, Aval]:
    (a,) = avals
    m, n = _check_stacked("np.linalg.svd", a, False)
    k = min(m, n)
    dtype = _check_float("np.linalg.svd", a)
    full = params["full_matrices"]
    b = a.shape[:-2]
    return (Aval(b + (m, m if full else k), dtype), Aval(b + (k,), dtype),
            Aval(b + (n if full else k, n), dtype))


def _svdvals_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (a,) = avals
    m, n = _check_stacked("np.linalg.svd", a, False)
    return Aval(a.shape[:-2] + (min(m, n),), _check_float("np.linalg.svd", a))


def _svd_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """R-SVD (Golub & Van Loan table 8.6.1), with p = max(m, n), k = min(m, n): 6pk² + 20k³
    with the thin factors, 4p²k + 22k³ with the full ones."""
    m, n = avals[0].shape[-2:]
    p, k = max(m, n), min(m, n)
    count = 4 * p * p * k + 22 * k**3 if params["full_matrices"] else 6 * p * k * k + 20 * k**3
    return _batch(avals[0]) * count


def _svdvals_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """Singular values only: 4pk² + 8k³ (bidiagonalization after a QR step)."""
    m, n = avals[0].shape[-2:]
    p, k = max(m, n), min(m, n)
    return _batch(avals[0]) * (4 * p * k * k + 8 * k**3)


svd_p = declare("svd", lambda a, full_matrices: f"np.linalg.svd({a}, full_matrices={full_matrices!r})",
                _svd_abstract, flops=_svd_flops, multiple_results=True, numpy_names=("linalg.svd",))
svdvals_p = declare("svdvals", lambda a: f"np.linalg.svd({a}, compute_uv=False)", _svdvals_abstract,
                    flops=_svdvals_flops, numpy_names=("linalg.svdvals",))


def svd(a: Any, full_matrices: bool = True) -> Any:
    return _SVDResult(*bind(svd_p, a, full_matrices=bool(full_matrices)))


def svdvals(a: Any) -> Any:
    return bind(svdvals_p, a)


@numpy_function(svd_p)
def np_svd(a: Any, full_matrices: bool = True, compute_uv: bool = True, hermitian: bool = False) -> Any:
    """``np.linalg.svd``: ``(U, S, Vh)`` as NumPy's named result, or ``S`` alone."""
    if hermitian:
        raise UnsupportedOperationError("np.linalg.svd(hermitian=True) is not supported on traced values",
                                        source=user_source(), hint="drop hermitian=True (same result)")
    (a,) = _as_linalg("np.linalg.svd", a)
    if not compute_uv:
        return svdvals(a)
    return svd(a, full_matrices)


@numpy_function(svdvals_p)
def np_svdvals(x: Any, /) -> Any:
    """``np.linalg.svdvals``: the singular values, descending."""
    (x,) = _as_linalg("np.linalg.svdvals", x)
    return svdvals(x)


def _svd_thin_tangent(u: Any, s: Any, vt: Any, da: Any, dtype: np.dtype) -> tuple[Any, Any, Any]:
    """(dU, ds, dVh) of the thin SVD (JAX's svd_jvp_rule, real case)."""
    tnp = _tnp()
    m, n = np.shape(u)[-2], np.shape(vt)[-1]
    v = _mT(vt)
    s_row, s_col = tnp.expand_dims(s, -2), tnp.expand_dims(s, -1)
    ds_mat = _mT(u) @ da @ v
    ds = _diag(ds_mat, dtype)
    eye = _eye(np.shape(s)[-1], dtype)
    f = 1 / (s_row * s_row - s_col * s_col + eye) - eye  # 1 / (s_j² - s_i²)
    dss, sds = ds_mat * s_row, s_col * ds_mat
    du = u @ (f * (dss + _mT(dss)))
    dv = v @ (f * (sds + _mT(sds)))
    if m > n:
        dav = da @ v
        du = du + (dav - u @ (_mT(u) @ dav)) / s_row
    if n > m:
        dahu = _mT(da) @ u
        dv = dv + (dahu - v @ (vt @ dahu)) / s_row
    return du, ds, _mT(dv)


def _svd_thin_cotangent(u: Any, s: Any, vt: Any, ct_u: Any, ct_s: Any, ct_vt: Any, dtype: np.dtype) -> Any:
    """Transpose of ``_svd_thin_tangent`` (Townsend 2016, real case); ``None`` for a factor
    whose cotangent is zero, whose terms (which divide by singular-value gaps) are skipped."""
    tnp = _tnp()
    m, n = np.shape(u)[-2], np.shape(vt)[-1]
    s_row, s_col = tnp.expand_dims(s, -2), tnp.expand_dims(s, -1)
    eye = _eye(np.shape(s)[-1], dtype)
    inner = _diag_embed(ct_s, dtype)
    if ct_u is None and ct_vt is None:
        return u @ inner @ vt
    f = 1 / (s_row * s_row - s_col * s_col + eye) - eye
    if ct_u is not None:
        utcu = _mT(u) @ ct_u
        inner = inner + (f * (utcu - _mT(utcu))) * s_row
    if ct_vt is not None:
        v, ct_v = _mT(vt), _mT(ct_vt)
        vtcv = vt @ ct_v
        inner = inner + s_col * (f * (vtcv - _mT(vtcv)))
    ct_a = u @ inner @ vt
    if m > n and ct_u is not None:
        ct_a = ct_a + ((ct_u - u @ utcu) / s_row) @ vt
    if n > m and ct_vt is not None:
        ct_a = ct_a + u @ _mT((ct_v - v @ vtcv) / s_row)
    return ct_a


def _zero_ct(ct: Any) -> bool:
    """A cotangent the VJP transform filled in with concrete zeros (the output was unused)."""
    return isinstance(ct, np.ndarray) and not ct.any()


def svd_jvp(primals, tangents, *, full_matrices):
    (a,), (ta,) = primals, tangents
    u, s, vt = bind(svd_p, a, full_matrices=full_matrices)
    outs = [u, s, vt]
    if T.is_zero(ta):
        return outs, [T.Zero(aval_of(o)) for o in outs]
    dtype = aval_of(s).dtype
    m, n = aval_of(a).shape[-2:]
    k = min(m, n)
    uk, vtk = u[..., :k], vt[..., :k, :]
    du, ds, dvt = _svd_thin_tangent(uk, s, vtk, ta.value, dtype)
    tnp = _tnp()
    if full_matrices and m > k:  # complement columns: dU⊥ = -U_k dU_kᵀ U⊥
        du = tnp.concatenate([du, -(uk @ (_mT(du) @ u[..., k:]))], axis=-1)
    if full_matrices and n > k:  # complement rows of Vh: dV⊥ = -V_k dV_kᵀ V⊥
        dv_perp = -(_mT(vtk) @ (dvt @ _mT(vt[..., k:, :])))
        dvt = tnp.concatenate([dvt, _mT(dv_perp)], axis=-2)
    return outs, [_like(ta, du, aval_of(u)), _like(ta, ds, aval_of(s)), _like(ta, dvt, aval_of(vt))]


def svd_vjp(cts, primals, outs, *, full_matrices):
    (a,) = primals
    u, s, vt = outs
    ct_u, ct_s, ct_vt = cts
    dtype = aval_of(s).dtype
    m, n = aval_of(a).shape[-2:]
    k = min(m, n)
    uk, vtk = u[..., :k], vt[..., :k, :]
    ct_uk = None if _zero_ct(ct_u) else ct_u[..., :k]
    ct_vtk = None if _zero_ct(ct_vt) else ct_vt[..., :k, :]
    if full_matrices and m > k and ct_uk is not None:
        u_perp = u[..., k:]
        ct_uk = ct_uk - u_perp @ (_mT(ct_u[..., k:]) @ uk)
    if full_matrices and n > k and ct_vtk is not None:
        v_perp, ct_v_perp = _mT(vt[..., k:, :]), _mT(ct_vt[..., k:, :])
        ct_vtk = ct_vtk - _mT(v_perp @ (_mT(ct_v_perp) @ _mT(vtk)))
    return (_svd_thin_cotangent(uk, s, vtk, ct_uk, ct_s, ct_vtk, dtype),)


def svdvals_jvp(primals, tangents):
    # ṡ = diag(Uᵀ Ȧ V); the factors come from a second (thin) SVD of the same matrix
    (a,), (ta,) = primals, tangents
    s = svdvals(a)
    dtype = aval_of(s).dtype
    u, _, vt = bind(svd_p, a, full_matrices=False)
    return s, T.apply(ta, lambda v, nb: _diag(_mT(u) @ v @ _mT(vt), dtype), aval_of(s))


def svdvals_vjp(ct, primals, s):
    (a,) = primals
    u, _, vt = bind(svd_p, a, full_matrices=False)
    return ((u * _tnp().expand_dims(ct, -2)) @ vt,)


svd_p.jvp, svd_p.vjp = svd_jvp, svd_vjp
svdvals_p.jvp, svdvals_p.vjp = svdvals_jvp, svdvals_vjp


# ---------------------------------------------------------------- pinv
def _pinv_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    (a,) = avals
    m, n = _check_stacked("np.linalg.pinv", a, False)
    return Aval(a.shape[:-2] + (n, m), _check_float("np.linalg.pinv", a))


def _pinv_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """Thin SVD (6pk² + 20k³) and the product V diag(1/s) Uᵀ (2mnk)."""
    m, n = avals[0].shape[-2:]
    p, k = max(m, n), min(m, n)
    return _batch(avals[0]) * (6 * p * k * k + 20 * k**3 + 2 * m * n * k)


pinv_p = declare("pinv", lambda a, rcond: f"np.linalg.pinv({a}, rcond={rcond!r})", _pinv_abstract,
                 flops=_pinv_flops, fresh=True, numpy_names=("linalg.pinv",))


def pinv(a: Any, rcond: float = 1e-15) -> Any:
    return bind(pinv_p, a, rcond=float(rcond))


_NO_VALUE = object()


@numpy_function(pinv_p)
def np_pinv(a: Any, rcond: Any = None, hermitian: bool = False, *, rtol: Any = _NO_VALUE) -> Any:
    """``np.linalg.pinv``: singular values below ``rcond * max(s)`` count as zero (NumPy's
    defaults: rcond 1e-15, or ``max(m, n) * eps`` for ``rtol=None``)."""
    if hermitian:
        raise UnsupportedOperationError("np.linalg.pinv(hermitian=True) is not supported on traced values",
                                        source=user_source(), hint="drop hermitian=True (same result)")
    (a,) = _as_linalg("np.linalg.pinv", a)
    if rcond is None:
        if rtol is _NO_VALUE:
            rcond = 1e-15
        elif rtol is None:
            rcond = max(aval_of(a).shape[-2:]) * np.finfo(aval_of(a).dtype).eps
        else:
            rcond = rtol
    elif rtol is not _NO_VALUE:
        raise ValueError("`rtol` and `rcond` can't be both set.")
    if np.ndim(rcond) != 0 or not isinstance(rcond, int | float | np.integer | np.floating):
        raise UnsupportedOperationError("np.linalg.pinv: rcond must be a Python or NumPy scalar here",
                                        source=user_source(), hint="pass one float for the whole stack")
    return pinv(a, float(rcond))


def pinv_jvp(primals, tangents, *, rcond):
    # Golub & Pereyra: dP = -P dA P + P Pᵀ dAᵀ (I - A P) + (I - P A) dAᵀ Pᵀ P
    (a,), (ta,) = primals, tangents
    p = pinv(a, rcond)
    pt = _mT(p)
    ppt, ptp = p @ pt, pt @ p

    def tangent(v: Any, nb: int) -> Any:
        vt = _mT(v)
        t2 = ppt @ vt
        t3 = vt @ ptp
        return -(p @ v @ p) + (t2 - (t2 @ a) @ p) + (t3 - p @ (a @ t3))

    return p, T.apply(ta, tangent, aval_of(p))


def pinv_vjp(ct, primals, p, *, rcond):
    (a,) = primals
    pt = _mT(p)
    ctt = _mT(ct)
    x2 = ctt @ (p @ pt)  # then (I - A P) x2
    x3 = (pt @ p) @ ctt  # then x3 (I - P A)
    return (-(pt @ ct @ pt) + (x2 - a @ (p @ x2)) + (x3 - (x3 @ p) @ a),)


pinv_p.jvp, pinv_p.vjp = pinv_jvp, pinv_vjp

