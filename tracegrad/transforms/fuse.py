"""Fusion: group elementwise, view, gather and reduction nodes into kernels (Graph -> Graph).

Greedy, in execution order. A fusible node (see ``tracegrad.ir.fusion`` for the roles and
the contract) joins the group(s) of the producers of its non-gathered operands when the
merged set is still a valid group and stays *convex* — no path leaves the group and
comes back into it, so the group can run as one kernel at one point of the program. If
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


def _convex(nodes: list[Node], idx: list[int], producer: dict[Var, int]) -> bool:
    """No node outside ``idx`` both depends on a member and feeds a member."""
    members = set(idx)
    tainted: set[int] = set()  # outside nodes between the first and last member that depend on one
    for j in range(idx[0], idx[-1] + 1):
        srcs = {producer[a] for a in nodes[j].inputs if isinstance(a, Var) and a in producer}
        if j in members:
            if srcs & tainted:
                return False
        elif srcs & (members | tainted):
            tainted.add(j)
    return True


def _valid(nodes: list[Node], idx: list[int], producer: dict[Var, int]) -> bool:
    try:
        analyze_group(-1, [nodes[k] for k in idx])
    except GroupError:
        return False
    return _convex(nodes, idx, producer)


def fuse(graph: Graph) -> Graph:
    """Assign ``fusion_group`` ids and make each group contiguous; see the module docstring."""
    nodes = graph.nodes
    producer = {v: i for i, n in enumerate(nodes) for v in n.outputs}
    group_of: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    next_gid = 0
    for i, node in enumerate(nodes):
        role = fusion_role(node)
        if role is None:
            continue
        gathered = set(gathered_operands(node))
        cands: list[int] = []
        for pos, a in enumerate(node.inputs):
            j = producer.get(a) if isinstance(a, Var) and pos not in gathered else None
            if j is not None and j in group_of and group_of[j] not in cands:
                cands.append(group_of[j])
        options = [cands] if cands else []
        if len(cands) > 1:  # all producer groups at once, else the largest one that fits
            options += [[g] for g in sorted(cands, key=lambda g: (-len(members[g]), g))]
        chosen = next((opt for opt in options
                       if _valid(nodes, sorted([k for g in opt for k in members[g]] + [i]), producer)), None)
        if chosen:
            target = chosen[0]
            for g in chosen[1:]:
                for k in members.pop(g):
                    group_of[k] = target
                    members[target].append(k)
            members[target].append(i)
            members[target].sort()
            group_of[i] = target
        elif role != "view":
            members[next_gid] = [i]
            group_of[i] = next_gid
            next_gid += 1
    # Horizontal: a group that shares no producer with an earlier one may still fit its
    # kernel (e.g. the primal and tangent tails of a softmax): one launch instead of two.
    order = sorted(members, key=lambda g: members[g][0])
    for pos, b in enumerate(order):
        for a in reversed(order[:pos]):
            if a in members and b in members and _valid(nodes, sorted(members[a] + members[b]), producer):
                for k in members.pop(b):
                    group_of[k] = a
                    members[a].append(k)
                members[a].sort()
                break
    return _reorder(graph, group_of, members, producer)


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
            out.append(Node(n.primitive, n.inputs, n.outputs, n.params, n.source, gid))
    return Graph(list(graph.inputs), out, list(graph.outputs), graph.name, list(graph.input_kinds))


def kernel_count(graph: Graph) -> int:
    """Number of fusion groups (each one kernel launch on a fusing backend)."""
    return len({n.fusion_group for n in graph.nodes if n.fusion_group is not None})
