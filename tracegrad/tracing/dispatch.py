"""Route NumPy ufuncs and array functions called on tracers to their traced implementations.

The tables are not written here: every primitive declares the NumPy names it answers to
(``Primitive.numpy_names``, registered by ``ops._rules.declare``) and every composite in
``tracegrad.numpy`` registers its own with ``@implements("mean")``. Only registered
functions are traced; anything else raises ``UnsupportedOperationError`` naming the
function (never a silent fallback).

This module sits below the ops in the layering, so it also holds the one link upward
that the tracing layer needs: ``numpy_namespace()``, the ``tracegrad.numpy`` module that
registers itself on import (``Tracer`` operators and the AD rule helpers call through it).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UnsupportedOperationError
from .source import user_source

__all__ = [
    "call_function",
    "call_ufunc",
    "implements",
    "numpy_namespace",
    "register_namespace",
    "register_numpy_name",
    "registered_names",
    "resolve_numpy_name",
]

_UFUNCS: dict[np.ufunc, Callable[..., Any]] = {}
_FUNCTIONS: dict[Any, Callable[..., Any]] = {}
_NAMES: dict[str, Callable[..., Any]] = {}
_NAMESPACE: list[types.ModuleType] = []


def resolve_numpy_name(name: str) -> Any:
    """The NumPy object called ``name`` (``"sin"``, ``"linalg.norm"``); a clear error if absent."""
    obj: Any = np
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"np.{name} does not exist in NumPy {np.__version__}") from None
    return obj


def register_numpy_name(name: str, fn: Callable[..., Any], replace: Callable[..., Any] | None = None) -> None:
    """Route ``np.<name>`` called on a traced value to ``fn`` (in place of ``replace``). Two
    different functions for one name are a declaration bug and raise at import."""
    obj = resolve_numpy_name(name)
    table: dict[Any, Callable[..., Any]] = _UFUNCS if isinstance(obj, np.ufunc) else _FUNCTIONS
    prior = table.get(obj)
    if prior is not None and prior is not fn and prior is not replace:
        raise ValueError(f"np.{name} is registered twice ({prior.__qualname__} and {fn.__qualname__})")
    table[obj] = fn
    _NAMES[name] = fn


def implements(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``fn`` is what ``np.<name>`` does on traced values, for each name."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            register_numpy_name(name, fn)
        return fn

    return register


def registered_names() -> dict[str, Callable[..., Any]]:
    """Every registered NumPy name and its traced implementation (a copy)."""
    return dict(_NAMES)


def register_namespace(module: types.ModuleType) -> None:
    """Called once by ``tracegrad.numpy`` at the end of its import."""
    _NAMESPACE[:] = [module]


def numpy_namespace() -> Any:
    """``tracegrad.numpy``: the traced array functions (registered by that module)."""
    if not _NAMESPACE:
        raise RuntimeError("tracegrad.numpy has not been imported (import tracegrad first)")
    return _NAMESPACE[0]


def _name(obj: Any) -> str:
    """How the user wrote it: ``np.sum``, ``np.linalg.inv`` (a public submodule is kept)."""
    module = getattr(obj, "__module__", None) or "numpy"
    sub = module.split(".")[1] if module.startswith("numpy.") else ""
    prefix = f"np.{sub}." if sub in ("linalg", "fft", "random") else "np."
    return f"{prefix}{getattr(obj, '__name__', repr(obj))}"


def call_ufunc(ufunc: np.ufunc, method: str, inputs: tuple, kwargs: dict) -> Any:
    fn = _UFUNCS.get(ufunc)
    if fn is None:
        raise UnsupportedOperationError(f"{_name(ufunc)} is not supported on traced values",
                                        source=user_source(),
                                        hint="write it with supported tracegrad.numpy functions")
    if method != "__call__":
        raise UnsupportedOperationError(f"{_name(ufunc)}.{method} is not supported on traced values",
                                        source=user_source(), hint="use np.sum / np.max etc. instead")
    dtype = kwargs.pop("dtype", None)
    if kwargs:
        raise UnsupportedOperationError(
            f"{_name(ufunc)} with keyword(s) {', '.join(sorted(kwargs))} is not supported on traced values",
            source=user_source(), hint="traced code is functional: drop out=/where= and use the result")
    out = fn(*inputs)
    if dtype is None:
        return out
    return numpy_namespace().astype(out, dtype)


def call_function(func: Any, args: tuple, kwargs: dict) -> Any:
    fn = _FUNCTIONS.get(func)
    if fn is None:
        raise UnsupportedOperationError(f"{_name(func)} is not supported on traced values",
                                        source=user_source(),
                                        hint="see tracegrad.numpy for the supported functions")
    try:
        return fn(*args, **kwargs)
    except TypeError as err:
        if "unexpected keyword" in str(err) or "positional argument" in str(err):
            raise UnsupportedOperationError(f"{_name(func)}: {err}", source=user_source(),
                                            hint="only the common NumPy arguments are supported") from None
        raise
