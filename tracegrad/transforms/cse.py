"""Common-subexpression elimination: a node equal to an earlier one (same primitive,
same operands, same params) is dropped and its outputs are renamed to the earlier ones."""

from __future__ import annotations

from typing import Any

from ..ir import Graph, Node, Var, freeze


def _key(a: Any, rename: dict[Var, Var]) -> Any:
    if isinstance(a, Var):
        return ("var", id(rename.get(a, a)))
    return a.key()


def cse(graph: Graph) -> Graph:
    rename: dict[Var, Var] = {}
    seen: dict[Any, Node] = {}
    nodes = []

    def sub(a: Any) -> Any:
        return rename.get(a, a) if isinstance(a, Var) else a

    for node in graph.nodes:
        inputs = tuple(sub(a) for a in node.inputs)
        key = (node.primitive.name, tuple(_key(a, rename) for a in inputs), freeze(node.params))
        prior = seen.get(key)
        if prior is not None:
            rename.update(zip(node.outputs, prior.outputs))
            continue
        new = node.replace(inputs=inputs)
        seen[key] = new
        nodes.append(new)
    outputs = [sub(a) if isinstance(a, Var) else a for a in graph.outputs]
    return graph.replace(nodes=nodes, outputs=outputs)


__all__ = ["cse"]
