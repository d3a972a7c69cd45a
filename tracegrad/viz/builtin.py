"""Drawings without Graphviz: SVG text and PNG images from the built-in layered layout.

``scene(view)`` turns a ``View`` into plain shapes (boxes, polygons, curves, text) placed
by ``layout.layered_layout``; ``scene_svg`` writes them as SVG and ``scene_png`` paints
them with matplotlib (a dependency already). Both use the look of the Graphviz drawing
(``dot.COLORS``, the same shapes and labels), and the SVG keeps its structure:
``<g id="n3" class="node">`` per node, ``<g id="e0" class="edge">`` per edge and
``<g id="grp2" class="cluster">`` per source-line band, so the HTML view works on either.
"""

from __future__ import annotations

import html
import io
import itertools
from dataclasses import dataclass, field
from typing import Any

from .dot import COLORS
from .layout import Layout, layered_layout
from .model import View, ViewNode

__all__ = ["Scene", "scene", "scene_png", "scene_svg"]

FONT = "DejaVu Sans Mono, Menlo, Consolas, Liberation Mono, monospace"
CHAR_EM = 0.6  # advance of one monospace character, in em
PAD_X, PAD_Y = 8.0, 5.0
LINE = 1.3  # line height, in em
LEFT = 236.0  # the column of band labels
TOP = 34.0  # the title
BAND_FILLS = ("#f8fafc", "#eef2f7")
EDGE_GREY = "#6b7280"


@dataclass
class Text:
    x: float
    y: float  # baseline
    text: str
    size: float = 10.0
    bold: bool = False
    color: str = "#111827"
    anchor: str = "middle"  # "start" | "middle"
    halo: bool = False


@dataclass
class Shape:
    kind: str  # "rect" | "poly" | "curve"
    points: list[tuple[float, float]]  # rect: [(x0, y0), (x1, y1)]
    fill: str = "none"
    stroke: str = "none"
    width: float = 1.0
    radius: float = 0.0


@dataclass
class Item:
    id: str
    cls: str  # "node" | "edge" | "cluster" | "title"
    title: str
    shapes: list[Shape] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)


@dataclass
class Scene:
    width: float
    height: float
    items: list[Item]
    layout: Layout


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(n - 1, 0)] + "…"


def _lines(n: ViewNode) -> list[Text]:
    """The label of ``n``, line by line (position filled in later): as in ``dot._label``."""
    rows: list[Text] = []
    if n.kind == "node":
        head = n.primitive or ""
        if n.params_text:
            head += f" [{_clip(n.params_text, 40)}]"
        rows.append(Text(0, 0, head, 10.0, True))
        if n.scalars:
            rows.append(Text(0, 0, "with " + _clip(", ".join(n.scalars), 32), 9.0))
        rows.append(Text(0, 0, f"{n.name} : {n.aval}"))
    elif n.kind == "output":
        rows.append(Text(0, 0, f"{n.name} = {n.operands[0] if n.operands else ''}", 10.0, True))
    else:
        rows.append(Text(0, 0, f"{n.name} : {n.aval}", 10.0, True))
    if n.value is not None:
        rows.append(Text(0, 0, "= " + _clip(n.value, 48)))
    if n.source:
        rows.append(Text(0, 0, n.source, 8.0, color="#4b5563"))
    return rows


def _size(n: ViewNode, rows: list[Text]) -> tuple[float, float]:
    w = max(len(t.text) * t.size * CHAR_EM for t in rows) + 2 * PAD_X
    h = sum(t.size * LINE for t in rows) + 2 * PAD_Y
    if n.kind == "input":
        h += 10.0  # the point of the house
    elif n.kind == "output":
        w += 16.0
    return max(w, 40.0), h


