"""The low-rank tangent kind: a weight's tangent kept as factors, ``Ẇ_k = a_k b_kᵀ``.

A parameter of shape ``(d0, d1, ...)`` (ndim >= 2) gets, per direction ``k``, the tangent
``reshape(a_k @ b_kᵀ, shape)`` with ``a_k`` of shape ``(d0, r)`` and ``b_k`` of shape
``(d1 * d2 * ..., r)``: a matrix is ``a bᵀ``; a conv kernel ``(O, I, kh, kw)`` is an
out-channel factor times an ``(I·kh·kw)`` factor. With independent zero-mean unit-variance
entries and ``a`` scaled by ``1/sqrt(r)``, ``E[vec(Ẇ) vec(Ẇ)ᵀ] = I``, so the forward
gradient ``(∇f·Ẇ) Ẇ`` stays unbiased (``forward_grad(..., tangents="rank1")``).

Why: under ``x @ W`` a dense tangent costs a second GEMM the size of the forward one
(``x @ Ẇ``); through the factors it is ``(x @ a) bᵀ``, two thin products. The kind
exploits the maps where that pays — ``matmul_right`` (``x @ Ẇ``), ``matmul_left``
(``Ẇ @ w``), ``transpose`` of a matrix (``Ẇᵀ = b aᵀ``) and ``conv2d_weight`` (the
convolution with the ``r`` rows of ``bᵀ`` as kernels, then the out-channel factor) — and
densifies through the protocol's fallback for everything else, which stays correct.
The JVP graph's inputs are the factors (hints ``<name>_a``, ``<name>_b``), so listings
show them and no ``(K, m, n)`` tangent exists in the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..ir import Aval
from ..ir.primitive import PRIMITIVES
from ..tracing.dispatch import numpy_namespace
from ..tracing.tracer import aval_of, bind
from . import tangents as T
from .linear import LinearMap

__all__ = ["LowRank", "LowRankInput", "factor_shapes"]


def factor_shapes(shape: tuple[int, ...], rank: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The shapes of ``a`` and ``b`` (one direction) for a parameter of ``shape``."""
    return (int(shape[0]), int(rank)), (math.prod(shape[1:]), int(rank))


def _swap(x: Any) -> Any:
    return numpy_namespace().swapaxes(x, -1, -2)


class LowRank(T.Tangent):
    """``Ẇ_k = reshape(a_k b_kᵀ, aval.shape)``; ``a``: ``directions() + (d0, r)``, ``b``:
    ``directions() + (d1·d2·…, r)``."""

    __slots__ = ("_aval", "a", "b")

    def __init__(self, a: Any, b: Any, aval: Aval):
        self.a, self.b, self._aval = a, b, aval

    @property
    def aval(self) -> Aval:
        return self._aval

    def dense(self) -> Any:
        tnp = numpy_namespace()
        return tnp.reshape(tnp.matmul(self.a, _swap(self.b)), T.directions() + self._aval.shape)

    def neg(self) -> T.Tangent:
        return LowRank(-self.a, self.b, self._aval)

    def map(self, lm: LinearMap, out: Aval) -> T.Tangent:
        if not out.is_float:
            return T.Zero(out)
        shape = self._aval.shape
        tnp = numpy_namespace()
        dirs = T.directions()
        if len(shape) == 2 and lm.name == "matmul_right":  # x @ Ẇ = (x @ a) bᵀ
            x = lm.params["a"]
            xs = aval_of(x).shape
            if len(xs) >= 2 and xs[-1] == shape[0] and out.shape == xs[:-1] + shape[1:]:
                x2 = x if len(xs) == 2 else tnp.reshape(x, (-1, xs[-1]))
                y = tnp.matmul(tnp.matmul(x2, self.a), _swap(self.b))  # dirs + (rows, n)
                if len(xs) != 2:
                    y = tnp.reshape(y, dirs + out.shape)
                return T.Dense(y).fit(out)
        if len(shape) == 2 and lm.name == "matmul_left":  # Ẇ @ w = a (wᵀ b)ᵀ
            w = lm.params["w"]
            ws = aval_of(w).shape
            if len(ws) == 2 and ws[0] == shape[1] and out.shape == (shape[0], ws[1]):
                wb = tnp.matmul(_swap(w), self.b)  # dirs + (p, r)
                return T.Dense(tnp.matmul(self.a, _swap(wb))).fit(out)
        if len(shape) == 2 and lm.name == "transpose" and tuple(lm.params["perm"]) == (1, 0):
            return LowRank(self.b, self.a, Aval(shape[::-1], self._aval.dtype))
        if len(shape) == 4 and lm.name == "conv2d_weight" and len(out.shape) == 4:
            return self._conv_weight(lm, out)
        return super().map(lm, out)

    def _conv_weight(self, lm: LinearMap, out: Aval) -> T.Tangent:
        """``conv2d(x, Ẇ)`` on the factors: ``x`` convolved with the ``K·r`` kernels ``bᵀ``
        (instead of ``K·O``), then each output channel mixed by ``a``: for rank 1 the
        convolution has one output channel per direction."""
        tnp = numpy_namespace()
        dirs = T.directions()
        o, c, kh, kw = self._aval.shape
        r = aval_of(self.a).shape[-1]
        k = math.prod(dirs)
        kernels = tnp.reshape(_swap(self.b), (k * r, c, kh, kw))
        y = bind(PRIMITIVES["conv2d"], lm.params["x"], kernels, stride=lm.params["stride"],
                 padding=lm.params["padding"])  # (N, K·r, H', W')
        n, _, ho, wo = out.shape
        y = tnp.reshape(y, (n, k, r, ho * wo))
        if k > 1:
            y = tnp.transpose(y, (1, 0, 2, 3))  # (K, N, r, L): small, r channels
        else:
            y = tnp.reshape(y, (1, n, r, ho * wo))
        a = tnp.reshape(self.a, (k, 1, o, r))
        z = tnp.matmul(a, y)  # (K, N, O, L)
        return T.Dense(tnp.reshape(z, dirs + out.shape)).fit(out)

    def __repr__(self) -> str:
        return f"LowRank({self._aval}, a={self.a!r}, b={self.b!r})"


@dataclass(frozen=True)
class LowRankInput(T.DenseInput):
    """Enters a JVP graph as the two factors of a rank-``rank`` tangent (parameters of
    ndim >= 2; others stay one dense input). Hashable: part of a compile-cache key."""

    rank: int = 1

    def input_avals(self, aval: Aval, batch: tuple[int, ...]) -> list[tuple[str, Aval]]:
        if len(aval.shape) < 2:
            return super().input_avals(aval, batch)
        sa, sb = factor_shapes(aval.shape, self.rank)
        return [("_a", Aval(batch + sa, aval.dtype)), ("_b", Aval(batch + sb, aval.dtype))]

    def build(self, aval: Aval, inputs: list[Any]) -> T.Tangent:
        if len(aval.shape) < 2:
            return super().build(aval, inputs)
        return LowRank(inputs[0], inputs[1], aval)
