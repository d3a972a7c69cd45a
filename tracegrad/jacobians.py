"""Dense derivatives: ``jacfwd``, ``jacrev`` and ``hessian``, as in JAX.

Each takes and returns pytrees the JAX way: the result has the structure of the output,
and at each output leaf the structure of the differentiated argument(s), whose leaves have
shape ``output_leaf.shape + input_leaf.shape``.

- ``jacfwd``: forward mode, ONE execution of the fused JVP graph with one direction per
  input element (the identity as a batch of tangents): cheap when inputs are few.
- ``jacrev``: reverse mode, one execution of the value-and-VJP graph per output element
  (a one-hot cotangent each): cheap when outputs are few.
- ``hessian``: forward over reverse, ONE execution of the JVP of the gradient graph with
  one direction per input element (Hessian-vector products with the identity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .api import Compiled, _check_argnums
from .errors import GradientError
from .ir import Aval
from .tree import TreeDef, tree_flatten, tree_unflatten

__all__ = ["hessian", "jacfwd", "jacrev"]

# per differentiated argument: its position, structure and leaves
Inputs = list[tuple[int, TreeDef, list[np.ndarray]]]


def _derivative(who: str, fn: Callable[..., Any], argnums: int | Sequence[int], backend: str,
                static_argnums: Sequence[int] | int, body: Callable[..., Any]) -> Callable[..., Any]:
    """The set-up ``jacfwd``, ``jacrev`` and ``hessian`` share: check ``argnums``, compile
    ``fn`` once, accept keyword arguments, and call ``body(target, args, ins, nums, single)``
    with the differentiated arguments' leaves (``_inputs``)."""
    nums = _check_argnums(argnums)
    single = isinstance(argnums, int | np.integer)
    if isinstance(fn, Compiled):
        compiled = fn
    else:
        compiled = Compiled(fn, backend, (static_argnums,) if isinstance(static_argnums, int) else static_argnums)

    def derivative_fn(*args: Any, **kwargs: Any) -> Any:
        target, args = compiled._with_keywords(args, kwargs) if kwargs else (compiled, args)
        return body(target, args, _inputs(args, nums, who), nums, single)

    derivative_fn.compiled = compiled  # type: ignore[attr-defined]
    return derivative_fn


def _basis(a: np.ndarray, total: int, offset: int) -> np.ndarray:
    """Rows ``offset .. offset + a.size`` of the identity over all ``total`` input elements,
    shaped ``(total, *a.shape)``: the tangent directions for leaf ``a``."""
    d = np.zeros((total, a.size), a.dtype)
    d[offset:offset + a.size] = np.eye(a.size, dtype=a.dtype)
    return d.reshape((total,) + a.shape)


def _inputs(args: tuple, nums: tuple[int, ...], who: str) -> Inputs:
    """Per differentiated argument: its position, structure and leaves (float arrays)."""
    out = []
    for i in nums:
        if i >= len(args):
            raise GradientError(f"{who}: argnums names argument {i}, but only {len(args)} were passed")
        leaves, tree = tree_flatten(args[i])
        arrays = [np.asarray(leaf) for leaf in leaves]
        for a in arrays:
            if a.dtype.kind != "f":
                raise GradientError(f"{who}: argument {i} has a leaf of dtype {a.dtype}, which cannot be differentiated",
                                    hint="pass integer data through an argument not in argnums")
        out.append((i, tree, arrays))
    return out


def _block(rows: np.ndarray, out_shape: tuple[int, ...], in_shape: tuple[int, ...]) -> np.ndarray:
    """``rows`` holds one derivative per input element, (size_in, *out_shape); the Jacobian
    block is (*out_shape, *in_shape)."""
    size_in = int(np.prod(in_shape, dtype=np.int64))
    return np.asarray(rows).reshape(size_in, -1).T.reshape(out_shape + in_shape)


def _per_argnums(single: bool, per_arg: list[Any]) -> Any:
    return per_arg[0] if single else tuple(per_arg)


def jacfwd(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, *, backend: str = "numpy",
           static_argnums: Sequence[int] | int = ()) -> Callable[..., Any]:
    """Like ``jax.jacfwd``: the Jacobian of ``fn`` with respect to ``args[argnums]`` by
    forward mode (one execution with as many tangent directions as input elements)."""
    return _derivative("jacfwd", fn, argnums, backend, static_argnums, _jacfwd)


def _jacfwd(target: Compiled, args: tuple, ins: Inputs,
            nums: tuple[int, ...], single: bool) -> Any:
    k = sum(a.size for _, _, arrays in ins for a in arrays)
    tangents: list[Any] = [None] * len(args)
    spans: list[list[tuple[int, tuple[int, ...]]]] = []
    offset = 0
    for i, tree, arrays in ins:
        ts, leaf_spans = [], []
        for a in arrays:
            ts.append(_basis(a, k, offset))
            leaf_spans.append((offset, a.shape))
            offset += a.size
        tangents[i] = tree_unflatten(tree, ts)
        spans.append(leaf_spans)
    out, jv = target.jvp(args, tangents, batched=True)
    out_leaves, out_tree = tree_flatten(out)
    jv_leaves = iter(tree_flatten(jv)[0])
    per_out = []
    for o in out_leaves:
        o = np.asarray(o)
        if o.dtype.kind not in "fc":
            per_out.append(None)  # an integer output has no derivative
            continue
        t = np.asarray(next(jv_leaves))
        per_out.append(_per_argnums(single, [
            tree_unflatten(tree, [_block(t[off:off + int(np.prod(shape, dtype=np.int64))], o.shape, shape)
                                  for off, shape in leaf_spans])
            for (_, tree, _), leaf_spans in zip(ins, spans)]))
    return tree_unflatten(out_tree, per_out)


