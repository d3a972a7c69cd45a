"""Memory-aware scheduling: reorder a graph's nodes so fewer temporaries are alive at once.

Contract: ``schedule(graph, inplace=...)`` returns a graph with the same inputs, outputs and
nodes in a topological order chosen greedily: among the nodes whose operands are ready,
run the one that adds the fewest bytes to the live set (its new buffers minus the
temporaries whose last use it is), looking one node ahead; ties keep the original order. The new order is kept
only if it lowers the simulated peak (``peak_live_bytes``) by at least ``MIN_SAVING``
bytes and ``MIN_FRACTION``: a listing in the order of the user's code is easier to
follow, so small graphs keep it. The program computes exactly the same values.

Why: the order tracing produces follows the user's code, not memory. In a forward-mode
layer ``y = x @ W`` becomes ``x @ W``, ``ẋ @ W``, ``x @ Ẇ`` and a sum; in trace order
both inputs and three products are alive together. Running ``ẋ @ W`` and ``x @ Ẇ``
first and summing them into one of the two buffers keeps one activation-sized buffer
fewer — the point of forward gradients is to need no stored activations.

The cost model is the NumPy emitter's (``backends/emit.py``): outputs of view primitives
(reshape, transpose, slices) own no bytes and keep the array they look into alive; with
``inplace=True`` an elementwise ufunc node writes into a dying operand buffer that nobody
else can see (``emit.plan_inplace``'s rule) and allocates nothing.
"""

from __future__ import annotations

from ..ir import Graph, Node, Var

__all__ = ["MIN_FRACTION", "MIN_SAVING", "peak_live_bytes", "schedule"]

MIN_SAVING = 1 << 20  # bytes
MIN_FRACTION = 0.05


def _nbytes(v: Var) -> int:
    return v.aval.size * v.aval.dtype.itemsize


def _is_view(node: Node) -> bool:
    view = node.primitive.view
    if callable(view):
        return bool(view([a.aval for a in node.inputs], node.params))
    return bool(view)


class _Model:
    """Order-independent facts about a graph's buffers."""

    def __init__(self, graph: Graph, inplace: bool):
        self.base: dict[Var, Var] = {}  # a value -> the array owning its storage
        owned: set[Var] = set()
        aliased: set[Var] = set()
        for n in graph.nodes:
            owner = None
            if _is_view(n) and n.inputs and isinstance(n.inputs[0], Var):
                owner = self.base.get(n.inputs[0], n.inputs[0])
            for v in n.outputs:
                self.base[v] = owner if owner is not None else v
            if n.primitive.returns_fresh() and len(n.outputs) == 1:
                owned.add(n.out)
            else:
                aliased.update(a for a in n.inputs if isinstance(a, Var))
        self.pinned = set(graph.inputs) | {self.owner(a) for a in graph.outputs if isinstance(a, Var)}
        self.reusable = (owned - aliased - self.pinned) if inplace else set()

    def owner(self, a: Var) -> Var:
        return self.base.get(a, a)

    def allocates(self, n: Node) -> bool:
        return not _is_view(n)

    def reuse_candidates(self, n: Node) -> list[Var]:
        """Operands ``n`` may write its result into, if this is their last use."""
        if n.primitive.numpy_ufunc is None or n.params or len(n.outputs) != 1 or n.out.aval.shape == ():
            return []
        out = n.out.aval
        return [a for a in n.inputs if isinstance(a, Var) and a in self.reusable and n.inputs.count(a) == 1
                and a.aval.shape == out.shape and a.aval.dtype == out.dtype]


def peak_live_bytes(graph: Graph, inplace: bool = False) -> int:
    """Peak bytes of temporaries alive at once when ``graph``'s nodes run in order, each
    owning array freed after the last use of it or of a view of it."""
    m = _Model(graph, inplace)
    last: dict[Var, int] = {}
    for i, n in enumerate(graph.nodes):
        for a in n.inputs:
            if isinstance(a, Var):
                last[m.owner(a)] = i
    live = peak = 0
    for i, n in enumerate(graph.nodes):
        reused = next((a for a in m.reuse_candidates(n) if last.get(a) == i), None)
        if m.allocates(n) and reused is None:
            live += sum(_nbytes(v) for v in n.outputs)
        peak = max(peak, live)
        for v in n.outputs:  # results nobody reads are dropped at once
            if m.owner(v) is v and v not in last and v not in m.pinned and m.allocates(n):
                live -= _nbytes(v)
        for b in {m.owner(a) for a in n.inputs if isinstance(a, Var)}:
            if last.get(b) == i and b not in m.pinned and b is not reused:
                live -= _nbytes(b)
    return peak


def schedule(graph: Graph, inplace: bool = False) -> Graph:
    """The same graph with its nodes reordered to keep the live set small (see module doc)."""
    nodes = graph.nodes
    if len(nodes) < 3:
        return graph
    m = _Model(graph, inplace)
    producer: dict[Var, int] = {v: i for i, n in enumerate(nodes) for v in n.outputs}
    pending: dict[Var, int] = {}  # remaining uses keeping each owning array alive
    deps: list[set[int]] = []
    users: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, n in enumerate(nodes):
        d = set()
        for a in n.inputs:
            if isinstance(a, Var):
                pending[m.owner(a)] = pending.get(m.owner(a), 0) + 1
                if a in producer:
                    d.add(producer[a])
        deps.append(d)
        for j in d:
            users[j].append(i)

    def uses_in(n: Node) -> dict[Var, int]:
        uses: dict[Var, int] = {}
        for a in n.inputs:
            if isinstance(a, Var):
                uses[m.owner(a)] = uses.get(m.owner(a), 0) + 1
        return uses

    def cost(i: int) -> int:
        n = nodes[i]
        uses = uses_in(n)
        dying = {b for b, k in uses.items() if pending.get(b, 0) == k and b not in m.pinned}
        reused = next((a for a in m.reuse_candidates(n) if a in dying), None)
        added = sum(_nbytes(v) for v in n.outputs) if m.allocates(n) and reused is None else 0
        return added - sum(_nbytes(b) for b in dying if b is not reused)

    waiting = [len(d) for d in deps]

    def score(i: int) -> tuple[int, int, int]:
        """Cost of ``i`` plus the best (most negative) cost of a node it makes ready: one
        step of lookahead sees that ``ẋ @ W`` enables the in-place sum ``ẋ@W + x@Ẇ``."""
        own = cost(i)
        uses = uses_in(nodes[i])
        for b, k in uses.items():
            pending[b] -= k
        follow = min((cost(j) for j in users[i] if waiting[j] == 1), default=0)
        for b, k in uses.items():
            pending[b] += k
        return own + min(follow, 0), own, i

    ready = [i for i, w in enumerate(waiting) if w == 0]
    order: list[int] = []
    while ready:
        best = min(ready, key=score)
        ready.remove(best)
        order.append(best)
        for b, k in uses_in(nodes[best]).items():
            pending[b] -= k
        for j in users[best]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) != len(nodes):
        raise ValueError(f"schedule: graph {graph.name!r} has a cycle")
    if order == list(range(len(nodes))):
        return graph
    new = Graph(list(graph.inputs), [nodes[i] for i in order], list(graph.outputs), graph.name,
                list(graph.input_kinds))
    before, after = peak_live_bytes(graph, inplace), peak_live_bytes(new, inplace)
    if before - after >= max(MIN_SAVING, MIN_FRACTION * before):
        return new
    return graph
