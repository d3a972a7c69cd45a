"""The JVP transform: primal graph -> one graph computing primal outputs and tangents.

It replays the primal graph (the shared loop, ``replay.replay``, with ``JVPInterpreter``:
values are ``(primal, tangent)`` pairs) on tracers of a new ``GraphBuilder`` and calls each
primitive's JVP rule, which is written with the same traceable ops; whatever a rule
computes becomes nodes of the new graph. Tangents that are symbolically zero (inputs
given ``None``, integer values, non-differentiable ops) never produce nodes. With
``batch=(K,)`` each tangent input carries K directions on a leading axis
(``tangents.directions()``), and all K JVPs run in the one graph; ``kinds`` lets a structured
tangent kind enter as its own inputs (low-rank factors). Since the result is an ordinary graph, applying ``jvp_graph``
to it again gives higher-order derivatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import TangentError
from ..ir import Graph, Literal, Node
from ..tracing.tracer import GraphBuilder
from . import tangents as T
from .replay import bind_node, replay

__all__ = ["JVPInterpreter", "jvp_graph"]


class JVPInterpreter:
    """Values are ``(primal, tangent)`` pairs; each node runs its primitive's JVP rule, or
    just the primitive when every operand tangent is symbolically zero (no tangent work)."""

    def literal(self, lit: Literal) -> tuple[Any, T.Tangent]:
        return lit.value, T.Zero(lit.aval)

    def node(self, node: Node, values: list[Any]) -> list[tuple[Any, T.Tangent]]:
        prim = node.primitive
        primals = [p for p, _ in values]
        tangents = [t for _, t in values]
        if prim.jvp is None or all(t.is_zero for t in tangents):
            outs = bind_node(node, primals)
            outs_t: Any = [T.Zero(v.aval) for v in node.outputs]
        else:
            outs, outs_t = prim.jvp(primals, tangents, **node.params)
            if not prim.multiple_results:
                outs, outs_t = [outs], [outs_t]
        return list(zip(outs, outs_t))


def jvp_graph(graph: Graph, tangent_mask: Sequence[bool], batch: tuple[int, ...] = (),
              kinds: Sequence[T.DenseInput | None] | None = None) -> tuple[Graph, list[bool]]:
    """Build the fused primal+tangent graph.

    Inputs of the result: all primal inputs, then the tangent inputs of each ``True`` in
    ``tangent_mask``: one of shape ``batch + primal shape``, or what ``kinds[i]`` (a tangent
    kind's input description, e.g. low-rank factors) asks for. Outputs: all primal outputs,
    then one tangent per float output (the returned mask says which outputs got one).
    """
    if len(tangent_mask) != len(graph.inputs):
        raise ValueError("tangent_mask must have one entry per graph input")
    builder = GraphBuilder(graph.name + "_jvp")
    primals = [builder.new_input(v.aval, v.hint, "primal") for v in graph.inputs]
    with T.directions_context(batch):
        tangents: list[T.Tangent] = []
        for i, (v, wanted) in enumerate(zip(graph.inputs, tangent_mask)):
            if wanted:
                if not v.aval.is_float:
                    raise TangentError(f"input {v.hint or ''} of dtype {v.aval.dtype} cannot have a tangent")
                kind = (kinds[i] if kinds is not None else None) or T.DENSE
                ins = [builder.new_input(a, (v.hint + suffix) if v.hint else None, "tangent")
                       for suffix, a in kind.input_avals(v.aval, batch)]
                tangents.append(kind.build(v.aval, ins))
            else:
                tangents.append(T.Zero(v.aval))
        read = replay(graph, builder, JVPInterpreter(), list(zip(primals, tangents)))
        outs = [read(a) for a in graph.outputs]
        out_mask = [a.aval.is_float for a in graph.outputs]
        out_tangents = [T.instantiate(t) for (_, t), m in zip(outs, out_mask) if m]
    result = builder.build([p for p, _ in outs] + out_tangents)
    return result, out_mask
