"""The JVP transform: primal graph -> one graph computing primal outputs and tangents.

It replays the primal graph on tracers of a new ``GraphBuilder`` and calls each
primitive's JVP rule, which is written with the same traceable ops; whatever a rule
computes becomes nodes of the new graph. Tangents that are symbolically zero (inputs
given ``None``, integer values, non-differentiable ops) never produce nodes. With
``batch=(K,)`` each tangent input carries K directions on a leading axis, and all K
JVPs run in the one graph. Since the result is an ordinary graph, applying ``jvp_graph``
to it again gives higher-order derivatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import TangentError
from ..ir import Aval, Graph, Literal, Var
from ..tracing.tracer import GraphBuilder, bind
from . import tangents as T

__all__ = ["jvp_graph"]


def jvp_graph(graph: Graph, tangent_mask: Sequence[bool], batch: tuple[int, ...] = ()) -> tuple[Graph, list[bool]]:
    """Build the fused primal+tangent graph.

    Inputs of the result: all primal inputs, then one tangent input per ``True`` in
    ``tangent_mask`` (shape ``batch + primal shape``). Outputs: all primal outputs, then one
    tangent per float output (the returned mask says which outputs got one).
    """
    if len(tangent_mask) != len(graph.inputs):
        raise ValueError("tangent_mask must have one entry per graph input")
    builder = GraphBuilder(graph.name + "_jvp")
    env: dict[Var, Any] = {}
    tenv: dict[Var, Any] = {}
    for v in graph.inputs:
        env[v] = builder.new_input(v.aval, v.hint, "primal")
    nbatch = len(batch)
    for v, wanted in zip(graph.inputs, tangent_mask):
        if wanted:
            if not v.aval.is_float:
                raise TangentError(f"input {v.hint or ''} of dtype {v.aval.dtype} cannot have a tangent")
            hint = (v.hint + "_dot") if v.hint else None
            t = builder.new_input(Aval(batch + v.aval.shape, v.aval.dtype), hint, "tangent")
            tenv[v] = T.Dense(t, nbatch)
        else:
            tenv[v] = T.Zero(v.aval)

    def read(a: Any) -> Any:
        return env[a] if isinstance(a, Var) else a.value

    def read_t(a: Any) -> Any:
        return tenv[a] if isinstance(a, Var) else T.Zero(a.aval)

    with T.batch_context(batch):
        for node in graph.nodes:
            builder.current_source = node.source
            prim = node.primitive
            primals = [read(a) for a in node.inputs]
            tangents = [read_t(a) for a in node.inputs]
            if prim.jvp is None or all(isinstance(t, T.Zero) for t in tangents):
                outs = bind(prim, *primals, **node.params)
                outs_t = [T.Zero(v.aval) for v in node.outputs]
            else:
                outs, outs_t = prim.jvp(primals, tangents, **node.params)
                if not prim.multiple_results:
                    outs_t = [outs_t]
            if not prim.multiple_results:
                outs = [outs]
            env.update(zip(node.outputs, outs))
            tenv.update(zip(node.outputs, outs_t))
        builder.current_source = None
        out_primals = [read(a) for a in graph.outputs]
        out_mask = [a.aval.is_float for a in graph.outputs]
        out_tangents = [T.instantiate(read_t(a)) for a, m in zip(graph.outputs, out_mask) if m]
    result = builder.build(out_primals + out_tangents)
    return result, out_mask


def _is_literal(a: Any) -> bool:
    return isinstance(a, Literal)
