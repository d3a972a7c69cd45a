"""Side effects of a traced function, which tracing would otherwise get silently wrong.

A compiled function runs the user's Python once per input signature; later calls run the
generated code. So anything the Python did besides computing its outputs happens once:

- **Random draws** (``np.random.rand``, ``rng.normal``, ``np.random.permutation``, ...)
  would be drawn at trace time and baked in as constants, so every call would reuse the
  same "random" numbers (the same dropout mask, the same noise). ``no_random_draws``
  watches the trace and raises a ``TraceError`` naming the line. The supported way is to
  draw outside and pass the noise (or mask) in as an argument, fresh for every call.
- **Leaked tracers**: a traced value stored into something that outlives the call (a
  global, a closure, an attribute, a dict passed in) is a placeholder, and the store is
  skipped on cached calls. ``check_leaks`` warns at the end of the trace, naming the line
  that computed the value; any later use of it raises (``tracer.leaked_error``).
- **Changed argument containers** (``params["w"] = ...`` on a dict argument) would change
  the caller's dict under NumPy but not under tracegrad: ``check_arguments_unchanged``
  raises.
"""

from __future__ import annotations

import functools
import gc
import linecache
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import TraceError
from ..ir import SourceInfo
from .source import user_frame_source
from .tracer import GraphBuilder, Tracer

__all__ = ["LeakedTracerWarning", "check_arguments_unchanged", "check_leaks", "no_random_draws", "user_frame_source"]

_RANDOM_TYPES = (np.random.RandomState, np.random.Generator)
_lock = threading.Lock()
_active: dict[int, list[list[tuple[str, SourceInfo | None]]]] = {}  # thread id -> open traces
_originals: dict[str, Any] = {}


class LeakedTracerWarning(UserWarning):
    """A traced value outlived the trace that made it (stored outside the function)."""


def _record(name: str) -> None:
    stacks = _active.get(threading.get_ident())
    if stacks and not stacks[-1]:
        stacks[-1].append((name, user_frame_source(sys._getframe(2))))


def _watch(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def watched(*args: Any, **kwargs: Any) -> Any:
        if name != "default_rng" or (not args or args[0] is None) and kwargs.get("seed") is None:
            _record(f"np.random.{name}")  # default_rng(seed) gives the same numbers each call: fine
        return fn(*args, **kwargs)

    return watched


def _patch() -> None:
    """Route the module-level np.random functions through ``_watch`` (restored by ``_unpatch``)."""
    for name in dir(np.random):
        obj = getattr(np.random, name)
        if (isinstance(getattr(obj, "__self__", None), np.random.RandomState) and name not in ("get_state",)) \
                or name == "default_rng":
            _originals[name] = obj
            setattr(np.random, name, _watch(name, obj))


def _unpatch() -> None:
    for name, obj in _originals.items():
        setattr(np.random, name, obj)
    _originals.clear()


def _reachable_generators(fn: Any) -> list[Any]:
    """NumPy random generators the function can name: globals its code (and nested code)
    mentions, closure cells, defaults, and the attributes of ``self`` for a bound method."""
    found: dict[int, Any] = {}
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, _RANDOM_TYPES):
            found[id(obj)] = obj
            return
        if isinstance(obj, functools.partial):
            visit(obj.func, depth + 1)
            return
        self_ = getattr(obj, "__self__", None)
        if self_ is not None and not isinstance(self_, type(np)):
            for v in getattr(self_, "__dict__", {}).values():
                visit(v, depth + 1)
        func = getattr(obj, "__func__", obj)
        code = getattr(func, "__code__", None)
        if code is None:
            if depth == 0 and callable(obj) and hasattr(obj, "__dict__"):  # a callable object
                for v in vars(obj).values():
                    visit(v, depth + 1)
                call = vars(type(obj)).get("__call__")
                if call is not None and hasattr(call, "__code__"):
                    visit(call.__get__(obj), depth + 1)
            return
        glb = getattr(func, "__globals__", {})
        stack = [code]
        while stack:
            c = stack.pop()
            for name in c.co_names:
                if name in glb:
                    v = glb[name]
                    if isinstance(v, _RANDOM_TYPES):
                        found[id(v)] = v
                    elif callable(v) and getattr(v, "__module__", None) == getattr(func, "__module__", 0):
                        visit(v, depth + 1)  # helper functions of the same module
            stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
        for cell in getattr(func, "__closure__", None) or ():
            try:
                visit(cell.cell_contents, depth + 1)
            except ValueError:
                pass
        for v in getattr(func, "__defaults__", None) or ():
            visit(v, depth + 1)

    visit(fn, 0)
    return list(found.values())


