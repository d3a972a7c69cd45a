"""Activity perturbation (Ren, Kornblith, Liao and Hinton 2023): forward gradients whose
tangents are injected at pre-activations instead of weights.

Weight perturbation perturbs every weight, so its variance grows with the parameter count.
Activity perturbation perturbs each layer's *pre-activation* ``z = x @ W + b`` (or
``conv2d(x, W) + b``) with a fresh per-example tangent ``u``, pushes all of them forward to
the per-example losses in one execution, reads the per-example directional derivatives
``d[n, b] = ∇_{z_b} ℓ_b · u_{n,b}`` (summed over the perturbed layers) and forms each
parameter's estimate from the producing node's *own* VJP rule with the cotangent
``(1/K) Σ_n d_n ⊙ u_n`` — for ``x @ W`` that is ``xᵀ (d ⊙ u)``: a local product, never a
backward pass through the network. ``E[u uᵀ] = I`` and independent layers make it unbiased.

This module is the third interpreter on ``replay.replay``: ``ActivityInterpreter`` is a
``JVPInterpreter`` whose parameters carry zero tangents and which adds the injected tangent
at each *point* (the output of a node linear in a parameter, extended over a following
bias add). Options:

- ``mask``: when a point's only differentiable use is an elementwise op ``f`` (ReLU), the
  tangent is multiplied by ``[f'(z) != 0]`` — the gradient is zero there anyway, so the
  estimate stays unbiased and loses that noise;
- groups: the caller zeroes ``u`` outside one block of units per direction (``G`` block-sparse
  directions, see ``tracegrad.activity``); nothing here depends on it;
- ``exact_last``: a point whose tangent reaches no other point (an output layer, a local
  head) gets no tangent; its exact gradient comes from the VJP rules of the few nodes
  between it and the loss (softmax cross-entropy) — one small product, no noise.

Local losses: when the per-example loss is a sum of terms (``ℓ = Σ_t ℓ_t``, one per head) and a
point's tangent reaches only some of them (a stop-gradient between blocks), its estimate
uses only those terms' directional derivatives — the other points' tangents, which reach
other terms, add no noise to it.

Requirements, checked with errors naming the user's line: every use of a differentiated
parameter ends in a point (a parameter used elsewhere — a weight decay term, an elementwise
gain — would get no estimate), every point has the batch as its leading axis, and the
function returns per-example losses ``(B,)`` or ``c * sum`` / ``mean`` of them. That the
loss of example b depends only on example b's activations is a numerical property; the
caller checks it once per input signature (``tracegrad.activity``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GradientError
from ..ir import Aval, Graph, Literal, Node, Var
from ..tracing.dispatch import numpy_namespace
from ..tracing.tracer import GraphBuilder
from . import cells as _cells
from . import tangents as T
from .jvp import JVPInterpreter
from .replay import replay
from .vjp import _accumulate

__all__ = ["ActivityInterpreter", "Analysis", "Blocks", "Point", "activity_graph", "analyze"]

LINEAR_PRIMITIVES = ("matmul", "conv2d")
TAG = "perturb_point"
SCALES = ("mul", "div", "neg")


@dataclass
class Point:
    """One injection point: ``base`` (the node linear in a parameter), optionally the bias
    ``add`` that follows it; ``out`` is the perturbed pre-activation; ``consumer`` the
    elementwise node whose derivative masks the tangent (None: no mask possible)."""

    base: Node
    bias: Node | None
    out: Var
    consumer: Node | None = None
    param_nodes: list[Node] = field(default_factory=list)  # parameter-only nodes feeding it
    terms: tuple[int, ...] = ()  # the loss terms (Analysis.terms) its tangent reaches
    last: bool = False  # its tangent reaches no other point (an output layer, a head)
    tail: list[Node] = field(default_factory=list)  # the nodes from ``out`` to the loss, in order

    @property
    def group_axis(self) -> int:
        """The axis of units that groups split: channels for conv2d, features for matmul."""
        return 1 if self.base.primitive.name == "conv2d" else -1


@dataclass
class Analysis:
    """What ``analyze`` found: the points, the per-example loss vector and its scale in the
    returned value (``value = scale * sum_b loss[b]``)."""

    points: list[Point]
    per_example: Var
    scale: float
    batch: int
    terms: list[Var] = field(default_factory=list)  # per_example = sum of these (one: itself)


def _source_of(graph: Graph, v: Var) -> Any:
    return next((n.source for n in graph.nodes if v in n.outputs), None)


def analyze(graph: Graph, wrt: Sequence[bool]) -> Analysis:
    """Find the injection points and the per-example losses of ``graph``, or raise a
    ``GradientError`` naming the line that makes activity perturbation impossible."""
    if len(graph.outputs) != 1 or not graph.outputs[0].aval.is_float:
        raise GradientError(f"activity perturbation needs a function returning per-example losses (B,) or their "
                            f"mean; {graph.name} returns {len(graph.outputs)} outputs",
                            hint="return the vector of per-example losses, or np.mean of it")
    params = {v for v, w in zip(graph.inputs, wrt) if w}
    pure: set[Var] = set(params)  # values computed from parameters (and constants) alone
    uses: dict[Var, list[Node]] = {}
    for node in graph.nodes:
        for a in node.inputs:
            if isinstance(a, Var):
                uses.setdefault(a, []).append(node)
    producer = {v: n for n in graph.nodes for v in n.outputs}

    def pure_ancestors(v: Var, acc: list[Node]) -> None:
        n = producer.get(v)
        if n is None or n in acc:
            return
        for a in n.inputs:
            if isinstance(a, Var) and a in pure:
                pure_ancestors(a, acc)
        acc.append(n)

    for node in graph.nodes:  # first: everything computed from parameters alone
        var_ins = [a for a in node.inputs if isinstance(a, Var)]
        if var_ins and all(a in pure for a in var_ins):
            pure.update(node.outputs)
    # user-tagged points (tracegrad.perturb_point): the value an automatic point would reach
    # through parameter-free elementwise ops only is perturbed at the tag instead
    tags = [n for n in graph.nodes if n.primitive.name == TAG]
    absorbed: set[Var] = set()
    for tag in tags:
        v = tag.inputs[0]
        while isinstance(v, Var) and len(uses.get(v, [])) == 1 and v in producer:
            n = producer[v]
            var_ins = [a for a in n.inputs if isinstance(a, Var)]
            if not n.primitive.elementwise or len(var_ins) != 1 or var_ins[0] in pure:
                break
            v = var_ins[0]
        absorbed.add(v)
    points: list[Point] = []
    claimed: set[Node] = set()
    unclaimed: list[Node] = []  # parameter uses outside automatic points: tagged regions must hold them
    for node in graph.nodes:
        var_ins = [a for a in node.inputs if isinstance(a, Var)]
        touched = [a for a in var_ins if a in pure]
        if not touched or node in claimed or all(a in pure for a in var_ins):
            continue
        name = node.primitive.name
        if name in LINEAR_PRIMITIVES and len(touched) == 1 and len(var_ins) == 2:
            out = node.outputs[0]
            bias = None
            users = uses.get(out, [])
            if len(users) == 1 and users[0].primitive.name == "add":
                other = [a for a in users[0].inputs if a is not out]
                if len(other) == 1 and isinstance(other[0], Var) and other[0] in pure \
                        and users[0].outputs[0].aval.shape == out.aval.shape:
                    bias = users[0]
                    claimed.add(bias)
            point = Point(node, bias, bias.outputs[0] if bias is not None else out)
            if point.out in absorbed:  # perturbed at the tag that follows it
                unclaimed.extend(n for n in (node, bias) if n is not None)
                continue
            for n in (node, bias):
                if n is not None:
                    for a in n.inputs:
                        if isinstance(a, Var) and a in pure:
                            pure_ancestors(a, point.param_nodes)
            points.append(point)
            continue
        unclaimed.append(node)
    if tags:
        order = {n: i for i, n in enumerate(graph.nodes)}
        points = _tagged_points(tags, points, pure, producer, pure_ancestors, order) + points
        points.sort(key=lambda p: order[p.base])
    in_region = {n for p in points for n in p.param_nodes}
    for node in unclaimed:
        if node in in_region:
            continue
        what = f"{node.primitive.name} (a parameter used outside x @ W, conv2d(x, W) and their bias add)"
        raise GradientError(
            f"activity perturbation cannot estimate this use of a parameter: {what}", source=node.source,
            hint="perturb only layers of the form x @ W + b / conv2d(x, W) + b, or mark the layer's output with "
                 "tracegrad.perturb_point(z); compute other parameter terms (weight decay) separately, or use "
                 "forward_grad / grad")
    for v, w in zip(graph.inputs, wrt):
        if w and v in graph.outputs:
            raise GradientError("activity perturbation: a differentiated parameter is returned as the output")
    if not points:
        raise GradientError(f"activity perturbation found no layer x @ W or conv2d(x, W) with a differentiated "
                            f"parameter W in {graph.name}", hint="differentiate the weights (argnums) of a network")

    per_example, scale = _per_example(graph, producer)
    batch = per_example.aval.shape[0]
    for p in points:
        if not p.out.aval.shape or p.out.aval.shape[0] != batch:
            raise GradientError(
                f"activity perturbation: this layer's output has shape {p.out.aval.shape}, whose leading axis is "
                f"not the batch of {batch} examples of the per-example losses", source=p.base.source,
                hint="put the batch first (x @ W with x of shape (B, n))")
    for p in points:  # the mask: the one differentiable use, if elementwise and shape-preserving
        users = [n for n in uses.get(p.out, []) if n.primitive.differentiable and any(o.aval.is_float for o in n.outputs)]
        if len(users) == 1 and users[0].primitive.elementwise and users[0].outputs[0].aval.shape == p.out.aval.shape:
            p.consumer = users[0]
    terms = _terms(per_example, producer)
    ancestors = _reaching(per_example, producer)
    outs = {p.out for p in points}
    for p in points:
        reach = _reached(p.out, uses)
        p.terms = tuple(i for i, t in enumerate(terms) if t in reach)
        p.last = not (outs - {p.out}) & reach
        if p.last:
            p.tail = [n for n in graph.nodes if n.primitive.differentiable and not n.primitive.multiple_results
                      and n.outputs[0] in reach and n.outputs[0] in ancestors and n.outputs[0] is not p.out]
    return Analysis(points, per_example, scale, batch, terms)


def _tagged_points(tags: list[Node], auto: list[Point], pure: set[Var], producer: dict[Var, Node],
                   pure_ancestors: Any, order: dict[Node, int]) -> list[Point]:
    """One point per ``perturb_point`` node. Its region: the nodes between the tag and the
    nearest earlier points (automatic or tagged) that use a parameter or a value computed
    from one inside the region; their VJP rules turn the tag's cotangent into the estimates."""
    stops = {p.out for p in auto} | {t.outputs[0] for t in tags}
    out = []
    for tag in tags:
        seen: set[Node] = set()
        todo = [a for a in tag.inputs if isinstance(a, Var)]
        while todo:  # every node the tag's input is computed from, back to the earlier points
            v = todo.pop()
            n = producer.get(v)
            if n is None or n in seen or v in stops or v in pure:
                continue
            seen.add(n)
            todo.extend(a for a in n.inputs if isinstance(a, Var))
        region: list[Node] = []
        made: set[Var] = set()
        for n in sorted(seen, key=order.__getitem__):  # in graph order
            ins = [a for a in n.inputs if isinstance(a, Var)]
            if any(a in pure or a in made for a in ins):
                for a in ins:
                    if a in pure:
                        pure_ancestors(a, region)
                region.append(n)
                made.update(n.outputs)
        region = sorted(dict.fromkeys(region), key=order.__getitem__)
        out.append(Point(tag, None, tag.outputs[0], param_nodes=region))
    return out


