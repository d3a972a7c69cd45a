"""The intermediate representation: data only (see ``core``) plus the primitive registry."""

from .core import Atom, Aval, Graph, Literal, Node, SourceInfo, Var, short_dtype
from .primitive import PRIMITIVES, Primitive, freeze, register

__all__ = [
    "Atom", "Aval", "Graph", "Literal", "Node", "SourceInfo", "Var", "short_dtype",
    "PRIMITIVES", "Primitive", "freeze", "register",
]
