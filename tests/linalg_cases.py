"""Op cases for ``np.linalg`` (joined into ``op_cases.CASES``, so every per-primitive test runs
them: value vs NumPy, JVP vs central finite differences, K batched directions, VJP vs the
JVP and finite differences, the CuPy backend on its CPU stand-in).

Inputs are well conditioned (a random matrix plus a multiple of the identity; symmetric
positive definite for cholesky; random matrices have distinct eigen- and singular values).
Decomposition factors are compared through functions that do not depend on the sign of
each eigen-/singular vector: columns are multiplied by the sign of their first entry
(piecewise constant, so it has no derivative), U and Vh rows with the same signs.
"""

from __future__ import annotations

import numpy as np
from op_cases import Case

from tracegrad.ops.decompositions import adjugate

R = np.random.default_rng(2026)


def wc(*shape):
    """Well-conditioned square matrices (the last two axes)."""
    n = shape[-1]
    return R.standard_normal(shape) / np.sqrt(n) + 2.0 * np.eye(n)


def spd(*shape):
    m = R.standard_normal(shape)
    return m @ np.swapaxes(m, -1, -2) + shape[-1] * np.eye(shape[-1])


def sym(*shape):
    m = R.standard_normal(shape)
    return m + np.swapaxes(m, -1, -2)


def g(*shape):
    return R.standard_normal(shape)


def signs(v):
    """+-1 per column: the sign of the column's first entry."""
    return np.sign(v[..., :1, :])


def fixed(v):
    return v * signs(v)


def svd_fixed(u, s, vh):
    """U and Vh with one sign per singular pair, flattened next to s."""
    k = s.shape[-1]
    sg = signs(u[..., :, :k])
    uk, vk = u[..., :, :k] * sg, vh[..., :k, :] * np.swapaxes(sg, -1, -2)
    lead = s.shape[:-1]
    return np.concatenate([np.reshape(uk, lead + (-1,)), s, np.reshape(vk, lead + (-1,))], axis=-1)


def qr_both(a):
    q, r = np.linalg.qr(a)
    lead = q.shape[:-2]
    return np.concatenate([np.reshape(q, lead + (-1,)), np.reshape(r, lead + (-1,))], axis=-1)


def eigh_both(a, uplo="L"):
    w, v = np.linalg.eigh(a, UPLO=uplo)
    return np.concatenate([np.expand_dims(w, -2), fixed(v)], axis=-2)


def full_svd(a):
    """Full U and Vh: the thin part sign-fixed, the complement through its projector."""
    u, s, vh = np.linalg.svd(a, full_matrices=True)
    k = s.shape[-1]
    up, vp = u[..., :, k:], vh[..., k:, :]
    proj_u = up @ np.swapaxes(up, -1, -2)
    proj_v = np.swapaxes(vp, -1, -2) @ vp
    lead = s.shape[:-1]
    return np.concatenate([svd_fixed(u, s, vh), np.reshape(proj_u, lead + (-1,)), np.reshape(proj_v, lead + (-1,)),
                           np.reshape(u[..., :, :k] @ vh[..., :k, :], lead + (-1,))], axis=-1)


def matrix_log(a):
    """V diag(log w) Vᵀ: a smooth function of a positive definite matrix (sign-free)."""
    w, v = np.linalg.eigh(a)
    return (v * np.log(w)[..., None, :]) @ np.swapaxes(v, -1, -2)


