"""Primitive declarations, one file per family. Importing this package registers them all."""

from . import (
    decompositions,
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

__all__ = ["decompositions", "elementwise", "indexing", "linalg", "nn", "put", "reductions", "rounding", "scans",
           "shape", "transcendental"]
