"""The one graph-replay loop every interpreter shares (autodidax's ``eval_jaxpr``).

``replay(graph, builder, interpreter, inputs)`` walks ``graph.nodes`` in order, reads each
node's operands from an environment, asks the interpreter for the node's output values and
binds them. What a "value" is belongs to the interpreter: a tracer of the new graph for
the forward pass of reverse mode, a ``(primal, tangent)`` pair for the JVP, a tracer plus
an injected tangent for activity perturbation. Whatever the interpreter computes with
traced ops lands in ``builder``, stamped with the replayed node's user source line, so
errors in a transformed graph still name the user's code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..ir import Atom, Graph, Literal, Node, Var
from ..tracing.tracer import GraphBuilder, bind

__all__ = ["Interpreter", "bind_node", "replay"]


class Interpreter(Protocol):
    """What ``replay`` needs from an interpretation of the primitives."""

    def literal(self, lit: Literal) -> Any:
        """The value of a constant operand."""

    def node(self, node: Node, values: list[Any]) -> Sequence[Any]:
        """The values of ``node``'s outputs, given its operands' values (one per output)."""


def bind_node(node: Node, operands: Sequence[Any]) -> list[Any]:
    """Apply ``node``'s primitive with its params to new operands; a list of its outputs."""
    outs = bind(node.primitive, *operands, **node.params)
    return list(outs) if node.primitive.multiple_results else [outs]


def replay(graph: Graph, builder: GraphBuilder, interpreter: Interpreter,
           inputs: Sequence[Any]) -> Callable[[Atom], Any]:
    """Replay ``graph`` with ``inputs`` (one value per graph input); returns ``read``, which
    gives the value of any atom of ``graph`` (an output, or any node's output)."""
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"replay: graph {graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[Var, Any] = dict(zip(graph.inputs, inputs))

    def read(a: Atom) -> Any:
        return env[a] if isinstance(a, Var) else interpreter.literal(a)

    for node in graph.nodes:
        builder.current_source = node.source
        outs = interpreter.node(node, [read(a) for a in node.inputs])
        env.update(zip(node.outputs, outs))
    builder.current_source = None
    return read
