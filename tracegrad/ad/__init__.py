"""Automatic differentiation: interpreters that replay a graph, and the tangent kinds.

- ``replay``: the one graph-replay loop (``replay(graph, builder, interpreter, inputs)``);
- ``jvp``: forward mode, ``jvp_graph`` (values are ``(primal, tangent)`` pairs);
- ``vjp``: reverse mode, ``vjp_graph`` (a forward replay, then the rules in reverse);
- ``tangents``: the tangent protocol (``Tangent``; kinds ``Zero``, ``Dense``), the direction
  axes (``directions()``) and the combinators rules use;
- ``lowrank``: the low-rank kind ``LowRank`` (``Ẇ = a bᵀ``) and its input ``LowRankInput``;
- ``linear``: named linear maps (``LinearMap``), which tangent kinds may exploit;
- ``rules``: helpers that write a primitive's rules in a line (``defjvp_unary``, ``defjvp``,
  ``deflinear``, ``defbilinear``, ``defmultilinear``).

Layering: ops -> ad -> tracing -> ir. Rules are written with traced ops; this package
reaches them through ``tracing.dispatch.numpy_namespace()``, never by importing ``ops``.
"""

from .jvp import JVPInterpreter, jvp_graph
from .linear import LinearMap
from .lowrank import LowRank, LowRankInput
from .replay import Interpreter, bind_node, replay
from .tangents import Dense, DenseInput, Tangent, Zero
from .vjp import ForwardInterpreter, vjp_graph

__all__ = ["Dense", "DenseInput", "ForwardInterpreter", "Interpreter", "JVPInterpreter", "LinearMap", "LowRank",
           "LowRankInput", "Tangent", "Zero", "bind_node", "jvp_graph", "replay", "vjp_graph"]