def jacrev(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, *, backend: str = "numpy",
           static_argnums: Sequence[int] | int = ()) -> Callable[..., Any]:
    """Like ``jax.jacrev``: the Jacobian of ``fn`` with respect to ``args[argnums]`` by
    reverse mode (one execution per output element)."""
    return _derivative("jacrev", fn, argnums, backend, static_argnums, _jacrev)


def _jacrev(target: Compiled, args: tuple, ins: Inputs,
            nums: tuple[int, ...], single: bool) -> Any:
    seen: list[Aval | None] = []

    def zeros(avals: list[Aval | None]) -> list[Any]:
        seen[:] = avals
        return [np.zeros(a.shape, a.dtype) for a in avals if a is not None]

    outs, out_tree, _ = target.vjp(args, zeros, argnums=nums)
    avals = list(seen)
    per_out = []
    for o_index, (o, aval) in enumerate(zip(outs, avals)):
        o = np.asarray(o)
        if o.dtype.kind not in "fc":
            per_out.append(None)
            continue
        rows: list[list[list[np.ndarray]]] = [[[] for _ in arrays] for _, _, arrays in ins]
        if aval is not None:
            for e in range(o.size):
                def one_hot(av: list[Aval | None], e: int = e, o_index: int = o_index) -> list[Any]:
                    seeds = []
                    for j, a in enumerate(av):
                        if a is None:
                            continue
                        s = np.zeros(a.shape, a.dtype)
                        if j == o_index:
                            s.reshape(-1)[e] = 1
                        seeds.append(s)
                    return seeds

                grads = target.vjp(args, one_hot, argnums=nums)[2]
                for r, g in zip(rows, grads):
                    for leaf_rows, leaf in zip(r, tree_flatten(g)[0]):
                        leaf_rows.append(np.asarray(leaf))
        blocks = []
        for (_, tree, arrays), r in zip(ins, rows):
            leaf_blocks = []
            for a, leaf_rows in zip(arrays, r):
                if not leaf_rows:  # a constant output: its derivative is zero
                    leaf_blocks.append(np.zeros(o.shape + a.shape, a.dtype))
                else:
                    leaf_blocks.append(np.stack(leaf_rows).reshape(o.shape + a.shape))
            blocks.append(tree_unflatten(tree, leaf_blocks))
        per_out.append(_per_argnums(single, blocks))
    return tree_unflatten(out_tree, per_out)


def hessian(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, *, backend: str = "numpy",
            static_argnums: Sequence[int] | int = ()) -> Callable[..., Any]:
    """Like ``jax.hessian``: second derivatives of scalar ``fn`` with respect to
    ``args[argnums]``, forward over reverse, in one execution. The block of leaves ``a`` and
    ``b`` has shape ``a.shape + b.shape``; with a tuple ``argnums`` the result is a tuple of
    tuples, as in JAX."""
    return _derivative("hessian", fn, argnums, backend, static_argnums, _hessian)


def _hessian(target: Compiled, args: tuple, ins: Inputs,
             nums: tuple[int, ...], single: bool) -> Any:
    # the gradient graph orders differentiated leaves by argument position
    order = sorted(range(len(ins)), key=lambda k: ins[k][0])
    flat = [(k, j, a) for k in order for j, a in enumerate(ins[k][2])]
    total = sum(a.size for _, _, a in flat)
    offsets, directions, offset = {}, [], 0
    for k, j, a in flat:
        directions.append(_basis(a, total, offset))
        offsets[(k, j)] = offset
        offset += a.size
    _, tangents = target.hessian_blocks(args, nums, directions)
    grad_dot = {(k, j): t for (k, j, _), t in zip(flat, tangents)}
    rows = []
    for ka, (_, tree_a, arrays_a) in enumerate(ins):
        cols = []
        for kb, (_, tree_b, arrays_b) in enumerate(ins):
            outer = []
            for ja, a in enumerate(arrays_a):
                inner = []
                t = grad_dot[(ka, ja)]
                for jb, b in enumerate(arrays_b):
                    if t is None:
                        inner.append(np.zeros(a.shape + b.shape, a.dtype))
                    else:
                        off = offsets[(kb, jb)]
                        inner.append(_block(np.asarray(t)[off:off + b.size], a.shape, b.shape))
                outer.append(tree_unflatten(tree_b, inner))
            cols.append(tree_unflatten(tree_a, outer))
        rows.append(_per_argnums(single, cols))
    return _per_argnums(single, rows)
