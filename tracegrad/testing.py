"""Testing helpers for users and for tracegrad's own suite.

``check_jvp`` compares a compiled JVP with central finite differences in a random
direction (float64), the standard check for forward-mode rules; ``check_grad`` compares a
reverse-mode gradient with central finite differences in every coordinate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .api import Compiled, compile, value_and_grad
from .tree import tree_flatten, tree_map, tree_unflatten

__all__ = ["check_backends", "check_grad", "check_jvp", "numerical_grad", "numerical_jvp", "random_tangents"]


def random_tangents(args: Sequence[Any], argnums: Sequence[int], rng: np.random.Generator) -> list[Any]:
    """Standard-normal tangents for the float leaves of ``args[argnums]``; ``None`` elsewhere."""
    out: list[Any] = []
    for i, a in enumerate(args):
        if i not in argnums:
            out.append(None)
            continue
        leaves, tree = tree_flatten(a)
        out.append(tree_unflatten(tree, [
            rng.standard_normal(np.shape(x)).astype(np.asarray(x).dtype)
            if np.asarray(x).dtype.kind == "f" else None for x in leaves]))
    return out


def _axpy(t: Any, x: Any, v: Any) -> Any:
    if v is None:
        return x
    y = np.asarray(x) + t * np.asarray(v)
    return float(y) if isinstance(x, float) else y.astype(np.asarray(x).dtype)


def numerical_jvp(fn: Callable[..., Any], args: Sequence[Any], tangents: Sequence[Any], eps: float = 1e-6) -> Any:
    """Central difference ``(f(x + eps v) - f(x - eps v)) / (2 eps)`` over pytrees."""
    def shifted(t: float) -> list[Any]:
        out = []
        for a, v in zip(args, tangents):
            if v is None:
                out.append(a)
            else:
                leaves, tree = tree_flatten(a)
                v_leaves = _match(v, tree, len(leaves))
                out.append(tree_unflatten(tree, [_axpy(t, x, d) for x, d in zip(leaves, v_leaves)]))
        return out

    hi, lo = fn(*shifted(eps)), fn(*shifted(-eps))
    return tree_map(lambda a, b: (np.asarray(a, np.float64) - np.asarray(b, np.float64)) / (2 * eps), hi, lo)


def _match(v: Any, tree: Any, n: int) -> list[Any]:
    leaves, _ = tree_flatten(v)
    if len(leaves) == n:
        return leaves
    # None leaves vanish when flattening; rebuild them from the structure.
    out: list[Any] = []

    def walk(x: Any) -> None:
        if x is None:
            out.append(None)
        elif isinstance(x, dict):
            for k in sorted(x):
                walk(x[k])
        elif isinstance(x, list | tuple):
            for c in x:
                walk(c)
        else:
            out.append(x)

    walk(v)
    return out


def check_jvp(fn: Callable[..., Any], args: Sequence[Any], argnums: Sequence[int] | None = None, *,
              seed: int = 0, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Assert that tracegrad's JVP of ``fn`` at ``args`` (float64) matches central finite
    differences in a random direction. Raises ``AssertionError`` with both values."""
    rng = np.random.default_rng(seed)
    args = list(args)
    argnums = list(range(len(args))) if argnums is None else list(argnums)
    tangents = random_tangents(args, argnums, rng)
    compiled = fn if isinstance(fn, Compiled) else compile(fn)
    plain = compiled.fn if isinstance(fn, Compiled) else fn
    out, out_t = compiled.jvp(tuple(args), tuple(tangents))
    expected = numerical_jvp(plain, args, tangents, eps)
    got_leaves, _ = tree_flatten(out_t)
    exp_leaves, _ = tree_flatten(expected)
    out_leaves, _ = tree_flatten(out)
    floats = [np.asarray(o).dtype.kind == "f" for o in out_leaves]
    exp_leaves = [e for e, f in zip(exp_leaves, floats) if f]
    assert len(got_leaves) == len(exp_leaves), "tangent output structure differs"
    for g, e in zip(got_leaves, exp_leaves):
        np.testing.assert_allclose(np.asarray(g, np.float64), e, rtol=rtol, atol=atol,
                                   err_msg="JVP disagrees with central finite differences")


