"""Cost estimates of a graph: node counts, FLOPs, bytes moved and peak memory.

FLOP conventions (each primitive declares its rule once, as ``flops=`` on its declaration
in ``tracegrad/ops``; ``Primitive.flop_count`` applies it):

- elementwise ops (add, mul, exp, maximum, where, astype, ...): 1 FLOP per output element,
  whatever the op really costs (an ``exp`` is many machine instructions) — the default;
- matmul ``(m, k) @ (k, n)``: ``2*m*k*n`` (a multiply and an add per term), batches multiply;
- reductions (sum, max, argmax): 1 per input element; pools: 1 per window element read;
- conv2d: ``2*N*O*H'*W'*C*kh*kw``; einsum: a multiply-add per point of its index space;
- data movement (reshape, transpose, broadcast_to, indexing, concatenate): 0.

Bytes moved per node: the bytes of its array operands read plus its outputs written; a
NumPy view (reshape, transpose, broadcast_to, basic indexing; ``Primitive.view``) moves 0.

Peak memory simulates the NumPy emitter (``backends/emit.py``): inputs and constants are
live for the whole call; a node's outputs are allocated while its operands are still
alive; a temporary is deleted right after its last use; views share their base's buffer,
and so does a ufunc result written into a dying operand (``emit.plan_inplace``);
``emit.live_temporary_bytes`` is that simulation.
Temporaries inside one NumPy expression (e.g. conv2d's im2col copy) are not counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..ir import Graph, Literal, Node, Var
from ..transforms.liveness import live_temporary_bytes

__all__ = ["GraphStats", "NodeCost", "StatsComparison", "compare_stats", "graph_stats", "node_bytes"]


def _nbytes(a: Any) -> int:
    return a.aval.size * a.aval.dtype.itemsize


def _is_view(node: Node) -> bool:
    return node.primitive.is_view([a.aval for a in node.inputs], node.params)


def node_bytes(node: Node) -> int:
    """Bytes read (array operands, each once) plus bytes written; 0 for a view."""
    if _is_view(node):
        return 0
    read: dict[int, int] = {}
    for a in node.inputs:
        if isinstance(a, Var) or not a.is_scalar:
            read[id(a) if isinstance(a, Var) else id(a.value)] = _nbytes(a)
    return sum(read.values()) + sum(_nbytes(v) for v in node.outputs)


@dataclass(frozen=True)
class NodeCost:
    index: int
    name: str
    primitive: str
    role: str
    shape: tuple[int, ...]
    flops: int
    bytes: int
    live_bytes: int  # memory in use while this node runs (inputs, constants, live temporaries)


@dataclass
class GraphStats:
    """What ``Graph.stats()`` returns; ``str()`` gives a readable report."""

    name: str
    nodes: list[NodeCost]
    counts: dict[str, int]  # nodes per primitive, most frequent first
    flops: int
    bytes: int
    input_bytes: int
    constant_bytes: int
    peak_bytes: int  # inputs + constants + the largest set of live temporaries
    peak_node: int | None  # index of the node at which the peak is reached
    flops_by_role: dict[str, int] = field(default_factory=dict)

    @property
    def peak_temporary_bytes(self) -> int:
        return self.peak_bytes - self.input_bytes - self.constant_bytes

    def summary(self) -> str:
        from .text import format_bytes, format_count

        counts = " (" + ", ".join(f"{k} {v}" for k, v in self.counts.items()) + ")" if self.counts else ""
        roles = "".join(f", {r} {format_count(f)}" for r, f in self.flops_by_role.items()
                        if f and len(self.flops_by_role) > 1)
        return (f"graph {self.name}: {len(self.nodes)} nodes{counts}\n"
                f"FLOPs {format_count(self.flops)}{roles}; bytes moved {format_bytes(self.bytes)}; "
                f"peak memory {format_bytes(self.peak_bytes)} (inputs {format_bytes(self.input_bytes)}"
                f", constants {format_bytes(self.constant_bytes)}, temporaries "
                f"{format_bytes(self.peak_temporary_bytes)})")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain-text display: the report, not the dataclass fields."""
        printer.text(str(self) if not cycle else f"GraphStats({self.name!r})")

    def _repr_html_(self) -> str:
        """Jupyter's display: the summary and a table of the costliest nodes."""
        import html

        from .text import format_bytes, format_count

        top = sorted(self.nodes, key=lambda c: (-c.flops, c.index))[:12]
        head = "".join(f"<th>{h}</th>" for h in ("node", "name", "primitive", "role", "shape", "FLOPs",
                                                  "bytes", "live"))
        rows = "".join(
            f"<tr><td>{c.index}</td><td>{html.escape(c.name)}</td><td>{html.escape(c.primitive)}</td>"
            f"<td>{c.role}</td><td>{c.shape}</td><td style='text-align:right'>{format_count(c.flops)}</td>"
            f"<td style='text-align:right'>{format_bytes(c.bytes)}</td>"
            f"<td style='text-align:right'>{format_bytes(c.live_bytes)}</td></tr>" for c in top)
        more = (f"<p>the {len(top)} costliest of {len(self.nodes)} nodes; <code>print(stats)</code> "
                "lists all</p>" if len(top) < len(self.nodes) else "")
        summary = "<br>".join(html.escape(line) for line in self.summary().splitlines())
        return (f"<div class='tracegrad-stats'><p>{summary}</p><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{rows}</tbody></table>{more}</div>")

    def __str__(self) -> str:
        from .text import format_bytes, format_count

        rows = [(f"{'node':>5}  {'name':<6} {'primitive':<16} {'role':<8} {'shape':<18} "
                 f"{'FLOPs':>10} {'bytes':>11} {'live':>11}")]
        for c in self.nodes:
            rows.append(f"{c.index:>5}  {c.name:<6} {c.primitive:<16} {c.role:<8} {c.shape!s:<18} "
                        f"{format_count(c.flops):>10} {format_bytes(c.bytes):>11} "
                        f"{format_bytes(c.live_bytes):>11}")
        rows.append(f"{'total':>5}  {'':<6} {'':<16} {'':<8} {'':<18} {format_count(self.flops):>10} "
                    f"{format_bytes(self.bytes):>11} {format_bytes(self.peak_bytes):>11}")
        return self.summary() + "\n" + "\n".join(rows)