def _terms(per_example: Var, producer: dict[Var, Node]) -> list[Var]:
    """The summands of the per-example loss: ``a + b + ...`` of same-shape values (local
    losses: one per head), else the loss itself."""
    node = producer.get(per_example)
    if node is None or node.primitive.name != "add" or not all(
            isinstance(a, Var) and a.aval.shape == per_example.aval.shape for a in node.inputs):
        return [per_example]
    return [t for a in node.inputs for t in _terms(a, producer)]


def _reached(v: Var, uses: dict[Var, list[Node]]) -> set[Var]:
    """Every value a tangent at ``v`` reaches (through differentiable nodes; a stop-gradient ends it)."""
    seen, todo = {v}, [v]
    while todo:
        for n in uses.get(todo.pop(), []):
            if n.primitive.differentiable:
                for o in n.outputs:
                    if o not in seen:
                        seen.add(o)
                        todo.append(o)
    return seen


def _reaching(v: Var, producer: dict[Var, Node]) -> set[Var]:
    """Every value whose tangent reaches ``v`` (the converse of ``_reached``)."""
    seen, todo = {v}, [v]
    while todo:
        n = producer.get(todo.pop())
        if n is not None and n.primitive.differentiable:
            for a in n.inputs:
                if isinstance(a, Var) and a not in seen:
                    seen.add(a)
                    todo.append(a)
    return seen


