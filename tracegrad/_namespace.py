"""Which array library an array belongs to: the one place that asks "is this a device
(CuPy) array?". Detection reads the type's module name, so CuPy is never imported just to
ask the question (``import tracegrad`` must work without it). Imports nothing of tracegrad,
so every layer may use it."""

from __future__ import annotations

import types
from typing import Any

import numpy as np

__all__ = ["array_namespace", "is_device_array"]


def is_device_array(x: Any) -> bool:
    """Whether ``x`` is a CuPy array (or scalar)."""
    return type(x).__module__.split(".")[0] == "cupy"


def array_namespace(*xs: Any) -> types.ModuleType:
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for x in xs:
        if is_device_array(x):
            import cupy

            return cupy
    return np
