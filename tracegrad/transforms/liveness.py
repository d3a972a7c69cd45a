"""Liveness and in-place planning: which values die where, which results may overwrite a
dying operand, and how many bytes of temporaries are alive after each node.

A Graph analysis, shared by the NumPy emitter (which writes ``out=`` and ``del`` as planned
here), the memory-aware scheduler (``schedule``) and ``Graph.stats()``. The model is the
emitted code's: a temporary is freed right after its last use; outputs of view primitives
(``Primitive.view``) own no bytes and keep the array they look into alive; an elementwise
ufunc node (``Primitive.numpy_ufunc``) may write into a dying operand nobody else can see.
"""

from __future__ import annotations

from ..ir import Graph, Var

__all__ = ["inplace_candidates", "last_uses", "live_temporary_bytes", "plan_inplace"]


def last_uses(graph: Graph) -> dict[Var, int]:
    last_use: dict[Var, int] = {}
    for i, node in enumerate(graph.nodes):
        for a in node.inputs:
            if isinstance(a, Var):
                last_use[a] = i
    return last_use


def inplace_candidates(graph: Graph) -> dict[int, list[int]]:
    """Node index -> positions of the operands that node may write its result into, *if*
    it is their last use (which depends on the node order; ``plan_inplace`` checks it).

    Writing into an operand is safe only when nothing else can see the buffer: it was
    produced by a primitive that always returns a fresh array (never a graph input, a
    constant or a view), no node ever took it as an operand without returning a fresh
    array (so no view or alias of it exists), it is not a graph output, the node names it
    once, and it has the output's exact (non-0-d) shape and dtype (no broadcasting or type
    promotion into it). ``x = np.add(a, b, out=a)`` then owns ``a``'s buffer as exclusively
    as ``a`` did, so chains keep reusing one buffer.
    """
    keep = set(graph.inputs) | {a for a in graph.outputs if isinstance(a, Var)}
    owned: set[Var] = set()  # single outputs of fresh primitives
    aliased: set[Var] = set()  # operands of a node whose result may share their memory
    for node in graph.nodes:
        if node.primitive.returns_fresh() and len(node.outputs) == 1:
            owned.add(node.out)
        else:
            aliased.update(a for a in node.inputs if isinstance(a, Var))
    candidates: dict[int, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        if node.primitive.numpy_ufunc is None or node.params or len(node.outputs) != 1:
            continue
        out = node.out.aval
        if out.shape == ():
            continue  # ufuncs return NumPy scalars for 0-d results
        ks = [k for k, a in enumerate(node.inputs)
              if isinstance(a, Var) and a in owned and a not in aliased and a not in keep
              and node.inputs.count(a) == 1 and a.aval.shape == out.shape and a.aval.dtype == out.dtype]
        if ks:
            candidates[i] = ks
    return candidates


def plan_inplace(graph: Graph) -> dict[int, int]:
    """Node index -> position of the operand whose buffer that node overwrites: the first
    ``inplace_candidates`` operand whose last use is that node."""
    last_use = last_uses(graph)
    plan: dict[int, int] = {}
    for i, ks in inplace_candidates(graph).items():
        k = next((k for k in ks if last_use.get(graph.nodes[i].inputs[k]) == i), None)
        if k is not None:
            plan[i] = k
    return plan


def live_temporary_bytes(graph: Graph, inplace: bool = True) -> list[int]:
    """Bytes of temporaries alive in the emitted code right after each node allocates its
    outputs (operands still alive), simulating it: a temporary is deleted after its last
    use, outputs nobody reads at once; views share their base's buffer, and so does a ufunc
    result written into a dying operand (``plan_inplace``, with ``inplace=True``). Graph
    inputs and constants are not counted."""
    last_use = last_uses(graph)
    keep = set(graph.inputs) | {a for a in graph.outputs if isinstance(a, Var)}
    buffer: dict[Var, int] = {v: id(v) for v in graph.inputs}  # views share their operand's buffer
    size: dict[int, int] = {id(v): 0 for v in graph.inputs}
    refs: dict[int, int] = {id(v): 1 for v in graph.inputs}
    reuse = plan_inplace(graph) if inplace else {}
    live, out = 0, []
    for i, node in enumerate(graph.nodes):
        view = node.primitive.is_view([a.aval for a in node.inputs], node.params)
        base = node.inputs[0] if node.inputs else None
        for v in node.outputs:
            if i in reuse:  # written into a dying operand's buffer
                buffer[v] = buffer[node.inputs[reuse[i]]]
            elif view and isinstance(base, Var):
                buffer[v] = buffer[base]
            else:  # a view of a constant or a scalar owns nothing
                buffer[v] = id(v)
                size[id(v)] = 0 if view else v.aval.size * v.aval.dtype.itemsize
                live += size[id(v)]
            refs[buffer[v]] = refs.get(buffer[v], 0) + 1
        out.append(live)
        # the emitter's ``del``: operands at their last use, and outputs nobody reads
        dead = {a for a in node.inputs if isinstance(a, Var) and last_use.get(a) == i}
        dead |= {v for v in node.outputs if v not in last_use}
        for v in dead - keep:
            b = buffer[v]
            refs[b] -= 1
            if refs[b] == 0:
                live -= size[b]
    return out
