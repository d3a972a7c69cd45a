"""The IR: abstract values, variables, literals, nodes and graphs.

The IR is plain data. A ``Graph`` is a straight-line program: ``inputs`` (``Var``),
``nodes`` in execution order (each binds a primitive to input atoms and fresh output
``Var`` s) and ``outputs`` (``Var`` or ``Literal``). Nothing here knows about tracing or
a backend; transforms build new graphs instead of mutating old ones.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .primitive import Primitive

__all__ = ["Atom", "Aval", "Graph", "Literal", "Node", "SourceInfo", "Var", "short_dtype"]

_SHORT = {
    "float64": "f64", "float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32",
    "int16": "i16", "int8": "i8", "uint8": "u8", "uint16": "u16", "uint32": "u32",
    "uint64": "u64", "bool": "bool", "complex64": "c64", "complex128": "c128",
}


def short_dtype(dtype: np.dtype) -> str:
    return _SHORT.get(np.dtype(dtype).name, np.dtype(dtype).name)


@dataclass(frozen=True)
class Aval:
    """Abstract value: what the compiler knows of an array — shape and dtype.

    ``weak`` marks a Python scalar (int/float/bool) whose dtype yields to array operands,
    as in NumPy 2's promotion rules (NEP 50): ``f32_array * 2.0`` stays float32.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    weak: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype.kind in "fc"

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{short_dtype(self.dtype)}{'~' if self.weak else ''}[{dims}]"


class Var:
    """A value produced once in a graph: an input or a node output. Compared by identity."""

    __slots__ = ("aval", "hint")

    def __init__(self, aval: Aval, hint: str | None = None):
        self.aval = aval
        self.hint = hint  # a readable name suggestion (e.g. the argument name)

    def __repr__(self) -> str:
        return f"Var({self.aval}{', ' + self.hint if self.hint else ''})"


class Literal:
    """A constant operand: a Python/NumPy scalar or a NumPy array captured at trace time."""

    __slots__ = ("aval", "value")

    def __init__(self, value: Any, aval: Aval):
        self.value = value
        self.aval = aval

    @property
    def is_scalar(self) -> bool:
        return not isinstance(self.value, np.ndarray)

    def key(self) -> tuple:
        """Hashable identity for common-subexpression elimination."""
        if self.is_scalar:
            return ("lit", type(self.value).__name__, repr(self.value), self.aval)
        return ("const", id(self.value))

    def __repr__(self) -> str:
        return f"Literal({self.short()})"

    def short(self) -> str:
        if self.is_scalar:
            v = self.value
            return repr(v.item()) + ":" + short_dtype(v.dtype) if isinstance(v, np.generic) else repr(v)
        return f"const{self.aval}"


Atom = Var | Literal


def _notebook_cell(filename: str) -> str | None:
    """``In[3]`` for code typed into Jupyter/IPython cell 3, else ``None``. The kernel runs
    each cell from a temporary file (``/tmp/ipykernel_123/2840.py``) and records which cell
    it was in its compiler's ``_filename_map``; IPython is only read if already loaded."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    names = getattr(getattr(shell, "compile", None), "_filename_map", None)
    number = names.get(filename) if isinstance(names, dict) else None
    return f"In[{number}]" if isinstance(number, int) else None


def _display_file(filename: str) -> str:
    return _notebook_cell(filename) or os.path.basename(filename)


@dataclass(frozen=True)
class SourceInfo:
    """Where in the user's code an operation was traced."""

    filename: str
    lineno: int
    function: str = ""
    line: str = ""

    def short(self) -> str:
        return f"{_display_file(self.filename)}:{self.lineno}"

    def describe(self) -> str:
        cell = _notebook_cell(self.filename)
        where = f"{cell or self.filename}:{self.lineno}"
        if self.function:
            where += f", in {self.function}"
        if self.line:
            where += f"\n    {self.line.strip()}"
        return where


@dataclass(eq=False)
class Node:
    """One primitive application: ``outputs = primitive(*inputs, **params)``."""

    primitive: Primitive
    inputs: tuple[Atom, ...]
    outputs: tuple[Var, ...]
    params: dict[str, Any] = field(default_factory=dict)
    source: SourceInfo | None = None
    fusion_group: int | None = None  # set by transforms.fuse: nodes sharing an id run as one kernel

    @property
    def out(self) -> Var:
        return self.outputs[0]

    def replace(self, **changes: Any) -> Node:
        """A copy with ``changes`` (e.g. new ``inputs``); every other field, the fusion
        group included, is kept."""
        return dataclasses.replace(self, **changes)


