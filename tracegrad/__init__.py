"""tracegrad: a tracing compiler for forward-mode automatic differentiation.

Public API: ``compile``, ``jvp``, ``forward_grad``, ``grad``, ``value_and_grad`` and the
``numpy`` namespace.
"""

from . import numpy
from . import ops as _ops  # noqa: F401  (registers every primitive)
from .api import Compiled, compile, grad, jvp, value_and_grad
from .forward_grad import forward_grad
from .ir import Graph


def _viz():
    from . import viz

    return viz


Graph.views = _viz
__version__ = "0.1.0"
__all__ = ["Compiled", "Graph", "__version__", "compile", "forward_grad", "grad", "jvp", "numpy", "value_and_grad"]
