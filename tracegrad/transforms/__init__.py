"""Graph -> Graph passes only: clean-up (dce, cse, fold), fusion, scheduling, and the
liveness analysis they and the emitter share. The AD interpreters live in ``tracegrad.ad``."""

from __future__ import annotations

from ..ir import Graph
from .cse import cse
from .dce import dce
from .fold import fold
from .fuse import fuse
from .schedule import schedule

__all__ = ["cse", "dce", "fold", "fuse", "optimize", "schedule"]


def optimize(graph: Graph) -> Graph:
    """The standard clean-up pipeline: fold constants, share common subexpressions, drop dead code."""
    return dce(cse(fold(graph)))
