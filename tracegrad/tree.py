"""Pytrees: nested dicts, lists, tuples and None with array (or scalar) leaves.

Flattening gives a list of leaves plus a hashable ``TreeDef`` that rebuilds the
same structure; the treedef is part of every compile-cache key. Dict keys are
visited in sorted order so equal dicts flatten identically whatever their
insertion order (as in JAX).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "TreeDef",
    "register_dataclass",
    "register_pytree_node",
    "tree_flatten",
    "tree_flatten_signature",
    "tree_leaves",
    "tree_map",
    "tree_structure",
    "tree_unflatten",
]


@dataclass(frozen=True)
class TreeDef:
    """Structure of a pytree. ``kind`` is 'leaf', 'none', 'tuple', 'list', 'dict', 'namedtuple'
    or 'custom' (a registered class: ``keys`` is ``(cls, aux_data)``)."""

    kind: str
    children: tuple[TreeDef, ...] = ()
    keys: tuple[Any, ...] = ()  # dict keys (sorted) or the namedtuple class
    num_leaves: int = 1

    def __repr__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        inner = ", ".join(repr(c) for c in self.children)
        if self.kind == "tuple":
            return f"({inner}{',' if len(self.children) == 1 else ''})"
        if self.kind == "list":
            return f"[{inner}]"
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.keys, self.children)) + "}"
        if self.kind == "custom" and self.keys[1] is not None:
            return f"{self.keys[0].__name__}({inner}; {self.keys[1]!r})"
        return f"{self.keys[0].__name__}({inner})"


_LEAF = TreeDef("leaf")
_NONE = TreeDef("none", num_leaves=0)


# registered classes: cls -> (flatten(obj) -> (children, aux_data), unflatten(aux_data, children) -> obj)
_REGISTRY: dict[type, tuple[Callable[[Any], tuple[Any, Any]], Callable[[Any, Any], Any]]] = {}


def register_pytree_node(cls: type, flatten: Callable[[Any], tuple[Any, Any]],
                         unflatten: Callable[[Any, Any], Any]) -> None:
    """Make instances of ``cls`` pytrees, as ``jax.tree_util.register_pytree_node``:
    ``flatten(obj)`` returns ``(children, aux_data)`` — the children are pytrees, ``aux_data``
    is static and hashable (it is part of compile-cache keys) — and ``unflatten(aux_data,
    children)`` rebuilds the object."""
    if not isinstance(cls, type):
        raise TypeError(f"register_pytree_node expects a class, got {type(cls).__name__}")
    if cls in (tuple, list, dict, type(None)):
        raise ValueError(f"{cls.__name__} is already a pytree node")
    _REGISTRY[cls] = (flatten, unflatten)


def register_dataclass(cls: Any = None, *, data_fields: Any = None, meta_fields: Any = ()) -> Any:
    """Register a dataclass as a pytree (usable as a decorator). ``data_fields`` (default: every
    field not in ``meta_fields``) are the children; ``meta_fields`` are static values that
    become part of the structure (and of compile-cache keys), like ``jax.tree_util.register_dataclass``."""
    import dataclasses

    def register(c: type) -> type:
        if not dataclasses.is_dataclass(c):
            raise TypeError(f"register_dataclass expects a dataclass, got {c!r}")
        meta = tuple(meta_fields)
        data = tuple(data_fields) if data_fields is not None else tuple(
            f.name for f in dataclasses.fields(c) if f.name not in meta)

        def flatten(obj: Any) -> tuple[Any, Any]:
            return [getattr(obj, n) for n in data], tuple(getattr(obj, n) for n in meta)

        def unflatten(aux: Any, children: Any) -> Any:
            obj = object.__new__(c)  # no __init__/__post_init__: children may be tracers
            for n, v in zip(data, children):
                object.__setattr__(obj, n, v)
            for n, v in zip(meta, aux):
                object.__setattr__(obj, n, v)
            return obj

        register_pytree_node(c, flatten, unflatten)
        return c

    return register if cls is None else register(cls)


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _flatten_into(node: Any, leaves: list[Any]) -> TreeDef:
    """Append the leaves of ``node`` to ``leaves`` and return its structure. A module-level
    function, not a closure: a recursive closure is a reference cycle (function -> cell ->
    function) that would keep ``leaves`` — the caller's arrays — alive until the cycle
    collector runs."""
    if node is None:
        return _NONE
    custom = _REGISTRY.get(type(node))
    if custom is not None:
        children, aux = custom[0](node)
        kids = tuple(_flatten_into(c, leaves) for c in children)
        return TreeDef("custom", kids, (type(node), aux), sum(k.num_leaves for k in kids))
    if isinstance(node, dict):
        keys = tuple(sorted(node))
        kids = tuple(_flatten_into(node[k], leaves) for k in keys)
        return TreeDef("dict", kids, keys, sum(k.num_leaves for k in kids))
    if _is_namedtuple(node):
        kids = tuple(_flatten_into(c, leaves) for c in node)
        return TreeDef("namedtuple", kids, (type(node),), sum(k.num_leaves for k in kids))
    if isinstance(node, (tuple, list)):
        kids = tuple(_flatten_into(c, leaves) for c in node)
        kind = "tuple" if isinstance(node, tuple) else "list"
        return TreeDef(kind, kids, (), sum(k.num_leaves for k in kids))
    leaves.append(node)
    return _LEAF


def tree_flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    """Return the leaves of ``tree`` (depth first) and its structure."""
    leaves: list[Any] = []
    treedef = _flatten_into(tree, leaves)
    return leaves, treedef


def _signature_into(node: Any, leaves: list[Any], sig: list[Any]) -> bool:
    """``tree_flatten_signature``'s walk: append leaves and a flat prefix-order encoding of
    the structure and of each leaf's (shape, dtype); False on anything but dicts, lists,
    tuples, None, NumPy arrays and Python scalars."""
    t = type(node)
    if t is np.ndarray:
        leaves.append(node)
        sig.append((node.shape, node.dtype))
        return True
    if t is dict:
        keys = sorted(node)
        sig.append(("dict", tuple(keys)))
        for k in keys:
            v = node[k]
            if type(v) is np.ndarray:  # the usual parameter dict: no call per leaf
                leaves.append(v)
                sig.append((v.shape, v.dtype))
            elif not _signature_into(v, leaves, sig):
                return False
        return True
    if t is tuple or t is list:
        sig.append((t, len(node)))
        for c in node:
            if not _signature_into(c, leaves, sig):
                return False
        return True
    if node is None:
        sig.append(None)
        return True
    if t is float or t is int or t is bool:
        leaves.append(node)
        sig.append(t)
        return True
    return False


def tree_flatten_signature(tree: Any) -> tuple[list[Any], tuple[Any, ...]] | None:
    """The leaves of ``tree`` (in ``tree_flatten``'s order) and a hashable key of its
    structure and every leaf's shape and dtype (type for Python scalars) — the cheap
    per-call cache key of the steady-state paths, built from plain tuples (no ``TreeDef``
    objects to construct or hash). ``None`` when the tree holds anything else (registered
    classes, namedtuples, other array types): callers take their general path then."""
    leaves: list[Any] = []
    sig: list[Any] = []
    if not _signature_into(tree, leaves, sig):
        return None
    return leaves, tuple(sig)


def _build(td: TreeDef, it: Any) -> Any:
    """Rebuild ``td`` taking leaves from iterator ``it`` (module level: no closure cycle)."""
    if td.kind == "leaf":
        return next(it)
    if td.kind == "none":
        return None
    kids = [_build(c, it) for c in td.children]
    if td.kind == "custom":
        return _REGISTRY[td.keys[0]][1](td.keys[1], kids)
    if td.kind == "tuple":
        return tuple(kids)
    if td.kind == "list":
        return kids
    if td.kind == "dict":
        return dict(zip(td.keys, kids))
    return td.keys[0](*kids)


def tree_unflatten(treedef: TreeDef, leaves: Any) -> Any:
    """Rebuild a pytree of structure ``treedef`` from ``leaves`` (an iterable)."""
    it = iter(leaves)
    try:
        out = _build(treedef, it)
    except StopIteration:
        raise ValueError(f"tree_unflatten: too few leaves for structure {treedef!r}") from None
    rest = list(it)
    if rest:
        raise ValueError(f"tree_unflatten: {len(rest)} leaves left over for structure {treedef!r}")
    return out


def tree_leaves(tree: Any) -> list[Any]:
    return tree_flatten(tree)[0]


def tree_structure(tree: Any) -> TreeDef:
    return tree_flatten(tree)[1]


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leafwise to ``tree`` and trees of the same structure ``rest``."""
    leaves, treedef = tree_flatten(tree)
    others = []
    for r in rest:
        r_leaves, r_def = tree_flatten(r)
        if r_def != treedef:
            raise ValueError(f"tree_map: structures differ: {treedef!r} vs {r_def!r}")
        others.append(r_leaves)
    return tree_unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others)])
