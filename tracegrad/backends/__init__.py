"""Backends lower graphs to executable code. ``get_backend(name)``; CuPy is imported lazily."""

from __future__ import annotations

from typing import Any

from ..errors import BackendUnavailableError
from .base import Executable

__all__ = ["Executable", "get_backend", "BACKENDS"]

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
