"""Memory-aware scheduling: reorder a graph's nodes so fewer temporaries are alive at once.

Contract: ``schedule(graph)`` returns a graph with the same inputs, outputs and nodes in a
topological order chosen greedily: among the nodes whose operands are ready, run the one
that adds the fewest bytes to the live set (its outputs minus the temporaries whose last
use it is); ties keep the original order. The new order is kept only if it lowers the
simulated peak of live temporaries by at least ``MIN_SAVING`` bytes and ``MIN_FRACTION``:
a listing in the order of the user's code is easier to follow, so small graphs keep it.
The program computes exactly the same values.

Why: the order tracing produces follows the user's code, not memory. In a forward-mode
layer ``y = x @ W`` turns into ``x @ W``, ``ẋ @ W`` and ``x @ Ẇ``; run in trace order, all
three products and both inputs are alive together. Running ``ẋ @ W`` first (it frees
``ẋ``) keeps one activation-sized buffer fewer, which is the point of forward gradients:
no stored activations. Outputs of view primitives (reshape, transpose, slices) cost no
bytes of their own, and a view keeps the array it looks into alive, so freeing is
credited to the base array only when its last view is gone.
"""

from __future__ import annotations

from ..ir import Graph, Node, Var

__all__ = ["schedule", "peak_live_bytes", "MIN_SAVING", "MIN_FRACTION"]

MIN_SAVING = 1 << 20  # bytes
MIN_FRACTION = 0.05


def _nbytes(v: Var) -> int:
    return v.aval.size * v.aval.dtype.itemsize


def _is_view(node: Node) -> bool:
    view = node.primitive.view
    if callable(view):
        return bool(view([a.aval for a in node.inputs], node.params))
    return bool(view)


def _owners(graph: Graph) -> dict[Var, Var]:
    """Each value's owning array: a view's storage belongs to the array it looks into."""
    base: dict[Var, Var] = {}
    for n in graph.nodes:
        owner = None
        if _is_view(n) and n.inputs and isinstance(n.inputs[0], Var):
            owner = base.get(n.inputs[0], n.inputs[0])
        for v in n.outputs:
            base[v] = owner if owner is not None else v
    return base


def peak_live_bytes(graph: Graph) -> int:
    """Peak bytes of temporaries alive at once when the nodes run in ``graph``'s order and
    each owning array is freed after the last use of it or of a view of it."""
    base = _owners(graph)
    pinned = {base.get(a, a) for a in graph.outputs if isinstance(a, Var)}
    last: dict[Var, int] = {}
    for i, n in enumerate(graph.nodes):
        for a in n.inputs:
            if isinstance(a, Var):
                last[base.get(a, a)] = i
    inputs = set(graph.inputs)
    live = peak = 0
    for i, n in enumerate(graph.nodes):
        if not _is_view(n):
            live += sum(_nbytes(v) for v in n.outputs)
        peak = max(peak, live)
        for v in n.outputs:  # outputs nobody reads are dropped at once
            if base[v] is v and v not in last and v not in pinned and not _is_view(n):
                live -= _nbytes(v)
        for b in {base.get(a, a) for a in n.inputs if isinstance(a, Var)}:
            if last.get(b) == i and b not in pinned and b not in inputs:
                live -= _nbytes(b)
    return peak


def schedule(graph: Graph) -> Graph:
    """The same graph with its nodes reordered to keep the live set small (see module doc)."""
    nodes = graph.nodes
    if len(nodes) < 3:
        return graph
    producer: dict[Var, int] = {v: i for i, n in enumerate(nodes) for v in n.outputs}
    base = _owners(graph)
    pinned = set(graph.inputs) | {a for a in graph.outputs if isinstance(a, Var)}
    # How many pending uses keep each owning buffer alive (uses of its views count too).
    pending: dict[Var, int] = {}
    deps: list[set[int]] = []
    users: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, n in enumerate(nodes):
        d = set()
        for a in n.inputs:
            if isinstance(a, Var):
                pending[base.get(a, a)] = pending.get(base.get(a, a), 0) + 1
                if a in producer:
                    d.add(producer[a])
        deps.append(d)
        for j in d:
            users[j].append(i)
    for a in pinned:
        pending[base.get(a, a)] = pending.get(base.get(a, a), 0) + 1  # never freed

    def cost(i: int) -> int:
        n = nodes[i]
        added = 0 if _is_view(n) else sum(_nbytes(v) for v in n.outputs)
        uses: dict[Var, int] = {}
        for a in n.inputs:
            if isinstance(a, Var):
                b = base.get(a, a)
                uses[b] = uses.get(b, 0) + 1
        freed = sum(_nbytes(b) for b, k in uses.items() if pending.get(b, 0) == k and b not in pinned)
        return added - freed

    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order: list[int] = []
    while ready:
        best = min(ready, key=lambda i: (cost(i), i))
        ready.remove(best)
        order.append(best)
        for a in nodes[best].inputs:
            if isinstance(a, Var):
                pending[base.get(a, a)] -= 1
        for j in users[best]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    assert len(order) == len(nodes), "graph has a cycle"
    if order == list(range(len(nodes))):
        return graph
    new = Graph(list(graph.inputs), [nodes[i] for i in order], list(graph.outputs), graph.name,
                list(graph.input_kinds))
    before, after = peak_live_bytes(graph), peak_live_bytes(new)
    if before - after >= max(MIN_SAVING, MIN_FRACTION * before):
        return new
    return graph
