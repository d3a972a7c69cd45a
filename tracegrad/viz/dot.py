"""Graphviz views: DOT text, SVG/PNG images drawn by the ``dot`` program, and the choice
of layout engine (``dot`` when installed, else the built-in one of ``layout``/``draw``).

Primal work is blue, tangent work orange; inputs are drawn as downward houses, outputs
as double octagons, constant arrays grey; edges are labelled with the shape they carry;
nodes of one fusion group sit in a dashed cluster; otherwise each run of one source line
(``model.LineGroup``) sits in a shaded cluster labelled with that line. Every DOT node has ``id=<view id>``,
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

__all__ = ["COLORS", "ENGINES", "ENGINE_NAMES", "dot_available", "draw_bytes", "pick_engine", "run_dot",
           "svg_or_none", "to_dot", "to_svg"]

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
    fused = any(n.group is not None for n in view.nodes)
    for n in view.nodes:
        key = n.group if fused else n.line_group
        if key is None:
            lines.append(_node_line(n))
        else:
            groups.setdefault(key, []).append(n)
    if fused:
        for k, (label, members) in enumerate(groups.items()):
            lines.append(f"  subgraph {_quote(f'cluster_fused_{k}')} {{")
            lines.append(f"    label={_quote(f'fused: {label}')}; style=\"dashed,rounded\"; "
                         "color=\"#7c3aed\"; fontcolor=\"#7c3aed\"; fontsize=9;")
            lines.extend("  " + _node_line(n) for n in members)
            lines.append("  }")
    else:  # one shaded cluster per run of a source line (``model.LineGroup``)
        for k, g in enumerate(view.line_groups):
            code = _clip(g.code or "", 60)
            lines.append(f"  subgraph {_quote(f'cluster_{g.id}')} {{")
            lines.append(f"    id={_quote(g.id)}; label={_quote(f'{g.label}: {code}')}; labeljust=l; "
                         f"style=\"filled,rounded\"; fillcolor=\"{('#f8fafc', '#eef2f7')[k % 2]}\"; "
                         "color=\"#cbd5e1\"; fontcolor=\"#334155\"; fontsize=9; "
                         f"tooltip={_quote(g.label + chr(10) + (g.code or ''))};")
            lines.extend("  " + _node_line(n) for n in groups.get(g.id, ()))
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


ENGINES = ("auto", "dot", "builtin")
ENGINE_NAMES = {"dot": "Graphviz dot", "builtin": "tracegrad's built-in layered layout"}
FALLBACK_NOTE = "layout: built-in (install Graphviz for dot's layout)"


def pick_engine(engine: str = "auto") -> str:
    """The layout engine to use: ``dot`` when asked for, or when ``auto`` and Graphviz is
    installed (its drawings are the best); otherwise the built-in layered layout, which
    needs nothing beyond ``pip install`` (``layout.py``)."""
    if engine not in ENGINES:
        raise RenderError(f"unknown layout engine {engine!r}", hint="use one of " + ", ".join(ENGINES))
    if engine == "dot" and not dot_available():
        raise GraphvizNotFoundError(
            "the 'dot' layout engine needs Graphviz's 'dot' program, which is not on PATH",
            hint="install Graphviz (Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew install "
                 "graphviz; conda: conda install graphviz), or use the built-in layout (engine=\"builtin\" "
                 "in Python, --layout builtin on the command line)")
    if engine == "auto":
        return "dot" if dot_available() else "builtin"
    return engine


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


def draw_bytes(graph: Graph | View, fmt: str, *, values: Any = None, engine: str = "auto"
               ) -> tuple[bytes, str]:
    """The ``svg`` or ``png`` image and the engine that drew it (see ``pick_engine``)."""
    from .builtin import builtin_png, builtin_svg

    view = graph if isinstance(graph, View) else describe(graph, values)
    used = pick_engine(engine)
    if used == "dot":
        return run_dot(to_dot(view), fmt), used
    note = FALLBACK_NOTE if engine == "auto" else ""
    if fmt == "svg":
        return builtin_svg(view, note).encode(), used
    return builtin_png(view, note), used


def to_svg(graph: Graph | View, *, values: Any = None, engine: str = "auto") -> str:
    """The SVG drawing as text: by Graphviz's ``dot`` when installed, else by the built-in
    layout (``engine`` forces one: ``"dot"`` or ``"builtin"``)."""
    svg = draw_bytes(graph, "svg", values=values, engine=engine)[0].decode()
    return svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: it is inlined in HTML


def svg_or_none(graph: Graph) -> str | None:
    """For Jupyter's ``_repr_svg_``: the SVG (with or without Graphviz)."""
    return to_svg(graph)
