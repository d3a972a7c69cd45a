"""A layered (Sugiyama) layout in pure Python: drawings without Graphviz.

Graphviz's ``dot`` draws the best pictures, but it is a system program that ``pip`` cannot
install. This module lays out the same ``View`` with no dependency at all, so ``.svg``,
``.png`` and ``.html`` work right after ``pip install tracegrad``. The classic steps:

1. **Layers.** Graphs here are DAGs in execution order. With line groups (see ``model``)
   every group gets a horizontal *band* of consecutive layers, in execution order, so a
   network reads top to bottom one source line at a time; inside a band a node sits one
   layer below its lowest in-band operand (longest path), and an input or constant is
   pulled down to just above its first consumer instead of waiting at the top.
2. **Dummy nodes** split edges that span several layers, so they bend around nodes.
3. **Order** inside each layer by barycenter sweeps (down, then up), keeping the order
   with the fewest edge crossings.
4. **x coordinates:** each layer's nodes go as close as they can to the mean position
   of their neighbours, in order and without overlap; that is an isotonic regression,
   solved exactly by pool-adjacent-violators, and alternated down and up a few times.

Units are points (1/72 inch), as in Graphviz. Sizes of text are estimated from a
monospace font (0.6 em per character), which the SVG and PNG writers then use.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

__all__ = ["Band", "Box", "Layout", "layered_layout"]

RANKSEP = 46.0  # vertical space between layers (edge labels sit in it)
NODESEP = 18.0  # horizontal space between neighbours
DUMMY_WIDTH = 10.0
BAND_GAP = 14.0  # extra space between two bands
BAND_PAD = 8.0


@dataclass
class Box:
    x: float  # centre
    y: float  # centre
    w: float
    h: float


@dataclass
class Band:
    group: str
    y0: float
    y1: float


@dataclass
class Layout:
    boxes: dict[str, Box]
    edges: dict[str, list[tuple[float, float]]]  # edge id -> points from source to target
    bands: list[Band]
    width: float
    height: float
    crossings: int = 0
    layers: list[list[str]] = field(default_factory=list)  # real nodes only, left to right


def _isotonic(target: list[float]) -> list[float]:
    """The non-decreasing sequence closest to ``target`` in least squares (PAVA)."""
    blocks: list[list[float]] = []  # [sum, count]
    for t in target:
        blocks.append([t, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    out: list[float] = []
    for s, c in blocks:
        out.extend([s / c] * int(c))
    return out


def _crossings(upper: list[str], lower: list[str], down: dict[str, list[str]]) -> int:
    pos = {v: i for i, v in enumerate(lower)}
    ends = [pos[w] for v in upper for w in down.get(v, ()) if w in pos]
    # inversions among the lower ends, in the order of the upper ends
    count = 0
    for i in range(len(ends)):
        for j in range(i + 1, len(ends)):
            if ends[j] < ends[i]:
                count += 1
    return count


def _topological(nodes: list[str], preds: dict[str, list[str]], succs: dict[str, list[str]]) -> list[str]:
    """``nodes`` in a topological order, as close to the given order as it can be."""
    import heapq

    rank = {v: i for i, v in enumerate(nodes)}
    missing = {v: len(preds[v]) for v in nodes}
    ready = [(rank[v], v) for v in nodes if not missing[v]]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, v = heapq.heappop(ready)
        out.append(v)
        for w in succs[v]:
            missing[w] -= 1
            if not missing[w]:
                heapq.heappush(ready, (rank[w], w))
    if len(out) != len(nodes):
        raise ValueError("layout: the graph has a cycle")
    return out


def _bands(nodes: list[str], preds: dict[str, list[str]], succs: dict[str, list[str]],
           groups: dict[str, str | None], order: list[str]) -> dict[str, str | None]:
    """The band of every node: its group; an ungrouped node joins a neighbour's. All
    ``None`` (no bands) unless every edge runs from a band to the same or a later one."""
    rank = {g: i for i, g in enumerate(order)}
    band = {v: groups.get(v) for v in nodes}
    if len(order) < 2 or any(b is not None and b not in rank for b in band.values()):
        return {v: None for v in nodes}
    for v in nodes:
        if band[v] is None:
            near = [band[w] for w in succs[v] + preds[v] if band[w] is not None]
            band[v] = near[0] if near else order[0]
    for v in nodes:
        if any(rank[band[v]] > rank[band[w]] for w in succs[v]):  # type: ignore[index]
            return {v: None for v in nodes}
    return band


def layered_layout(nodes: list[str], sizes: dict[str, tuple[float, float]],
                   edges: list[tuple[str, str, str]], groups: dict[str, str | None] | None = None,
                   group_order: list[str] | None = None, left: float = 0.0, top: float = 0.0,
                   sweeps: int = 8) -> Layout:
    """Lay out the DAG ``nodes``/``edges`` (``(edge id, src, dst)``; ``nodes`` in roughly
    execution order) with node ``sizes`` ``(w, h)``; ``groups`` maps nodes to line-group
    ids (banded in ``group_order``); ``left``/``top`` leave a margin for labels."""
    preds: dict[str, list[str]] = {v: [] for v in nodes}
    succs: dict[str, list[str]] = {v: [] for v in nodes}
    for _, s, d in edges:
        if d not in succs[s]:
            succs[s].append(d)
            preds[d].append(s)
    nodes = _topological(nodes, preds, succs)
    index = {v: i for i, v in enumerate(nodes)}

    # 1. layers: bands in group order (ungrouped nodes share the band of no group)
    band_of = _bands(nodes, preds, succs, groups or {}, group_order or [])
    banded = any(b is not None for b in band_of.values())
    band_seq: list[str | None] = list(group_order) if banded and group_order else [None]
    local: dict[str, int] = {}
    for v in nodes:  # longest path from the band's top
        local[v] = max((local[u] + 1 for u in preds[v] if band_of[u] == band_of[v]), default=0)
    for v in reversed(nodes):  # sources sink to just above their first in-band consumer
        if not any(band_of[u] == band_of[v] for u in preds[v]):
            below = [local[w] for w in succs[v] if band_of[w] == band_of[v]]
            if below:
                local[v] = max(local[v], min(below) - 1)
    layer: dict[str, int] = {}
    band_layers: dict[str | None, tuple[int, int]] = {}
    offset = 0
    for b in band_seq:
        members = [v for v in nodes if band_of[v] == b]
        if not members:
            continue
        depth = max(local[v] for v in members) + 1
        for v in members:
            layer[v] = offset + local[v]
        band_layers[b] = (offset, offset + depth - 1)
        offset += depth
    for _, s, d in edges:
        if layer[d] <= layer[s]:  # cannot happen for groups built from runs; keep edges downward
            raise ValueError(f"layout: edge {s} -> {d} does not point down ({layer[s]} -> {layer[d]})")
    n_layers = offset

    # 2. dummy nodes for long edges
    rows: list[list[str]] = [[] for _ in range(n_layers)]
    for v in sorted(nodes, key=index.__getitem__):
        rows[layer[v]].append(v)
    down: dict[str, list[str]] = {v: [] for v in nodes}
    up: dict[str, list[str]] = {v: [] for v in nodes}
    chains: dict[str, list[str]] = {}
    width = {v: sizes[v][0] for v in nodes}
    height = {v: sizes[v][1] for v in nodes}
    pair_chain: dict[tuple[str, str], list[str]] = {}
    for eid, s, d in edges:
        if (s, d) in pair_chain:  # ``mul x x``: both edges follow the same route
            chains[eid] = pair_chain[s, d]
            continue
        chain = [s]
        for k in range(layer[s] + 1, layer[d]):
            dummy = f"~{eid}.{k}"
            width[dummy], height[dummy] = DUMMY_WIDTH, 0.0
            layer[dummy] = k
            rows[k].append(dummy)
            down[dummy], up[dummy] = [], []
            chain.append(dummy)
        chain.append(d)
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)
        chains[eid] = pair_chain[s, d] = chain

    # 3. order by barycenters; keep the best order seen
    def total_crossings() -> int:
        return sum(_crossings(rows[k], rows[k + 1], down) for k in range(n_layers - 1))

    best, best_rows = total_crossings(), [list(r) for r in rows]
    for sweep in range(sweeps):
        going_down = sweep % 2 == 0
        ks = range(1, n_layers) if going_down else range(n_layers - 2, -1, -1)
        for k in ks:
            ref = rows[k - 1] if going_down else rows[k + 1]
            pos = {v: i for i, v in enumerate(ref)}
            nbrs = up if going_down else down
            cur = {v: i for i, v in enumerate(rows[k])}

            def key(v: str, pos: dict[str, int] = pos, nbrs: dict[str, list[str]] = nbrs,
                    cur: dict[str, int] = cur) -> tuple[float, int]:
                ps = [pos[u] for u in nbrs[v] if u in pos]
                return (sum(ps) / len(ps) if ps else float(cur[v]), cur[v])

            rows[k].sort(key=key)
        c = total_crossings()
        if c < best:
            best, best_rows = c, [list(r) for r in rows]
    rows = best_rows

    # 4. x coordinates: closest to the neighbours' mean, in order, without overlap
    x: dict[str, float] = {}
    for r in rows:
        cursor = 0.0
        for v in r:
            x[v] = cursor + width[v] / 2
            cursor += width[v] + NODESEP

    def place(r: list[str], nbrs: dict[str, list[str]]) -> None:
        if not r:
            return
        offs = [0.0]
        for a, b in itertools.pairwise(r):
            offs.append(offs[-1] + (width[a] + width[b]) / 2 + NODESEP)
        want = []
        for v in r:
            ns = [x[u] for u in nbrs[v]]
            want.append(sum(ns) / len(ns) if ns else x[v])
        fitted = _isotonic([w - o for w, o in zip(want, offs)])
        for v, f, o in zip(r, fitted, offs):
            x[v] = f + o

    for it in range(6):
        if it % 2 == 0:
            for r in rows[1:]:
                place(r, up)
        else:
            for r in reversed(rows[:-1]):
                place(r, down)
    lo = min((x[v] - width[v] / 2 for r in rows for v in r), default=0.0)
    for v in x:
        x[v] += left - lo

    # y coordinates: layer by layer, with a gap where a band ends
    layer_h = [max((height[v] for v in r), default=0.0) for r in rows]
    band_end = {hi: b for b, (_, hi) in band_layers.items()}
    ys: list[float] = []
    cursor = top + (BAND_PAD if banded else 0.0)
    for k in range(n_layers):
        ys.append(cursor + layer_h[k] / 2)
        cursor += layer_h[k] + RANKSEP
        if banded and k in band_end:
            cursor += BAND_GAP + 2 * BAND_PAD - RANKSEP / 2
    boxes = {v: Box(x[v], ys[layer[v]], width[v], height[v]) for v in nodes}
    bands = []
    if banded:
        for b, (lo_k, hi_k) in band_layers.items():
            assert b is not None
            bands.append(Band(b, ys[lo_k] - layer_h[lo_k] / 2 - BAND_PAD,
                              ys[hi_k] + layer_h[hi_k] / 2 + BAND_PAD))

    routes: dict[str, list[tuple[float, float]]] = {}
    for eid, chain in chains.items():
        s, d = chain[0], chain[-1]
        pts = [(x[s], boxes[s].y + height[s] / 2)]
        pts += [(x[v], ys[layer[v]]) for v in chain[1:-1]]
        pts.append((x[d], boxes[d].y - height[d] / 2))
        routes[eid] = pts
    right = max((x[v] + width[v] / 2 for v in x), default=left)
    bottom = max((b.y1 for b in bands), default=max((bx.y + bx.h / 2 for bx in boxes.values()), default=top))
    return Layout(boxes, routes, bands, right, bottom, best,
                  [[v for v in r if v in index] for r in rows])
