"""Seeing the graphs: text, networkx, DOT/SVG/PNG and HTML views, and cost statistics.

``Graph`` methods (``to_networkx``, ``to_dot``, ``render``, ``to_html``, ``stats``) call
into this package, which is imported on first use so ``import tracegrad`` stays fast and
the IR stays plain data. Every view is built from one ``model.describe(graph)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RenderError
from ..ir import Graph
from .dot import ENGINE_NAMES, ENGINES, dot_available, draw_bytes, pick_engine, to_dot, to_svg
from .html import to_html
from .model import describe
from .networkx import to_networkx
from .stats import GraphStats, NodeCost, StatsComparison, compare_stats, graph_stats
from .text import listing

__all__ = [
    "ENGINES",
    "ENGINE_NAMES",
    "FORMATS",
    "Drawing",
    "GraphStats",
    "NodeCost",
    "StatsComparison",
    "compare_stats",
    "describe",
    "dot_available",
    "draw",
    "graph_stats",
    "listing",
    "render",
    "to_dot",
    "to_html",
    "to_networkx",
    "to_svg",
]

FORMATS = (".svg", ".png", ".dot", ".gv", ".txt", ".html")


@dataclass(frozen=True)
class Drawing:
    """What ``draw`` wrote: the file and the layout engine that placed the nodes
    (``"dot"``, ``"builtin"``, or ``None`` for .dot/.txt, which need no layout)."""

    path: Path
    engine: str | None

    @property
    def engine_name(self) -> str:
        return ENGINE_NAMES[self.engine] if self.engine else "no layout"


def draw(graph: Graph, path: str | Path, *, values: Any = None, engine: str = "auto") -> Drawing:
    """Write ``graph`` to ``path`` in the format its suffix names (see ``FORMATS``) and say
    which engine drew it.

    .svg/.png/.html are laid out by Graphviz's ``dot`` when it is installed (the best
    drawings) and otherwise by the built-in layered layout, which needs nothing beyond
    ``pip install``; ``engine="dot"`` or ``"builtin"`` forces one. .dot is the DOT source;
    .txt the listing with source lines (and values, if given)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise RenderError(f"cannot write a graph to {path.name!r}: unknown suffix {suffix or '(none)'!r}",
                          hint="use one of " + ", ".join(FORMATS))
    used: str | None = None
    if suffix in (".svg", ".png"):
        data, used = draw_bytes(graph, suffix[1:], values=values, engine=engine)
        path.write_bytes(data)
    elif suffix == ".html":
        used = pick_engine(engine)
        to_html(graph, path, values=values, engine=engine)
    elif suffix in (".dot", ".gv"):
        path.write_text(to_dot(graph, values=values), encoding="utf-8")
    else:
        path.write_text(listing(graph, values) + "\n", encoding="utf-8")
    return Drawing(path, used)


def render(graph: Graph, path: str | Path, *, values: Any = None, engine: str = "auto") -> Path:
    """``draw(...).path``: write ``graph`` to ``path`` (format from the suffix)."""
    return draw(graph, path, values=values, engine=engine).path
