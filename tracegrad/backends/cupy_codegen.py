"""Code generation for the CuPy backend: a graph -> Python glue + one CUDA translation unit.

Pure Python (CuPy is not imported), so the generated sources can be inspected and
checked on machines without a GPU. ``generate(graph)`` fuses the graph
(``transforms.fuse``) and walks it once:

- each fusion group becomes ONE kernel (``cuda_kernels.group_kernel``) launched from the
  glue; its outputs are fresh contiguous buffers;
- views (reshape, transpose, broadcast_to, basic slicing, stop_gradient) cost nothing:
  the planner tracks every value's static ``Layout`` (base buffer, offset, strides) and
  kernels read through it; a view becomes a CuPy expression only where a library call
  or the caller needs the array. Which primitives are views, and how each maps a layout,
  is declared with the primitive (``lowerings["cupy"]``, a view rule);
- other CuPy lowerings are named by the primitive's declaration (``lowerings["cupy"]``:
  ``"gemm"``, ``"blas"``, ``"im2col_gemm"``), never by its name here;
- matmul/einsum go to cuBLAS (``cp.matmul``/``cp.einsum``, the NumPy lowering run with
  ``cp`` for ``np``). Two matmuls sharing their weight, ``x @ W`` and ``x_dot @ W``
  with x and x_dot made by the same kernel, become ONE GEMM: the kernel writes x and
  x_dot into one stacked buffer ``[x; x_dot]`` and ``[x; x_dot] @ W`` is split by views.
  (``x @ W`` and ``x @ W_dot`` are not merged: stacking ``[W, W_dot]`` would copy the
  weights, and K directions make ``x @ W_dot`` a batched GEMM already.);
- conv2d is im2col (a generated kernel, padding and stride included) + one GEMM
  ``w.reshape(O, -1) @ cols`` whose (O, N, H', W') result is read as NCHW through a
  transposed layout (no copy); convolutions of the same input share their im2col;
- other ops (index arrays, concatenate, argmax, the ``np.linalg`` decompositions) run their
  NumPy lowering with ``cp`` (one result each, or a tuple unpacked into contiguous arrays).

Inputs are moved to the device once at entry (``_device``: no-op for CuPy arrays);
outputs stay on the device.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir import Graph, Literal, Node, Var
from ..ir.fusion import FusionGroup, fusion_groups, reshape_role
from ..transforms.fuse import fuse
from .cuda_c import ctype, preamble
from .cuda_kernels import Kernel, Layout, group_kernel, im2col_kernel
from .emit import _identifier, format_scalar

__all__ = ["STRATEGIES", "CupyProgram", "generate"]

# The CuPy lowerings a primitive may name in its declaration (``lowerings["cupy"]``):
# "gemm" is one cuBLAS call with a C-contiguous result (and may share one GEMM with a
# second product of the same weight); "blas" a cuBLAS-backed library call; "im2col_gemm"
# a generated im2col kernel plus one GEMM. A callable is a view rule on ``Layout``.
STRATEGIES = ("gemm", "blas", "im2col_gemm")


def _cupy_rule(node: Node) -> Any:
    return node.primitive.lowerings.get("cupy")


@dataclass
class CupyProgram:
    """Everything the CuPy backend compiles: inspectable without a GPU."""

    graph: Graph  # the fused graph
    fn_name: str
    python_source: str
    cuda_source: str
    kernels: list[Kernel]
    constants: dict[str, np.ndarray]
    launches: dict[str, int] = field(default_factory=dict)

    def source(self) -> str:
        """Both sources: the Python glue, then the CUDA translation unit it launches."""
        bar = "# " + "-" * 76
        cuda = "\n".join("# " + ln if ln else "#" for ln in self.cuda_source.splitlines())
        return (f"{self.python_source}\n{bar}\n# CUDA translation unit (cupy.RawModule, "
                f"{len(self.kernels)} kernels)\n{bar}\n{cuda}\n")


@dataclass
class _Stmt:
    text: str
    reads: set[str]
    comment: str = ""


@dataclass
class _Stack:
    """Two kernel outputs written into one buffer so one GEMM serves both matmuls."""

    name: str
    lead: Var  # (N, F): at offset 0
    rest: Var  # (N, F) or (K, N, F): right after it
    first: Node  # the earlier matmul: the one GEMM is emitted in its place
    second: Node  # the later one, computed by that GEMM too
    lead_operand: Var  # the (N, F) matmul operand: ``lead`` itself or a reshape of it


_CUPY_REDUCTIONS = {"np.add.reduce(": "cp.sum(", "np.maximum.reduce(": "cp.max(", "np.minimum.reduce(": "cp.min("}


def _py(text: str) -> str:
    """A NumPy lowering as CuPy code (``np.`` -> ``cp.``; the NumPy backend's ufunc
    reductions as CuPy's ``sum``/``max``/``min``)."""
    for numpy_form, cupy_form in _CUPY_REDUCTIONS.items():
        text = text.replace(numpy_form, cupy_form)
    return re.sub(r"\bnp\.", "cp.", text)


class _Planner:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.names = graph.names()
        self.layouts: dict[Var, Layout] = {}
        self.pyexpr: dict[Var, str] = {}
        self.stmts: list[_Stmt] = []
        self.kernels: list[Kernel] = []
        self.constants: dict[str, np.ndarray] = {}
        self._const_names: dict[int, str] = {}
        self._const_layouts: dict[int, Layout] = {}
        self._tmp = 0
        self.cublas = 0
        self.library = 0
        self._im2col: dict[tuple, tuple[str, Layout]] = {}

    # -- names and values ----------------------------------------------------------
    def tmp(self, stem: str) -> str:
        self._tmp += 1
        return f"_{stem}{self._tmp}"

    def const(self, lit: Literal) -> str:
        key = id(lit.value)
        if key not in self._const_names:
            name = f"_const{len(self._const_names)}"
            self._const_names[key] = name
            value = np.ascontiguousarray(lit.value)
            self.constants[name] = value
            self._const_layouts[key] = Layout.contiguous(name, value.shape, value.dtype)
        return self._const_names[key]

    def layout(self, a: Any) -> Layout:
        if isinstance(a, Literal):
            self.const(a)
            return self._const_layouts[id(a.value)]
        lay = self.layouts.get(a)
        if lay is None:  # a view that needed a copy: materialize it
            raise AssertionError(f"no layout for {self.names.get(a)}")
        return lay

    def py(self, a: Any) -> str:
        if isinstance(a, Literal):
            return format_scalar(a.value, "cp") if a.is_scalar else self.const(a)
        return self.pyexpr[a]

    def reads(self, atoms: list[Any]) -> set[str]:
        out = set()
        for a in atoms:
            if isinstance(a, Var):
                out.add(self.layouts[a].base)
        return out

    def define(self, v: Var, name: str, shape: tuple[int, ...] | None = None) -> None:
        self.layouts[v] = Layout.contiguous(name, v.aval.shape if shape is None else shape, v.aval.dtype)
        self.pyexpr[v] = name

    def emit(self, text: str, reads: set[str], comment: str = "") -> None:
        self.stmts.append(_Stmt(text, reads, comment))

    @staticmethod
    def where(node: Node) -> str:
        return f"  {node.source.short()}" if node.source else ""

    # -- plan --------------------------------------------------------------------
    def run(self) -> CupyProgram:
        g = self.graph
        for v in g.inputs:
            name = self.names[v]
            self.emit(f"{name} = _device({name})", {name}, "to the device once (no copy for CuPy arrays)")
            self.define(v, name)
        groups = {grp.gid: grp for grp in fusion_groups(g)}
        self.stacks = self._plan_stacks(groups)
        done_groups: set[int] = set()
        skip: set[int] = set()
        for node in g.nodes:
            if node.fusion_group is not None:
                if node.fusion_group not in done_groups:
                    done_groups.add(node.fusion_group)
                    self.group(groups[node.fusion_group])
                continue
            if id(node) in skip:
                continue
            stack = next((s for s in self.stacks if s.first is node or s.second is node), None)
            if stack is not None:
                self.stacked_matmul(stack)
                skip.add(id(stack.second) if stack.first is node else id(stack.first))
            elif callable(_cupy_rule(node)) and self._view(node):
                pass
            elif _cupy_rule(node) == "im2col_gemm":
                self.conv2d(node)
            else:
                self.library_call(node)
        return self.finish()

    def _plan_stacks(self, groups: dict[int, FusionGroup]) -> list[_Stack]:
        """Matmul pairs ``a @ W``, ``b @ W`` whose ``a`` and ``b`` (or what they are reshapes
        of, like the flatten before a dense layer) come out of the same elementwise kernel."""
        group_of = {v: grp.gid for grp in groups.values() if grp.reduction is None for v in grp.outputs}
        reshaped = {n.out: n.inputs[0] for n in self.graph.nodes
                    if n.primitive.fusion is reshape_role and n.fusion_group is None and isinstance(n.inputs[0], Var)}

        def root(v: Var) -> Var:
            while v in reshaped:
                v = reshaped[v]
            return v

        used: set[Var] = set()
        stacks = []
        mats = [n for n in self.graph.nodes if _cupy_rule(n) == "gemm" and n.fusion_group is None]
        for i, m1 in enumerate(mats):
            for m2 in mats[i + 1:]:
                a, b = m1.inputs[0], m2.inputs[0]
                w1, w2 = m1.inputs[1], m2.inputs[1]
                same_w = w1 is w2 or (isinstance(w1, Literal) and isinstance(w2, Literal) and w1.value is w2.value)
                if not (same_w and isinstance(a, Var) and isinstance(b, Var) and a is not b):
                    continue
                lead, rest = (a, b) if a.aval.ndim <= b.aval.ndim else (b, a)
                if lead.aval.ndim != 2 or rest.aval.shape[-2:] != lead.aval.shape or rest.aval.ndim > 3:
                    continue
                r_lead, r_rest = root(lead), root(rest)
                if w1.aval.ndim != 2 or {r_lead, r_rest} & used or a.aval.dtype != b.aval.dtype:
                    continue
                if r_lead is r_rest or group_of.get(r_lead) is None or group_of.get(r_lead) != group_of.get(r_rest):
                    continue
                used.update((r_lead, r_rest))
                stacks.append(_Stack(self.tmp("stack"), r_lead, r_rest, m1, m2, lead))
        return stacks

    # -- fusion groups -------------------------------------------------------------
    def group(self, grp: FusionGroup) -> None:
        targets: dict[Var, Layout] = {}
        allocs = []
        for v in grp.outputs:
            stack = next((s for s in self.stacks if v is s.lead or v is s.rest), None)
            if stack is not None:
                if stack.name not in {lay.base for lay in targets.values()}:
                    total = stack.lead.aval.size + stack.rest.aval.size
                    allocs.append((stack.name, (total,), v.aval.dtype,
                                   (f"[{self.names[stack.lead]}; {self.names[stack.rest]}] in one buffer: "
                                   "one GEMM for both matmuls")))
                off = 0 if v is stack.lead else stack.lead.aval.size
                total = stack.lead.aval.size + stack.rest.aval.size
                targets[v] = Layout.contiguous(stack.name, v.aval.shape, v.aval.dtype, off, total)
            else:
                name = self.names[v]
                allocs.append((name, v.aval.shape, v.aval.dtype, ""))
                targets[v] = Layout.contiguous(name, v.aval.shape, v.aval.dtype)
        for name, shape, dtype, why in allocs:
            self.emit(f"{name} = cp.empty({shape!r}, cp.{np.dtype(dtype).name})", set(), why)
        prims = []
        for n in grp.nodes:
            if n.primitive.name not in prims:
                prims.append(n.primitive.name)
        kname = _identifier(f"{self.graph.name}_k{grp.gid}_" + "_".join(prims[:4]))
        summary = (f"fusion group {grp.gid} of graph {self.graph.name!r}: {grp.kind} over "
                   f"[{','.join(map(str, grp.shape))}], {len(grp.nodes)} nodes ({', '.join(prims)})")
        kernel = group_kernel(kname, grp, self.names, self.layout, targets, summary)
        self.kernels.append(kernel)
        kernel_py = f"_k{len(self.kernels) - 1}"
        args = ", ".join(kernel.args) + ("," if len(kernel.args) == 1 else "")
        src = grp.nodes[0].source.short() if grp.nodes[0].source else ""
        total = math.prod(grp.shape)
        if total:
            self.emit(f"{kernel_py}(({kernel.grid},), ({kernel.block},), ({args}))", set(kernel.args),
                      f"{kname}  {src}".rstrip())
        for v, lay in targets.items():
            self.layouts[v] = lay
            if lay.base == self.names[v]:
                self.pyexpr[v] = lay.base
            else:
                self.pyexpr[v] = f"_segment({lay.base}, {lay.offset}, {v.aval.shape!r})"

    # -- views ---------------------------------------------------------------------
    def _view(self, node: Node) -> bool:
        """A free view: a new static layout and a lazy CuPy expression; False if not one."""
        x = node.inputs[0]
        if not isinstance(x, Var):
            return False
        lay = self.layouts[x]
        p = node.params
        new = _cupy_rule(node)(lay, p, len(node.inputs))  # the primitive's declared view rule
        if new is None:
            return False
        out = node.out
        self.layouts[out] = new
        self.pyexpr[out] = _py(node.primitive.lower("numpy", [self.pyexpr[x]], p))
        return True

    # -- library calls ---------------------------------------------------------------
    def library_call(self, node: Node) -> None:
        args = [self.py(a) for a in node.inputs]
        expr = _py(node.primitive.lower("numpy", args, node.params))
        name = self.names[node.out]
        rule = _cupy_rule(node)
        if rule in ("gemm", "blas"):
            self.cublas += 1
        else:
            self.library += 1
        if len(node.outputs) > 1:  # a decomposition (qr, eigh, svd): unpack, then make each contiguous
            names = [self.names[v] for v in node.outputs]
            self.emit(f"{', '.join(names)} = {expr}", self.reads(list(node.inputs)),
                      f"{node.primitive.name}{self.where(node)}")
            for v, out in zip(node.outputs, names):
                self.emit(f"{out} = cp.ascontiguousarray({out})", {out})
                self.define(v, out)
            return
        # only a GEMM's result is known to be C-contiguous; a 0-d one is made an array (a
        # vector dot product gives a scalar under NumPy, which the CPU stand-in runs on)
        if rule != "gemm" or not node.out.aval.shape:
            expr = f"cp.ascontiguousarray({expr})"
        self.emit(f"{name} = {expr}", self.reads(list(node.inputs)),
                  f"{node.primitive.name}{self.where(node)}")
        self.define(node.out, name)

    def stacked_matmul(self, s: _Stack) -> None:
        w = s.first.inputs[1]
        n, f = s.lead_operand.aval.shape
        h = w.aval.shape[1]
        res = self.tmp("mm")
        stacked = f"cp.reshape({s.name}, (-1, {f}))"
        self.emit(f"{res} = cp.matmul({stacked}, {self.py(w)})", {s.name} | self.reads([w]),
                  f"[{self.names[s.lead]}; {self.names[s.rest]}] @ {self.py(w)}: one GEMM for "
                  f"{self.names[s.first.out]} and {self.names[s.second.out]}{self.where(s.first)}")
        self.cublas += 1
        total = (s.lead.aval.size + s.rest.aval.size) // f * h
        for m in (s.first, s.second):
            off = 0 if m.inputs[0] is s.lead_operand else n * h
            out = m.out
            self.layouts[out] = Layout.contiguous(res, out.aval.shape, out.aval.dtype, off, total)
            self.pyexpr[out] = f"_segment({res}, {off}, {out.aval.shape!r})"

    def conv2d(self, node: Node) -> None:
        x, w = node.inputs
        xl = self.layout(x)
        kh, kw = w.aval.shape[2:]
        stride, padding = node.params["stride"], node.params["padding"]
        n, c, _, _ = x.aval.shape
        out = node.out
        o, ho, wo = out.aval.shape[1], out.aval.shape[2], out.aval.shape[3]
        key = (xl, (kh, kw), stride, padding)
        if key not in self._im2col:
            cols = self.tmp("cols")
            rows = c * kh * kw
            cl = Layout.contiguous(cols, (rows, n * ho * wo), x.aval.dtype)
            kname = _identifier(f"{self.graph.name}_im2col{len(self._im2col)}")
            kernel = im2col_kernel(kname, xl, cl, (kh, kw), stride, padding,
                                   f"im2col of {self.names.get(x, '?')} for conv2d stride={stride} "
                                   f"padding={padding}: cols[{rows}, {n * ho * wo}]")
            self.kernels.append(kernel)
            self.emit(f"{cols} = cp.empty({(rows, n * ho * wo)!r}, cp.{np.dtype(x.aval.dtype).name})", set())
            args = ", ".join(kernel.args)
            self.emit(f"_k{len(self.kernels) - 1}(({kernel.grid},), ({kernel.block},), ({args}))",
                      set(kernel.args), kname)
            self._im2col[key] = (cols, cl)
        cols, _ = self._im2col[key]
        res = self.names[out]
        self.emit(f"{res} = cp.matmul(cp.reshape({self.py(w)}, ({o}, -1)), {cols})", {cols} | self.reads([w]),
                  f"conv2d as one GEMM: ({o}, C*kh*kw) @ cols{self.where(node)}")
        self.cublas += 1
        # (O, N*H'*W') read as (N, O, H', W'): a transposed view, no copy
        base = Layout.contiguous(res, (o, n, ho, wo), out.aval.dtype)
        self.layouts[out] = base.transpose((1, 0, 2, 3))
        self.pyexpr[out] = f"cp.transpose(cp.reshape({res}, {(o, n, ho, wo)!r}), (1, 0, 2, 3))"

    # -- finish --------------------------------------------------------------------
    def finish(self) -> CupyProgram:
        g = self.graph
        outs = []
        for a in g.outputs:
            if isinstance(a, Literal):
                outs.append(f"{self.const(a)}.copy()" if not a.is_scalar else
                            f"cp.asarray({format_scalar(a.value, 'cp')})")
            else:
                outs.append(self.pyexpr[a])
        out_reads = self.reads([a for a in g.outputs if isinstance(a, Var)])
        self.emit(f"return ({', '.join(outs)}{',' if len(outs) == 1 else ''})", out_reads)
        # free each buffer right after its last use (CuPy's pool reuses it at once)
        last: dict[str, int] = {}
        for i, st in enumerate(self.stmts):
            for r in st.reads:
                last[r] = i
        defined = {self.layouts[v].base for v in self.layouts} | {s.name for s in self.stacks}
        defined |= {c for c, _ in self._im2col.values()}
        lines = []
        for i, st in enumerate(self.stmts):
            text = f"    {st.text}"
            lines.append(f"{text:<72}  # {st.comment}" if st.comment else text)
            dead = sorted(r for r in st.reads if last.get(r) == i and r in defined
                          and r not in self.constants and i < len(self.stmts) - 1)
            if dead:
                lines.append(f"    del {', '.join(dead)}")
        fn_name = _identifier(g.name)
        params = ", ".join(self.names[v] for v in g.inputs)
        header = [(f"# generated by tracegrad (cupy backend): graph {g.name!r}, {len(g.nodes)} nodes, "
                  f"{len(self.kernels)} generated kernels, {self.cublas} cuBLAS calls")]
        for cname, value in self.constants.items():
            header.append(f"# {cname}: constant array {value.dtype}{list(value.shape)} (on the device)")
        python_source = "\n".join(header + [f"def {fn_name}({params}):"] + lines) + "\n"
        cuda = [f"// generated by tracegrad (cupy backend): graph {g.name!r}, {len(self.kernels)} kernels",
                preamble()] + [k.source for k in self.kernels]
        launches = {"kernels": len(self.kernels), "cublas": self.cublas, "other": self.library}
        return CupyProgram(g, fn_name, python_source, "\n".join(cuda), self.kernels, self.constants, launches)


def generate(graph: Graph) -> CupyProgram:
    """Fuse ``graph`` (unless it already carries fusion groups) and generate both sources."""
    if not any(n.fusion_group is not None for n in graph.nodes):
        graph = fuse(graph)
    for node in graph.nodes:  # a clear error, before any source is written, for dtypes C lacks
        if node.fusion_group is not None:
            ctype(node.out.aval.dtype)
    return _Planner(graph).run()
