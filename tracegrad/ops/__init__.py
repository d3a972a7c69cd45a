"""Primitive declarations, one file per family. Importing this package registers them all."""

from . import (  # noqa: F401
    elementwise,
    indexing,
    linalg,
    nn,
    put,
    reductions,
    rounding,
    scans,
    shape,
    transcendental,
)

__all__ = ["elementwise", "indexing", "linalg", "put", "reductions", "rounding", "scans", "shape", "transcendental"]
