"""The VJP transform (reverse mode): primal graph -> one graph computing outputs and gradients.

Like ``jvp_graph`` it replays the primal graph on tracers of a new ``GraphBuilder`` — the
forward pass — and then walks the nodes backwards, calling each primitive's ``vjp`` rule
with the cotangent of its output. Rules are written with the same traceable ops, so the
backward pass lands in the same builder and the result is one ordinary graph that the
usual passes (fold, cse, dce) clean up and the usual backends compile: the forward values
the backward pass reads stay alive, everything else is freed after its last use.

Only *active* values get cotangents: float values that depend on a differentiated input
through differentiable primitives. Integer and boolean values, literals, data inputs and the
outputs of non-differentiable primitives (comparisons, ``stop_gradient``, ...) are symbolic
zeros that emit nothing. A rule may compute a cotangent for an operand that turns out not
to need one (``x @ W`` with ``x`` data); it is dropped here, and dead-code elimination
removes whatever computed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import GradientError
from ..ir import Aval, Graph, Literal, Node, Var
from ..tracing.dispatch import numpy_namespace
from ..tracing.tracer import GraphBuilder, Tracer, aval_of
from .replay import bind_node, replay

__all__ = ["ForwardInterpreter", "vjp_graph"]


class ForwardInterpreter:
    """The forward pass of reverse mode: the primal computation, recording which values
    are *active* (depend on a differentiated input through differentiable primitives)."""

    def __init__(self, active: set[Var]):
        self.active = active

    def literal(self, lit: Literal) -> Any:
        return lit.value

    def node(self, node: Node, values: list[Any]) -> list[Any]:
        if node.primitive.differentiable and any(a in self.active for a in node.inputs if isinstance(a, Var)):
            self.active.update(v for v in node.outputs if v.aval.is_float)
        return bind_node(node, values)


def vjp_graph(graph: Graph, wrt: Sequence[bool], *, cotangent_inputs: bool = False) -> Graph:
    """Build the fused value-and-gradient graph.

    Inputs of the result: the primal inputs; with ``cotangent_inputs=True`` also one
    cotangent input (kind ``"cotangent"``) per float output. Outputs: the primal outputs,
    then one gradient per ``True`` in ``wrt`` (shaped and typed like that input). Without
    cotangent inputs the graph must have one scalar float output, seeded with 1, so the
    gradients are those of that scalar; with them, the gradients are vector-Jacobian products.
    """
    if len(wrt) != len(graph.inputs):
        raise ValueError("wrt must have one entry per graph input")
    for v, wanted in zip(graph.inputs, wrt):
        if wanted and not v.aval.is_float:
            raise GradientError(f"input {v.hint or ''} of dtype {v.aval.dtype} cannot be differentiated",
                                hint="only floating-point inputs have gradients")
    if not cotangent_inputs:
        _check_scalar_output(graph)
    builder = GraphBuilder(graph.name + "_vjp")
    inputs = [builder.new_input(v.aval, v.hint, "primal") for v in graph.inputs]
    active: set[Var] = {v for v, wanted in zip(graph.inputs, wrt) if wanted}
    read = replay(graph, builder, ForwardInterpreter(active), inputs)

    # seeds: d(output)/d(output) = 1, or the given cotangents
    cts: dict[Var, Any] = {}
    for a in graph.outputs:
        if not (isinstance(a, Var) and a.aval.is_float):
            continue
        if cotangent_inputs:
            seed = builder.new_input(a.aval, None, "cotangent")
        else:
            seed = a.aval.dtype.type(1)
        if a in active:
            _accumulate(cts, a, seed, None)

    # backward pass: nodes in reverse, each turning its output cotangents into operand ones
    for node in reversed(graph.nodes):
        out_cts = [cts.pop(v, None) for v in node.outputs]
        if all(c is None for c in out_cts):
            continue
        prim = node.primitive
        if prim.vjp is None:
            raise NotImplementedError(f"primitive {prim.name!r} has no VJP rule (reverse mode)")
        builder.current_source = node.source
        outs = [read(v) for v in node.outputs]
        if prim.multiple_results:
            out_cts = [np.zeros(v.aval.shape, v.aval.dtype) if c is None else c
                       for v, c in zip(node.outputs, out_cts)]
            in_cts = prim.vjp(out_cts, [read(a) for a in node.inputs], outs, **node.params)
        else:
            in_cts = prim.vjp(out_cts[0], [read(a) for a in node.inputs], outs[0], **node.params)
        for a, ct in zip(node.inputs, in_cts):
            if ct is not None and isinstance(a, Var) and a in active:
                _accumulate(cts, a, ct, prim.name)
    builder.current_source = None

    grads = []
    for v, wanted in zip(graph.inputs, wrt):
        if wanted:  # an input the output does not depend on has a zero gradient
            grads.append(cts[v] if v in cts else np.zeros(v.aval.shape, v.aval.dtype))
    return builder.build([read(a) for a in graph.outputs] + grads)


def _accumulate(cts: dict[Var, Any], v: Var, ct: Any, prim: str | None) -> None:
    """Add ``ct`` into ``v``'s cotangent, cast to ``v``'s dtype (a float32 input of a float64
    operation gets a float32 gradient)."""
    tnp = numpy_namespace()
    got = aval_of(ct)
    if got.shape != v.aval.shape:
        raise AssertionError(f"the VJP rule of {prim} returned a cotangent of shape {got.shape} for an "
                             f"operand of shape {v.aval.shape}")
    if got.dtype != v.aval.dtype or (got.weak and not v.aval.weak):
        ct = tnp.astype(ct, v.aval.dtype) if isinstance(ct, Tracer) else np.asarray(ct, v.aval.dtype)
    cts[v] = tnp.add(cts[v], ct) if v in cts else ct


def _check_scalar_output(graph: Graph) -> None:
    """Reverse mode from a scalar seed needs exactly one scalar float output."""
    if len(graph.outputs) != 1:
        raise GradientError(f"gradients need a function with one scalar output; {graph.name} has "
                            f"{len(graph.outputs)} outputs", hint="return a single scalar (e.g. the loss)")
    (out,) = graph.outputs
    aval: Aval = out.aval
    if aval.shape != () or not aval.is_float:
        source = None
        if isinstance(out, Var):
            source = next((n.source for n in graph.nodes if out in n.outputs), None)
        what = f"an array of shape {aval.shape}" if aval.shape != () else f"a value of dtype {aval.dtype}"
        raise GradientError(
            f"gradients need a function returning a scalar float, but {graph.name} returns {what}",
            source=source,
            hint="reduce the output to a scalar, e.g. return np.sum(y) or np.mean(loss)"
            if aval.shape != () else "return a floating-point value (cast with .astype(np.float64))")
