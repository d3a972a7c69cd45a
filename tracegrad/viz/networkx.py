"""``Graph.to_networkx()``: the graph as a ``networkx.DiGraph`` for analysis and plotting.

Nodes are keyed by the view ids (``in0``, ``c0``, ``n3``, ``out0``; see ``model``). Node
attributes: ``kind`` (input / constant / node / output), ``role`` (primal / tangent: does
it depend on a tangent input), ``label``/``name``, ``primitive``, ``shape``, ``dtype``,
``aval``, ``params`` (dict), ``params_text``, ``operands``, ``source`` ("file.py:12"),
``source_file``, ``source_line`` (the code), ``source_function``, ``group`` (fusion group
or ``None``), ``flops``, ``bytes`` and ``value`` (formatted, or ``None`` without values).
Edge attributes: ``operand`` (position among the consumer's operands), ``var``, ``shape``,
``dtype``, ``aval``, ``role``. Two operands reading the same value give one edge whose
``operands`` attribute lists every position.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..ir import Graph
from .model import describe

__all__ = ["to_networkx"]


def to_networkx(graph: Graph, *, values: Any = None) -> Any:
    """A ``networkx.DiGraph`` of ``graph`` (see the module docstring for the attributes)."""
    import networkx as nx

    view = describe(graph, values)
    g = nx.DiGraph(name=graph.name)
    for n in view.nodes:
        attrs = asdict(n)
        del attrs["id"]
        attrs["label"] = n.name
        g.add_node(n.id, **attrs)
    for e in view.edges:
        if g.has_edge(e.src, e.dst):  # ``mul x x``: one edge, both operand positions
            g.edges[e.src, e.dst]["operands"].append(e.operand)
            continue
        g.add_edge(e.src, e.dst, operand=e.operand, operands=[e.operand], var=e.var, shape=e.shape,
                   dtype=e.dtype, aval=e.aval, role=e.role)
    return g
