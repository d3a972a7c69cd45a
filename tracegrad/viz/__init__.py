"""Seeing the graphs: text, networkx, DOT/SVG/PNG and HTML views, and cost statistics.

``Graph`` methods (``to_networkx``, ``to_dot``, ``render``, ``to_html``, ``stats``) call
into this package, which is imported on first use so ``import tracegrad`` stays fast and
the IR stays plain data. Every view is built from one ``model.describe(graph)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import RenderError
from ..ir import Graph
from .dot import dot_available, run_dot, to_dot, to_svg
from .html import to_html
from .model import describe
from .networkx import to_networkx
from .stats import GraphStats, NodeCost, StatsComparison, compare_stats, graph_stats
from .text import listing

__all__ = [
    "FORMATS",
    "GraphStats",
    "NodeCost",
    "StatsComparison",
    "compare_stats",
    "describe",
    "dot_available",
    "graph_stats",
    "listing",
    "render",
    "to_dot",
    "to_html",
    "to_networkx",
    "to_svg",
]

FORMATS = (".svg", ".png", ".dot", ".gv", ".txt", ".html")


def render(graph: Graph, path: str | Path, *, values: Any = None) -> Path:
    """Write ``graph`` to ``path`` in the format its suffix names (see ``FORMATS``).

    .svg/.png are drawn by Graphviz's ``dot``; .html is the interactive page (``to_html``);
    .dot is the DOT source; .txt the listing with source lines (and values, if given)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise RenderError(f"cannot write a graph to {path.name!r}: unknown suffix {suffix or '(none)'!r}",
                          hint="use one of " + ", ".join(FORMATS))
    if suffix in (".svg", ".png"):
        path.write_bytes(run_dot(to_dot(graph, values=values), suffix[1:]))
    elif suffix == ".html":
        to_html(graph, path, values=values)
    elif suffix in (".dot", ".gv"):
        path.write_text(to_dot(graph, values=values), encoding="utf-8")
    else:
        path.write_text(listing(graph, values) + "\n", encoding="utf-8")
    return path
