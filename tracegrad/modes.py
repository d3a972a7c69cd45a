"""Compile modes: what a ``Compiled`` function builds from its traced primal graph.

A mode is a small frozen (hashable) object, so it is part of the compile-cache key as it
is, and it knows the one transform it stands for: ``PRIMAL`` runs the function, ``JVPMode``
fuses primal and tangents (``ad.jvp_graph``), ``VJPMode`` value and gradient
(``ad.vjp_graph``). Every mode ends in the same clean-up passes. A new mode (activity
perturbation, a Jacobian) is one more class with ``build``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ad import jvp_graph, vjp_graph
from .ad.lowrank import LowRankInput
from .ad.perturb import activity_graph
from .ir import Graph, Var
from .transforms import optimize

__all__ = ["PRIMAL", "ActivityMode", "HessianMode", "JVPMode", "Mode", "PrimalMode", "VJPCotangentMode", "VJPMode"]


@dataclass(frozen=True)
class PrimalMode:
    """The function itself."""

    def build(self, primal: Graph) -> tuple[Graph, list[bool]]:
        """The graph to compile and, per primal output, whether it is float."""
        return optimize(primal), [a.aval.is_float for a in primal.outputs]


@dataclass(frozen=True)
class JVPMode:
    """Outputs and their tangents: ``mask`` says which input leaves carry tangents,
    ``batch`` is ``()`` or ``(K,)`` for K directions at once; ``rank > 0`` gives every
    tangent leaf of ndim >= 2 the low-rank kind (``ad.lowrank``: two factor inputs)."""

    mask: tuple[bool, ...]
    batch: tuple[int, ...] = ()
    rank: int = 0

    def build(self, primal: Graph) -> tuple[Graph, list[bool]]:
        kinds = None
        if self.rank:
            kind = LowRankInput(self.rank)
            kinds = [kind if m and len(v.aval.shape) >= 2 else None for v, m in zip(primal.inputs, self.mask)]
        fused, out_float = jvp_graph(primal, self.mask, self.batch, kinds)
        return optimize(fused), out_float


@dataclass(frozen=True)
class VJPMode:
    """Value and gradient with respect to the input leaves marked in ``wrt``."""

    wrt: tuple[bool, ...]

    def build(self, primal: Graph) -> tuple[Graph, list[bool]]:
        return optimize(vjp_graph(primal, self.wrt)), [a.aval.is_float for a in primal.outputs]


@dataclass(frozen=True)
class VJPCotangentMode:
    """Vector-Jacobian products: one cotangent input per float output (after the primal
    inputs); the outputs are the primal outputs and the cotangents of the ``wrt`` leaves."""

    wrt: tuple[bool, ...]

    def build(self, primal: Graph) -> tuple[Graph, list[bool]]:
        graph = optimize(vjp_graph(primal, self.wrt, cotangent_inputs=True))
        return graph, [isinstance(a, Var) and a.aval.is_float for a in primal.outputs]


@dataclass(frozen=True)
class HessianMode:
    """Forward over reverse: the JVP of the gradient graph (Hessian-vector products for
    ``batch`` directions at once)."""

    mask: tuple[bool, ...]
    batch: tuple[int, ...] = ()

    def build(self, primal: Graph) -> tuple[Graph, list[bool]]:
        fused, out_float = jvp_graph(vjp_graph(primal, self.mask), self.mask, self.batch)
        return optimize(fused), out_float


@dataclass(frozen=True)
class ActivityMode:
    """Activity-perturbed forward gradients (``ad.perturb``): the value, one estimate per
    ``wrt`` leaf and the per-example directional derivatives, for ``directions`` tangents per
    injection point (``average`` independent ones, ``groups`` block-sparse ones each; ``mask``:
    masked by the next op's derivative; ``exact_last``: exact gradients for the points whose
    tangents reach no other point, such as local heads and the output layer; ``layerwise``:
    every point's directions are its own; ``contract_tails``: loss tails contracted with their
    exact per-example gradient, off for the separability check)."""

    wrt: tuple[bool, ...]
    directions: int
    mask: bool = False
    average: int = 1
    groups: int = 1
    exact_last: bool = False
    layerwise: bool = False
    contract_tails: bool = True

    def build(self, primal: Graph) -> tuple[Graph, list[bool]]:
        graph = activity_graph(primal, self.wrt, self.directions, self.mask, self.average, self.groups,
                               self.exact_last, self.layerwise, self.contract_tails)
        return optimize(graph), [True]


Mode = ActivityMode | PrimalMode | JVPMode | VJPMode | VJPCotangentMode | HessianMode
PRIMAL = PrimalMode()