def _per_example(graph: Graph, producer: dict[Var, Node]) -> tuple[Var, float]:
    """The per-example loss vector and ``c`` with value = c * sum(vector): the output itself
    when it is a vector (the value reported is then its mean), else the operand of the sum
    (over every axis) that a mean or a scaled sum ends in."""
    out = graph.outputs[0]
    if not isinstance(out, Var):
        raise GradientError("activity perturbation: the function returns a constant")
    if out.aval.ndim == 1:
        return out, 1.0 / out.aval.shape[0]
    scale, v = 1.0, out
    while True:
        node = producer.get(v)
        if node is None:
            break
        name = node.primitive.name
        lits = [a for a in node.inputs if isinstance(a, Literal)]
        vars_ = [a for a in node.inputs if isinstance(a, Var)]
        if name == "neg":
            scale, v = -scale, vars_[0]
        elif name in ("mul", "div") and len(lits) == 1 and len(vars_) == 1 and np.ndim(lits[0].value) == 0:
            c = float(lits[0].value)
            if name == "div" and node.inputs[1] is not lits[0]:
                break
            scale, v = (scale / c if name == "div" else scale * c), vars_[0]
        elif name == "reduce_sum" and v.aval.ndim == 0 and vars_ and vars_[0].aval.ndim >= 1:
            return vars_[0], scale
        else:
            break
    raise GradientError(
        "activity perturbation needs per-example losses: the function must return the vector of per-example "
        "losses or their mean (or a scaled sum), but its value is not a sum over examples",
        source=_source_of(graph, out),
        hint="return np.mean(per_example_losses) or the (B,) vector itself")


