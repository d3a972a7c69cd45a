"""Backends lower graphs to executable code. ``get_backend(name)``; CuPy is imported lazily."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._namespace import is_device_array
from ..errors import BackendUnavailableError
from .base import Executable

__all__ = ["BACKENDS", "Executable", "get_backend", "to_device", "to_host"]

BACKENDS = ("numpy", "cupy")
_instances: dict[str, Any] = {}


def get_backend(name: str) -> Any:
    if name not in _instances:
        if name == "numpy":
            from .numpy_backend import NumpyBackend

            _instances[name] = NumpyBackend()
        elif name == "cupy":
            from .cupy_backend import CupyBackend  # imports CuPy; a clear error without it

            _instances[name] = CupyBackend()
        else:
            raise BackendUnavailableError(
                f"unknown backend {name!r}; available: {', '.join(BACKENDS)}",
                hint="use backend='numpy'")
    return _instances[name]


def to_host(tree: Any) -> Any:
    """A pytree with every CuPy array copied to a NumPy array (other leaves unchanged)."""
    from ..tree import tree_map

    return tree_map(lambda x: x.get() if is_device_array(x) else x, tree)


def to_device(tree: Any, backend: str = "cupy") -> Any:
    """A pytree with every NumPy array moved to ``backend``'s device, once (other leaves
    unchanged); the identity for ``backend="numpy"``."""
    from ..tree import tree_map

    if backend == "numpy":
        return tree
    cp = get_backend(backend).cp
    return tree_map(lambda x: cp.asarray(x) if isinstance(x, np.ndarray) else x, tree)
