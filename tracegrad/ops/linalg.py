"""Linear algebra primitives: matmul (NumPy semantics, batch broadcasting) and einsum.

dot and tensordot are composites in ``tracegrad.numpy``. Both primitives are bilinear:
the JVP is ``x_dot @ y + x @ y_dot``, where a tangent's direction axes must stay in
front — ``_matmul_with_batch`` arranges that for every combination of 1-D operands.
"""

from __future__ import annotations

import builtins
import math
import string
from typing import Any

import numpy as np

from ..ad.linear import LinearMap
from ..ad.rules import defbilinear, defmultilinear, unbroadcast
from ..errors import ShapeError, UnsupportedOperationError
from ..ir import Aval
from ..tracing.tracer import aval_of, bind
from ._rules import broadcast_shapes, declare, fmt_shape, numpy_function
from .shape import broadcast_to, reshape, transpose


# ---------------------------------------------------------------- matmul
def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if not a or not b:
        raise ShapeError(f"matmul: operands must be at least 1-D, got shapes {fmt_shape(a)} and {fmt_shape(b)}",
                         hint="use * for scaling by a scalar")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError(
            f"matmul: shapes {fmt_shape(a)} and {fmt_shape(b)} are not aligned: "
            f"{a2[-1]} (last dim of the first) != {b2[-2]} ({'only' if len(b) == 1 else 'second-to-last'} dim of the second)",
            hint="transpose one operand (x.T) or check the layer sizes")
    batch = broadcast_shapes("matmul", a2[:-2], b2[:-2])
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _matmul_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    a, b = avals
    return Aval(matmul_shape(a.shape, b.shape), np.result_type(a.dtype, b.dtype))


def _matmul_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """(m, k) @ (k, n) = 2mkn: a multiply and an add per term of each of the m*n dot products."""
    return 2 * outs[0].size * avals[0].shape[-1]


matmul_p = declare("matmul", lambda a, b: f"{a} @ {b}", _matmul_abstract, flops=_matmul_flops,
                   fresh=True, numpy_names=("matmul",), cupy="gemm")


def matmul(a: Any, b: Any) -> Any:
    return bind(matmul_p, a, b)


def _matmul_with_batch(a: Any, a_nb: int, b: Any, b_nb: int, a_core: tuple, b_core: tuple) -> Any:
    """``a @ b`` where one operand carries ``nb`` leading direction axes (kept in front)."""
    batch = np.shape(a)[:a_nb] if a_nb else np.shape(b)[:b_nb]
    a_vec, b_vec = len(a_core) == 1, len(b_core) == 1
    a_mat = (1,) + a_core if a_vec else a_core
    b_mat = b_core + (1,) if b_vec else b_core
    out_batch_rank = max(len(a_mat), len(b_mat)) - 2
    if a_nb:
        a = reshape(a, batch + (1,) * (out_batch_rank - (len(a_mat) - 2)) + a_mat)
    elif a_vec:
        a = reshape(a, a_mat)
    if b_nb:
        b = reshape(b, batch + (1,) * (out_batch_rank - (len(b_mat) - 2)) + b_mat)
    elif b_vec:
        b = reshape(b, b_mat)
    out = matmul(a, b)
    shape = np.shape(out)
    if a_vec or b_vec:
        keep = shape[:-2] + (() if a_vec else shape[-2:-1]) + (() if b_vec else shape[-1:])
        out = reshape(out, keep)
    return out


def _swap_last(x: Any) -> Any:
    nd = len(aval_of(x).shape)
    return transpose(x, tuple(range(nd - 2)) + (nd - 1, nd - 2))


def _promoted(a: Any, b: Any, ct: Any) -> tuple[Any, Any, Any, tuple[int, ...]]:
    """Operands with 1-D ones promoted to matrices, ``ct`` reshaped to match, and the batch shape."""
    a_shape, b_shape = aval_of(a).shape, aval_of(b).shape
    a2 = reshape(a, (1,) + a_shape) if len(a_shape) == 1 else a
    b2 = reshape(b, b_shape + (1,)) if len(b_shape) == 1 else b
    a2s, b2s = aval_of(a2).shape, aval_of(b2).shape
    batch = broadcast_shapes("matmul", a2s[:-2], b2s[:-2])
    return a2, b2, reshape(ct, batch + (a2s[-2], b2s[-1])), batch