class Blocks(T.Tangent):
    """G block-sparse directions of a ``(B, w)`` pre-activation, K times: ``blocks`` is
    ``(K, G, B, w/G)``; direction ``k*G + g`` is block g of the last axis, zero elsewhere.
    Scaling by a ``(B, w)`` factor stays blockwise, and ``v @ W`` is one group-batched product
    ``(K, G, B, w/G) x (G, w/G, n)`` — the cost of one dense tangent, not G."""

    __slots__ = ("_aval", "blocks")

    def __init__(self, blocks: Any, aval: Aval):
        self.blocks, self._aval = blocks, aval

    @property
    def aval(self) -> Aval:
        return self._aval

    def _kgbj(self) -> tuple[int, int, int, int]:
        k, g, b, j = self.blocks.shape
        return k, g, b, j

    def dense(self) -> Any:
        tnp = numpy_namespace()
        k, g, b, j = self._kgbj()
        eye = np.eye(g, dtype=self._aval.dtype).reshape(1, g, 1, g, 1)
        return tnp.reshape(tnp.multiply(tnp.expand_dims(self.blocks, 3), eye), (k * g, b, g * j))

    def scale(self, factor: Any, out: Aval) -> T.Tangent:
        tnp = numpy_namespace()
        if out.shape != self._aval.shape or tuple(np.shape(factor)) != self._aval.shape:
            return super().scale(factor, out)
        _, g, b, j = self._kgbj()
        f = tnp.transpose(tnp.reshape(factor, (b, g, j)), (1, 0, 2))
        return Blocks(tnp.multiply(self.blocks, f), out)

    def map(self, lm: Any, out: Aval) -> T.Tangent:
        w = lm.params.get("w") if lm.name == "matmul_left" else None
        if w is None or len(np.shape(w)) != 2 or not out.is_float:
            return super().map(lm, out)
        return GroupedImage(self.blocks, w, out)

    def neg(self) -> T.Tangent:
        return Blocks(-self.blocks, self._aval)


CHUNK_BYTES = 1 << 20  # a chunk of GroupedImage's directions: small enough to stay in L2


