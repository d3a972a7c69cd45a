"""Automatic differentiation: interpreters that replay a graph, and the tangent kinds.

- ``replay``: the one graph-replay loop (``replay(graph, builder, interpreter, inputs)``);
- ``jvp``: forward mode, ``jvp_graph`` (values are ``(primal, tangent)`` pairs);
- ``vjp``: reverse mode, ``vjp_graph`` (a forward replay, then the rules in reverse);
- ``tangents``: the tangent kinds (``Zero``, ``Dense``) and the combinators rules use;
- ``rules``: helpers that write a primitive's rules in a line (``defjvp_unary``, ...).

Layering: ops -> ad -> tracing -> ir. Rules are written with traced ops; this package
reaches them through ``tracing.dispatch.numpy_namespace()``, never by importing ``ops``.
"""

from .jvp import jvp_graph
from .replay import Interpreter, bind_node, replay
from .vjp import vjp_graph

__all__ = ["Interpreter", "bind_node", "jvp_graph", "replay", "vjp_graph"]