def matmul_left(a: Any, b: Any) -> LinearMap:
    """``v -> v @ b``: the map of the left operand's tangent. Transpose: ``ct @ bᵀ``, summed
    over the batch axes ``a`` was broadcast along."""
    a_core, b_core = aval_of(a).shape, aval_of(b).shape

    def transpose_(ct: Any) -> Any:
        a2, b2, ct2, _ = _promoted(a, b, ct)
        return reshape(unbroadcast(matmul(ct2, _swap_last(b2)), Aval(aval_of(a2).shape, aval_of(ct).dtype)), a_core)

    return LinearMap("matmul_left", lambda v, nb: _matmul_with_batch(v, nb, b, 0, a_core, b_core), transpose_, w=b)


def matmul_right(a: Any, b: Any) -> LinearMap:
    """``v -> a @ v``: the map of the right operand's tangent (a weight's, in ``x @ W``).
    Transpose: ``aᵀ @ ct``; for a stack of rows times one matrix, one GEMM over all rows."""
    a_core, b_core = aval_of(a).shape, aval_of(b).shape

    def transpose_(ct: Any) -> Any:
        a2, b2, ct2, batch = _promoted(a, b, ct)
        b2s = aval_of(b2).shape
        if len(b2s) == 2 and aval_of(a2).shape[:-2] == batch and batch:
            k, n = b2s  # x @ W with x (N, T, K): one GEMM over all rows
            ct_b2 = matmul(_swap_last(reshape(a2, (-1, k))), reshape(ct2, (-1, n)))
        else:
            ct_b2 = unbroadcast(matmul(_swap_last(a2), ct2), Aval(b2s, aval_of(ct).dtype))
        return reshape(ct_b2, b_core)

    return LinearMap("matmul_right", lambda v, nb: _matmul_with_batch(a, 0, v, nb, a_core, b_core), transpose_, a=a)


defbilinear(matmul_p, matmul_left, matmul_right)


# ---------------------------------------------------------------- einsum
def parse_subscripts(subscripts: str) -> tuple[list[str], str]:
    ins, out = subscripts.split("->")
    return ins.split(","), out


def _einsum_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    ins, out = parse_subscripts(params["subscripts"])
    if len(ins) != len(avals):
        raise ShapeError(f"einsum: {params['subscripts']!r} names {len(ins)} operands, got {len(avals)}")
    sizes: dict[str, int] = {}
    for sub, a in zip(ins, avals):
        if len(sub) != len(a.shape):
            raise ShapeError(f"einsum: operand subscripts {sub!r} do not match shape {fmt_shape(a.shape)}")
        for ch, d in zip(sub, a.shape):
            if sizes.setdefault(ch, d) != d:
                if sizes[ch] == 1:
                    sizes[ch] = d
                elif d != 1:
                    raise ShapeError(f"einsum: index {ch!r} has sizes {sizes[ch]} and {d} in {params['subscripts']!r}")
    return Aval(tuple(sizes[ch] for ch in out), np.result_type(*[a.dtype for a in avals]))


def _einsum_flops(avals: list[Aval], outs: list[Aval], params: dict[str, Any]) -> int:
    """A multiply-add per point of the full index space (a single-operand einsum only adds)."""
    sizes: dict[str, int] = {}
    for sub, a in zip(parse_subscripts(params["subscripts"])[0], avals):
        for ch, d in zip(sub, a.shape):
            sizes[ch] = max(sizes.get(ch, 1), d)
    return (2 if len(avals) > 1 else 1) * math.prod(sizes.values())


einsum_p = declare(
    "einsum", lambda *xs, subscripts: f"np.einsum({subscripts!r}, {', '.join(xs)}, optimize=True)", _einsum_abstract,
    flops=_einsum_flops, numpy_names=("einsum",), cupy="blas")


def einsum(subscripts: str, *operands: Any) -> Any:
    """``subscripts`` must be explicit (``'ij,jk->ik'``) and free of ellipses here."""
    return bind(einsum_p, *operands, subscripts=subscripts)


def einsum_operand(i: int, primals: list[Any], *, subscripts: str) -> LinearMap:
    """Operand ``i`` of the einsum replaced by ``v`` (the einsum is linear in each operand);
    transpose: ``ct`` contracted with the other operands onto operand ``i``'s letters."""
    ins, res = parse_subscripts(subscripts)
    free = [c for c in string.ascii_letters if c not in subscripts]

    def dense(v: Any, nb: int) -> Any:
        lead = "".join(free[:nb])
        subs = ",".join(lead + s if j == i else s for j, s in enumerate(ins)) + "->" + lead + res
        return einsum(subs, *[v if j == i else p for j, p in enumerate(primals)])

    return LinearMap("einsum", dense, lambda ct: _einsum_transpose(ct, i, primals, subscripts),
                     subscripts=subscripts, i=i, operands=primals)


defmultilinear(einsum_p, einsum_operand)


