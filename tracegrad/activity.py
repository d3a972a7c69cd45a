"""Activity-perturbed forward gradients: ``activity_grad`` (the transform is ``ad/perturb.py``).

``g = activity_grad(loss_fn, argnums=0, directions=K, groups=G, mask=True)`` returns
``g(*args, step=None) -> (loss, grads)`` like ``forward_grad``. ``loss_fn`` returns the
per-example losses ``(B,)`` (the reported loss is their mean) or their mean. Each layer
``x @ W + b`` / ``conv2d(x, W) + b`` gets a per-example tangent ``u`` at its pre-activation;
one execution pushes them all forward and each parameter's estimate is its node's VJP rule
applied to ``(1/K) Σ_n d_n ⊙ u_n`` (for ``x @ W``: ``xᵀ(d ⊙ u)``).

Directions: ``K * G`` tangents per layer, drawn counter-based like ``forward_grad``'s
(``(seed, step, layer, direction)``; a layer whose G blocks are kept block-sparse draws the G
blocks of direction k as one array, key ``(seed, step, layer, k)``). With ``groups=G`` direction ``(k, g)`` is zero outside
block ``g`` of each layer's units (features of a matmul; for a conv2d, blocks of channels x
pixels when G of them fit the layer and the windows of the average pool after it — ``ad/cells.py``,
one ``(K, B, C, H, W)`` draw — else whole channels): G
block-sparse directions, each unit perturbed by exactly one, so no ``1/G`` (a layer narrower
than G gets one unit per block); they reduce the
variance like G directions. ``G`` equal to a layer's width with Rademacher tangents and only
that layer perturbed gives its exact gradient. All of it is unbiased for the objective the
function computes, as long as the loss of example b depends only on example b: checked
numerically once per input signature (``B`` directions, each on one example) and reported
as an error when it does not hold (batch norm, a loss over pairs of examples).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .api import Compiled, compile
from .errors import GradientError
from .forward_grad import DirectionSampler
from .modes import ActivityMode
from .tree import tree_unflatten

__all__ = ["activity_grad"]


def activity_grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, *, directions: int = 1,
                  groups: int = 1, mask: bool = False, distribution: str = "rademacher",
                  seed: int | None = None, backend: str = "numpy", static_argnums: Sequence[int] = (),
                  check_separable: bool = True, exact_last: bool = False,
                  layerwise: bool = False) -> Callable[..., tuple[Any, Any]]:
    """Return ``g(*args, step=None) -> (loss, grad_estimate)``: the activity-perturbed
    forward-gradient estimate of the gradient of the mean per-example loss of ``fn`` with
    respect to ``args[argnums]`` (pytrees allowed), from one execution.

    ``directions``: K independent tangents per layer, averaged; ``groups``: G block-sparse
    tangents per layer (``K * G`` in all); ``mask``: multiply each layer's tangent by
    ``[f'(z) != 0]`` of the elementwise op that follows (the ReLU mask) — unbiased, less
    noise. ``check_separable``: verify once per input signature that example b's loss
    depends on example b's activations only (raises ``GradientError`` otherwise).
    ``exact_last``: layers whose tangents would reach no other layer (the output layer, the
    heads of a model with local losses) are not perturbed but get their exact gradient from
    the few nodes between them and the loss (local losses: ``tracegrad.nn.mlp(...,
    local_heads=True)`` with ``exact_last=True`` is Ren et al.'s estimator). ``layerwise``: every
    layer gets its own ``K * G`` directions instead of sharing them with the other layers, so
    a layer's estimate carries none of the other layers' noise (about half the variance on a
    two-hidden-layer MLP); one execution still pushes them all, and when the layers after
    the first are narrow the cost barely changes."""
    k, g_count = int(directions), int(groups)
    if k < 1 or g_count < 1:
        raise ValueError(f"directions and groups must be >= 1, got {directions} and {groups}")
    compiled = fn if isinstance(fn, Compiled) else compile(fn, backend=backend, static_argnums=static_argnums)
    sampler = DirectionSampler(distribution, seed)
    n = k * g_count
    calls = [0]
    checked: set[Any] = set()

    def estimate(*args: Any, step: int | None = None) -> tuple[Any, Any]:
        if step is None:
            step = calls[0]
        elif int(step) < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        calls[0] += 1
        leaves, treedef, sig, static = compiled._signature(args)
        nums, wrt, spans = compiled._grad_mask(args, leaves, treedef, argnums)
        entry, leaves = compiled._entry(args, ActivityMode(wrt, n, bool(mask), k, g_count, bool(exact_last),
                                                                bool(layerwise)))
        shapes = _point_shapes(entry)
        key = (treedef, sig, static, wrt)
        if check_separable and key not in checked and shapes:
            _check_separable(compiled, args, wrt, leaves, shapes, sampler, bool(exact_last))
            checked.add(key)
        # a block-sparse layer (K, G, B, w/G) draws its K directions' G blocks as one array each
        # (one counter-based fill of K x B x w numbers, not K x G small ones)
        us = sampler.draw_many([(shape, dtype) for shape, dtype, _ in shapes], np, step=int(step))
        for i, (_, _, axis) in enumerate(shapes):
            if axis is not None and g_count > 1:
                _restrict_to_groups(us[i], k, g_count, axis)
        outs = entry.executable(*leaves, *us)
        value, grads_flat = outs[0], outs[1:-1]
        where = {leaf: j for j, leaf in enumerate(i for i, m in enumerate(wrt) if m)}
        grads = [tree_unflatten(td, [grads_flat[where[j]] for j in range(start, start + td.num_leaves)])
                 for start, td in (spans[i] for i in nums)]
        return value, grads[0] if isinstance(argnums, int) else tuple(grads)

    estimate.sampler = sampler  # type: ignore[attr-defined]
    estimate.compiled = compiled  # type: ignore[attr-defined]
    return estimate


def _point_shapes(entry: Any) -> list[tuple[tuple[int, ...], np.dtype, int | None]]:
    """(tangent input shape, dtype, group axis) of each injection point, from the tangent
    inputs; the axis is None for a block-sparse input (``(K, G, B, w/G)``, or a conv layer's
    ``(K, B, C, H, W)`` holding its G blocks: nothing to zero, every unit is in one block)."""
    out = []
    for v, kind in zip(entry.graph.inputs, _input_kinds(entry)):
        if kind:
            axis = None if v.hint.endswith(("_blocks", "_cells", "_units")) else 1 if v.hint.endswith("_conv") else -1
            out.append((tuple(v.aval.shape), np.dtype(v.aval.dtype), axis))
    return out


def _input_kinds(entry: Any) -> list[bool]:
    return [bool(v.hint) and v.hint.startswith("activity_u") for v in entry.graph.inputs]


def _restrict_to_groups(u: np.ndarray, k: int, g: int, axis: int) -> None:
    """Zero direction ``(k, g)`` (row ``k * G + g``) outside block ``g`` of the units on ``axis``
        (in place): every unit is perturbed by exactly one of the G directions of each k."""
    ax = (axis % (u.ndim - 1)) + 1  # axis counts within the point's shape; u has directions in front
    width = u.shape[ax]
    # unit j belongs to block j * G' // width, G' = min(G, width): a layer narrower than G (the
    # output layer) gets one unit per block and the directions past its width skip it
    block = (np.arange(width) * min(g, width)) // width
    keep = (block[None, :] == (np.arange(u.shape[0]) % g)[:, None]).astype(u.dtype)  # (K*G, width)
    shape = [1] * u.ndim
    shape[0], shape[ax] = u.shape[0], width
    u *= keep.reshape(shape)


def _check_separable(compiled: Compiled, args: tuple, wrt: tuple[bool, ...], leaves: list[Any],
                     shapes: list[tuple[tuple[int, ...], np.dtype, int | None]], sampler: DirectionSampler,
                     exact_last: bool = False) -> None:
    """Direction b perturbs example b only: the per-example derivatives must be diagonal."""
    batch = shapes[0][0][1]  # (N, B, ...) dense, (K, B, C, H, W) cells
    if shapes[0][2] is None and len(shapes[0][0]) == 4:  # (K, G, B, w/G) blocks
        batch = shapes[0][0][2]
    entry, leaves = compiled._entry(args, ActivityMode(wrt, batch, False, 1, exact_last=exact_last,
                                                            contract_tails=False))
    rng = np.random.default_rng(0)
    us = []
    for shape, dtype, _ in _point_shapes(entry):
        shape = shape[1:]
        u = np.zeros((batch,) + shape, dtype)
        for b in range(batch):
            u[b, b] = rng.standard_normal(shape[1:])
        us.append(u)
    d = np.asarray(entry.executable(*leaves, *us)[-1])
    off = d - np.diag(np.diag(d))
    if np.any(off != 0) or not np.all(np.isfinite(d)):
        b, c = np.unravel_index(int(np.argmax(np.abs(np.nan_to_num(off, nan=np.inf)))), off.shape)
        primal = compiled.graph(*args)  # only on this error path: name the line of the returned loss
        out = primal.outputs[0]
        source = next((nd.source for nd in primal.nodes if out in nd.outputs), None)
        raise GradientError(
            f"activity perturbation needs a loss that is separable over examples, but the loss of example {c} "
            f"depends on the activations of example {b} (derivative {off[b, c]:.3g}); the function mixes "
            f"examples (batch statistics, a loss over pairs, a mean over the batch inside the network)",
            source=source,
            hint="compute each example's loss from that example alone, or use forward_grad / grad")
