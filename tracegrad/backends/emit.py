"""Shared Python-source emitter for array backends.

Turns a graph into one readable straight-line Python function: one statement per node
(named like the IR listing, with a comment naming the primitive and the user's source
line), ``del`` of temporaries right after their last use, constants bound as module
globals. With ``inplace=True`` an elementwise ufunc writes its result into an operand that
dies at that node (``c = np.add(a, b, out=a)``), so a chain of elementwise ops needs no
new buffer per step; ``plan_inplace`` decides where, conservatively, and
``live_temporary_bytes`` simulates the memory the emitted code holds. The source is
compiled once and registered with ``linecache`` so tracebacks and debuggers step through it.
"""

from __future__ import annotations

import itertools
import linecache
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir import Graph, Literal, Var

__all__ = ["Emitted", "compile_source", "emit_function", "format_scalar", "inplace_candidates",
           "live_temporary_bytes", "plan_inplace"]

_counter = itertools.count()


def format_scalar(v: Any, module: str = "np") -> str:
    """Source text for a scalar literal; Python scalars stay Python (weakly typed)."""
    if isinstance(v, np.generic):
        item = v.item()
        inner = format_scalar(item, module)
        return f"{module}.{v.dtype.name}({inner})" if v.dtype != bool else f"{module}.bool_({inner})"
    if isinstance(v, float) and not math.isfinite(v):
        return f"float({str(v)!r})"
    text = repr(v)
    return f"({text})" if text.startswith("-") else text


@dataclass
class Emitted:
    source: str
    name: str
    constants: dict[str, Any] = field(default_factory=dict)


def _identifier(name: str) -> str:
    name = re.sub(r"\W", "_", name) or "f"
    return name if not name[0].isdigit() else "f_" + name


def _last_uses(graph: Graph) -> dict[Var, int]:
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
    last_use = _last_uses(graph)
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
    last_use = _last_uses(graph)
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


def emit_function(graph: Graph, lower: Callable[[Any, list[str], dict[str, Any]], str],
                  module: str = "np", inplace: bool = False) -> Emitted:
    """Emit ``def name(inputs): ... return outputs`` for ``graph``.

    ``lower(primitive, operand_exprs, params)`` returns a Python expression for one node.
    ``inplace``: reuse dying operand buffers (``plan_inplace``); NumPy-specific, so opt-in.
    """
    names = graph.names()
    constants: dict[str, Any] = {}
    const_names: dict[int, str] = {}

    def atom(a: Any) -> str:
        if isinstance(a, Var):
            return names[a]
        assert isinstance(a, Literal)
        if a.is_scalar:
            return format_scalar(a.value, module)
        key = id(a.value)
        if key not in const_names:
            const_names[key] = f"_c{len(const_names)}"
            constants[const_names[key]] = a.value
        return const_names[key]

    last_use = _last_uses(graph)
    keep = set(graph.inputs) | {a for a in graph.outputs if isinstance(a, Var)}
    reuse = plan_inplace(graph) if inplace else {}

    fn_name = _identifier(graph.name)
    body: list[str] = []
    for i, node in enumerate(graph.nodes):
        args = [atom(a) for a in node.inputs]
        if i in reuse:  # the result goes into a dying operand's buffer
            expr = f"{node.primitive.numpy_ufunc}({', '.join(args)}, out={args[reuse[i]]})"
        else:
            expr = lower(node.primitive, args, node.params)
        targets = ", ".join(names[v] for v in node.outputs)
        stmt = f"    {targets} = {expr}"
        comment = node.primitive.name + (f"  {node.source.short()}" if node.source else "")
        body.append(f"{stmt:<56}  # {comment}")
        dead = sorted({names[a] for a in node.inputs if isinstance(a, Var) and last_use.get(a) == i and a not in keep})
        dead_outs = [names[v] for v in node.outputs if v not in last_use and v not in keep]
        if dead or dead_outs:
            body.append(f"    del {', '.join(dead + dead_outs)}")
    outs = []
    for a in graph.outputs:
        if isinstance(a, Literal) and not a.is_scalar:
            outs.append(f"{atom(a)}.copy()")
        else:
            outs.append(atom(a))
    body.append(f"    return ({', '.join(outs)}{',' if len(outs) == 1 else ''})")
    params = ", ".join(names[v] for v in graph.inputs)
    header = [f"# generated by tracegrad: graph {graph.name!r}, {len(graph.nodes)} nodes"]
    for cname, value in constants.items():
        header.append(f"# {cname}: constant array {value.dtype}{list(value.shape)}")
    source = "\n".join(header + [f"def {fn_name}({params}):"] + body) + "\n"
    return Emitted(source, fn_name, constants)


def compile_source(emitted: Emitted, namespace: dict[str, Any]) -> tuple[Callable[..., Any], str]:
    """Compile the emitted function; register its source with ``linecache``."""
    filename = f"<tracegrad:{emitted.name}:{next(_counter)}>"
    linecache.cache[filename] = (len(emitted.source), None, emitted.source.splitlines(True), filename)
    code = compile(emitted.source, filename, "exec")
    glb = dict(namespace)
    glb.update(emitted.constants)
    exec(code, glb)  # noqa: S102 - our own generated code
    return glb[emitted.name], filename
