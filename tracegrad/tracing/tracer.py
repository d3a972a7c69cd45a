"""Tracers record operations into a ``GraphBuilder``.

A ``Tracer`` stands for an array while a function is traced. Every operation on it —
Python operators, NumPy ufuncs and functions (``__array_ufunc__``,
``__array_function__``), ``tracegrad.numpy`` calls, methods like ``.sum()`` — ends in
``bind(primitive, *args, **params)``, which appends one ``Node`` to the builder that owns
the tracers. With no tracer among the arguments ``bind`` evaluates eagerly with NumPy,
so the same op functions work on plain arrays.

Each tracer belongs to exactly one builder; there is no global trace stack.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._namespace import is_device_array
from ..errors import (
    ConcretizationError,
    ControlFlowError,
    DTypeError,
    TraceError,
    TracegradError,
    UnsupportedOperationError,
)
from ..ir import Aval, Graph, Literal, Node, Primitive, SourceInfo, Var
from .source import user_source

__all__ = ["GraphBuilder", "Tracer", "aval_of", "bind", "is_tracer"]


def aval_of(x: Any) -> Aval:
    """Abstract value of a tracer, array (NumPy or CuPy), NumPy scalar or Python scalar:
    the one leaf-to-aval mapping (``api`` validates arguments with it)."""
    if isinstance(x, Tracer):
        return x.aval
    if isinstance(x, np.ndarray | np.generic) or is_device_array(x):
        return Aval(np.shape(x), x.dtype)
    if isinstance(x, bool):
        return Aval((), np.dtype(bool), weak=True)
    if isinstance(x, int):
        return Aval((), np.dtype(np.int64), weak=True)
    if isinstance(x, float):
        return Aval((), np.dtype(np.float64), weak=True)
    if isinstance(x, complex):
        return Aval((), np.dtype(np.complex128), weak=True)
    raise TypeError(f"not an array or scalar: {type(x).__name__}")


def is_tracer(x: Any) -> bool:
    return isinstance(x, Tracer)


class GraphBuilder:
    """Collects the nodes of one trace and turns them into a ``Graph``."""

    def __init__(self, name: str = "f"):
        self.name = name
        self.inputs: list[Var] = []
        self.input_kinds: list[str] = []
        self.nodes: list[Node] = []
        self._consts: dict[int, Literal] = {}
        self._keep: list[Any] = []  # keeps constant arrays alive so ids stay unique
        self.current_source: SourceInfo | None = None  # set by transforms replaying a graph

    def new_input(self, aval: Aval, hint: str | None = None, kind: str = "primal") -> Tracer:
        var = Var(aval, hint)
        self.inputs.append(var)
        self.input_kinds.append(kind)
        return Tracer(self, var)

    def atom(self, x: Any) -> Var | Literal:
        if isinstance(x, Tracer):
            if x._builder is not self:
                raise TraceError(
                    "a traced value from a different trace was used here",
                    hint="do not keep traced values in globals or across calls; pass them as arguments",
                )
            return x._var
        if isinstance(x, np.ndarray):
            lit = self._consts.get(id(x))
            if lit is None:
                lit = Literal(x, Aval(x.shape, x.dtype))
                self._consts[id(x)] = lit
                self._keep.append(x)
            return lit
        if isinstance(x, np.generic | bool | int | float | complex):
            return Literal(x, aval_of(x))
        raise TypeError(f"cannot use a {type(x).__name__} as an array operand")

    def add_node(self, prim: Primitive, atoms: list[Any], params: dict[str, Any],
                 out_avals: Any, source: SourceInfo | None) -> Any:
        multiple = prim.multiple_results
        avals = tuple(out_avals) if multiple else (out_avals,)
        outs = tuple(Var(a) for a in avals)
        self.nodes.append(Node(prim, tuple(atoms), outs, params, source))
        tracers = [Tracer(self, v) for v in outs]
        return tracers if multiple else tracers[0]

    def build(self, outputs: list[Any]) -> Graph:
        return Graph(list(self.inputs), list(self.nodes), [self.atom(o) for o in outputs],
                     name=self.name, input_kinds=list(self.input_kinds))


def _as_operand(x: Any) -> Any:
    """Accept tracers, arrays and scalars; turn nested lists of numbers into arrays."""
    if isinstance(x, Tracer | np.ndarray | np.generic | bool | int | float | complex):
        return x
    if isinstance(x, list | tuple):
        if any(isinstance(e, Tracer) for e in np.ravel(np.asarray(x, dtype=object))):
            raise UnsupportedOperationError(
                "a list or tuple containing traced values cannot be used as an array",
                source=user_source(), hint="build the array with np.stack([...]) or np.concatenate([...])",
            )
        return np.asarray(x)
    raise DTypeError(
        f"cannot use a value of type {type(x).__name__} as an array operand",
        source=user_source(), hint="pass NumPy arrays or Python numbers",
    )


def bind(prim: Primitive, *args: Any, **params: Any) -> Any:
    """Apply ``prim``: record a node when any argument is a tracer, else compute with NumPy."""
    builder: GraphBuilder | None = None
    for a in args:
        if isinstance(a, Tracer):
            if builder is None:
                builder = a._builder
            elif a._builder is not builder:
                raise TraceError(
                    f"{prim.name} mixes traced values from two different traces",
                    source=user_source(),
                    hint="do not keep traced values in globals or across calls; pass them as arguments",
                )
    args = tuple(_as_operand(a) for a in args)
    if builder is None:
        return prim.impl(*args, **params)
    source = builder.current_source or user_source()
    atoms = [builder.atom(a) for a in args]
    try:
        out_avals = prim.abstract_eval([a.aval for a in atoms], params)
    except TracegradError as err:
        if builder.current_source is not None or err.source is None:
            err.source = source  # a replayed graph knows the original user line
        raise err from None
    return builder.add_node(prim, atoms, params, out_avals, source)


def _tnp() -> Any:
    from .dispatch import numpy_namespace  # tracegrad.numpy, which sits above this layer

    return numpy_namespace()


class Tracer:
    """A traced array. Supports NumPy's operators, ufuncs, array functions and methods."""

    __slots__ = ("_builder", "_var")
    __array_priority__ = 1000

    def __init__(self, builder: GraphBuilder, var: Var):
        self._builder = builder
        self._var = var

    # -- abstract properties -------------------------------------------------------
    @property
    def aval(self) -> Aval:
        return self._var.aval

    @property
    def shape(self) -> tuple[int, ...]:
        return self._var.aval.shape

    @property
    def dtype(self) -> np.dtype:
        return self._var.aval.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self._var.aval.size

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d traced array")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d traced array")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        return f"Tracer<{self.aval}>"

    # -- NumPy protocols -----------------------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        from .dispatch import call_ufunc

        return call_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        from .dispatch import call_function

        return call_function(func, args, kwargs)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise ConcretizationError(
            f"a traced value {self.aval} cannot be converted to a concrete NumPy array while tracing",
            source=user_source(),
            hint="keep the computation in NumPy operations on the traced value "
            "(tracegrad.numpy.array([...]) or np.stack instead of np.array([...]))",
        )

    # -- Python control flow and concrete conversion --------------------------------
    def __bool__(self) -> bool:
        raise ControlFlowError(
            "Python control flow (if/while/and/or/bool) on a traced value is not traceable: "
            "branching on data is decided once at trace time, so the compiled code would be wrong "
            "for other inputs",
            source=user_source(),
            hint="compute both branches and select with np.where(condition, a, b)",
        )

    def _concrete(self, kind: str) -> Any:
        raise ConcretizationError(
            f"a traced value {self.aval} cannot be converted to a Python {kind} while tracing",
            source=user_source(),
            hint="keep it an array (use np.where for data-dependent choices), or make the argument "
            "static with static_argnums",
        )

    def __float__(self) -> float:
        return self._concrete("float")

    def __int__(self) -> int:
        return self._concrete("int")

    def __index__(self) -> int:
        return self._concrete("int (index)")

    def __complex__(self) -> complex:
        return self._concrete("complex")

    def __hash__(self) -> int:
        return id(self)

    # -- operators -----------------------------------------------------------------
    def __add__(self, o): return _tnp().add(self, o)
    def __radd__(self, o): return _tnp().add(o, self)
    def __sub__(self, o): return _tnp().subtract(self, o)
    def __rsub__(self, o): return _tnp().subtract(o, self)
    def __mul__(self, o): return _tnp().multiply(self, o)
    def __rmul__(self, o): return _tnp().multiply(o, self)
    def __truediv__(self, o): return _tnp().divide(self, o)
    def __rtruediv__(self, o): return _tnp().divide(o, self)
    def __pow__(self, o): return _tnp().power(self, o)
    def __rpow__(self, o): return _tnp().power(o, self)
    def __matmul__(self, o): return _tnp().matmul(self, o)
    def __rmatmul__(self, o): return _tnp().matmul(o, self)
    def __neg__(self): return _tnp().negative(self)
    def __pos__(self): return self
    def __abs__(self): return _tnp().abs(self)
    def __lt__(self, o): return _tnp().less(self, o)
    def __le__(self, o): return _tnp().less_equal(self, o)
    def __gt__(self, o): return _tnp().greater(self, o)
    def __ge__(self, o): return _tnp().greater_equal(self, o)
    def __eq__(self, o): return _tnp().equal(self, o)  # type: ignore[override]
    def __ne__(self, o): return _tnp().not_equal(self, o)  # type: ignore[override]
    def __and__(self, o): return _tnp().logical_and(self, o)
    def __rand__(self, o): return _tnp().logical_and(o, self)
    def __or__(self, o): return _tnp().logical_or(self, o)
    def __ror__(self, o): return _tnp().logical_or(o, self)
    def __invert__(self): return _tnp().logical_not(self)
    def __getitem__(self, idx): return _tnp().getitem(self, idx)

    def __setitem__(self, idx: Any, value: Any) -> None:
        raise UnsupportedOperationError(
            "in-place assignment to a traced array (x[...] = v) is not traceable",
            source=user_source(),
            hint="build the result functionally, e.g. with np.where(mask, v, x) or np.concatenate",
        )

    # -- methods -------------------------------------------------------------------
    @property
    def T(self) -> Tracer:
        return _tnp().transpose(self)

    @property
    def mT(self) -> Tracer:
        return _tnp().swapaxes(self, -1, -2)

    def reshape(self, *shape: Any, order: str = "C") -> Tracer:
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        return _tnp().reshape(self, shape, order=order)

    def transpose(self, *axes: Any) -> Tracer:
        if len(axes) == 1 and isinstance(axes[0], tuple | list):
            axes = tuple(axes[0])
        return _tnp().transpose(self, axes or None)

    def swapaxes(self, a: int, b: int) -> Tracer: return _tnp().swapaxes(self, a, b)
    def squeeze(self, axis: Any = None) -> Tracer: return _tnp().squeeze(self, axis)
    def flatten(self) -> Tracer: return _tnp().reshape(self, (-1,))
    def ravel(self) -> Tracer: return _tnp().reshape(self, (-1,))
    def astype(self, dtype: Any, copy: bool = True) -> Tracer: return _tnp().astype(self, dtype)
    def sum(self, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Tracer:
        return _tnp().sum(self, axis=axis, dtype=dtype, keepdims=keepdims)
    def mean(self, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Tracer:
        return _tnp().mean(self, axis=axis, dtype=dtype, keepdims=keepdims)
    def max(self, axis: Any = None, keepdims: bool = False) -> Tracer:
        return _tnp().max(self, axis=axis, keepdims=keepdims)
    def min(self, axis: Any = None, keepdims: bool = False) -> Tracer:
        return _tnp().min(self, axis=axis, keepdims=keepdims)
    def var(self, axis: Any = None, ddof: int = 0, keepdims: bool = False) -> Tracer:
        return _tnp().var(self, axis=axis, ddof=ddof, keepdims=keepdims)
    def std(self, axis: Any = None, ddof: int = 0, keepdims: bool = False) -> Tracer:
        return _tnp().std(self, axis=axis, ddof=ddof, keepdims=keepdims)
    def argmax(self, axis: Any = None, keepdims: bool = False) -> Tracer:
        return _tnp().argmax(self, axis=axis, keepdims=keepdims)
    def argmin(self, axis: Any = None, keepdims: bool = False) -> Tracer:
        return _tnp().argmin(self, axis=axis, keepdims=keepdims)
    def clip(self, a_min: Any = None, a_max: Any = None) -> Tracer:
        return _tnp().clip(self, a_min, a_max)
    def dot(self, other: Any) -> Tracer: return _tnp().dot(self, other)
    # NumPy's other array methods that code commonly calls (issue 10 coverage)
    def round(self, decimals: int = 0) -> Tracer: return _tnp().round(self, decimals)
    def cumsum(self, axis: Any = None, dtype: Any = None) -> Tracer: return _tnp().cumsum(self, axis, dtype)
    def cumprod(self, axis: Any = None, dtype: Any = None) -> Tracer: return _tnp().cumprod(self, axis, dtype)
    def argsort(self, axis: Any = -1, kind: Any = None) -> Tracer: return _tnp().argsort(self, axis, kind)
    def any(self, axis: Any = None, keepdims: bool = False) -> Tracer: return _tnp().any(self, axis, keepdims=keepdims)
    def all(self, axis: Any = None, keepdims: bool = False) -> Tracer: return _tnp().all(self, axis, keepdims=keepdims)
    def repeat(self, repeats: Any, axis: Any = None) -> Tracer: return _tnp().repeat(self, repeats, axis)
    def diagonal(self, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Tracer:
        return _tnp().diagonal(self, offset, axis1, axis2)
    def trace(self, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype: Any = None) -> Tracer:
        return _tnp().trace(self, offset, axis1, axis2, dtype)

    def sort(self, axis: int = -1, kind: Any = None) -> None:
        raise UnsupportedOperationError(
            "x.sort() sorts in place, which a traced array cannot do", source=user_source(),
            hint="use the sorted copy: x = np.sort(x, axis)")
    def copy(self) -> Tracer: return self
