"""Primitive declarations, one file per family. Importing this package registers them all."""

from . import decompositions, elementwise, indexing, linalg, nn, reductions, shape  # noqa: F401

__all__ = ["decompositions", "elementwise", "indexing", "linalg", "reductions", "shape"]