class GroupedImage(T.Tangent):
    """``Blocks @ W`` — ``(K*G, B, n)``: direction ``(k, g)`` is block g of the blocks times rows
    block g of ``W`` — not computed until needed, with the elementwise masks and scales that
    follow it (a ReLU's JVP) recorded in ``ops``. It is ``G`` times the size of an activation,
    so computing it whole, then masking it, then multiplying it again streams it through
    memory three times; ``map`` by the next matmul instead runs the chain chunk by chunk of
    groups (a few hundred KiB each): group-batched product, masks, next product, all in
    cache. ``dense()`` runs the same chunks without the final product."""

    __slots__ = ("_aval", "blocks", "ops", "w")

    def __init__(self, blocks: Any, w: Any, aval: Aval, ops: tuple[tuple[str, Any], ...] = ()):
        self.blocks, self.w, self._aval, self.ops = blocks, w, aval, ops

    @property
    def aval(self) -> Aval:
        return self._aval

    def _with(self, op: str, arg: Any, out: Aval) -> T.Tangent | None:
        if out.shape != self._aval.shape or out.dtype != self._aval.dtype or \
                (op != "neg" and tuple(np.shape(arg)) not in ((), self._aval.shape)):
            return None
        return GroupedImage(self.blocks, self.w, out, self.ops + ((op, arg),))

    def keep(self, cond: Any, out: Aval) -> T.Tangent:
        return self._with("keep", cond, out) or super().keep(cond, out)

    def scale(self, factor: Any, out: Aval) -> T.Tangent:
        return self._with("scale", factor, out) or super().scale(factor, out)

    def neg(self) -> T.Tangent:
        return self._with("neg", None, self._aval) or super().neg()

    def dense(self) -> Any:
        return self._chunks(None)

    def map(self, lm: Any, out: Aval) -> T.Tangent:
        w2 = lm.params.get("w") if lm.name == "matmul_left" else None
        if w2 is None or len(np.shape(w2)) != 2 or not out.is_float or np.dtype(out.dtype) != np.dtype(self._aval.dtype):
            return super().map(lm, out)
        return T.Dense(self._chunks(w2)).fit(out)

    def _chunks(self, w2: Any) -> Any:
        """The directions ``(K*G, B, n)`` (``w2`` None) or their product with ``w2``, computed
        ``c`` groups at a time: ``(c, K*B, j) @ (c, j, n)``, the recorded ops, ``@ w2``."""
        tnp = numpy_namespace()
        k, g, b, j = (int(d) for d in np.shape(self.blocks))
        n = int(np.shape(self.w)[1])
        per_group = k * b * n * np.dtype(self._aval.dtype).itemsize
        c = max(1, min(g, CHUNK_BYTES // max(per_group, 1)))
        w = tnp.reshape(self.w, (g, j, n))
        lhs = tnp.reshape(tnp.transpose(self.blocks, (1, 0, 2, 3)), (g, k * b, j))  # a view when K = 1
        parts = []
        for g0 in range(0, g, c):
            g1 = min(g, g0 + c)
            r = tnp.matmul(lhs[g0:g1], w[g0:g1])  # (c, K*B, n)
            if k > 1:  # (B, n) masks broadcast over (c, K, B, n); with K = 1 over (c, B, n) as it
                r = tnp.reshape(r, (g1 - g0, k, b, n))  # is, which keeps r a fresh array the mask may overwrite
            for op, arg in self.ops:  # (B, n) conditions and factors broadcast over (c, K)
                zero = self._aval.dtype.type(0)
                r = tnp.where(arg, r, zero) if op == "keep" else tnp.negative(r) if op == "neg" else \
                    tnp.multiply(r, arg)
            if w2 is not None:
                r = tnp.matmul(r, w2)  # (c, K, B, m)
            parts.append(tnp.reshape(r, (g1 - g0, k, b, int(np.shape(r)[-1]))) if k == 1 else r)
        r = parts[0] if len(parts) == 1 else tnp.concatenate(parts, axis=0)  # (G, K, B, .)
        m = int(np.shape(r)[-1])
        return tnp.reshape(tnp.transpose(r, (1, 0, 2, 3)), (k * g, b, m))


class BlocksSum(T.Tangent):
    """``base + blocks``: a dense tangent (the earlier layers' directions, pushed forward) plus
    this layer's block-sparse one, kept apart so the next matmul maps the blocks group-wise
    (``Blocks.map``) instead of densifying them — densifying G blocks of a ``(B, w)`` tangent
    costs a pass over G x B x w numbers, more than the product itself."""

    __slots__ = ("base", "blocks")

    def __init__(self, base: T.Tangent, blocks: Blocks):
        self.base, self.blocks = base, blocks

    @property
    def aval(self) -> Aval:
        return self.blocks.aval

    def dense(self) -> Any:
        return numpy_namespace().add(self.base.dense(), self.blocks.dense())

    def scale(self, factor: Any, out: Aval) -> T.Tangent:
        if out.shape != self.aval.shape or tuple(np.shape(factor)) != self.aval.shape:
            return super().scale(factor, out)
        scaled = self.blocks.scale(factor, out)
        if not isinstance(scaled, Blocks):
            return super().scale(factor, out)
        return BlocksSum(self.base.scale(factor, out), scaled)

    def map(self, lm: Any, out: Aval) -> T.Tangent:
        if lm.name != "matmul_left":  # a matmul maps each part; anything else sees the sum
            return super().map(lm, out)
        return T.add(out, self.base.map(lm, out), self.blocks.map(lm, out))

    def neg(self) -> T.Tangent:
        return BlocksSum(self.base.neg(), Blocks(-self.blocks.blocks, self.blocks.aval))


class Stacked(T.Tangent):
    """Per-layer direction sets (``layerwise``): the direction axis is the concatenation of
    every perturbed point's own ``N`` directions, and ``parts`` maps a point's offset on it to
    the tangent those directions carry (a tangent with ``N`` directions; directions no part
    covers are zero). A layer's tangent then never shares a direction with another layer's,
    so its estimate is free of their noise; each part is pushed through the network on its
    own, under its own ``directions_context`` — as cheap as before when the layers after the
    first are narrow, since only the first layer's part is wide."""

    __slots__ = ("_aval", "n", "parts")

    def __init__(self, parts: dict[int, T.Tangent], n: int, aval: Aval):
        self.parts, self.n, self._aval = parts, n, aval

    @property
    def aval(self) -> Aval:
        return self._aval

    def _each(self, fn: Any, out: Aval) -> T.Tangent:
        parts = {}
        with T.directions_context((self.n,)):
            for o, t in self.parts.items():
                r = fn(t)
                if not r.is_zero:
                    parts[o] = r
        return Stacked(parts, self.n, out) if parts else T.Zero(out)

    def dense(self) -> Any:
        tnp = numpy_namespace()
        total = T.directions()[0]
        pieces, at = [], 0

        def zeros(count: int) -> Any:  # a broadcast scalar, not a constant array in the graph
            return tnp.broadcast_to(self._aval.dtype.type(0), (count,) + self._aval.shape)

        with T.directions_context((self.n,)):
            for o in sorted(self.parts):
                if o > at:
                    pieces.append(zeros(o - at))
                pieces.append(self.parts[o].dense())
                at = o + self.n
        if at < total:
            pieces.append(zeros(total - at))
        return pieces[0] if len(pieces) == 1 else tnp.concatenate(pieces, axis=0)

    def scale(self, factor: Any, out: Aval) -> T.Tangent:
        return self._each(lambda t: t.scale(factor, out), out)

    def keep(self, cond: Any, out: Aval) -> T.Tangent:
        return self._each(lambda t: t.keep(cond, out), out)

    def map(self, lm: Any, out: Aval) -> T.Tangent:
        return self._each(lambda t: t.map(lm, out), out)

    def fit(self, out: Aval) -> T.Tangent:
        if out.shape == self._aval.shape and out.dtype == self._aval.dtype:
            return self
        return self._each(lambda t: t.fit(out), out)

    def neg(self) -> T.Tangent:
        return self._each(lambda t: t.neg(), self._aval)

    def add(self, other: T.Tangent, out: Aval) -> T.Tangent:
        if other.is_zero:
            return self.fit(out)
        if not isinstance(other, Stacked) or other.n != self.n:
            return super().add(other, out)
        a, b = self.fit(out), other.fit(out)
        if a.is_zero or b.is_zero:
            return b if a.is_zero else a
        parts = dict(a.parts)
        with T.directions_context((self.n,)):
            for o, t in b.parts.items():  # the same point's directions add; others sit side by side
                parts[o] = T.add(out, parts[o], t) if o in parts else t
        return Stacked(parts, self.n, out)


def _plus(aval: Aval, t: T.Tangent, u: T.Tangent) -> T.Tangent:
    """``t + u`` at an injection point; a block-sparse ``u`` stays apart from a dense ``t``."""
    if isinstance(u, Blocks) and isinstance(t, (T.Dense, GroupedImage)) \
            and t.aval.shape == aval.shape == u.aval.shape and t.aval.dtype == aval.dtype:
        return BlocksSum(t, u)
    return T.add(aval, t, u)


def blockable(point: Point, groups: int) -> bool:
    """Whether ``point`` takes block-sparse tangents: a ``(B, w)`` matmul output, G | w."""
    shape = point.out.aval.shape
    return groups > 1 and point.base.primitive.name == "matmul" and len(shape) == 2 and shape[1] % groups == 0


class ActivityInterpreter(JVPInterpreter):
    """Forward mode with tangents injected at the points: ``u[i]`` (a dense tangent
    ``(N,) + z.shape``) is added at point i's output, or, masked, at its consumer's operand."""

    def __init__(self, points: Sequence[Point], us: Sequence[T.Tangent], mask: bool):
        self.at_out = {p.out: i for i, p in enumerate(points) if p.consumer is None}
        self.at_consumer = {p.consumer: i for i, p in enumerate(points) if p.consumer is not None}
        self.points = list(points)
        self.mask = mask
        self.us = list(us)
        self.used: list[T.Tangent] = list(us)  # the tangent the estimate multiplies (masked or not)

    def node(self, node: Node, values: list[Any]) -> list[tuple[Any, T.Tangent]]:
        i = self.at_consumer.get(node)
        if i is not None:
            # the consumer f is elementwise and linear in its tangent: its output tangent is
            # f'(z) ⊙ (ż + u) = JVP(ż) + f'(z) ⊙ u, and masking (u -> [f' != 0] ⊙ u) leaves the
            # second term unchanged; the kind of u survives the scaling (block-sparse stays so)
            z = self.points[i].out
            fprime = _derivative(node, values, z)
            (p, t), = super().node(node, values)
            if self.mask:
                self.used[i] = self.us[i].scale(_nonzero(fprime, z), z.aval)
            return [(p, _plus(node.outputs[0].aval, t, self.us[i].scale(fprime, node.outputs[0].aval)))]
        outs = super().node(node, values)
        for k, v in enumerate(node.outputs):
            i = self.at_out.get(v)
            if i is not None:
                p, t = outs[k]
                outs[k] = (p, _plus(v.aval, t, self.us[i]))
        return outs


def _nonzero(fprime: Any, z: Var) -> Any:
    """The mask ``[f'(z) != 0]`` in ``z``'s dtype."""
    tnp = numpy_namespace()
    return tnp.astype(tnp.not_equal(fprime, 0), z.aval.dtype)


def _derivative(node: Node, values: list[Any], z: Var) -> Any:
    """``f'(z)`` for the elementwise ``node`` ``f``: its JVP rule with a tangent of ones on
    every operand that is ``z`` (zero on the others), one direction."""
    tnp = numpy_namespace()
    primals = [p for p, _ in values]
    with T.directions_context(()):
        zp = primals[node.inputs.index(z)]
        ones = tnp.ones_like(zp)
        tans = [T.Dense(ones) if a is z else T.Zero(a.aval) for a in node.inputs]
        _, t = node.primitive.jvp(primals, tans, **node.params)
        return t.dense()


def activity_graph(graph: Graph, wrt: Sequence[bool], directions: int, mask: bool = False,
                   average: int = 1, groups: int = 1, exact_last: bool = False, layerwise: bool = False,
                   contract_tails: bool = True) -> Graph:
    """Build the one-execution activity-perturbation graph.

    Inputs: the primal inputs, then one tangent ``(directions,) + z.shape`` per point (in
    ``analyze`` order; hint ``activity_u{i}`` plus ``_conv`` for conv2d points), or, where
    ``groups`` G > 1 divides a matmul layer's width w, its blocks ``(directions / G, G, B, w / G)``
    (hint suffix ``_blocks``: direction ``k*G + g`` is block g, zero elsewhere), or, where G
    blocks of channels x pixels split a conv layer's ``(B, C, H, W)`` (``cells.cell_layout``),
    one array ``(directions / G, B, C, H, W)`` holding all G (hint suffix ``_cells``); in such a
    network a matmul layer narrower than G takes ``(directions / G, B, w)`` (``_units``: one unit
    per direction, as grouping gives it). Outputs: the
    value (the mean of the per-example losses when the function returns them), one estimate
    per ``True`` in ``wrt``, then ``d`` of shape ``(directions, B)``. ``average``: the number of
    independent directions the estimate averages over (``directions // groups``). ``exact_last``:
    the points whose tangents reach no other point take no tangent input and get their exact
    gradient (the VJP of their tail to the loss). ``layerwise``: each point's ``directions``
    are its own (``Stacked``): ``d`` is ``(P * directions, B)`` for P perturbed points, point i's
    directions at rows ``i * directions`` on, and its estimate uses only those.
    ``contract_tails``: a loss term whose every tangent arrives through one last point's output
    z (an output layer's or a head's logits) gets its derivatives as ``∂ℓ_b/∂z_b · ż[n, b]``, the
    tail's exact per-example gradient (a VJP of a few nodes on ``(B, 10)``) contracted with the N
    tangents, instead of pushing N tangents through the softmax cross-entropy: the same
    numbers for a loss separable over examples, which ``tracegrad.activity`` checks with
    ``contract_tails=False`` (a tail that mixes examples would hide in the contraction)."""
    analysis = analyze(graph, wrt)
    tnp = numpy_namespace()
    builder = GraphBuilder(graph.name + "_activity")
    primals = [builder.new_input(v.aval, v.hint, "primal") for v in graph.inputs]
    perturbed = [p for p in analysis.points if not (exact_last and p.last)]
    us: list[T.Tangent] = []
    layouts = [_cells.cell_layout(p.out.aval.shape, groups, _cells.pool_window(graph, p.out))
               if p.base.primitive.name == "conv2d" else None for p in perturbed]
    for i, (p, layout) in enumerate(zip(perturbed, layouts)):
        aval = p.out.aval
        # a network whose conv layers take G blocks (G far above a dense layer's width):
        # its narrower matmul layers take one unit per direction without the (K*G, B, w) array
        units = any(layouts) and p.base.primitive.name == "matmul" and len(aval.shape) == 2 \
            and aval.shape[1] < groups
        if blockable(p, groups):
            shape = (directions // groups, groups, aval.shape[0], aval.shape[1] // groups)
            us.append(Blocks(builder.new_input(Aval(shape, aval.dtype), f"activity_u{i}_blocks", "tangent"), aval))
        elif layout is not None:  # a conv layer's G blocks of channels x pixels, in one (K,) + z.shape array
            shape = (directions // groups,) + aval.shape
            us.append(_cells.Cells(builder.new_input(Aval(shape, aval.dtype), f"activity_u{i}_cells", "tangent"),
                                   aval, layout))
        elif units:
            shape = (directions // groups,) + aval.shape
            us.append(_cells.Units(builder.new_input(Aval(shape, aval.dtype), f"activity_u{i}_units", "tangent"),
                                   aval, groups))
        else:
            suffix = "_conv" if p.base.primitive.name == "conv2d" else ""
            us.append(T.Dense(builder.new_input(Aval((directions,) + aval.shape, aval.dtype),
                                                f"activity_u{i}{suffix}", "tangent")))
    offsets = [i * directions if layerwise else 0 for i in range(len(perturbed))]
    if layerwise:
        us = [Stacked({o: u}, directions, p.out.aval) for o, u, p in zip(offsets, us, perturbed)]
    interp = ActivityInterpreter(perturbed, us, mask)
    with T.directions_context(((len(perturbed) if layerwise else 1) * directions,)):
        read = replay(graph, builder, interp, [(p, T.Zero(v.aval)) for p, v in zip(primals, graph.inputs)])

        def derivatives(v: Var) -> Any:  # (N, B, ...) -> (N, B): a per-example loss may be a sum
            t = T.instantiate(read(v)[1])
            return tnp.sum(t, axis=tuple(range(2, len(t.shape)))) if len(t.shape) > 2 else t

        tails = _contractible_tails(graph, analysis, perturbed) if contract_tails else {}
        term_ds: dict[int, Any] = {}

        def term_derivatives(i: int) -> Any:  # (N, B): the directional derivatives of term i
            if i not in term_ds:
                p = tails.get(i)
                if p is None:
                    term_ds[i] = derivatives(analysis.terms[i])
                else:
                    delta = _tail_vjp(p, analysis, read, builder)  # (B, ...): ∂ℓ_b/∂z_b
                    zt = T.instantiate(read(p.out)[1])  # (N, B, ...)
                    n, b = zt.shape[0], zt.shape[1]
                    rest = math.prod(zt.shape[2:])
                    term_ds[i] = tnp.multiply(zt, delta) if len(zt.shape) == 2 else tnp.einsum(
                        "nbr,br->nb", tnp.reshape(zt, (n, b, rest)), tnp.reshape(delta, (b, rest)))
            return term_ds[i]

        if not tails:
            d = derivatives(analysis.per_example)
        else:
            d = term_derivatives(0)
            for i in range(1, len(analysis.terms)):
                d = tnp.add(d, term_derivatives(i))
        by_terms: dict[tuple[int, ...], Any] = {tuple(range(len(analysis.terms))): d}
        value = read(graph.outputs[0])[0]
        if graph.outputs[0] is analysis.per_example and analysis.per_example.aval.ndim == 1:
            value = tnp.mean(value)
        factor = analysis.scale / average
        params = {v for v, w in zip(graph.inputs, wrt) if w}
        cts: dict[Var, Any] = {}
        for point, u, o in zip(perturbed, interp.used, offsets):
            shape = point.out.aval.shape
            if point.terms not in by_terms:  # only the loss terms this point's tangent reaches
                parts = [term_derivatives(t) for t in point.terms]
                by_terms[point.terms] = parts[0] if len(parts) == 1 else (
                    tnp.zeros_like(d) if not parts else tnp.sum(tnp.stack(parts), axis=0))
            dp = by_terms[point.terms]
            if isinstance(u, Stacked):  # this point's own directions
                u, dp = u.parts[o], dp[o:o + directions]
            if isinstance(u, Blocks):  # block g of the cotangent: sum_k d[k, g] ⊙ u[k, g]
                k, g, b, _ = u.blocks.shape
                ct = tnp.einsum("kgb,kgbj->bgj", tnp.reshape(dp, (k, g, b)), u.blocks)
                ct = tnp.reshape(ct, shape)
            elif isinstance(u, _cells.Cells):
                ct = _cells.cotangent(dp, u)
            elif isinstance(u, _cells.Units):
                ct = _cells.units_cotangent(dp, u)
            else:
                dd = tnp.reshape(dp, dp.shape + (1,) * (len(shape) - 1)) if len(shape) > 1 else dp
                ct = tnp.sum(tnp.multiply(dd, u.dense()), axis=0)
            _local_vjp(point, tnp.multiply(ct, factor), read, cts, builder, params)
        for point in analysis.points:
            if exact_last and point.last:
                _local_vjp(point, tnp.multiply(_tail_vjp(point, analysis, read, builder), analysis.scale),
                           read, cts, builder, params)
    grads = []
    for v, wanted in zip(graph.inputs, wrt):
        if wanted:
            grads.append(cts[v] if v in cts else np.zeros(v.aval.shape, v.aval.dtype))
    return builder.build([value, *grads, d])


def _contractible_tails(graph: Graph, analysis: Analysis, perturbed: Sequence[Point]) -> dict[int, Point]:
    """Loss term -> the last point through whose output every tangent reaching the term
    passes (its ``tail`` of nodes is then all that lies between the tangents and the term).
    A perturbed last point qualifies only when its tangent is injected at its output (no
    masking consumer): the contraction reads the tangent there."""
    uses: dict[Var, list[Node]] = {}
    for node in graph.nodes:
        for a in node.inputs:
            if isinstance(a, Var):
                uses.setdefault(a, []).append(node)
    injected = {id(p) for p in perturbed}
    out: dict[int, Point] = {}
    for i, term in enumerate(analysis.terms):
        lasts = [p for p in analysis.points if p.last and p.terms == (i,) and p.tail
                 and not (id(p) in injected and p.consumer is not None)]
        if len(lasts) != 1:
            continue
        p = lasts[0]
        if all(q is p or term not in _reached_avoiding(q.out, p.out, uses) for q in perturbed):
            out[i] = p
    return out


def _reached_avoiding(v: Var, block: Var, uses: dict[Var, list[Node]]) -> set[Var]:
    """``_reached(v)`` with the paths through ``block`` cut."""
    seen, todo = {v}, [v]
    while todo:
        for n in uses.get(todo.pop(), []):
            if n.primitive.differentiable:
                for o in n.outputs:
                    if o not in seen and o is not block:
                        seen.add(o)
                        todo.append(o)
    return seen


def _tail_vjp(point: Point, analysis: Analysis, read: Any, builder: GraphBuilder) -> Any:
    """``∂(Σ_b ℓ_b)/∂z`` at the point's output z, exactly: the VJP rules of the tail nodes
    between z and the per-example losses (for an output layer: the softmax cross-entropy)."""
    tnp = numpy_namespace()
    pe = analysis.per_example
    cts: dict[Var, Any] = {pe: tnp.ones_like(read(pe)[0])}
    inside = {point.out} | {n.outputs[0] for n in point.tail}
    for node in reversed(point.tail):
        out_ct = cts.pop(node.outputs[0], None)
        if out_ct is None:
            continue
        builder.current_source = node.source
        in_cts = node.primitive.vjp(out_ct, [read(a)[0] for a in node.inputs], read(node.outputs[0])[0],
                                    **node.params)
        for a, c in zip(node.inputs, in_cts):
            if c is not None and isinstance(a, Var) and a in inside:
                _accumulate(cts, a, c, node.primitive.name)
    builder.current_source = None
    ct = cts.get(point.out)
    return ct if ct is not None else tnp.zeros_like(read(point.out)[0])


def _local_vjp(point: Point, ct: Any, read: Any, cts: dict[Var, Any], builder: GraphBuilder,
               params: set[Var]) -> None:
    """Turn the cotangent of the point's output into cotangents of the parameters, with the
    VJP rules of the point's own nodes (bias add, the linear node, parameter-only nodes
    such as a bias reshape) — never touching the rest of the network."""
    local: dict[Var, Any] = {point.out: ct}
    nodes = [point.base] + ([point.bias] if point.bias is not None else [])
    order = point.param_nodes + nodes
    keep = {point.base.outputs[0]} | {v for n in point.param_nodes for v in n.outputs}
    for node in reversed(order):
        out_ct = local.pop(node.outputs[0], None) if not node.primitive.multiple_results else None
        if out_ct is None or not node.primitive.differentiable:
            continue
        builder.current_source = node.source
        prim = node.primitive
        in_cts = prim.vjp(out_ct, [read(a)[0] for a in node.inputs], read(node.outputs[0])[0], **node.params)
        for a, c in zip(node.inputs, in_cts):
            if c is None or not isinstance(a, Var):
                continue
            if a in keep:
                _accumulate(local, a, c, prim.name)
            elif a in params:  # a differentiated input; anything else (the activation x) is dropped
                _accumulate(cts, a, c, prim.name)
    builder.current_source = None
