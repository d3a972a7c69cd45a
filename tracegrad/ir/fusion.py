"""Fusion groups: what nodes sharing a ``fusion_group`` id mean.

A fusion group is a contiguous run of nodes that a backend may compute as ONE kernel.
Its contract, checked by ``fusion_groups`` (and so by ``Graph.validate``):

- every member has a *role*, declared with its primitive (``Primitive.fusion``):
  ``elementwise`` (``primitive.elementwise``), ``view`` (``stop_gradient``,
  ``broadcast_to``, and a ``reshape`` that only adds or drops leading unit axes),
  ``gather`` (``max_pool2d``, ``avg_pool2d``, ``take_along_axis``: the output at an index
  reads the operands in ``Primitive.gathered`` at other indices) or ``reduction``
  (``reduce_sum/max/min``);
- one thread of the kernel owns one index of the *iteration shape* S, the broadcast of
  the members' output shapes; a member of shape s is evaluated at S's index projected
  onto s (NumPy's right-aligned broadcasting), which is why every role above keeps a
  value's index equal to that projection. A gathered operand must come from outside the
  group (it is read at other indices, so it must already be in memory);
- at most one reduction, whose input shape is S (up to leading unit axes). Members that
  depend on it form the *epilogue*: they are evaluated once per reduction output and
  read only the reduction's output, other epilogue members and values from outside;
- group *outputs* are member values used after the group or returned by the graph.

Nothing here knows about a backend: the NumPy backend runs the nodes one by one and
gets the same numbers; a GPU backend turns each group into one kernel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .core import Graph, Var

if TYPE_CHECKING:  # pragma: no cover
    from .core import Node

__all__ = [
    "FusionGroup",
    "GroupError",
    "analyze_group",
    "fusion_groups",
    "fusion_role",
    "gathered_operands",
    "reshape_role",
    "strip_leading_ones",
]

class GroupError(AssertionError):
    """A set of nodes that cannot run as one kernel (the message says why)."""


def strip_leading_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    i = 0
    while i < len(shape) and shape[i] == 1:
        i += 1
    return tuple(shape[i:])


def fusion_role(node: Node) -> str | None:
    """How ``node`` may take part in a fusion group, or None if it cannot (its primitive's
    declared ``fusion`` role)."""
    return node.primitive.fusion_role(node)


def reshape_role(node: Node) -> str | None:
    """The role of a reshape: a view when it only adds or drops leading unit axes (the
    index projection stays right-aligned), else not fusible."""
    same = strip_leading_ones(node.inputs[0].aval.shape) == strip_leading_ones(node.out.aval.shape)
    return "view" if same else None


def gathered_operands(node: Node) -> tuple[int, ...]:
    """Operand positions read at indices other than the node's own (they must be external)."""
    return node.primitive.gathered