LINALG_CASES = [
    Case("linalg_inv", np.linalg.inv, [wc(4, 4)], (0,), ("inv",)),
    Case("linalg_inv_batched", np.linalg.inv, [wc(2, 3, 3)], (0,), ("inv",)),
    Case("linalg_solve_vector", np.linalg.solve, [wc(4, 4), g(4)], (0, 1), ("solve",)),
    Case("linalg_solve_matrix", np.linalg.solve, [wc(3, 3), g(3, 2)], (0, 1), ("solve",)),
    Case("linalg_solve_batched_vector", np.linalg.solve, [wc(2, 3, 3), g(3)], (0, 1), ("solve",)),
    Case("linalg_solve_broadcast", np.linalg.solve, [wc(3, 3), g(2, 3, 2)], (0, 1), ("solve",)),
    Case("linalg_det", np.linalg.det, [wc(4, 4)], (0,), ("det",)),
    Case("linalg_det_batched", np.linalg.det, [wc(3, 2, 2) * np.array([1, -1, 1])[:, None, None]], (0,), ("det",)),
    Case("linalg_adjugate", adjugate, [wc(2, 3, 3)], (0,), ("adjugate",),
         extra={"numpy": lambda a: np.linalg.det(a)[:, None, None] * np.linalg.inv(a)}),
    Case("linalg_slogdet", lambda a: np.linalg.slogdet(a)[1], [wc(2, 3, 3)], (0,), ("slogdet",)),
    Case("linalg_slogdet_sign", lambda a: np.linalg.slogdet(a).sign * np.linalg.slogdet(a).logabsdet,
         [-wc(3, 3)], (0,), ("slogdet",)),
    Case("linalg_cholesky", np.linalg.cholesky, [spd(4, 4)], (0,), ("cholesky",)),
    Case("linalg_cholesky_upper_batched", lambda a: np.linalg.cholesky(a, upper=True), [spd(2, 3, 3)], (0,),
         ("cholesky",)),
    Case("linalg_qr_tall", qr_both, [g(5, 3)], (0,), ("qr",)),
    Case("linalg_qr_square_batched", qr_both, [g(2, 3, 3)], (0,), ("qr",)),
    Case("linalg_qr_wide", qr_both, [g(3, 5)], (0,), ("qr",)),
    Case("linalg_qr_r", lambda a: np.linalg.qr(a, mode="r"), [g(4, 3)], (0,), ("qr",)),
    Case("linalg_eigh", eigh_both, [sym(4, 4)], (0,), ("eigh",)),
    Case("linalg_eigh_upper_batched", lambda a: eigh_both(a, "U"), [sym(2, 3, 3)], (0,), ("eigh",)),
    Case("linalg_eigh_spd_function", lambda a: matrix_log(a), [spd(3, 3)], (0,), ("eigh",)),
    Case("linalg_eigvalsh", np.linalg.eigvalsh, [sym(2, 4, 4)], (0,), ("eigvalsh",)),
    Case("linalg_eigvalsh_upper", lambda a: np.linalg.eigvalsh(a, UPLO="U"), [sym(3, 3)], (0,), ("eigvalsh",)),
    Case("linalg_svd_tall", lambda a: svd_fixed(*np.linalg.svd(a, full_matrices=False)), [g(5, 3)], (0,), ("svd",)),
    Case("linalg_svd_wide_batched", lambda a: svd_fixed(*np.linalg.svd(a, full_matrices=False)), [g(2, 3, 4)], (0,),
         ("svd",)),
    Case("linalg_svd_square", lambda a: svd_fixed(*np.linalg.svd(a)), [g(3, 3)], (0,), ("svd",)),
    Case("linalg_svd_full_tall", full_svd, [g(4, 2)], (0,), ("svd",)),
    Case("linalg_svd_full_wide_batched", full_svd, [g(2, 2, 4)], (0,), ("svd",)),
    Case("linalg_svd_values", lambda a: np.linalg.svd(a, compute_uv=False), [g(2, 4, 3)], (0,), ("svdvals",)),
    Case("linalg_svdvals", np.linalg.svdvals, [g(3, 5)], (0,), ("svdvals",)),
    Case("linalg_pinv_tall", np.linalg.pinv, [g(5, 3)], (0,), ("pinv",)),
    Case("linalg_pinv_wide_batched", np.linalg.pinv, [g(2, 3, 4)], (0,), ("pinv",)),
    Case("linalg_pinv_square", lambda a: np.linalg.pinv(a, rcond=1e-10), [wc(3, 3)], (0,), ("pinv",)),
    Case("linalg_matrix_power_0", lambda a: np.linalg.matrix_power(a, 0) + a, [wc(3, 3)], (0,), ("add",)),
    Case("linalg_matrix_power_3", lambda a: np.linalg.matrix_power(a, 3), [wc(3, 3)], (0,), ("matmul",)),
    Case("linalg_matrix_power_11_batched", lambda a: np.linalg.matrix_power(a / 2, 11), [wc(2, 3, 3)], (0,),
         ("matmul",)),
    Case("linalg_matrix_power_neg", lambda a: np.linalg.matrix_power(a, -2), [wc(3, 3)], (0,), ("inv", "matmul")),
    Case("linalg_multi_dot_3", lambda a, b, c: np.linalg.multi_dot([a, b, c]), [g(2, 5), g(5, 3), g(3, 4)],
         (0, 1, 2), ("matmul",)),
    Case("linalg_multi_dot_vectors", lambda a, b, c, d: np.linalg.multi_dot([a, b, c, d]), [g(3), g(3, 6), g(6, 2), g(2)],
         (0, 1, 2, 3), ("matmul",)),
    Case("linalg_multi_dot_chain", lambda a, b, c, d, e: np.linalg.multi_dot([a, b, c, d, e]),
         [g(4, 2), g(2, 6), g(6, 1), g(1, 5), g(5, 3)], (0, 2, 4), ("matmul",)),
    Case("linalg_norm_vector", np.linalg.norm, [g(5)], (0,), ("matmul", "sqrt")),
    Case("linalg_norm_nuc", lambda a: np.linalg.norm(a, "nuc", axis=(2, 0), keepdims=True), [g(3, 2, 4)], (0,),
         ("svdvals",)),
    Case("linalg_norm_2_batched", lambda a: np.linalg.norm(a, 2, axis=(-2, -1)), [g(2, 3, 3)], (0,), ("svdvals",)),
]
