"""CUDA kernel sources for the CuPy backend: one kernel per fusion group, and im2col.

Shapes are static (a compiled graph is specialized to its input signature), so every
kernel bakes in its sizes and the element strides of what it reads: an operand is a
contiguous *base* buffer plus a static ``Layout`` (offset, strides), which covers
broadcasting, transposes, slices and reshapes without copies. A thread owns one index of
the group's iteration shape (a grid-stride loop, so any grid works); a reduction kernel
gives each output one block, whose threads stride over the reduced elements and combine
in shared memory. Kernels use ``blockDim``/``gridDim`` at run time, never a baked block
size, so they are correct for any power-of-two block size (the CPU emulation in the
tests runs them with one thread).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir import Literal, Node, Var
from ..ir.fusion import FusionGroup, fusion_role, gathered_operands
from .cuda_c import c_literal, c_name, convert, ctype, identity_literal, index_ctype

__all__ = ["Kernel", "Layout", "c_strides", "group_kernel", "im2col_kernel"]


def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


@dataclass(frozen=True)
class Layout:
    """Where a value lives: element ``offset`` and ``strides`` into the buffer named ``base``."""

    base: str
    offset: int
    strides: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    base_size: int  # elements in the base buffer (bounds the index type)

    @staticmethod
    def contiguous(base: str, shape: tuple[int, ...], dtype: Any, offset: int = 0,
                   base_size: int | None = None) -> Layout:
        size = math.prod(shape)
        return Layout(base, offset, c_strides(shape), tuple(shape), np.dtype(dtype),
                      base_size if base_size is not None else offset + size)

    def is_contiguous(self) -> bool:
        return all(s == c or d == 1 for s, c, d in zip(self.strides, c_strides(self.shape), self.shape))

    # -- views (all static; None where a copy would be needed) ------------------
    def transpose(self, perm: tuple[int, ...]) -> Layout:
        return Layout(self.base, self.offset, tuple(self.strides[p] for p in perm),
                      tuple(self.shape[p] for p in perm), self.dtype, self.base_size)

    def broadcast(self, shape: tuple[int, ...]) -> Layout:
        pad = len(shape) - len(self.shape)
        strides = [0] * pad + [0 if d == 1 and n != 1 else s
                               for d, n, s in zip(self.shape, shape[pad:], self.strides)]
        return Layout(self.base, self.offset, tuple(strides), tuple(shape), self.dtype, self.base_size)

    def reshape(self, shape: tuple[int, ...]) -> Layout | None:
        if self.is_contiguous():
            return Layout(self.base, self.offset, c_strides(shape), tuple(shape), self.dtype, self.base_size)
        old = [(d, s) for d, s in zip(self.shape, self.strides) if d != 1]
        if [d for d in shape if d != 1] != [d for d, _ in old]:
            return None  # would need a copy
        it = iter(s for _, s in old)
        strides = tuple(0 if d == 1 else next(it) for d in shape)
        return Layout(self.base, self.offset, strides, tuple(shape), self.dtype, self.base_size)

    def index(self, template: tuple) -> Layout | None:
        """Basic indexing (slices, ints, None); None for index arrays."""
        offset, shape, strides = self.offset, [], []
        dim = 0
        for entry in template:
            kind = entry[0]
            if kind == "arr":
                return None
            if kind == "none":
                shape.append(1)
                strides.append(0)
                continue
            size, stride = self.shape[dim], self.strides[dim]
            dim += 1
            if kind == "int":
                i = entry[1] + size if entry[1] < 0 else entry[1]
                offset += i * stride
            else:
                start, stop, step = slice(*entry[1:]).indices(size)
                shape.append(len(range(start, stop, step)))
                strides.append(stride * step)
                offset += start * stride
        shape += self.shape[dim:]
        strides += self.strides[dim:]
        return Layout(self.base, offset, tuple(strides), tuple(shape), self.dtype, self.base_size)


def _paren(c: str) -> str:
    return c if c.isidentifier() or c.isdigit() else f"({c})"


def load(layout: Layout, coords: list[str], pnames: dict[str, str] | None = None) -> str:
    """C expression reading ``layout`` at one coordinate expression per dimension
    (``pnames``: the kernel's parameter name of each base buffer)."""
    terms = [] if layout.offset == 0 else [str(layout.offset)]
    for c, d, s in zip(coords, layout.shape, layout.strides):
        if d == 1 or s == 0 or c == "0":
            continue
        terms.append(_paren(c) if s == 1 else f"{_paren(c)} * {s}")
    base = (pnames or {}).get(layout.base) or c_name(layout.base)
    return f"{base}[{' + '.join(terms) or '0'}]"


def project(coords: list[str], space: tuple[int, ...], shape: tuple[int, ...]) -> list[str]:
    """Coordinates of a value of ``shape`` broadcast into ``space`` (right-aligned)."""
    pad = len(space) - len(shape)
    return ["0" if d == 1 else coords[pad + k] for k, d in enumerate(shape)]


def guard(coords: list[str], space: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """Condition that a thread owns the (broadcast) index it would write for ``shape``."""
    pad = len(space) - len(shape)
    conds = [f"{coords[k]} == 0" for k, n in enumerate(space)
             if n != 1 and (k < pad or shape[k - pad] == 1)]
    return " && ".join(conds)


def decompose(var: str, space: tuple[int, ...], dims: list[int], index_t: str) -> tuple[list[str], dict[int, str]]:
    """C lines splitting linear index ``var`` over ``space[dims]`` (row-major) into ``i<d>``."""
    lines, names = [], {}
    live = [d for d in dims if space[d] != 1]
    stride = 1
    parts = []
    for d in reversed(live):
        parts.append((d, stride))
        stride *= space[d]
    parts.reverse()
    for k, (d, st) in enumerate(parts):
        expr = var if st == 1 else f"{var} / {st}"
        if k > 0:
            expr = f"{expr} % {space[d]}"
        lines.append(f"const {index_t} i{d} = {expr};")
        names[d] = f"i{d}"
    return lines, names


@dataclass
class Kernel:
    """One generated kernel: its C source, launch shape and the glue names it takes."""

    name: str
    source: str
    grid: int
    block: int
    args: list[str]  # glue (Python) names of the buffers, in parameter order
    summary: str = ""
    nodes: list[Node] = field(default_factory=list)


def _compute_dtype(node: Node) -> np.dtype:
    """The type a node's operands are converted to: its output dtype, or for a boolean
    output (comparisons, logical ops) the NumPy promotion of its non-boolean operands."""
    out = node.out.aval.dtype
    if out.kind != "b" or "dtype" in node.params:  # a conversion (astype) computes in its target type
        return out
    vals = [a.aval for a in node.inputs if a.aval.dtype.kind != "b"]
    if not vals:
        return out
    stand_ins = [{"i": 0, "u": 0, "f": 0.0, "c": 0j}[a.dtype.kind] if a.weak else a.dtype for a in vals]
    return np.result_type(*stand_ins)


class _Body:
    """Emits member statements of one group in one index space."""

    def __init__(self, names: dict[Var, str], layouts: Callable[[Any], Layout], pnames: dict[str, str]):
        self.names = names
        self.layouts = layouts
        self.pnames = pnames
        self.regs: dict[Var, str] = {}
        self.lines: list[str] = []

    def value(self, a: Any, coords: list[str], space: tuple[int, ...], dtype: Any = None) -> str:
        """``a`` at this thread's index, converted to ``dtype`` (if given)."""
        src = a.aval.dtype
        if isinstance(a, Literal) and (a.is_scalar or a.value.ndim == 0):
            v = a.value.item() if isinstance(a.value, np.ndarray | np.generic) else a.value
            # written directly in the target type (Python rounds like the C conversion would)
            return c_literal(v, src if dtype is None or src.kind == "b" else dtype)
        if isinstance(a, Var) and a in self.regs:
            expr = self.regs[a]
        else:
            lay = self.layouts(a)
            expr = load(lay, project(coords, space, lay.shape), self.pnames)
        return expr if dtype is None else convert(expr, src, dtype)

    def member(self, node: Node, coords: list[str], space: tuple[int, ...]) -> None:
        out = node.out
        reg = c_name(self.names[out])
        role = fusion_role(node)
        prim = node.primitive
        if role == "view":
            expr = self.value(node.inputs[0], coords, space)
        elif role == "gather":
            (g,) = gathered_operands(node)
            lay = self.layouts(node.inputs[g])
            out_dtype = out.aval.dtype

            def read(cs: list[str], lay: Layout = lay) -> str:
                cs = ["0" if d == 1 else c for c, d in zip(cs, lay.shape)]
                return convert(load(lay, cs, self.pnames), lay.dtype, out_dtype)

            read.shape = lay.shape  # type: ignore[attr-defined]
            idx = project(coords, space, out.aval.shape)
            others = [self.value(a, coords, space) for k, a in enumerate(node.inputs) if k != g]
            expr = prim.lowerings["cuda"](read, idx, *others, **node.params)
        else:
            dtype = _compute_dtype(node)
            ops = [self.value(a, coords, space, dtype) for a in node.inputs]
            expr = prim.lowerings["cuda"](*ops, **node.params)
        where = f"  {node.source.short()}" if node.source else ""
        self.lines.append(f"const {ctype(out.aval.dtype)} {reg} = {expr};  // {prim.name}{where}")
        self.regs[out] = reg

    def write(self, var: Var, target: Layout, coords: list[str], space: tuple[int, ...]) -> None:
        shape = var.aval.shape
        cond = guard(coords, space, shape)
        stmt = f"{load(target, project(coords, space, shape), self.pnames)} = {self.regs[var]};"
        self.lines.append(f"if ({cond}) {stmt}" if cond else stmt)


def _signature(name: str, inputs: list[Layout], outputs: list[Layout]) -> tuple[str, list[str], dict[str, str]]:
    """Kernel header, the glue names to pass, and each base's parameter name (outputs get
    ``out_``: the register holding a value is named after the value, like its buffer)."""
    params, args, pnames = [], [], {}
    for lay, const in [(x, True) for x in inputs] + [(x, False) for x in outputs]:
        if lay.base in pnames:
            continue
        pnames[lay.base] = c_name(lay.base) if const else "out_" + lay.base.lstrip("_")
        q = "const " if const else ""
        params.append(f"{q}{ctype(lay.dtype)}* __restrict__ {pnames[lay.base]}")
        args.append(lay.base)
    sep = ",\n        "
    return f'extern "C" __global__ void {name}(\n        {sep.join(params)})', args, pnames


def _launch_1d(total: int) -> tuple[int, int]:
    block = 256 if total >= 256 else max(32, 1 << max(0, (total - 1).bit_length()))
    return min(max(1, -(-total // block)), 65535), block


def group_kernel(name: str, group: FusionGroup, names: dict[Var, str], layouts: Callable[[Any], Layout],
                 targets: dict[Var, Layout], summary: str) -> Kernel:
    """The kernel computing ``group``; ``targets`` says where each group output is written."""
    ext_layouts = []
    for n in group.nodes:
        for a in n.inputs:
            if (isinstance(a, Var) and a not in {v for m in group.nodes for v in m.outputs}) or (
                    isinstance(a, Literal) and not a.is_scalar and a.value.ndim > 0):
                ext_layouts.append(layouts(a))
    out_layouts = [targets[v] for v in group.outputs]
    sizes = [math.prod(group.shape)] + [lay.base_size for lay in ext_layouts + out_layouts]
    index_t = index_ctype(*sizes)
    header, args, pnames = _signature(name, ext_layouts, out_layouts)
    body = _Body(names, layouts, pnames)
    space = group.shape
    dims = list(range(len(space)))
    comment = f"// {summary}\n"
    if group.reduction is None:
        total = math.prod(space)
        grid, block = _launch_1d(total)
        lines, coord_names = decompose("_n", space, dims, index_t)
        coords = [coord_names.get(d, "0") for d in dims]
        for n in group.nodes:
            body.member(n, coords, space)
        for v in group.outputs:
            body.write(v, targets[v], coords, space)
        inner = lines + body.lines
        start = f"({index_t})blockIdx.x * blockDim.x + threadIdx.x" if index_t != "int" else \
            "blockIdx.x * blockDim.x + threadIdx.x"
        src = (f"{comment}{header} {{\n"
               f"    for ({index_t} _n = {start}; _n < {total}; _n += blockDim.x * gridDim.x) {{\n"
               + "".join(f"        {ln}\n" for ln in inner) + "    }\n}\n")
        return Kernel(name, src, grid, block, args, summary, list(group.nodes))
    return _reduction_kernel(name, group, names, layouts, targets, summary, header, args, index_t, body)


def _reduction_kernel(name: str, group: FusionGroup, names: dict[Var, str], layouts: Callable[[Any], Layout],
                      targets: dict[Var, Layout], summary: str, header: str, args: list[str], index_t: str,
                      body: _Body) -> Kernel:
    red = group.reduction
    assert red is not None
    space = group.shape
    r_in = red.inputs[0].aval.shape
    pad = len(space) - len(r_in)
    axes = [a + pad for a in red.params["axes"]]
    kept = [d for d in range(len(space)) if d not in axes]
    n_out = math.prod(space[d] for d in kept)
    n_red = math.prod(space[d] for d in axes)
    block = min(256, max(32, 1 << max(0, (n_red - 1).bit_length())))
    grid = min(max(1, n_out), 65535)
    out_dtype = red.out.aval.dtype
    t = ctype(out_dtype)
    rule = red.primitive.lowerings["cuda"]
    o_lines, o_names = decompose("_o", space, kept, index_t)
    r_lines, r_names = decompose("_r", space, axes, index_t)
    coords = [o_names.get(d) or r_names.get(d) or "0" for d in range(len(space))]
    for n in group.prologue:
        body.member(n, coords, space)
    for v in group.outputs:
        if v in {o for n in group.prologue for o in n.outputs}:
            body.write(v, targets[v], coords, space)
    x = body.value(red.inputs[0], coords, space, out_dtype)
    loop_lines = r_lines + body.lines + [f"_acc = {rule.combine('_acc', x)};"]
    # the epilogue runs once per output, in the reduction's output index space
    out_space = red.out.aval.shape
    if red.params["keepdims"]:
        out_coords = ["0" if d in axes else coords[d] for d in range(pad, len(space))]
    else:
        out_coords = [coords[d] for d in range(pad, len(space)) if d not in axes]
    body.lines = []
    body.regs[red.out] = c_name(names[red.out])
    body.lines.append(f"const {t} {c_name(names[red.out])} = _partial[0];  // {red.primitive.name}"
                      + (f"  {red.source.short()}" if red.source else ""))
    for n in group.epilogue:
        body.member(n, out_coords, out_space)
    for v in group.outputs:
        if v is red.out or v in {o for n in group.epilogue for o in n.outputs}:
            body.write(v, targets[v], out_coords, out_space)
    epi = body.lines
    combine = rule.combine("_partial[threadIdx.x]", "_partial[threadIdx.x + _s]")
    src = (f"// {summary}\n{header} {{\n"
           f"    __shared__ {t} _partial[{block}];\n"
           f"    for ({index_t} _o = blockIdx.x; _o < {n_out}; _o += gridDim.x) {{\n"
           + "".join(f"        {ln}\n" for ln in o_lines)
           + f"        {t} _acc = {identity_literal(rule.identity, out_dtype)};\n"
           f"        for ({index_t} _r = threadIdx.x; _r < {n_red}; _r += blockDim.x) {{\n"
           + "".join(f"            {ln}\n" for ln in loop_lines)
           + "        }\n"
           "        _partial[threadIdx.x] = _acc;\n"
           "        __syncthreads();\n"
           "        for (unsigned int _s = blockDim.x / 2; _s > 0; _s >>= 1) {\n"
           f"            if (threadIdx.x < _s) _partial[threadIdx.x] = {combine};\n"
           "            __syncthreads();\n"
           "        }\n"
           "        if (threadIdx.x == 0) {\n"
           + "".join(f"            {ln}\n" for ln in epi)
           + "        }\n"
           "        __syncthreads();\n"
           "    }\n}\n")
    return Kernel(name, src, grid, block, args, summary, list(group.nodes))


def im2col_kernel(name: str, x: Layout, cols: Layout, kernel: tuple[int, int], stride: tuple[int, int],
                  padding: tuple[int, int], summary: str) -> Kernel:
    """``cols[(c*kh + i)*kw + j, (n*Ho + oh)*Wo + ow] = x[n, c, oh*sh + i - ph, ow*sw + j - pw]``
    (zero outside the image): the GEMM ``w.reshape(O, -1) @ cols`` is then the convolution."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    total = c * kh * kw * n * ho * wo
    index_t = index_ctype(total, x.base_size, cols.base_size)
    space = (c, kh, kw, n, ho, wo)
    lines, nm = decompose("_n", space, list(range(6)), index_t)
    ci, ii, ji, ni, ohi, owi = (nm.get(d, "0") for d in range(6))
    header, args, pnames = _signature(name, [x], [cols])
    def pos(o: str, s: int, k: str, p: int) -> str:  # o * s + k - p, without the no-op terms
        return f"{o if s == 1 else f'{_paren(o)} * {s}'} + {k}" + (f" - {p}" if p else "")

    lines.append(f"const {index_t} _h = {pos(ohi, sh, ii, ph)};")
    lines.append(f"const {index_t} _w = {pos(owi, sw, ji, pw)};")
    value = load(x, [ni, ci, "_h", "_w"], pnames)
    at = "_n" if cols.offset == 0 else f"{cols.offset} + _n"
    lines.append(f"{pnames[cols.base]}[{at}] = "
                 f"(_h >= 0 && _h < {h} && _w >= 0 && _w < {w}) ? {value} : {c_literal(0, x.dtype)};")
    grid, block = _launch_1d(total)
    start = "blockIdx.x * blockDim.x + threadIdx.x" if index_t == "int" else \
        f"({index_t})blockIdx.x * blockDim.x + threadIdx.x"
    src = (f"// {summary}\n{header} {{\n"
           f"    for ({index_t} _n = {start}; _n < {total}; _n += blockDim.x * gridDim.x) {{\n"
           + "".join(f"        {ln}\n" for ln in lines) + "    }\n}\n")
    return Kernel(name, src, grid, block, args, summary)