def _node_item(n: ViewNode, rows: list[Text], cx: float, cy: float, w: float, h: float,
               tooltip: str) -> Item:
    fill, border = COLORS["constant" if n.kind == "constant" else n.role]
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    heavy = 2.0 if n.kind in ("input", "output") else 1.0
    shapes: list[Shape]
    if n.kind == "input":  # Graphviz's invhouse: pointed at the bottom
        shapes = [Shape("poly", [(x0, y0), (x1, y0), (x1, y1 - 10), (cx, y1), (x0, y1 - 10)],
                        fill, border, heavy)]
        text_h = h - 10.0
    elif n.kind == "output":  # a double octagon
        def octagon(d: float) -> list[tuple[float, float]]:
            c = 8.0
            a0, b0, a1, b1 = x0 + d, y0 + d, x1 - d, y1 - d
            return [(a0 + c, b0), (a1 - c, b0), (a1, b0 + c), (a1, b1 - c), (a1 - c, b1), (a0 + c, b1),
                    (a0, b1 - c), (a0, b0 + c)]
        shapes = [Shape("poly", octagon(0), fill, border, heavy), Shape("poly", octagon(3), "none", border, 1.0)]
        text_h = h
    elif n.kind == "constant":  # a note with a folded corner
        shapes = [Shape("poly", [(x0, y0), (x1 - 8, y0), (x1, y0 + 8), (x1, y1), (x0, y1)], fill, border, 1.0)]
        text_h = h
    else:
        shapes = [Shape("rect", [(x0, y0), (x1, y1)], fill, border, 1.0, radius=6.0)]
        text_h = h
    total = sum(t.size * LINE for t in rows)
    y = y0 + (text_h - total) / 2
    texts = []
    for t in rows:
        y += t.size * LINE
        texts.append(Text(cx, y - t.size * (LINE - 1.0) - 1.0, t.text, t.size, t.bold, t.color))
    return Item(n.id, "node", tooltip, shapes, texts)


def scene(view: View, *, note: str = "") -> Scene:
    """Place every node, edge and source-line band of ``view`` (see the module docstring)."""
    from .dot import _tooltip

    rows = {n.id: _lines(n) for n in view.nodes}
    sizes = {n.id: _size(n, rows[n.id]) for n in view.nodes}
    groups = {n.id: n.line_group for n in view.nodes}
    order = [g.id for g in view.line_groups]
    # nodes in a topological order: inputs and constants first, the rest as listed
    ids = [n.id for n in view.nodes]
    lay = layered_layout(ids, sizes, [(e.id, e.src, e.dst) for e in view.edges], groups, order,
                         left=LEFT if view.line_groups else 12.0, top=TOP)
    if lay.bands:
        lay.width = max(lay.width, LEFT + 120.0)
    width, height = lay.width + 12.0, lay.height + 12.0
    items: list[Item] = []

    pb, tb = COLORS["primal"][1], COLORS["tangent"][1]
    title = Item("title", "title", view.name, texts=[
        Text(12, 20, view.name, 12.0, True, anchor="start"),
        Text(24 + len(view.name) * 7.2, 20, "■ primal", 10.0, color=pb, anchor="start"),
        Text(24 + len(view.name) * 7.2 + 66, 20, "■ tangent", 10.0, color=tb, anchor="start"),
    ])
    if note:
        title.texts.append(Text(24 + len(view.name) * 7.2 + 140, 20, note, 8.0, color="#6b7280",
                                anchor="start"))
    items.append(title)

    by_group = {g.id: g for g in view.line_groups}
    for k, band in enumerate(lay.bands):
        g = by_group[band.group]
        rect = Shape("rect", [(4.0, band.y0), (width - 4.0, band.y1)], BAND_FILLS[k % 2], "#cbd5e1", 0.6, 4.0)
        chars = int((LEFT - 24) / (8.0 * CHAR_EM))
        texts = [Text(12, band.y0 + 13, _clip(g.label, chars), 8.5, True, "#334155", "start")]
        code = g.code or ""
        for j in range(2):
            part = code[j * chars:(j + 1) * chars]
            if part and band.y0 + 25 + 11 * j < band.y1 - 2:
                if j == 1 and len(code) > 2 * chars:
                    part = _clip(part, chars)
                texts.append(Text(12, band.y0 + 25 + 11 * j, part, 8.0, color="#475569", anchor="start"))
        items.append(Item(g.id, "cluster", f"{g.label}\n{code}", [rect], texts))

    n_operands: dict[str, int] = {}
    for e in view.edges:
        n_operands[e.dst] = n_operands.get(e.dst, 0) + 1
    for e in view.edges:
        pts = lay.edges[e.id]
        color = tb if e.role == "tangent" else EDGE_GREY
        tip = pts[-1]
        body = pts[:-1] + [(tip[0], tip[1] - 6.0)]
        arrow = Shape("poly", [(tip[0] - 3.5, tip[1] - 7.0), (tip[0] + 3.5, tip[1] - 7.0), tip], color, color, 1.0)
        i = (len(pts) - 2) // 2
        mx, my = (pts[i][0] + pts[i + 1][0]) / 2, (pts[i][1] + pts[i + 1][1]) / 2
        label = e.aval if n_operands[e.dst] < 2 else f"{e.operand}: {e.aval}"
        items.append(Item(e.id, "edge", f"{e.var} → operand {e.operand}",
                          [Shape("curve", body, stroke=color, width=1.0), arrow],
                          [Text(mx + 4, my + 3, label, 8.0, color="#374151", anchor="start", halo=True)]))
    for n in view.nodes:
        b = lay.boxes[n.id]
        items.append(_node_item(n, rows[n.id], b.x, b.y, b.w, b.h, _tooltip(n)))
    return Scene(width, height, items, lay)


