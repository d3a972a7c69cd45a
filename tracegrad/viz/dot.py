"""Graphviz views: DOT text, and SVG/PNG images drawn by the ``dot`` program.

Primal work is blue, tangent work orange; inputs are drawn as downward houses, outputs
as double octagons, constant arrays grey; edges are labelled with the shape they carry;
nodes of one fusion group sit in a dashed cluster. Every DOT node has ``id=<view id>``,
which Graphviz copies to the SVG element, so the HTML view can find it.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from typing import Any

from ..errors import GraphvizNotFoundError, RenderError
from ..ir import Graph
from .model import View, ViewNode, describe

__all__ = ["COLORS", "dot_available", "run_dot", "svg_or_none", "to_dot", "to_svg"]

# role -> (fill, border); kept in one table so views and tests agree
COLORS = {
    "primal": ("#dbeafe", "#1d4ed8"),
    "tangent": ("#fed7aa", "#c2410c"),
    "constant": ("#f3f4f6", "#6b7280"),
}
_SHAPES = {"input": "invhouse", "output": "doubleoctagon", "constant": "note", "node": "box"}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _clip(text: str, n: int = 48) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _label(n: ViewNode) -> str:
    """An HTML-like Graphviz label: what it is, its type, its value, where it came from."""
    rows: list[str] = []
    if n.kind == "node":
        head = f"<b>{_esc(n.primitive or '')}</b>"
        if n.params_text:
            head += f" <font point-size='9'>[{_esc(_clip(n.params_text, 40))}]</font>"
        rows.append(head)
        if n.scalars:
            rows.append(f"<font point-size='9'>with {_esc(_clip(', '.join(n.scalars), 32))}</font>")
        rows.append(f"{_esc(n.name)} : {_esc(n.aval)}")
    elif n.kind == "output":
        rows.append(f"<b>{_esc(n.name)}</b> = {_esc(n.operands[0] if n.operands else '')}")
    else:
        rows.append(f"<b>{_esc(n.name)}</b> : {_esc(n.aval)}")
    if n.value is not None:
        rows.append(f"<font color='#111827'>= {_esc(_clip(n.value))}</font>")
    if n.source:
        rows.append(f"<font point-size='8' color='#4b5563'>{_esc(n.source)}</font>")
    return "<" + "<br/>".join(rows) + ">"


def _node_line(n: ViewNode) -> str:
    fill, border = COLORS["constant" if n.kind == "constant" else n.role]
    attrs = {
        "id": _quote(n.id),
        "label": _label(n),
        "shape": _SHAPES[n.kind],
        "fillcolor": _quote(fill),
        "color": _quote(border),
        "tooltip": _quote(_tooltip(n)),
    }
    if n.kind in ("input", "output"):
        attrs["penwidth"] = "2"
    return f"  {_quote(n.id)} [" + ", ".join(f"{k}={v}" for k, v in attrs.items()) + "];"


def _tooltip(n: ViewNode) -> str:
    what = n.primitive or n.kind
    text = f"{n.name} = {what} {' '.join(n.operands)}".rstrip() + f" : {n.aval} ({n.role})"
    if n.source_line:
        text += f"\n{n.source}: {n.source_line}"
    return text


def to_dot(graph: Graph | View, *, values: Any = None) -> str:
    """DOT text for ``graph`` (or an already built ``View``); see the module docstring."""
    view = graph if isinstance(graph, View) else describe(graph, values)
    pb, tb = COLORS["primal"][1], COLORS["tangent"][1]
    title = (f"<<b>{_esc(view.name)}</b>   <font color='{pb}'>■ primal</font>   "
             f"<font color='{tb}'>■ tangent</font>>")
    lines = [
        f"digraph {_quote(view.name)} {{",
        (f"  graph [rankdir=TB, labelloc=t, label={title}, fontname=\"Helvetica\", fontsize=12, "
         "nodesep=0.25, ranksep=0.35, bgcolor=\"white\"];"),
        "  node [fontname=\"Helvetica\", fontsize=10, style=\"rounded,filled\", margin=\"0.12,0.04\"];",
        ("  edge [fontname=\"Helvetica\", fontsize=8, color=\"#6b7280\", fontcolor=\"#374151\", "
         "arrowsize=0.6];"),
    ]
    groups: dict[Any, list[ViewNode]] = {}
    for n in view.nodes:
        if n.group is None:
            lines.append(_node_line(n))
        else:
            groups.setdefault(n.group, []).append(n)
    for k, (label, members) in enumerate(groups.items()):
        lines.append(f"  subgraph {_quote(f'cluster_fused_{k}')} {{")
        lines.append(f"    label={_quote(f'fused: {label}')}; style=\"dashed,rounded\"; "
                     "color=\"#7c3aed\"; fontcolor=\"#7c3aed\"; fontsize=9;")
        lines.extend("  " + _node_line(n) for n in members)
        lines.append("  }")
    n_operands: dict[str, int] = {}
    for e in view.edges:
        n_operands[e.dst] = n_operands.get(e.dst, 0) + 1
    for e in view.edges:
        label = e.aval if n_operands[e.dst] < 2 else f"{e.operand}: {e.aval}"
        color = COLORS["tangent"][1] if e.role == "tangent" else "#6b7280"
        lines.append(f"  {_quote(e.src)} -> {_quote(e.dst)} [id={_quote(e.id)}, label={_quote(label)}, "
                     f"color={_quote(color)}, tooltip={_quote(f'{e.var} → operand {e.operand}')}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_available() -> bool:
    return shutil.which("dot") is not None


def run_dot(dot_text: str, fmt: str) -> bytes:
    """Run Graphviz ``dot -T<fmt>`` on ``dot_text``; the image bytes (PNG at 144 dpi, so
    it stays sharp on high-density screens)."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFoundError()
    extra = ["-Gdpi=144"] if fmt == "png" else []
    proc = subprocess.run([exe, f"-T{fmt}", *extra], input=dot_text.encode(), capture_output=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RenderError(f"Graphviz 'dot -T{fmt}' failed: {err[0] if err else proc.returncode}")
    return proc.stdout


def to_svg(graph: Graph | View, *, values: Any = None) -> str:
    """The SVG drawing as text (needs Graphviz)."""
    svg = run_dot(to_dot(graph, values=values), "svg").decode()
    return svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: it is inlined in HTML


def svg_or_none(graph: Graph) -> str | None:
    """For Jupyter's ``_repr_svg_``: the SVG, or ``None`` (no image) without Graphviz."""
    if not dot_available():
        return None
    return to_svg(graph)
