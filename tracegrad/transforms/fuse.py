"""Fusion: group elementwise, view, gather and reduction nodes into kernels (Graph -> Graph).

Greedy, in execution order. A fusible node (see ``tracegrad.ir.fusion`` for the roles and
the contract) joins the group(s) of the producers of its non-gathered operands when the
merged set is still a valid group and the graph of units (groups and single nodes) stays
acyclic — no path leaves the group and comes back into it — so each group can run as
one kernel at one point of the program. If
it cannot join, it starts a group of its own; a view never does (outside a group a
reshape or broadcast is free, no kernel). Primal and tangent chains of one layer meet in
``where``/``mul`` nodes, so they end up in one group: one kernel computes both. Then
groups that are independent but fit together are merged (horizontal fusion).

Nodes are then reordered — a stable topological order of groups and single nodes — so
every group is contiguous. The result computes exactly what the input computes (the
NumPy backend runs it node by node); members carry ``fusion_group`` ids numbered in
execution order.
"""

from __future__ import annotations

import heapq

from ..ir import Graph, Node, Var
from ..ir.fusion import GroupError, analyze_group, fusion_role, gathered_operands

__all__ = ["fuse", "kernel_count"]


class _State:
    """The grouping so far, and the consumers of each node (for the cycle test)."""

    def __init__(self, nodes: list[Node], producer: dict[Var, int]):
        self.nodes = nodes
        self.producer = producer
        self.consumers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
        for j, n in enumerate(nodes):
            for a in n.inputs:
                if isinstance(a, Var) and a in producer:
                    self.consumers[producer[a]].append(j)
        self.group_of: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}

    def acyclic(self, merged: set[int], idx: list[int]) -> bool:
        """Running ``idx`` (made of groups ``merged`` and new nodes) as one unit keeps the
        graph of units acyclic: no path leaves the unit and comes back. Paths are followed
        through whole groups, since a group runs as one kernel: two independent nodes of a
        group C can close a cycle (unit -> c1, c2 -> unit) although no node path does."""
        unit = set(idx)
        frontier = [c for m in idx for c in self.consumers[m] if c not in unit]
        visited: set[int] = set()
        while frontier:
            x = frontier.pop()
            if x in visited:
                continue
            g = self.group_of.get(x)
            block = self.members[g] if g is not None and g not in merged else [x]
            for u in block:
                visited.add(u)
                for c in self.consumers[u]:
                    if c in unit:
                        return False
                    if c not in visited:
                        frontier.append(c)
        return True

    def valid(self, groups: list[int], extra: list[int]) -> bool:
        idx = sorted([k for g in groups for k in self.members[g]] + extra)
        try:
            analyze_group(-1, [self.nodes[k] for k in idx])
        except GroupError:
            return False
        return self.acyclic(set(groups), idx)

    def merge(self, target: int, others: list[int], extra: list[int]) -> None:
        for g in others:
            for k in self.members.pop(g):
                self.group_of[k] = target
                self.members[target].append(k)
        for k in extra:
            self.group_of[k] = target
            self.members[target].append(k)
        self.members[target].sort()


def fuse(graph: Graph) -> Graph:
    """Assign ``fusion_group`` ids and make each group contiguous; see the module docstring."""
    nodes = graph.nodes
    producer = {v: i for i, n in enumerate(nodes) for v in n.outputs}
    st = _State(nodes, producer)
    next_gid = 0
    for i, node in enumerate(nodes):
        role = fusion_role(node)
        if role is None:
            continue
        gathered = set(gathered_operands(node))
        cands: list[int] = []
        for pos, a in enumerate(node.inputs):
            j = producer.get(a) if isinstance(a, Var) and pos not in gathered else None
            if j is not None and j in st.group_of and st.group_of[j] not in cands:
                cands.append(st.group_of[j])
        options = [cands] if cands else []
        if len(cands) > 1:  # all producer groups at once, else the largest one that fits
            options += [[g] for g in sorted(cands, key=lambda g: (-len(st.members[g]), g))]
        chosen = next((opt for opt in options if st.valid(opt, [i])), None)
        if chosen:
            st.merge(chosen[0], chosen[1:], [i])
        elif role != "view":
            st.members[next_gid] = [i]
            st.group_of[i] = next_gid
            next_gid += 1
    # Horizontal: a group that shares no producer with an earlier one may still fit its
    # kernel (e.g. the primal and tangent tails of a softmax): one launch instead of two.
    order = sorted(st.members, key=lambda g: st.members[g][0])
    for pos, b in enumerate(order):
        for a in reversed(order[:pos]):
            if a in st.members and b in st.members and st.valid([a, b], []):
                st.merge(a, [b], [])
                break
    return _reorder(graph, st.group_of, st.members, producer)


def _reorder(graph: Graph, group_of: dict[int, int], members: dict[int, list[int]],
             producer: dict[Var, int]) -> Graph:
    """Stable topological order of units (a group, or one unfused node)."""
    nodes = graph.nodes

    def unit(i: int) -> tuple[str, int]:
        return ("g", group_of[i]) if i in group_of else ("n", i)

    unit_nodes: dict[tuple[str, int], list[int]] = {}
    for i in range(len(nodes)):
        unit_nodes.setdefault(unit(i), []).append(i)
    deps: dict[tuple[str, int], set[tuple[str, int]]] = {u: set() for u in unit_nodes}
    users: dict[tuple[str, int], set[tuple[str, int]]] = {u: set() for u in unit_nodes}
    for u, idx in unit_nodes.items():
        for i in idx:
            for a in nodes[i].inputs:
                if isinstance(a, Var) and a in producer:
                    p = unit(producer[a])
                    if p != u:
                        deps[u].add(p)
                        users[p].add(u)
    ready = [(idx[0], u) for u, idx in unit_nodes.items() if not deps[u]]
    heapq.heapify(ready)
    order: list[tuple[str, int]] = []
    while ready:
        _, u = heapq.heappop(ready)
        order.append(u)
        for w in users[u]:
            deps[w].discard(u)
            if not deps[w]:
                heapq.heappush(ready, (unit_nodes[w][0], w))
    assert len(order) == len(unit_nodes), "fusion produced a cyclic group order"
    out: list[Node] = []
    renumber: dict[int, int] = {}
    for u in order:
        gid = None
        if u[0] == "g":
            gid = renumber.setdefault(u[1], len(renumber))
        for i in unit_nodes[u]:
            n = nodes[i]
            out.append(n.replace(fusion_group=gid))
    return graph.replace(nodes=out)


def kernel_count(graph: Graph) -> int:
    """Number of fusion groups (each one kernel launch on a fusing backend)."""
    return len({n.fusion_group for n in graph.nodes if n.fusion_group is not None})
