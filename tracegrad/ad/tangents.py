"""Tangent kinds behind one protocol, and the combinators JVP rules are written with.

A tangent is a ``Tangent``: the tangent of a primal with abstract value ``aval``, carrying
the JVP's K directions in front (``directions()`` — the one source of truth for the
direction axes, set once per ``jvp_graph``). Two kinds exist today:

- ``Zero``: symbolic; costs nothing, emits no code, and every operation on it is free;
- ``Dense``: a traced array laid out as ``directions() + aval.shape``.

Rules never touch a layout. They combine tangents with ``scale`` (elementwise product
with a primal factor), ``add``, ``neg``, ``select`` (``keep`` when one branch is zero) and
push them through *named* linear maps (``Tangent.map(LinearMap, out)``, see ``linear.py``: ``matmul_left``,
``matmul_right``, ``transpose``, ``reshape``, ``broadcast_to``, ``index``, ``reduce_sum``,
``conv2d_weight``, ...). The base class implements every method by densifying
(``self.dense()``), so a new kind — a low-rank weight tangent ``a bᵀ``, a tangent injected
at an activation — is one subclass that implements ``dense()`` and overrides only what it
can exploit, usually ``map`` for a few map names (``x @ (a bᵀ) = (x @ a) bᵀ``); all
others fall back to the dense array and stay correct.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ir import Aval
from ..tracing.dispatch import numpy_namespace
from ..tracing.tracer import aval_of
from .linear import LinearMap

__all__ = [
    "DENSE",
    "Dense",
    "DenseInput",
    "Tangent",
    "Zero",
    "add",
    "apply",
    "dense",
    "directions",
    "directions_context",
    "instantiate",
    "is_zero",
    "neg",
    "scale",
    "select",
]

_DIRECTIONS: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar("tangent_directions", default=())


def directions() -> tuple[int, ...]:
    """The direction axes every materialized tangent of the current JVP carries in front:
    ``()`` for one direction, ``(K,)`` for K at once."""
    return _DIRECTIONS.get()


class directions_context:
    """``with directions_context((K,)):`` — tangents built inside carry K directions."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(int(d) for d in shape)

    def __enter__(self) -> directions_context:  # noqa: PYI034 - Self needs Python 3.11
        self._token = _DIRECTIONS.set(self.shape)
        return self

    def __exit__(self, *exc: object) -> None:
        _DIRECTIONS.reset(self._token)


def _tnp() -> Any:
    return numpy_namespace()


def _fit(value: Any, out: Aval) -> Dense:
    """``value`` (directions first) broadcast and cast to exactly ``directions() + out.shape``
    and ``out.dtype``, as a ``Dense`` tangent."""
    tnp = _tnp()
    want = directions() + out.shape
    if tuple(np.shape(value)) != want:
        value = tnp.broadcast_to(value, want)
    if np.dtype(getattr(value, "dtype", out.dtype)) != out.dtype:
        value = tnp.astype(value, out.dtype)
    return Dense(value)


class Tangent:
    """The protocol. ``aval`` is the primal's abstract value; every method returns a new
    tangent. Defaults densify (``dense()``); subclasses override what they can exploit."""

    __slots__ = ()
    is_zero = False

    @property
    def aval(self) -> Aval:
        raise NotImplementedError

    def dense(self) -> Any:
        """The tangent as one traced array of shape ``directions() + aval.shape``."""
        raise NotImplementedError

    def aligned(self, ndim: int) -> Any:
        """``dense()`` with unit axes inserted after the direction axes, so the primal part
        right-aligns with a result of ``ndim`` dimensions (NumPy broadcasting)."""
        value = self.dense()
        pad = ndim - len(self.aval.shape)
        nb = len(directions())
        if nb == 0 or pad <= 0:
            return value
        shape = tuple(np.shape(value))
        return _tnp().reshape(value, shape[:nb] + (1,) * pad + shape[nb:])

    def scale(self, factor: Any, out: Aval) -> Tangent:
        """Elementwise ``self * factor`` (a primal array or scalar), shaped like ``out``."""
        if not out.is_float:
            return Zero(out)
        return _fit(self.aligned(len(out.shape)) * factor, out)

    def neg(self) -> Tangent:
        return Dense(-self.dense())

    def add(self, other: Tangent, out: Aval) -> Tangent:
        """``self + other`` (broadcast like the primal operands were), shaped like ``out``."""
        if other.is_zero:
            return self.fit(out)
        nd = len(out.shape)
        return _fit(self.aligned(nd) + other.aligned(nd), out)

    def map(self, lm: LinearMap, out: Aval) -> Tangent:
        """The named linear map ``lm`` applied to this tangent (``out``: the image's aval)."""
        if not out.is_float:
            return Zero(out)
        return _fit(lm.dense(self.dense(), len(directions())), out)

    def keep(self, cond: Any, out: Aval) -> Tangent:
        """``where(cond, self, 0)``: this tangent where the primal-side ``cond`` holds, zero
        elsewhere (a ReLU's JVP). A kind that defers its work may record the condition."""
        if not out.is_float:
            return Zero(out)
        return _fit(_tnp().where(cond, self.aligned(len(out.shape)), out.dtype.type(0)), out)

    def fit(self, out: Aval) -> Tangent:
        """This tangent broadcast/cast to ``out`` (the identity when it already is)."""
        if not out.is_float:
            return Zero(out)
        if self.aval.shape == out.shape and self.aval.dtype == out.dtype:
            return self
        return _fit(self.aligned(len(out.shape)), out)