def _curve_d(pts: list[tuple[float, float]]) -> str:
    """A smooth path through ``pts``: every piece leaves and arrives vertically."""
    d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        dy = (y1 - y0) / 2
        d += f" C{x0:.1f},{y0 + dy:.1f} {x1:.1f},{y1 - dy:.1f} {x1:.1f},{y1:.1f}"
    return d


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def scene_svg(sc: Scene) -> str:
    """The scene as an SVG document (no XML prolog: it is also inlined in HTML)."""
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{sc.width:.0f}pt" height="{sc.height:.0f}pt" '
           f'viewBox="0 0 {sc.width:.1f} {sc.height:.1f}" font-family="{FONT}">'),
           f'<rect x="0" y="0" width="{sc.width:.1f}" height="{sc.height:.1f}" fill="white"/>']
    for it in sc.items:
        out.append(f'<g id="{_e(it.id)}" class="{it.cls}"><title>{_e(it.title)}</title>')
        for s in it.shapes:
            common = f'fill="{s.fill}" stroke="{s.stroke}" stroke-width="{s.width}"'
            if s.kind == "rect":
                (x0, y0), (x1, y1) = s.points
                out.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" '
                           f'rx="{s.radius}" {common}/>')
            elif s.kind == "poly":
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in s.points)
                out.append(f'<polygon points="{pts}" {common}/>')
            else:
                out.append(f'<path d="{_curve_d(s.points)}" {common}/>')
        for t in it.texts:
            extra = ' font-weight="bold"' if t.bold else ""
            if t.halo:
                extra += ' stroke="white" stroke-width="3" paint-order="stroke"'
            out.append(f'<text x="{t.x:.1f}" y="{t.y:.1f}" text-anchor="{t.anchor}" font-size="{t.size}" '
                       f'fill="{t.color}"{extra}>{_e(t.text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def scene_png(sc: Scene, dpi: int = 144) -> bytes:
    """The scene painted by matplotlib's Agg backend (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, PathPatch, Polygon
    from matplotlib.path import Path as MPath

    # big graphs: at most ~8000 pixels a side (Agg's limit is 2^16; time and memory grow fast)
    dpi = int(max(36, min(dpi, 8000 * 72 / max(sc.width, sc.height))))
    fig = Figure(figsize=(sc.width / 72, sc.height / 72), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, sc.width)
    ax.set_ylim(sc.height, 0)
    ax.set_axis_off()
    lw = 1.0  # points: layout units are points, as are matplotlib's line widths

    def color(c: str) -> Any:
        return "none" if c == "none" else c

    for it in sc.items:
        for s in it.shapes:
            if s.kind == "rect":
                (x0, y0), (x1, y1) = s.points
                ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0,
                                            boxstyle=f"round,pad=0,rounding_size={s.radius}",
                                            facecolor=color(s.fill), edgecolor=color(s.stroke),
                                            linewidth=s.width * lw))
            elif s.kind == "poly":
                ax.add_patch(Polygon(s.points, closed=True, facecolor=color(s.fill),
                                     edgecolor=color(s.stroke), linewidth=s.width * lw))
            else:
                verts: list[tuple[float, float]] = [s.points[0]]
                codes = [MPath.MOVETO]
                for (x0, y0), (x1, y1) in zip(s.points, s.points[1:]):
                    dy = (y1 - y0) / 2
                    verts += [(x0, y0 + dy), (x1, y1 - dy), (x1, y1)]
                    codes += [MPath.CURVE4] * 3
                ax.add_patch(PathPatch(MPath(verts, codes), facecolor="none", edgecolor=s.stroke,
                                       linewidth=s.width * lw))
        for t in it.texts:
            kw: dict[str, Any] = {}
            if t.halo:
                from matplotlib import patheffects

                kw["path_effects"] = [patheffects.withStroke(linewidth=3, foreground="white")]
            ax.text(t.x, t.y, t.text, fontsize=t.size, fontfamily="monospace",
                    fontweight="bold" if t.bold else "normal", color=t.color,
                    ha="center" if t.anchor == "middle" else "left", va="baseline", **kw)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", pil_kwargs={"compress_level": 3})
    return buf.getvalue()


def builtin_svg(view: View, note: str = "") -> str:
    return scene_svg(scene(view, note=note))


def builtin_png(view: View, note: str = "") -> bytes:
    return scene_png(scene(view, note=note))