def graph_stats(graph: Graph) -> GraphStats:
    """Counts, FLOPs, bytes and the simulated peak memory of ``graph`` (see the module doc)."""
    names = graph.names()
    roles = graph.roles()
    const_bytes: dict[int, int] = {}
    for node in graph.nodes:
        for a in node.inputs:
            if isinstance(a, Literal) and not a.is_scalar:
                const_bytes[id(a.value)] = _nbytes(a)
    input_bytes = sum(_nbytes(v) for v in graph.inputs)
    constant_bytes = sum(const_bytes.values())

    fixed = input_bytes + constant_bytes  # live for the whole call
    live = [fixed + t for t in live_temporary_bytes(graph)]
    peak, peak_node = fixed, None
    for i, b in enumerate(live):
        if b > peak:
            peak, peak_node = b, i
    costs: list[NodeCost] = []
    flops_by_role: Counter[str] = Counter()
    for i, node in enumerate(graph.nodes):
        flops = node.primitive.flop_count([a.aval for a in node.inputs],
                                          [v.aval for v in node.outputs], node.params)
        role = roles[node.out]
        flops_by_role[role] += flops
        costs.append(NodeCost(i, ", ".join(names[v] for v in node.outputs), node.primitive.name,
                              role, node.out.aval.shape, flops, node_bytes(node), live[i]))

    counts = dict(Counter(n.primitive.name for n in graph.nodes).most_common())
    return GraphStats(graph.name, costs, counts, sum(c.flops for c in costs), sum(c.bytes for c in costs),
                      input_bytes, constant_bytes, peak, peak_node,
                      {r: flops_by_role.get(r, 0) for r in ("primal", "tangent") if r in flops_by_role})


@dataclass(frozen=True)
class StatsComparison:
    """Ratios of one graph's costs to a baseline's (e.g. fused JVP graph vs primal graph)."""

    label: str
    baseline_label: str
    flops_ratio: float
    bytes_ratio: float
    peak_ratio: float
    nodes_ratio: float

    def __str__(self) -> str:
        return (f"{self.label}: {self.flops_ratio:.1f}x {self.baseline_label} FLOPs, "
                f"{self.bytes_ratio:.1f}x bytes moved, {self.peak_ratio:.1f}x peak memory, "
                f"{self.nodes_ratio:.1f}x nodes")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf") if a else 1.0


def compare_stats(baseline: Graph | GraphStats, other: Graph | GraphStats, *,
                  label: str = "JVP graph", baseline_label: str = "primal") -> StatsComparison:
    """How much more ``other`` costs than ``baseline``: ``str()`` reads like
    ``JVP graph: 2.6x primal FLOPs, ...`` — forward mode's bound is a small constant."""
    b = baseline if isinstance(baseline, GraphStats) else graph_stats(baseline)
    o = other if isinstance(other, GraphStats) else graph_stats(other)
    return StatsComparison(label, baseline_label, _ratio(o.flops, b.flops), _ratio(o.bytes, b.bytes),
                           _ratio(o.peak_bytes, b.peak_bytes), _ratio(len(o.nodes), len(b.nodes)))
