"""Plain-text views: short value strings, byte/FLOP units, and the annotated listing."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, Var

__all__ = ["format_bytes", "format_count", "format_value", "listing"]


def format_value(x: Any, limit: int = 6) -> str:
    """A value short enough for a node label: scalars in full, arrays by their first entries."""
    a = np.asarray(x)
    if a.ndim == 0:
        v = a.item()
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    flat = a.ravel()
    if a.dtype.kind in "fc":
        parts = [f"{v:.4g}" for v in flat[:limit].tolist()]
    else:
        parts = [str(v) for v in flat[:limit].tolist()]
    more = f", … ({a.size} values)" if a.size > limit else ""
    return "[" + ", ".join(parts) + more + "]"


def format_count(n: float) -> str:
    """1234567 -> '1.23 M': FLOP counts at a glance."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:g}"


def format_bytes(n: float) -> str:
    """Bytes in binary units (KiB, MiB, GiB), as memory is allocated."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:g} B"


def listing(graph: Graph, values: Any = None) -> str:
    """The canonical listing with each node's source line; with ``values`` (the graph's
    input arrays or a ``{Var: value}`` map) every line also shows the computed value."""
    from .model import resolve_values

    text = graph.pretty(source=True)
    env = resolve_values(graph, values)
    if env is None:
        return text
    names = graph.names()
    lines = text.split("\n")
    out = [lines[0]]
    for v in graph.inputs:
        if v in env:
            out.append(f"    # {names[v]} = {format_value(env[v])}")
    for line, node in zip(lines[1:], graph.nodes):
        shown = "; ".join(format_value(env[v]) for v in node.outputs if v in env)
        out.append(f"{line:<78}  = {shown}" if shown else line)
    out.extend(lines[1 + len(graph.nodes):])
    for j, a in enumerate(graph.outputs):
        value = env.get(a) if isinstance(a, Var) else a.value
        out.append(f"  # out{j} = {format_value(value)}")
    return "\n".join(out)
