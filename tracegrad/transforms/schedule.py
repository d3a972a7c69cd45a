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

The cost model is the NumPy emitter's (``transforms/liveness.py``): outputs of view primitives
(reshape, transpose, slices) own no bytes and keep the array they look into alive; with
``inplace=True`` an elementwise ufunc node writes into a dying operand buffer that nobody
else can see (``liveness.inplace_candidates``) and allocates nothing. The peak is measured with
the emitter's own simulation (``liveness.live_temporary_bytes``).
"""

from __future__ import annotations

from ..ir import Graph, Node, Var
from .liveness import inplace_candidates, live_temporary_bytes

__all__ = ["MIN_FRACTION", "MIN_SAVING", "peak_live_bytes", "schedule"]

MIN_SAVING = 1 << 20  # bytes
MIN_FRACTION = 0.05


def _nbytes(v: Var) -> int:
    return v.aval.size * v.aval.dtype.itemsize


def _is_view(node: Node) -> bool:
    return node.primitive.is_view([a.aval for a in node.inputs], node.params)


def peak_live_bytes(graph: Graph, inplace: bool = False) -> int:
    """Peak bytes of temporaries the NumPy emitter's code holds at once for ``graph`` in its
    current order (``liveness.live_temporary_bytes``)."""
    return max(live_temporary_bytes(graph, inplace), default=0)


def schedule(graph: Graph, inplace: bool = False) -> Graph:
    """The same graph with its nodes reordered to keep the live set small (see module doc)."""
    nodes = graph.nodes
    if len(nodes) < 3:
        return graph
    owner: dict[Var, Var] = {}  # a value -> the array owning its storage (views share it)
    for n in nodes:
        base = n.inputs[0] if _is_view(n) and n.inputs and isinstance(n.inputs[0], Var) else None
        for v in n.outputs:
            owner[v] = owner.get(base, base) if base is not None else v
    pinned = set(graph.inputs) | {owner.get(a, a) for a in graph.outputs if isinstance(a, Var)}
    candidates = inplace_candidates(graph) if inplace else {}
    producer: dict[Var, int] = {v: i for i, n in enumerate(nodes) for v in n.outputs}
    pending: dict[Var, int] = {}  # remaining uses keeping each owning array alive
    deps: list[set[int]] = []
    users: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for i, n in enumerate(nodes):
        d = set()
        for a in n.inputs:
            if isinstance(a, Var):
                pending[owner.get(a, a)] = pending.get(owner.get(a, a), 0) + 1
                if a in producer:
                    d.add(producer[a])
        deps.append(d)
        for j in d:
            users[j].append(i)

    def uses_in(n: Node) -> dict[Var, int]:
        uses: dict[Var, int] = {}
        for a in n.inputs:
            if isinstance(a, Var):
                uses[owner.get(a, a)] = uses.get(owner.get(a, a), 0) + 1
        return uses

    def cost(i: int) -> int:
        n = nodes[i]
        uses = uses_in(n)
        dying = {b for b, k in uses.items() if pending.get(b, 0) == k and b not in pinned}
        reused = next((n.inputs[k] for k in candidates.get(i, ()) if n.inputs[k] in dying), None)
        added = sum(_nbytes(v) for v in n.outputs) if not _is_view(n) and reused is None else 0
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
    new = graph.replace(nodes=[nodes[i] for i in order])
    before, after = peak_live_bytes(graph, inplace), peak_live_bytes(new, inplace)
    if before - after >= max(MIN_SAVING, MIN_FRACTION * before):
        return new
    return graph