def _name_sequence() -> Iterator[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    n = 1
    while True:
        for i in range(26**n):
            s, k = "", i
            for _ in range(n):
                s = letters[k % 26] + s
                k //= 26
            if not keyword.iskeyword(s) and s not in ("np", "cp"):
                yield s
        n += 1


@dataclass(eq=False)
class Graph:
    """A straight-line program over arrays.

    ``input_kinds`` says for each input whether it is a ``"primal"`` or a ``"tangent"``;
    the JVP transform sets it, and it lets tools tell primal from tangent work.
    """

    inputs: list[Var]
    nodes: list[Node]
    outputs: list[Atom]
    name: str = "f"
    input_kinds: list[str] | None = None

    def __post_init__(self) -> None:
        if self.input_kinds is None:
            self.input_kinds = ["primal"] * len(self.inputs)

    # -- naming and printing -------------------------------------------------------
    def names(self) -> dict[Var, str]:
        """Short, unique, deterministic names: inputs first, then node outputs in order."""
        names: dict[Var, str] = {}
        used: set[str] = set()
        for v in self.inputs:  # argument-derived hints (``x``, ``params_w1``) read best
            h = v.hint
            if h and h.isidentifier() and not keyword.iskeyword(h) and h not in ("np", "cp") \
                    and not h.startswith("_") and h not in used:
                names[v] = h
                used.add(h)
        gen = (n for n in _name_sequence() if n not in used)
        for v in self.inputs:
            if v not in names:
                names[v] = next(gen)
        for node in self.nodes:
            for v in node.outputs:
                names[v] = next(gen)
        return names

    def pretty(self, *, source: bool = False) -> str:
        """The canonical listing: one line per node with output shapes, primitive, params."""
        names = self.names()

        def atom(a: Atom) -> str:
            return names.get(a, "?") if isinstance(a, Var) else a.short()

        ins = " ".join(
            f"{names[v]}:{v.aval}{'ᵗ' if k == 'tangent' else ''}"
            for v, k in zip(self.inputs, self.input_kinds)
        )
        lines = [f"{{ lambda {ins} ."]
        group: int | None = None
        for node in self.nodes:
            if node.fusion_group != group:  # fusion groups print as indented blocks
                if group is not None:
                    lines.append("    }")
                group = node.fusion_group
                if group is not None:
                    lines.append(f"    fusion_group {group} {{")
            indent = "      " if group is not None else "    "
            outs = " ".join(f"{names[v]}:{v.aval}" for v in node.outputs)
            params = node.primitive.format_params(node.params)
            args = " ".join(atom(a) for a in node.inputs)
            text = f"{indent}{outs} = {node.primitive.name}{params} {args}".rstrip()
            if source and node.source is not None:
                text = f"{text:<60}  # {node.source.short()}"
            lines.append(text)
        if group is not None:
            lines.append("    }")
        outs = " ".join(atom(a) for a in self.outputs)
        lines.append(f"  in ( {outs} ) }}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.pretty()

    def replace(self, **changes: Any) -> Graph:
        """A copy with ``changes`` (``nodes``, ``outputs``, ...); the rest is kept (lists copied)."""
        fields = {"inputs": list(self.inputs), "nodes": list(self.nodes), "outputs": list(self.outputs),
                  "name": self.name, "input_kinds": list(self.input_kinds)}
        fields.update(changes)
        return Graph(**fields)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"

    # -- analysis ------------------------------------------------------------------
    def roles(self) -> dict[Var, str]:
        """``"tangent"`` for every var that depends on a tangent input, else ``"primal"``."""
        role = {v: k for v, k in zip(self.inputs, self.input_kinds)}
        for node in self.nodes:
            r = "tangent" if any(role.get(a) == "tangent" for a in node.inputs if isinstance(a, Var)) else "primal"
            for v in node.outputs:
                role[v] = r
        return role

    def validate(self) -> Graph:
        """Check the IR: each var bound once, used after its definition, and shapes/dtypes
        agreeing with each primitive's shape rule. Returns self; raises AssertionError."""
        defined: set[Var] = set()
        for v in self.inputs:
            assert isinstance(v, Var), f"input {v!r} is not a Var"
            assert v not in defined, f"input {v!r} bound twice"
            defined.add(v)
        assert len(self.input_kinds) == len(self.inputs), "input_kinds length mismatch"
        for i, node in enumerate(self.nodes):
            for a in node.inputs:
                if isinstance(a, Var):
                    assert a in defined, f"node {i} ({node.primitive.name}) uses {a!r} before definition"
                else:
                    assert isinstance(a, Literal), f"node {i} has a non-atom input {a!r}"
            expected = node.primitive.abstract_eval([a.aval for a in node.inputs], node.params)
            expected = expected if isinstance(expected, (tuple, list)) else (expected,)
            assert len(expected) == len(node.outputs), f"node {i} ({node.primitive.name}) output count"
            for v, e in zip(node.outputs, expected):
                assert v not in defined, f"node {i} ({node.primitive.name}) rebinds {v!r}"
                assert (v.aval.shape, v.aval.dtype) == (e.shape, e.dtype), (
                    f"node {i} ({node.primitive.name}): output {v.aval} but the shape rule gives {e}"
                )
                defined.add(v)
        for a in self.outputs:
            if isinstance(a, Var):
                assert a in defined, f"output {a!r} is never defined"
        if any(node.fusion_group is not None for node in self.nodes):
            from .fusion import fusion_groups

            fusion_groups(self)  # raises AssertionError for a group a kernel could not compute
        return self

    def values(self, *args: Any) -> dict[Var, Any]:
        """Every variable's value for these inputs, by the primitives' NumPy implementations
        (a reference; ``interpret`` and the annotated drawings in ``tracegrad.viz`` use it)."""
        if len(args) != len(self.inputs):
            raise TypeError(f"graph {self.name} takes {len(self.inputs)} inputs, got {len(args)}")
        env: dict[Var, Any] = dict(zip(self.inputs, args))

        def read(a: Atom) -> Any:
            return env[a] if isinstance(a, Var) else a.value

        for node in self.nodes:
            outs = node.primitive.impl(*[read(a) for a in node.inputs], **node.params)
            if not node.primitive.multiple_results:
                outs = (outs,)
            env.update(zip(node.outputs, outs))
        return env

    def interpret(self, *args: Any) -> list[Any]:
        """Evaluate the graph with each primitive's NumPy implementation (a reference)."""
        env = self.values(*args)
        return [env[a] if isinstance(a, Var) else a.value for a in self.outputs]

    # -- seeing the graph (``tracegrad.viz``, which sits above the IR: the top-level
    # package installs it as ``Graph.views`` and imports it on first use) ---------------
    views: ClassVar[Callable[[], Any] | None] = None

    def _views(self) -> Any:
        if Graph.views is None:
            raise RuntimeError("graph views need tracegrad.viz; import tracegrad first")
        return Graph.views()

    def to_networkx(self, *, values: Any = None) -> Any:
        """A ``networkx.DiGraph`` of inputs, constants, nodes and outputs; edges carry the
        operand index and shape. See ``tracegrad.viz.networkx`` for the attributes."""
        return self._views().to_networkx(self, values=values)

    def to_dot(self, *, values: Any = None) -> str:
        """Graphviz DOT text: primal nodes blue, tangent nodes orange, fusion groups as clusters.
        ``values``: the graph's input arrays (or a ``{Var: value}`` map) to print on nodes."""
        return self._views().to_dot(self, values=values)

    def render(self, path: Any, *, values: Any = None, engine: str = "auto") -> Any:
        """Write the graph to ``path`` as .svg, .png, .dot, .txt or .html (from the suffix);
        laid out by Graphviz's ``dot`` when installed, else by the built-in layout."""
        return self._views().render(self, path, values=values, engine=engine)

    def to_html(self, path: Any = None, *, values: Any = None, engine: str = "auto") -> str:
        """A self-contained HTML page: the diagram (zoom, pan, layers), a node table and a
        detail panel."""
        return self._views().to_html(self, path, values=values, engine=engine)

    def stats(self) -> Any:
        """Node counts, FLOPs, bytes moved and the generated code's estimated peak memory."""
        return self._views().graph_stats(self)

    def _repr_svg_(self) -> str | None:
        return self._views().dot.svg_or_none(self)

    def _repr_html_(self) -> str:
        return self._views().html.notebook_html(self)
