"""One drawing-neutral description of a graph, shared by every view.

``describe(graph)`` turns a ``Graph`` into ``ViewNode`` and ``ViewEdge`` records (ids,
labels, roles, shapes, source lines, costs, optional values). The networkx, DOT and HTML
views only format these records, so all of them agree on what a node is and says.

Ids are stable and safe in DOT, SVG, HTML and URLs: ``in<i>`` for the i-th graph input,
``c<i>`` for constant arrays, ``n<i>`` for the i-th node, ``out<j>`` for the j-th output.

Fusion groups: ``transforms.fuse`` labels nodes with ``node.fusion_group`` (an int); nodes
without one have ``group=None``.

Line groups (``ViewNode.line_group``, ``View.line_groups``): the drawings band or cluster
nodes by the user source line that made them, so a network reads layer by layer. A group
is a *run* of consecutive nodes (in execution order) from one source line: a helper such
as ``conv_relu`` called four times gives four groups, not one tangle. Because runs follow
execution order, edges between groups always point from an earlier group to a later one.
An input or constant array joins the group of its first consumer, an output that of its
producer. A graph whose nodes all come from one line has no line groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..ir import Graph, Literal, Node, Var
from .stats import node_bytes
from .text import format_value

__all__ = ["LineGroup", "View", "ViewEdge", "ViewNode", "describe", "fusion_group", "resolve_values"]


@dataclass
class ViewNode:
    id: str
    kind: str  # "input" | "constant" | "node" | "output"
    role: str  # "primal" | "tangent"
    name: str  # the variable name(s) of the listing, e.g. "c" or "out0"
    primitive: str | None
    shape: tuple[int, ...]
    dtype: str
    aval: str  # "f64[3]"
    params: dict[str, Any] = field(default_factory=dict)
    params_text: str = ""
    operands: list[str] = field(default_factory=list)  # names or literal text, in order
    scalars: list[str] = field(default_factory=list)  # scalar literal operands (no edge)
    source: str | None = None  # "file.py:12"
    source_file: str | None = None
    source_line: str | None = None  # the code on that line
    source_function: str | None = None
    group: Any = None
    flops: int = 0
    bytes: int = 0
    value: str | None = None  # formatted value when values were given
    line_group: str | None = None  # id of its ``LineGroup`` (see the module docstring)


@dataclass
class ViewEdge:
    id: str
    src: str
    dst: str
    operand: int  # position among the consumer's operands
    var: str  # name of the value carried
    shape: tuple[int, ...]
    dtype: str
    aval: str
    role: str


@dataclass
class LineGroup:
    """A run of nodes made by one user source line (see the module docstring)."""

    id: str  # "grp<k>", in execution order
    source: str  # "model.py:12"
    function: str | None
    code: str | None  # the line of code
    members: list[str] = field(default_factory=list)  # view ids, in view order
    occurrence: int = 1  # the how-many-th run of this source line (a helper called again)

    @property
    def label(self) -> str:
        where = self.source + (f" in {self.function}" if self.function else "")
        return where + (f" (call {self.occurrence})" if self.occurrence > 1 else "")


@dataclass
class View:
    name: str
    nodes: list[ViewNode]
    edges: list[ViewEdge]
    line_groups: list[LineGroup] = field(default_factory=list)

    def node(self, node_id: str) -> ViewNode:
        return next(n for n in self.nodes if n.id == node_id)


def fusion_group(graph: Graph, node: Node) -> Any:
    """The fusion-group label of ``node`` (``None`` until a fusion pass assigns one)."""
    return node.fusion_group


def resolve_values(graph: Graph, values: Any) -> dict[Var, Any] | None:
    """``values`` as a ``{Var: value}`` map: given as one, or as the graph's input arrays."""
    if values is None:
        return None
    if isinstance(values, Mapping):
        return dict(values)
    return graph.values(*values)


