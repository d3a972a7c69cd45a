"""tracegrad: a tracing compiler for forward-mode automatic differentiation.

Public API: ``compile``, ``jvp``, ``forward_grad``, ``activity_grad``, ``grad``, ``value_and_grad``,
``jacfwd``, ``jacrev``, ``hessian``, ``custom_jvp``/``custom_vjp`` (user rules), pytree registration and the ``numpy`` namespace. The training stack (``tracegrad.train``, ``nn``, ``optim``, ``data``)
loads on first use, so ``import tracegrad; tracegrad.train.fit(...)`` works while a plain
``import tracegrad`` stays light (no matplotlib, no tqdm).
"""

from . import numpy
from . import ops as _ops  # noqa: F401  (registers every primitive)
from .activity import activity_grad
from .api import Compiled, compile, grad, jvp, value_and_grad
from .custom import custom_jvp, custom_vjp
from .forward_grad import forward_grad
from .ir import Graph
from .jacobians import hessian, jacfwd, jacrev
from .numpy import perturb_point
from .tree import register_dataclass, register_pytree_node


def _viz():
    from . import viz

    return viz


Graph.views = _viz
__version__ = "0.1.0"

_LAZY_SUBMODULES = ("data", "nn", "optim", "train", "viz", "testing")


def __getattr__(name: str) -> object:
    """``tracegrad.train`` etc. without an explicit ``import tracegrad.train`` (PEP 562)."""
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Compiled", "Graph", "__version__", "activity_grad", "compile", "custom_jvp", "custom_vjp", "forward_grad", "grad", "hessian", "jacfwd", "jacrev",
           "jvp", "numpy", "perturb_point", "register_dataclass", "register_pytree_node", "value_and_grad"]
