"""Tangent values for the JVP transform, and the combinators JVP rules are written with.

A tangent is either ``Zero`` (symbolic: costs nothing, emits no code) or ``Dense``: a
traced array holding ``nbatch`` leading direction axes followed by the primal's shape
(``nbatch`` is 1 when K directions ride along in one execution). JVP rules never touch
that layout directly; they use the combinators below (``scale``, ``add``, ``select``,
``apply``), so a new tangent representation (for example a low-rank factorization of a
weight tangent) only has to implement these, plus special cases in the few rules that
can exploit it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ir import Aval
from ..tracing.dispatch import numpy_namespace

__all__ = [
    "Dense",
    "Tangent",
    "Zero",
    "add",
    "apply",
    "batch_context",
    "batch_shape",
    "dense",
    "instantiate",
    "is_zero",
    "neg",
    "scale",
    "select",
]

_BATCH: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar("tangent_batch", default=())


def _tnp() -> Any:
    return numpy_namespace()


class Zero:
    """The symbolic zero tangent of a value with abstract value ``aval``."""

    __slots__ = ("aval",)

    def __init__(self, aval: Aval):
        self.aval = aval

    def __repr__(self) -> str:
        return f"Zero({self.aval})"


class Dense:
    """A materialized tangent: ``value.shape == batch_shape + primal.shape``."""

    __slots__ = ("nbatch", "value")

    def __init__(self, value: Any, nbatch: int):
        self.value = value
        self.nbatch = nbatch

    @property
    def core_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.value))[self.nbatch:]

    def __repr__(self) -> str:
        return f"Dense({self.value!r}, nbatch={self.nbatch})"


Tangent = Zero | Dense


def is_zero(t: Any) -> bool:
    return isinstance(t, Zero)


def batch_shape() -> tuple[int, ...]:
    """The direction axes that every dense tangent of the current JVP carries in front."""
    return _BATCH.get()


class batch_context:
    """``with batch_context((K,)):`` — tangents built inside carry K directions."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def __enter__(self) -> batch_context:  # noqa: PYI034 - Self needs Python 3.11
        self._token = _BATCH.set(self.shape)
        return self

    def __exit__(self, *exc: object) -> None:
        _BATCH.reset(self._token)


def dense(value: Any) -> Dense:
    """Wrap a traced array laid out as ``batch_shape() + primal shape``."""
    return Dense(value, len(batch_shape()))


def _align(t: Dense, out_ndim: int) -> Any:
    """Insert unit axes after the batch axes so the core shape right-aligns with ``out_ndim``."""
    core = t.core_shape
    pad = out_ndim - len(core)
    if t.nbatch == 0 or pad <= 0:
        return t.value
    shape = tuple(np.shape(t.value))
    return _tnp().reshape(t.value, shape[: t.nbatch] + (1,) * pad + core)


def _fit(value: Any, nbatch: int, out: Aval) -> Dense:
    """Broadcast/cast ``value`` to exactly ``batch + out.shape`` and ``out.dtype``."""
    tnp = _tnp()
    want = tuple(np.shape(value))[:nbatch] + out.shape
    if tuple(np.shape(value)) != want:
        value = tnp.broadcast_to(value, want)
    if np.dtype(getattr(value, "dtype", out.dtype)) != out.dtype:
        value = tnp.astype(value, out.dtype)
    return Dense(value, nbatch)


def scale(t: Tangent, factor: Any, out: Aval) -> Tangent:
    """Elementwise ``t * factor`` (``factor`` a primal-side array or scalar), shaped like ``out``."""
    if isinstance(t, Zero) or not out.is_float:
        return Zero(out)
    return _fit(_align(t, len(out.shape)) * factor, t.nbatch, out)


def neg(t: Tangent) -> Tangent:
    if isinstance(t, Zero):
        return t
    return Dense(-t.value, t.nbatch)


def add(out: Aval, *ts: Tangent) -> Tangent:
    """Sum of tangents (broadcast like the primal operands were), shaped like ``out``."""
    live = [t for t in ts if not isinstance(t, Zero)]
    if not live or not out.is_float:
        return Zero(out)
    nb = live[0].nbatch
    total = _align(live[0], len(out.shape))
    for t in live[1:]:
        total = total + _align(t, len(out.shape))
    return _fit(total, nb, out)


def select(cond: Any, a: Tangent, b: Tangent, out: Aval) -> Tangent:
    """``where(cond, a, b)`` on tangents; a zero branch costs a scalar 0, not an array."""
    if (isinstance(a, Zero) and isinstance(b, Zero)) or not out.is_float:
        return Zero(out)
    tnp = _tnp()
    live = a if not isinstance(a, Zero) else b
    nd = len(out.shape)
    av = _align(a, nd) if not isinstance(a, Zero) else np.zeros((), out.dtype)
    bv = _align(b, nd) if not isinstance(b, Zero) else np.zeros((), out.dtype)
    return _fit(tnp.where(cond, av, bv), live.nbatch, out)


def apply(t: Tangent, fn: Callable[[Any, int], Any], out: Aval) -> Tangent:
    """Apply a linear, shape-changing map to a tangent: ``fn(value, nbatch) -> value``.

    ``fn`` sees the value with its ``nbatch`` leading direction axes and must keep them in
    front (shift axis arguments by ``nbatch``)."""
    if isinstance(t, Zero) or not out.is_float:
        return Zero(out)
    return _fit(fn(t.value, t.nbatch), t.nbatch, out)


def instantiate(t: Tangent) -> Any:
    """A concrete array for ``t``; zeros (with the current batch axes) for ``Zero``."""
    if isinstance(t, Zero):
        return np.zeros(batch_shape() + t.aval.shape, t.aval.dtype)
    return t.value