@dataclass
class FusionGroup:
    """One group's structure, as a backend needs it to emit a kernel."""

    gid: int
    nodes: list[Node]
    shape: tuple[int, ...]  # iteration shape S of the prologue
    reduction: Node | None = None
    prologue: list[Node] = field(default_factory=list)
    epilogue: list[Node] = field(default_factory=list)
    inputs: list[Var] = field(default_factory=list)  # external vars read, first use first
    outputs: list[Var] = field(default_factory=list)  # member values needed after the group

    @property
    def kind(self) -> str:
        return "reduction" if self.reduction is not None else "elementwise"

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The epilogue's index space: the reduction's output shape (S without one)."""
        return self.reduction.out.aval.shape if self.reduction is not None else self.shape

    def describe(self) -> str:
        prims = sorted({n.primitive.name for n in self.nodes})
        over = ",".join(map(str, self.shape))
        return f"group {self.gid}: {self.kind} over [{over}], {len(self.nodes)} nodes ({', '.join(prims)})"


def _broadcast(shapes: Iterable[tuple[int, ...]], what: str) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise GroupError(f"{what}: member shapes do not broadcast together") from None


def analyze_group(gid: int, members: list[Node], used_later: set[Var] | None = None) -> FusionGroup:
    """Check that ``members`` (in execution order) form a valid group; return its structure.

    ``used_later``: vars read outside the group (or returned); they become group outputs.
    Ordering (convexity) is not checked here: ``fusion_groups`` and the fuse pass do it."""
    produced = {v: n for n in members for v in n.outputs}
    reductions = [n for n in members if fusion_role(n) == "reduction"]
    for n in members:
        if fusion_role(n) is None:
            raise GroupError(f"group {gid}: {n.primitive.name} cannot be fused")
        for pos in gathered_operands(n):
            if n.inputs[pos] in produced:
                raise GroupError(f"group {gid}: {n.primitive.name} gathers operand {pos} from inside "
                                 "the group; a gathered value must already be in memory")
    if len(reductions) > 1:
        raise GroupError(f"group {gid}: more than one reduction")
    red = reductions[0] if reductions else None
    after: set[Var] = set()  # values that depend on the reduction (epilogue)
    prologue, epilogue = [], []
    for n in members:
        if n is red:
            after.update(n.outputs)
            continue
        if red is not None and any(a in after for a in n.inputs):
            after.update(n.outputs)
            epilogue.append(n)
        else:
            prologue.append(n)
    shapes = [n.out.aval.shape for n in prologue] + ([red.inputs[0].aval.shape] if red is not None else [])
    shape = _broadcast(shapes, f"group {gid}")
    if red is not None:
        r_in = red.inputs[0].aval.shape
        if len(r_in) > len(shape) or (1,) * (len(shape) - len(r_in)) + tuple(r_in) != shape:
            raise GroupError(f"group {gid}: the reduction's input {r_in} must span the whole iteration "
                             f"shape {shape}")
        out = red.out.aval.shape
        pro_vals = {v for n in prologue for v in n.outputs}
        for n in epilogue:
            if _broadcast([n.out.aval.shape, out], f"group {gid} epilogue") != tuple(out):
                raise GroupError(f"group {gid}: epilogue {n.primitive.name} of shape {n.out.aval.shape} "
                                 f"is larger than the reduction's output {out}")
            if any(a in pro_vals for a in n.inputs):
                raise GroupError(f"group {gid}: epilogue {n.primitive.name} reads a value computed "
                                 "before the reduction")
    inputs: list[Var] = []
    seen: set[Var] = set()
    for n in members:
        for a in n.inputs:
            if isinstance(a, Var) and a not in produced and a not in seen:
                seen.add(a)
                inputs.append(a)
    used_later = used_later or set()
    outputs = [v for n in members for v in n.outputs if v in used_later]
    return FusionGroup(gid, list(members), shape, red, prologue, epilogue, inputs, outputs)


def fusion_groups(graph: Graph) -> list[FusionGroup]:
    """The groups of ``graph`` in execution order, checked against the contract above."""
    runs: dict[int, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        g = node.fusion_group
        if g is None:
            continue
        assert isinstance(g, int) and not isinstance(g, bool) and g >= 0, f"fusion_group {g!r} is not an int >= 0"
        runs.setdefault(g, []).append(i)
    for g, idx in runs.items():
        if idx != list(range(idx[0], idx[-1] + 1)):
            raise GroupError(f"group {g}: its nodes are not contiguous in execution order")
    groups = []
    for g, idx in sorted(runs.items(), key=lambda kv: kv[1][0]):
        members = [graph.nodes[i] for i in idx]
        used = _reads_outside(graph, set(idx))
        groups.append(analyze_group(g, members, used))
    return groups


def _reads_outside(graph: Graph, member_idx: set[int]) -> set[Var]:
    used: set[Var] = {a for a in graph.outputs if isinstance(a, Var)}
    for i, node in enumerate(graph.nodes):
        if i not in member_idx:
            used.update(a for a in node.inputs if isinstance(a, Var))
    return used

