"""Dead-code elimination: drop nodes none of whose outputs reach a graph output."""

from __future__ import annotations

from ..ir import Graph, Var


def dce(graph: Graph) -> Graph:
    live: set[Var] = {a for a in graph.outputs if isinstance(a, Var)}
    kept = []
    for node in reversed(graph.nodes):
        if any(v in live for v in node.outputs):
            kept.append(node)
            live.update(a for a in node.inputs if isinstance(a, Var))
    kept.reverse()
    return graph.replace(nodes=kept)