class Zero(Tangent):
    """The symbolic zero tangent of a value with abstract value ``aval``: free."""

    __slots__ = ("_aval",)
    is_zero = True

    def __init__(self, aval: Aval):
        self._aval = aval

    @property
    def aval(self) -> Aval:
        return self._aval

    def dense(self) -> Any:
        return np.zeros(directions() + self._aval.shape, self._aval.dtype)

    def scale(self, factor: Any, out: Aval) -> Tangent:
        return Zero(out)

    def neg(self) -> Tangent:
        return self

    def add(self, other: Tangent, out: Aval) -> Tangent:
        return other.fit(out)

    def map(self, lm: LinearMap, out: Aval) -> Tangent:
        return Zero(out)

    def fit(self, out: Aval) -> Tangent:
        return Zero(out)

    def __repr__(self) -> str:
        return f"Zero({self._aval})"


class Dense(Tangent):
    """A materialized tangent: ``value.shape == directions() + aval.shape``."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    @property
    def aval(self) -> Aval:
        a = aval_of(self.value)
        return Aval(a.shape[len(directions()):], a.dtype)

    def dense(self) -> Any:
        return self.value

    def neg(self) -> Tangent:
        return Dense(-self.value)

    def __repr__(self) -> str:
        return f"Dense({self.value!r})"


class DenseInput:
    """How a tangent enters a JVP graph: which graph inputs carry it, and the ``Tangent``
    built from them. Dense: one input ``directions + primal shape``. A structured kind
    provides its own (a low-rank kind: the two factors as two inputs)."""

    def input_avals(self, aval: Aval, batch: tuple[int, ...]) -> list[tuple[str, Aval]]:
        """``(name suffix, aval)`` of each graph input carrying the tangent of ``aval``."""
        return [("_dot", Aval(batch + aval.shape, aval.dtype))]

    def build(self, aval: Aval, inputs: list[Any]) -> Tangent:
        """The tangent made of those inputs (tracers of the JVP graph)."""
        return Dense(inputs[0])


DENSE = DenseInput()


# ---------------------------------------------------------------- combinators rules call
def is_zero(t: Tangent) -> bool:
    return t.is_zero


def dense(value: Any) -> Dense:
    """Wrap a traced array laid out as ``directions() + primal shape``."""
    return Dense(value)


def scale(t: Tangent, factor: Any, out: Aval) -> Tangent:
    """Elementwise ``t * factor`` (``factor`` a primal-side array or scalar), shaped like ``out``."""
    return t.scale(factor, out)


def neg(t: Tangent) -> Tangent:
    return t.neg()


def add(out: Aval, *ts: Tangent) -> Tangent:
    """Sum of tangents (broadcast like the primal operands were), shaped like ``out``."""
    live = [t for t in ts if not t.is_zero]
    if not live or not out.is_float:
        return Zero(out)
    if len(live) == 1:
        return live[0].fit(out)
    if all(type(t).add is Tangent.add for t in live):  # all dense: one sum, one fit
        nd = len(out.shape)
        total = live[0].aligned(nd)
        for t in live[1:]:
            total = total + t.aligned(nd)
        return _fit(total, out)
    total = live[0]
    for t in live[1:]:  # a kind that adds structurally (factors side by side) gets the pair
        total = total.add(t, out)
    return total


def select(cond: Any, a: Tangent, b: Tangent, out: Aval) -> Tangent:
    """``where(cond, a, b)`` on tangents; a zero branch costs a typed scalar 0, not an array."""
    if (a.is_zero and b.is_zero) or not out.is_float:
        return Zero(out)
    if b.is_zero:  # the tangent kind decides how (a deferred product records the condition)
        return a.keep(cond, out)
    nd = len(out.shape)
    zero = out.dtype.type(0)
    av = zero if a.is_zero else a.aligned(nd)
    bv = zero if b.is_zero else b.aligned(nd)
    return _fit(_tnp().where(cond, av, bv), out)


def linear(t: Tangent, lm: LinearMap, out: Aval) -> Tangent:
    """``lm`` applied to ``t``: the tangent kind decides how (``Tangent.map``)."""
    return t.map(lm, out)


def apply(t: Tangent, fn: Callable[[Any, int], Any], out: Aval, name: str = "apply") -> Tangent:
    """An anonymous linear map ``fn(value, n_direction_axes) -> value`` (directions stay in
    front): structured kinds can only densify through it, so prefer a named map."""
    return t.map(LinearMap(name, fn), out)


def instantiate(t: Tangent) -> Any:
    """A concrete array for ``t`` (zeros, with the direction axes, for ``Zero``)."""
    return t.dense()
