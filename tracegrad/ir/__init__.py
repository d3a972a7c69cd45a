"""The intermediate representation: data only (see ``core``) plus the primitive registry."""

from .core import Atom, Aval, Graph, Literal, Node, SourceInfo, Var, short_dtype
from .primitive import FUSION_ROLES, PRIMITIVES, Primitive, freeze, register

__all__ = [
    "FUSION_ROLES",
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
