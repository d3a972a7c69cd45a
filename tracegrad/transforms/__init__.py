"""Graph -> Graph transforms: the JVP transform and clean-up passes."""

from .cse import cse
from .dce import dce
from .fold import fold
from .fuse import fuse
from .jvp import jvp_graph
from .schedule import schedule
from .vjp import vjp_graph

__all__ = ["cse", "dce", "fold", "fuse", "jvp_graph", "optimize", "schedule", "vjp_graph"]


def optimize(graph):  # type: ignore[no-untyped-def]
    """The standard clean-up pipeline: fold constants, share common subexpressions, drop dead code."""
    return dce(cse(fold(graph)))
