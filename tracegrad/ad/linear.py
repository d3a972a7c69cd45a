"""Named linear maps: what a tangent is pushed through, by name and parameters.

A JVP rule for an operation linear in an operand ``x`` applies a linear map to ``x_dot``.
Written as an anonymous closure, that map is opaque: a structured tangent could only
materialize itself and call it. Written as a ``LinearMap`` — a *name*, the *params* a
structured kind needs, and the dense implementation — a tangent kind can recognize the
map and push it through its factors instead, e.g. a low-rank weight tangent ``Ẇ = a bᵀ``
under ``matmul_right`` (``x @ Ẇ``) becomes ``(x @ a) bᵀ``. A map may also carry its
``transpose`` (the cotangent map of reverse mode), so one definition serves the JVP and
the VJP of a bilinear primitive (``rules.defbilinear``).

The names tracegrad's rules use, with their params (the contract a tangent kind reads):

=================  ==============================================  ====================
name               map                                             params
=================  ==============================================  ====================
``scale``          ``v * factor`` (elementwise, broadcasting)      ``factor``
``matmul_left``    ``v @ w`` (tangent of the left operand)         ``w``
``matmul_right``   ``a @ v`` (tangent of the right operand)        ``a``
``einsum``         operand ``i`` of an einsum replaced by ``v``    ``subscripts, i, operands``
``conv2d_input``   ``conv2d(v, w)``                                ``w, stride, padding``
``conv2d_weight``  ``conv2d(x, v)`` (tangent of the kernel)        ``x, stride, padding``
``transpose``      ``np.transpose(v, perm)``                       ``perm``
``reshape``        ``np.reshape(v, shape)``                        ``shape``
``broadcast_to``   ``np.broadcast_to(v, shape)``                   ``shape``
``index``          ``v[template]`` (basic and integer indexing)    ``template, arrays``
``scatter_add``    transpose of ``index``                          ``template, arrays, shape``
``take_along_axis````np.take_along_axis(v, indices, axis)``        ``indices, axis``
``reduce_sum``     ``np.sum(v, axes, keepdims)``                   ``axes, keepdims``
``astype``         ``v.astype(dtype)``                             ``dtype``
``avg_pool2d``     window means                                    ``window, stride``
=================  ==============================================  ====================

``dense(v, nb)`` receives ``v`` with ``nb`` direction axes in front and keeps them there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LinearMap"]


class LinearMap:
    """A linear map on tangents, identified by ``name`` and ``params``.

    ``dense(v, nb)``: the image of a materialized tangent ``v`` whose first ``nb`` axes are
    directions; ``transpose(ct)``: the cotangent of the operand given the cotangent of the
    image (reverse mode; ``None`` when no VJP is derived from this map)."""

    __slots__ = ("dense", "name", "params", "transpose")

    def __init__(self, name: str, dense: Callable[[Any, int], Any],
                 transpose: Callable[[Any], Any] | None = None, **params: Any):
        self.name = name
        self.dense = dense
        self.transpose = transpose
        self.params = params

    def __repr__(self) -> str:
        return f"LinearMap({self.name}, {sorted(self.params)})"
