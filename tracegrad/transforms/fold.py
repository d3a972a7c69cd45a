"""Constant folding and algebraic simplification.

A node whose operands are all literals is evaluated now and becomes a literal. The
identities each primitive declares are applied where the result keeps the node's exact
shape and dtype: units (``Primitive.units``: ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``,
``x / 1``, ``x ** 1``) and involutions (``Primitive.involution``: ``neg(neg(x))``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Aval, Graph, Literal, Node, Var


def _literal(value: Any, aval: Aval) -> Literal:
    if isinstance(value, np.ndarray) or not aval.weak:
        value = np.asarray(value) if aval.shape or isinstance(value, np.ndarray) else value
    return Literal(value, aval)


def _is_const(a: Any, c: float) -> bool:
    if not isinstance(a, Literal):
        return False
    v = a.value
    if isinstance(v, np.ndarray):
        return v.size <= 64 and bool(np.all(v == c))
    return bool(v == c)


def _same(a: Any, out: Var) -> bool:
    return isinstance(a, Var) and a.aval.shape == out.aval.shape and a.aval.dtype == out.aval.dtype


def _simplify(node: Node) -> Any:
    """An existing atom equal to the node's (single) output by a declared unit, or None."""
    ins, out = node.inputs, node.outputs[0]
    if len(ins) != 2:
        return None
    for pos, unit in node.primitive.units:
        other = ins[1 - pos]
        if _is_const(ins[pos], unit) and _same(other, out):
            return other
    return None


def fold(graph: Graph) -> Graph:
    subst: dict[Var, Any] = {}
    producer: dict[Var, Node] = {}
    nodes = []

    def sub(a: Any) -> Any:
        return subst.get(a, a) if isinstance(a, Var) else a

    for node in graph.nodes:
        inputs = tuple(sub(a) for a in node.inputs)
        node = node.replace(inputs=inputs)
        if inputs and all(isinstance(a, Literal) for a in inputs) and not node.primitive.multiple_results:
            with np.errstate(all="ignore"):
                value = node.primitive.impl(*[a.value for a in inputs], **node.params)
            subst[node.outputs[0]] = _literal(value, node.outputs[0].aval)
            continue
        if not node.primitive.multiple_results:
            same = _simplify(node)
            if same is None and node.primitive.involution and isinstance(inputs[0], Var):
                inner = producer.get(inputs[0])
                if inner is not None and inner.primitive is node.primitive:
                    same = inner.inputs[0]
            if same is not None:
                subst[node.outputs[0]] = same
                continue
        for v in node.outputs:
            producer[v] = node
        nodes.append(node)
    outputs = [sub(a) for a in graph.outputs]
    return graph.replace(nodes=nodes, outputs=outputs)
