"""Structured gradient estimates: a low-rank gradient kept as its factors.

A forward-gradient estimate with low-rank tangents (``forward_grad(..., tangents="rank1")``)
is ``g = Σ_k (d_k / K) a_k b_kᵀ`` per weight — rank ``K·r``. Forming it densely would cost
a parameter-sized array per weight and step, the very thing low-rank tangents avoid, so the
estimate stays ``LowRankGrad(u, v, shape)`` (``g = reshape(u @ vᵀ, shape)``) and the
optimizers apply it where it lands: ``add_to(p, -lr)`` is one in-place rank-R BLAS update
(``ger`` for rank 1, ``gemm`` with ``beta=1`` otherwise, through SciPy when it is installed;
else in row blocks of at most 8,192 elements) on the parameter's own memory.
Anything else reads it as an array (``np.asarray(g)``, ``g.dense()``), so generic code
stays correct. No tracegrad imports: every layer (optimizers included) may use it.

``ordered=True`` (data-parallel workers, ``train/distributed.py``): ``add_to`` and ``dense``
sum the R rank-1 terms column by column, in order, with NumPy ufuncs only (an outer product
and an add per term, on cache-sized row blocks), never a BLAS reduction whose order depends
on the library, its kernel or its thread count — so every worker that applies the same
factors gets the same bits.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["LowRankGrad"]

_BLOCK_ELEMENTS = 8192  # NumPy fallback without SciPy: row blocks of at most this many elements
_ORDERED_BLOCK_ELEMENTS = 32768  # ordered sums: two blocks of 128 KiB (float32) stay in L2


class LowRankGrad:
    """``reshape(u @ vᵀ, shape)`` with ``u`` of shape ``(shape[0], R)`` and ``v`` of shape
    ``(prod(shape[1:]), R)``."""

    __slots__ = ("ordered", "shape", "u", "v")
    __array_priority__ = 20

    def __init__(self, u: Any, v: Any, shape: tuple[int, ...], *, ordered: bool = False):
        shape = tuple(int(s) for s in shape)
        if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1] \
                or u.shape[0] != shape[0] or v.shape[0] != math.prod(shape[1:]):
            raise ValueError(f"factors of shapes {u.shape} and {v.shape} do not form a gradient of shape {shape}")
        self.u, self.v, self.shape, self.ordered = u, v, shape, bool(ordered)

    @property
    def dtype(self) -> np.dtype:
        return self.u.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])

    def dense(self, out: Any = None) -> Any:
        """The gradient as an array (written into ``out`` when given: a kept buffer)."""
        if self.ordered and type(self.u) is np.ndarray:
            if out is None or not (out.dtype == self.u.dtype and out.flags.c_contiguous):
                dense = self._ordered_sum(np.zeros(self.shape, self.u.dtype), 1.0)
                if out is None:
                    return dense
                out[...] = dense
                return out
            out[...] = 0
            return self._ordered_sum(out, 1.0)
        if out is None:
            return (self.u @ self.v.T).reshape(self.shape)
        if out.dtype == self.u.dtype and out.flags.c_contiguous:
            flat = out.reshape(self.shape[0], -1)
            if type(out) is np.ndarray:
                np.matmul(self.u, self.v.T, out=flat)
            else:  # CuPy: the same ufunc-style call on the device
                flat[...] = self.u @ self.v.T
            return out
        out[...] = (self.u @ self.v.T).reshape(self.shape)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        d = np.asarray(self.dense())
        return d if dtype is None else d.astype(dtype, copy=False)

    def add_to(self, target: Any, alpha: float = 1.0) -> Any:
        """``target += alpha * g`` in place, without a parameter-sized temporary; returns target."""
        if target.shape != self.shape:
            raise ValueError(f"gradient of shape {self.shape} added to an array of shape {target.shape}")
        if type(target) is np.ndarray and target.flags.c_contiguous and target.flags.writeable:
            flat = target.reshape(self.shape[0], -1)
            u = self.u.astype(target.dtype, copy=False)
            v = self.v.astype(target.dtype, copy=False)
            if self.ordered:
                return self._ordered_sum(target, alpha)
            if _blas_update(flat, u, v, alpha):
                return target
            rows = max(1, _BLOCK_ELEMENTS // max(1, flat.shape[1]))
            for s in range(0, flat.shape[0], rows):  # no SciPy: small row blocks, a cache-sized temporary
                block = u[s:s + rows] @ v.T
                block *= alpha
                flat[s:s + rows] += block
                del block  # one block alive at a time
            return target
        target += alpha * self.dense().astype(target.dtype, copy=False)  # CuPy / strided: one temporary
        return target

    def _ordered_sum(self, target: np.ndarray, alpha: float) -> np.ndarray:
        """``target += Σ_j (alpha u[:, j]) ⊗ v[:, j]``, term by term in column order: per row
        block, ``acc = u'_0 ⊗ v_0; acc += u'_1 ⊗ v_1; ...; block += acc``."""
        flat = target.reshape(self.shape[0], -1)
        u = self.u.astype(target.dtype, copy=False)
        if alpha != 1:  # alpha folded into u: O(d0·R) instead of a pass over the parameter
            u = u * target.dtype.type(alpha)
        v = self.v.astype(target.dtype, copy=False)
        cols = flat.shape[1]
        rows = max(1, _ORDERED_BLOCK_ELEMENTS // max(1, cols))
        acc = np.empty((min(rows, flat.shape[0]), cols), target.dtype)
        tmp = np.empty_like(acc) if self.rank > 1 else acc
        for s in range(0, flat.shape[0], rows):
            e = min(flat.shape[0], s + rows)
            a, t = acc[:e - s], tmp[:e - s]
            np.multiply.outer(u[s:e, 0], v[:, 0], out=a)
            for j in range(1, self.rank):
                np.multiply.outer(u[s:e, j], v[:, j], out=t)
                a += t
            flat[s:e] += a
        return target

    def __repr__(self) -> str:
        return (f"LowRankGrad(shape={self.shape}, rank={self.rank}, dtype={self.dtype}"
                + (", ordered)" if self.ordered else ")"))


_BLAS: dict[str, Any] | None = None


def _blas_update(flat: np.ndarray, u: np.ndarray, v: np.ndarray, alpha: float) -> bool:
    """``flat += alpha u vᵀ`` through SciPy's BLAS on the Fortran view ``flat.T``
    (``flat.T += alpha v uᵀ``); False when SciPy or the dtype is unavailable."""
    global _BLAS
    if _BLAS is None:
        try:
            from scipy.linalg import blas
        except ImportError:  # SciPy is optional: the caller falls back to row blocks
            _BLAS = {}
        else:
            _BLAS = {"f": (blas.sger, blas.sgemm), "d": (blas.dger, blas.dgemm)}
    fns = _BLAS.get(flat.dtype.char)
    if fns is None:
        return False
    ger, gemm = fns
    ft = flat.T  # (rest, d0), Fortran-contiguous: BLAS updates it in place
    if u.shape[1] == 1:
        res = ger(alpha, v[:, 0], u[:, 0], a=ft, overwrite_a=1)
    else:
        res = gemm(alpha, v, u, beta=1.0, c=ft, trans_b=1, overwrite_c=1)
    if not np.shares_memory(res, flat):  # SciPy copied after all: write the result back
        ft[...] = res
    return True