def check_backends(fn: Callable[..., Any], args: Sequence[Any], argnums: Sequence[int] | None = None, *,
                   backend: str = "cupy", directions: int | None = None, seed: int = 0,
                   rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Assert that ``fn`` compiled for ``backend`` gives what the NumPy backend (the
    reference) gives: outputs, and the JVP in random directions (K of them with
    ``directions=K``). Raises ``AssertionError`` naming the output that differs."""
    from .backends import to_host

    rng = np.random.default_rng(seed)
    args = list(args)
    argnums = list(range(len(args))) if argnums is None else list(argnums)
    if directions is None:
        tangents = random_tangents(args, argnums, rng)
    else:
        per = [random_tangents(args, argnums, rng) for _ in range(directions)]
        tangents = [None if per[0][i] is None else
                    tree_map(lambda *ts: np.stack(ts), *[p[i] for p in per]) for i in range(len(args))]
    ref, other = compile(fn), compile(fn, backend=backend)
    pairs = [("outputs", other(*args), ref(*args)),
             ("JVP", other.jvp(args, tangents, batched=directions is not None),
              ref.jvp(args, tangents, batched=directions is not None))]
    for what, got, want in pairs:
        got_leaves, want_leaves = tree_flatten(to_host(got))[0], tree_flatten(want)[0]
        assert len(got_leaves) == len(want_leaves), f"{what}: structure differs"
        for i, (g, w) in enumerate(zip(got_leaves, want_leaves)):
            assert np.asarray(g).dtype == np.asarray(w).dtype, f"{what} leaf {i}: dtype {np.asarray(g).dtype} != {np.asarray(w).dtype}"
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol,
                                       err_msg=f"{backend} and numpy disagree ({what} leaf {i})")


def numerical_grad(fn: Callable[..., Any], args: Sequence[Any], argnum: int, eps: float = 1e-6) -> Any:
    """Central differences of scalar ``fn`` in each coordinate of every float leaf of
    ``args[argnum]`` (a pytree), in float64; the result has that argument's structure."""
    args = list(args)
    leaves, tree = tree_flatten(args[argnum])
    out = []
    for k, leaf in enumerate(leaves):
        base = np.asarray(leaf)
        if base.dtype.kind != "f":
            out.append(None)  # integer leaves have no gradient
            continue
        grad = np.zeros(base.shape, np.float64)
        for idx in np.ndindex(base.shape):
            vals = []
            for sign in (1.0, -1.0):
                moved = base.astype(np.float64, copy=True)
                moved[idx] += sign * eps
                new = list(leaves)
                new[k] = moved.astype(base.dtype) if isinstance(leaf, np.ndarray) else type(leaf)(moved)
                vals.append(float(fn(*args[:argnum], tree_unflatten(tree, new), *args[argnum + 1:])))
            grad[idx] = (vals[0] - vals[1]) / (2 * eps)
        out.append(grad)
    return tree_unflatten(tree, out)


def check_grad(fn: Callable[..., Any], args: Sequence[Any], argnums: int | Sequence[int] = 0, *,
               eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Assert that tracegrad's reverse-mode gradient of scalar ``fn`` at ``args`` (float64)
    matches central finite differences in every coordinate. Raises ``AssertionError``."""
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    plain = fn.fn if isinstance(fn, Compiled) else fn
    _, grads = value_and_grad(fn, nums)(*args)
    for i, got in zip(nums, grads):
        want = numerical_grad(plain, args, i, eps)
        for g, w in zip(tree_flatten(got)[0], tree_flatten(want)[0]):
            np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=atol,
                                       err_msg=f"gradient of argument {i} disagrees with central finite differences")
