"""tracegrad: a tracing compiler for forward-mode automatic differentiation.

Public API: ``compile``, ``jvp``, ``forward_grad``, ``grad``, ``value_and_grad``,
``jacfwd``, ``jacrev``, ``hessian``, pytree registration and the ``numpy`` namespace.
"""

from . import numpy
from . import ops as _ops  # noqa: F401  (registers every primitive)
from .api import Compiled, compile, grad, jvp, value_and_grad
from .forward_grad import forward_grad
from .ir import Graph
from .jacobians import hessian, jacfwd, jacrev
from .tree import register_dataclass, register_pytree_node

__version__ = "0.1.0"
__all__ = ["Compiled", "Graph", "__version__", "compile", "forward_grad", "grad", "hessian", "jacfwd", "jacrev",
           "jvp", "numpy", "register_dataclass", "register_pytree_node", "value_and_grad"]
