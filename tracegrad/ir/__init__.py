"""The intermediate representation: data only (see ``core``) plus the primitive registry."""

from .core import Atom, Aval, Graph, Literal, Node, SourceInfo, Var, short_dtype
from .primitive import PRIMITIVES, Primitive, freeze, register

__all__ = [
    "PRIMITIVES",
    "Atom",
    "Aval",
    "Graph",
    "Literal",
    "Node",
    "Primitive",
    "SourceInfo",
    "Var",
    "freeze",
    "register",
    "short_dtype",
]
