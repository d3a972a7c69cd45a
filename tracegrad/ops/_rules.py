"""Shared shape/dtype rules and the declaration helpers for primitive families.

``declare`` creates and registers a primitive with every fact about it (see
``ir.Primitive``): its NumPy lowering and shape rule, the NumPy names it answers to (which
``tracing.dispatch`` routes and ``tracegrad.numpy`` exports), its CUDA template and helper,
its fusion role, folding identities and CuPy lowering. Derivative rule helpers live in
``tracegrad.ad.rules``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import Aval, Primitive, freeze, register
from ..tracing.dispatch import register_numpy_name, resolve_numpy_name
from ..tracing.tracer import aval_of, bind

__all__ = [
    "CudaReduction",
    "broadcast_shapes",
    "declare",
    "elementwise_abstract",
    "fmt_shape",
    "input_size_flops",
    "no_flops",
    "normalize_axes",
    "numpy_function",
    "probe_dtype",
]


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _broadcast(shapes: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """NumPy's broadcasting rule, for any rank (``np.broadcast_shapes`` stops at 32 dimensions,
    arrays at 64)."""
    nd = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(nd):
        dims = {s[i - nd + len(s)] for s in shapes if i - nd + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise ValueError("shape mismatch")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcast_shapes(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return _broadcast(shapes)
    except ValueError:
        shown = " and ".join(fmt_shape(s) for s in shapes)
        raise ShapeError(
            f"{op}: operands with shapes {shown} cannot be broadcast together",
            hint="NumPy broadcasting aligns trailing dimensions, which must be equal or 1; "
            "reshape or transpose one operand (e.g. x[:, None])",
        ) from None


def _probe_value(aval: Aval) -> Any:
    if aval.weak:
        return {"b": True, "i": 1, "u": 1, "f": 1.0, "c": 1.0 + 0j}[aval.dtype.kind]
    return np.ones(1, aval.dtype)


@functools.cache
def _probe_cached(prim: Primitive, avals: tuple[Aval, ...], params: Any) -> tuple[np.dtype, bool]:
    with np.errstate(all="ignore"):
        try:
            out = prim.impl(*[_probe_value(a) for a in avals], **dict(params))
        except TypeError as err:
            dtypes = ", ".join(str(a.dtype) for a in avals)
            raise DTypeError(f"{prim.name} does not support operands of dtype {dtypes}: {err}") from None
    if isinstance(out, np.ndarray | np.generic):
        return out.dtype, False
    return aval_of(out).dtype, True


def probe_dtype(prim: Primitive, avals: list[Aval], params: dict[str, Any]) -> tuple[np.dtype, bool]:
    """Result dtype (and weakness) exactly as NumPy computes it, by running the primitive's
    NumPy lowering on one-element stand-ins (Python scalars for weak operands)."""
    return _probe_cached(prim, tuple(avals), freeze(params))


def elementwise_abstract(name: str) -> Callable[[list[Aval], dict[str, Any]], Aval]:
    def rule(avals: list[Aval], params: dict[str, Any]) -> Aval:
        from ..ir import PRIMITIVES

        shape = broadcast_shapes(name, *[a.shape for a in avals])
        dtype, weak = probe_dtype(PRIMITIVES[name], avals, params)
        return Aval(shape, dtype, weak and not shape)

    return rule


def no_flops(in_avals: list[Aval], out_avals: list[Aval], params: dict[str, Any]) -> int:
    """FLOP rule of data movement (indexing, reshapes, copies): no arithmetic."""
    return 0


def input_size_flops(in_avals: list[Aval], out_avals: list[Aval], params: dict[str, Any]) -> int:
    """FLOP rule of a reduction: one operation per element reduced."""
    return in_avals[0].size


class CudaReduction(NamedTuple):
    """CUDA lowering of a reduction: ``combine(acc, x)`` as a C expression, and the start
    value: ``"zero"``, ``"lowest"`` or ``"highest"`` of the output dtype."""

    combine: Callable[[str, str], str]
    identity: str


def declare(name: str, numpy: Callable[..., str], abstract_eval: Any = None, *,
            cuda: Any = None, cupy: Any = None, numpy_names: tuple[str, ...] = (),
            ufunc_out: bool = True, **kw: Any) -> Primitive:
    """Create and register a primitive; elementwise ones get the broadcasting shape rule.

    ``numpy``: the NumPy lowering ``(*operand_exprs, **params) -> Python expression``.
    ``numpy_names``: the NumPy functions/ufuncs it answers to, on traced values; a plain
    binder ``np.<name>(*operands)`` is generated (replace it with ``@numpy_function``
    where NumPy's signature needs translating, e.g. ``axis=`` into params). For an
    elementwise primitive whose first name is a ufunc, the NumPy backend may write the
    result into a dying operand (``out=``); ``ufunc_out=False`` forbids that.
    ``cuda``: the primitive's CUDA C template for fused kernels (``lowerings["cuda"]``): for
    elementwise ops ``(*operand_exprs, **params) -> C expression`` (operands arrive converted
    to the op's compute type); for gathers ``(read, index, *other_operands, **params)`` where
    ``read(coords)`` loads the gathered operand; for reductions a ``CudaReduction``.
    ``cupy``: the CuPy lowering when it is not the fused template (``lowerings["cupy"]``).
    Other keywords are ``Primitive`` fields (``fusion=``, ``units=``, ``cuda_helper=``, ...)."""
    if abstract_eval is None:
        abstract_eval = elementwise_abstract(name)
    lowerings = {"numpy": numpy}
    if cuda is not None:
        lowerings["cuda"] = cuda
    if cupy is not None:
        lowerings["cupy"] = cupy
    names = tuple(numpy_names)
    if names and kw.get("elementwise") and ufunc_out and "numpy_ufunc" not in kw \
            and isinstance(resolve_numpy_name(names[0]), np.ufunc):
        kw["numpy_ufunc"] = f"np.{names[0]}"
    prim = register(Primitive(name, abstract_eval, lowerings=lowerings, numpy_names=names, **kw))
    if names:
        prim.numpy_fn = _binder(prim)
        for n in names:
            register_numpy_name(n, prim.numpy_fn)
    return prim


def _binder(prim: Primitive) -> Callable[..., Any]:
    def fn(*operands: Any) -> Any:
        return bind(prim, *operands)

    fn.__name__ = fn.__qualname__ = prim.numpy_names[0].rpartition(".")[2]
    fn.__doc__ = f"``np.{prim.numpy_names[0]}`` on traced and concrete arrays (primitive ``{prim.name}``)."
    return fn


def numpy_function(prim: Primitive) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``fn`` (with NumPy's signature) is what ``prim``'s NumPy names call,
    replacing the generated binder in dispatch and in ``tracegrad.numpy``."""
    if not prim.numpy_names:
        raise ValueError(f"primitive {prim.name!r} declares no numpy_names")

    def attach(fn: Callable[..., Any]) -> Callable[..., Any]:
        for n in prim.numpy_names:
            register_numpy_name(n, fn, replace=prim.numpy_fn)
        prim.numpy_fn = fn
        return fn

    return attach


def normalize_axes(axis: Any, ndim: int, op: str) -> tuple[int, ...]:
    """``None`` -> all axes; ints or tuples -> sorted non-negative tuple (validated)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ShapeError(f"{op}: axis {a} is out of bounds for an array of dimension {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))
