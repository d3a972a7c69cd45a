"""Find the user's source line that is calling into tracegrad.

Frames inside tracegrad's own package are skipped — decided by path, so a new module is
covered without a list to update — as are NumPy's. Code that ships with tracegrad but
plays the user's part counts as user code: the layers built on the public API — the
example models (``tracegrad/nn/models.py``), optimizers, data, training, the command line
and ``tracegrad.testing`` — whose lines are what a user wants to see.
"""

from __future__ import annotations

import functools
import linecache
import os
import sys
from typing import Any

import numpy as np

from ..errors import set_locator
from ..ir import SourceInfo

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# tracegrad code that counts as the user's: model definitions and everything built on the API
_USER_PARTS = tuple(_PKG + p for p in (os.path.join("nn", "models.py"), "optim" + os.sep, "train" + os.sep,
                                       "data" + os.sep, "cli.py", "__main__.py", "testing.py"))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__)) + os.sep


@functools.lru_cache(maxsize=4096)
def _is_internal(filename: str) -> bool:
    if filename.startswith("<"):
        return filename.startswith(("<tracegrad", "<__array_function__"))
    path = os.path.abspath(filename)
    if path.startswith(_NUMPY_DIR):
        return True
    return path.startswith(_PKG) and not path.startswith(_USER_PARTS)


def user_source(depth: int = 1) -> SourceInfo | None:
    """The innermost frame outside tracegrad's machinery, as a ``SourceInfo``."""
    return user_frame_source(sys._getframe(depth))


def user_frame_source(frame: Any) -> SourceInfo | None:
    """The innermost frame at or above ``frame`` that is user code."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _is_internal(filename):
            lineno = frame.f_lineno
            return SourceInfo(filename, lineno, frame.f_code.co_name, linecache.getline(filename, lineno))
        frame = frame.f_back
    return None


set_locator(user_source)