def _einsum_sublists(args: tuple) -> tuple[str, tuple]:
    """NumPy's sublist form ``einsum(a, [0, 1], b, [1, 2], [0, 2])`` as a subscript string."""
    def letters(sub: Any) -> str:
        out = ""
        for k in sub:
            if k is Ellipsis:
                out += "..."
            elif isinstance(k, int | np.integer) and 0 <= k < 52:
                out += string.ascii_letters[int(k)]
            else:
                raise ShapeError(f"einsum: sublist entries must be ints in [0, 52) or ..., got {k!r}")
        return out

    out = None
    if len(args) % 2 == 1:  # an odd count: the last entry is the output sublist
        args, out = args[:-1], letters(args[-1])
    operands, subs = list(args[0::2]), list(args[1::2])
    text = ",".join(letters(sub) for sub in subs)
    return (text if out is None else f"{text}->{out}"), tuple(operands)


@numpy_function(einsum_p)
def np_einsum(subscripts: Any, *operands: Any, optimize: Any = True) -> Any:
    """Einstein summation; ellipses and implicit output are expanded to explicit letters.
    NumPy's sublist form (operands each followed by a list of ints) is accepted too."""
    if not isinstance(subscripts, str):
        subscripts, operands = _einsum_sublists((subscripts, *operands))
    subscripts = subscripts.replace(" ", "")
    ins, _, out = subscripts.partition("->")
    in_subs = ins.split(",")
    if len(in_subs) != len(operands):
        raise ShapeError(f"einsum: {subscripts!r} names {len(in_subs)} operands, got {len(operands)}")
    used = set(subscripts)
    spare = [c for c in string.ascii_letters if c not in used]
    ndims = [len(aval_of(op).shape) for op in operands]
    ell_rank = builtins.max([nd - (len(s) - 3) for s, nd in zip(in_subs, ndims) if "..." in s] or [0])
    ell = "".join(spare[:ell_rank])
    expanded = []
    for s, nd in zip(in_subs, ndims):
        if "..." in s:
            k = nd - (len(s) - 3)
            s = s.replace("...", ell[ell_rank - k:])
        expanded.append(s)
    if "->" not in subscripts:
        letters = "".join(expanded)
        out = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    pairs = [_take_diagonals(s, op) for s, op in zip(expanded, operands)]
    return einsum(",".join(s for s, _ in pairs) + "->" + out, *[op for _, op in pairs])


def _take_diagonals(sub: str, x: Any) -> tuple[str, Any]:
    """An index repeated within one operand (``'ii'``) means its diagonal: take it with a
    gather first, so the einsum primitive (and its rules) only sees distinct letters."""
    from .indexing import index

    while True:
        rep = next((c for c in sub if sub.count(c) > 1), None)
        if rep is None:
            return sub, x
        pos = [i for i, c in enumerate(sub) if c == rep]
        rest = [i for i in range(len(sub)) if i not in pos]
        shape = aval_of(x).shape
        sizes = {shape[i] for i in pos}
        if len(sizes) != 1:
            raise ShapeError(f"einsum: index {rep!r} repeated in {sub!r} has sizes {sorted(sizes)}")
        x = transpose(x, tuple(rest) + tuple(pos))
        diag = np.arange(sizes.pop())
        template = (("slice", None, None, None),) * len(rest) + tuple(("arr", k) for k in range(len(pos)))
        x = index(x, template, [diag] * len(pos))
        sub = "".join(sub[i] for i in rest) + rep


def _einsum_transpose(ct: Any, i: int, primals: list[Any], subscripts: str) -> Any:
    # Operand i's cotangent contracts ct with the other operands onto operand i's letters.
    ins, res = parse_subscripts(subscripts)
    sub, x = ins[i], primals[i]
    x_aval = aval_of(x)
    if len(set(sub)) != len(sub):
        raise UnsupportedOperationError(
            f"einsum {subscripts!r}: reverse mode does not support a repeated index within one "
            f"operand ({sub!r}, a diagonal)", hint="take the diagonal with indexing instead")
    others = [(s, p) for j, (s, p) in enumerate(zip(ins, primals)) if j != i]
    avail = set(res).union(*[set(s) for s, _ in others])
    keep = "".join(c for c in sub if c in avail)
    if not others and res == keep:
        r = ct
    else:
        r = einsum(",".join([res] + [s for s, _ in others]) + "->" + keep, ct, *[p for _, p in others])
    if keep != sub:  # letters summed within operand i alone: ct is constant along them
        it = iter(aval_of(r).shape)
        r = reshape(r, tuple(next(it) if c in avail else 1 for c in sub))
        r = broadcast_to(r, tuple(rd if c in avail else xd
                                  for c, xd, rd in zip(sub, x_aval.shape, aval_of(r).shape)))
    return unbroadcast(r, x_aval)