def _state_of(g: Any) -> Any:
    bg = g.bit_generator if isinstance(g, np.random.Generator) else g._bit_generator
    return repr(bg.state)


@contextmanager
def no_random_draws(fn: Any, fn_name: str) -> Iterator[None]:
    """Raise if the traced function draws random numbers from NumPy (see module doc).

    Calls of the module-level ``np.random`` functions are seen as they happen (with the
    line); draws from generators the function can name (a module-level ``rng``, a closure,
    ``self.rng``) and from the global RandomState are seen by their state changing."""
    generators = _reachable_generators(fn)
    before = [_state_of(g) for g in generators]
    global_before = repr(np.random.get_state(legacy=False))
    found: list[tuple[str, SourceInfo | None]] = []
    tid = threading.get_ident()
    with _lock:
        if not _active:
            _patch()
        _active.setdefault(tid, []).append(found)
    try:
        yield
    finally:
        with _lock:
            _active[tid].pop()
            if not _active[tid]:
                del _active[tid]
            if not _active:
                _unpatch()
    if not found:
        for g, b in zip(generators, before):
            if _state_of(g) != b:
                found.append((f"a {type(g).__name__} the function uses", None))
                break
        else:
            if repr(np.random.get_state(legacy=False)) != global_before:
                found.append(("np.random's global state", None))
    if found:
        name, source = found[0]
        if source is None:
            code = getattr(getattr(fn, "__func__", fn), "__code__", None)
            if code is not None:
                line = linecache.getline(code.co_filename, code.co_firstlineno)
                source = SourceInfo(code.co_filename, code.co_firstlineno, code.co_name, line)
        raise TraceError(
            f"'{fn_name}' draws random numbers ({name}) while it is traced: the draw would happen once, "
            "at trace time, and every call of the compiled function would reuse the same numbers "
            "(the same dropout mask, the same noise)",
            source=source,
            hint="draw outside the compiled function and pass the noise or mask in as an argument, "
            "fresh for every call (e.g. f(x, mask=rng.random(x.shape) < p) with a seeded "
            "rng = np.random.default_rng(seed))")


def check_arguments_unchanged(dynamic: Any, inputs: Sequence[Tracer], fn_name: str) -> None:
    """Raise if the function stored into the containers it was given as arguments."""
    from ..tree import tree_flatten

    try:
        leaves, _ = tree_flatten(dynamic)
    except Exception:  # noqa: BLE001 - a container changed into something unflattenable
        leaves = None
    if leaves is not None and len(leaves) == len(inputs) and all(a is b for a, b in zip(leaves, inputs)):
        return
    raise TraceError(
        f"'{fn_name}' changed a container it got as an argument (e.g. params['w'] = ... or "
        "state.append(...)): under NumPy the caller's container would change, but a compiled "
        "function gets a copy of the structure and the change is lost (and skipped on cached calls)",
        hint="return the new values instead (e.g. return loss, {**params, 'w': new_w}) and update "
        "the caller's container with the result")


def check_leaks(builder: GraphBuilder, keep: Sequence[Any]) -> None:
    """Warn when traced values outlive the trace other than the inputs and outputs."""
    if builder.tracked is None:
        return
    kept: set[int] = set()
    stack = [t for t in keep if isinstance(t, Tracer)]
    while stack:
        t = stack.pop()
        if id(t) in kept:
            continue
        kept.add(id(t))
        if t._view is not None:
            stack.append(t._view[1])
    leaked = [t for t in builder.tracked if id(t) not in kept]
    if leaked:
        del leaked
        gc.collect()  # tracers held only by reference cycles of dead objects are not leaks
        leaked = [t for t in builder.tracked if id(t) not in kept]
    if not leaked:
        return
    source = None
    for t in leaked:
        source = builder.source_of(t._v)
        if source is not None:
            break
    where = f" (one was computed at {source.filename}:{source.lineno}: {source.line.strip()})" \
        if source is not None and source.line else ""
    at = user_frame_source(sys._getframe(1))
    warnings.warn_explicit(LeakedTracerWarning(
        f"'{builder.name}' stored {len(leaked)} traced value(s) outside the function{where}: in a "
        "global, a closure, an object attribute or a container passed in. They are placeholders, "
        "not numbers, and the store happens only while tracing, not on later (cached) calls; "
        "using them later raises. Return such values from the function instead."),
        LeakedTracerWarning, at.filename if at else "<tracegrad>", at.lineno if at else 0)