def describe(graph: Graph, values: Any = None) -> View:
    """The view records of ``graph``; ``values`` as in ``resolve_values``."""
    env = resolve_values(graph, values)
    names = graph.names()
    roles = graph.roles()
    nodes: list[ViewNode] = []
    edges: list[ViewEdge] = []
    producer: dict[Any, str] = {}
    consts: dict[int, str] = {}

    def val(v: Any) -> str | None:
        if env is None:
            return None
        if isinstance(v, Literal):
            return format_value(v.value)
        return format_value(env[v]) if v in env else None

    def base(id_: str, kind: str, role: str, name: str, a: Any) -> ViewNode:
        return ViewNode(id_, kind, role, name, None, a.aval.shape, str(a.aval.dtype), str(a.aval))

    for i, (v, kind) in enumerate(zip(graph.inputs, graph.input_kinds)):
        vn = base(f"in{i}", "input", kind, names[v], v)
        vn.value = val(v)
        nodes.append(vn)
        producer[v] = vn.id

    def operand_source(a: Any) -> str | None:
        """The view id feeding operand ``a``; constant arrays get a node of their own."""
        if isinstance(a, Var):
            return producer[a]
        if a.is_scalar:
            return None
        key = id(a.value)
        if key not in consts:
            consts[key] = f"c{len(consts)}"
            vn = base(consts[key], "constant", "primal", a.short(), a)
            vn.value = format_value(a.value) if env is not None else None
            nodes.append(vn)
        return consts[key]

    def edge(src: str, dst: str, pos: int, a: Any, label: str) -> None:
        role = roles.get(a, "primal") if isinstance(a, Var) else "primal"
        edges.append(ViewEdge(f"e{len(edges)}", src, dst, pos, label, a.aval.shape,
                              str(a.aval.dtype), str(a.aval), role))

    for i, node in enumerate(graph.nodes):
        src = node.source
        out = node.out
        vn = ViewNode(
            f"n{i}", "node", roles[out], ", ".join(names[v] for v in node.outputs),
            node.primitive.name, out.aval.shape, str(out.aval.dtype),
            " ".join(str(v.aval) for v in node.outputs),
            params=dict(node.params), params_text=node.primitive.format_params(node.params)[1:-1],
            operands=[names[a] if isinstance(a, Var) else a.short() for a in node.inputs],
            scalars=[a.short() for a in node.inputs if isinstance(a, Literal) and a.is_scalar],
            source=src.short() if src else None, source_file=src.filename if src else None,
            source_line=src.line.strip() if src and src.line else None,
            source_function=src.function if src and src.function else None,
            group=fusion_group(graph, node),
            flops=node.primitive.flop_count([a.aval for a in node.inputs],
                                            [v.aval for v in node.outputs], node.params),
            bytes=node_bytes(node),
        )
        if env is not None:
            shown = [val(v) for v in node.outputs]
            vn.value = None if None in shown else "; ".join(shown)  # type: ignore[arg-type]
        nodes.append(vn)
        for pos, a in enumerate(node.inputs):
            s = operand_source(a)
            if s is not None:
                edge(s, vn.id, pos, a, names[a] if isinstance(a, Var) else a.short())
        for v in node.outputs:
            producer[v] = vn.id

    for j, a in enumerate(graph.outputs):
        role = roles.get(a, "primal") if isinstance(a, Var) else "primal"
        vn = base(f"out{j}", "output", role, f"out{j}", a)
        vn.operands = [names[a] if isinstance(a, Var) else a.short()]
        vn.value = val(a)
        nodes.append(vn)
        s = operand_source(a)
        if s is not None:
            edge(s, vn.id, 0, a, vn.operands[0])
    return View(graph.name, nodes, edges, _line_groups(nodes, edges))


def _lineno(source: str) -> int:
    return int(source.rpartition(":")[2] or 0)


def _merge_data_movement(groups: list[LineGroup], by_id: dict[str, ViewNode]) -> list[LineGroup]:
    """A run that only moves data (0 FLOPs: a bias reshaped, a slice) joins the next run
    when that one follows it in the same function: ``b = reshape(b)`` then ``conv(x) + b``
    read as one layer."""
    out: list[LineGroup] = []
    pending: LineGroup | None = None
    for g in groups:
        if pending is not None:
            same_file = pending.source.rpartition(":")[0] == g.source.rpartition(":")[0]
            if same_file and pending.function == g.function and _lineno(g.source) > _lineno(pending.source):
                g.members[:0] = pending.members
                g.source = f"{g.source.rpartition(':')[0]}:{_lineno(pending.source)}-{_lineno(g.source)}"
            else:
                out.append(pending)
            pending = None
        if all(by_id[m].flops == 0 for m in g.members) and "-" not in g.source:
            pending = g
        else:
            out.append(g)
    if pending is not None:
        out.append(pending)
    seen: dict[str, int] = {}
    for k, g in enumerate(out):
        g.id = f"grp{k}"
        seen[g.source] = seen.get(g.source, 0) + 1
        g.occurrence = seen[g.source]
        for m in g.members:
            by_id[m].line_group = g.id
    return out


def _line_groups(nodes: list[ViewNode], edges: list[ViewEdge]) -> list[LineGroup]:
    """Sets ``line_group`` on every node and returns the groups (module docstring)."""
    groups: list[LineGroup] = []
    seen: dict[str, int] = {}
    for n in nodes:
        if n.kind != "node" or n.source is None:
            continue
        if not groups or groups[-1].source != n.source or groups[-1].function != n.source_function:
            seen[n.source] = seen.get(n.source, 0) + 1
            groups.append(LineGroup(f"grp{len(groups)}", n.source, n.source_function, n.source_line,
                                    occurrence=seen[n.source]))
        groups[-1].members.append(n.id)
        n.line_group = groups[-1].id
    groups = _merge_data_movement(groups, {n.id: n for n in nodes})
    if len(groups) < 2:
        for n in nodes:
            n.line_group = None
        return []
    by_id = {n.id: n for n in nodes}
    for n in nodes:
        if n.line_group is not None or n.kind == "node":
            continue
        if n.kind == "output":
            ends = [by_id[e.src] for e in edges if e.dst == n.id]
        else:  # inputs and constants: the first consumer (edges are in execution order)
            ends = [by_id[e.dst] for e in edges if e.src == n.id and by_id[e.dst].kind == "node"]
        if ends and ends[0].line_group is not None:
            n.line_group = ends[0].line_group
    order = {g.id: g for g in groups}
    for g in groups:
        g.members = []
    for n in nodes:
        if n.line_group is not None:
            order[n.line_group].members.append(n.id)
    return groups
