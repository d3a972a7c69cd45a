"""Find the user's source line that is calling into tracegrad.

Frames inside tracegrad's machinery (tracing, ops, transforms, ...) and inside NumPy
are skipped, as is the thin ``tracegrad/nn/functional.py`` layer; model code that ships
with tracegrad (``tracegrad/nn/models.py``) counts as user code.
"""

from __future__ import annotations

import functools
import linecache
import os
import sys

import numpy as np

from ..ir import SourceInfo

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INTERNAL_DIRS = tuple(
    os.path.join(_PKG, d) + os.sep for d in ("tracing", "ops", "ir", "transforms", "backends", "viz")
)
_INTERNAL_FILES = tuple(os.path.join(_PKG, f) for f in (
    "numpy.py", "api.py", "forward_grad.py", "tree.py", os.path.join("nn", "functional.py")))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__)) + os.sep


@functools.lru_cache(maxsize=4096)
def _is_internal(filename: str) -> bool:
    path = os.path.abspath(filename) if not filename.startswith("<") else filename
    return (
        path.startswith(_INTERNAL_DIRS) or path in _INTERNAL_FILES or path.startswith((_NUMPY_DIR, "<tracegrad", "<__array_function__"))
    )


def user_source(depth: int = 1) -> SourceInfo | None:
    """The innermost frame outside tracegrad's machinery, as a ``SourceInfo``."""
    frame = sys._getframe(depth)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_internal(filename):
            lineno = frame.f_lineno
            return SourceInfo(filename, lineno, frame.f_code.co_name, linecache.getline(filename, lineno))
        frame = frame.f_back
    return None
