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

import functools
import weakref
from typing import Any

import numpy as np

from .._namespace import is_device_array
from ..errors import (
    ConcretizationError,
    ControlFlowError,
    DTypeError,
    ShapeError,
    TraceError,
    TracegradError,
    UnsupportedOperationError,
)
from ..ir import Aval, Graph, Literal, Node, Primitive, SourceInfo, Var
from .source import user_source

__all__ = ["MAX_RANK", "GraphBuilder", "Tracer", "aval_of", "bind", "is_tracer"]

MAX_RANK = 64  # NumPy's own limit (NPY_MAXDIMS); the broadcasting rule handles any rank below it


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
        self.finished = False  # set when the user's function has returned: its tracers are dead
        self.tracked: weakref.WeakSet[Tracer] | None = None  # every tracer, to find leaked ones

    def new_input(self, aval: Aval, hint: str | None = None, kind: str = "primal",
                  mutable: bool = True) -> Tracer:
        """A tracer for one input leaf; ``mutable=False`` for Python and NumPy scalars,
        which in-place operators rebind instead of modifying."""
        var = Var(aval, hint)
        self.inputs.append(var)
        self.input_kinds.append(kind)
        return Tracer(self, var, "input" if mutable else "scalar")

    def atom(self, x: Any) -> Var | Literal:
        if isinstance(x, Tracer):
            if x._builder is not self:
                if x._builder.finished:
                    raise leaked_error(x)
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

    def source_of(self, var: Var) -> SourceInfo | None:
        """The user source line of the node that computed ``var`` (None for inputs)."""
        for node in reversed(self.nodes):
            if any(o is var for o in node.outputs):
                return node.source
        return None

    def add_node(self, prim: Primitive, atoms: list[Any], params: dict[str, Any],
                 out_avals: Any, source: SourceInfo | None) -> Any:
        multiple = prim.multiple_results
        avals = tuple(out_avals) if multiple else (out_avals,)
        for a in avals:
            if len(a.shape) > MAX_RANK:
                raise ShapeError(f"{prim.name} would make an array of rank {len(a.shape)}; tracegrad supports "
                                 f"arrays of rank up to {MAX_RANK} (NumPy's limit)",
                                 source=source, hint="merge axes with reshape")
        outs = tuple(Var(a) for a in avals)
        self.nodes.append(Node(prim, tuple(atoms), outs, params, source))
        tracers = [Tracer(self, v) for v in outs]
        return tracers if multiple else tracers[0]

    def build(self, outputs: list[Any]) -> Graph:
        outs = [self.atom(o) for o in outputs]  # first: reading a view may record its re-read
        return Graph(list(self.inputs), list(self.nodes), outs,
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


def leaked_error(x: Tracer) -> TraceError:
    """The error for using a tracer after its trace ended (it leaked out of the function)."""
    node_src = x._builder.source_of(x._v)
    where = f" (it was computed at {node_src.filename}:{node_src.lineno}: {node_src.line.strip()})" \
        if node_src is not None and node_src.line else ""
    return TraceError(
        f"a traced value {x.aval} from the trace of '{x._builder.name}' is used after that trace "
        f"ended{where}. It leaked out of the compiled function: it was stored in a global, a closure, "
        "an object attribute or a container passed in. Such side effects run only while tracing, "
        "not on later (cached) calls, and the stored value is a placeholder, not numbers",
        source=user_source(),
        hint="return the value from the compiled function instead (e.g. return loss, new_state) "
        "and store it outside",
    )


def bind(prim: Primitive, *args: Any, **params: Any) -> Any:
    """Apply ``prim``: record a node when any argument is a tracer, else compute with NumPy."""
    builder: GraphBuilder | None = None
    for a in args:
        if isinstance(a, Tracer):
            if a._builder.finished:
                raise leaked_error(a)
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
    out = builder.add_node(prim, atoms, params, out_avals, source)
    if prim.view and isinstance(args[0], Tracer) and not prim.multiple_results \
            and prim.is_view([a.aval for a in atoms], params):
        out._view = ("op", args[0], args[0]._version, prim, params)  # shares operand 0's memory in NumPy
    return out


def _tnp() -> Any:
    from .dispatch import numpy_namespace  # tracegrad.numpy, which sits above this layer

    return numpy_namespace()


class Tracer:
    """A traced array. Supports NumPy's operators, ufuncs, array functions and methods.

    In-place operators and item assignment follow NumPy: the tracer is one mutable object,
    so ``y = x; y += 1`` changes what every name bound to it sees (the tracer is rebound to
    the node that computes the new value). A tracer made by basic indexing (``x[1:3]``,
    ``x[0]``, ``x[...]``) is a view: writing through it writes into ``x``, and it re-reads
    ``x`` after ``x`` changes. Other NumPy views (reshape, transpose, ...) refuse in-place
    writes and refuse to be read after their base changed, rather than differ from NumPy.
    0-d results are NumPy scalars (immutable): ``s += 1`` rebinds ``s`` only.
    """

    __slots__ = ("__weakref__", "_builder", "_kind", "_v", "_version", "_view")
    __array_priority__ = 1000

    def __init__(self, builder: GraphBuilder, var: Var, kind: str | None = None):
        self._builder = builder
        self._v = var
        # "input" (a function argument), "array" (a mutable array) or "scalar" (immutable)
        self._kind = kind if kind is not None else ("array" if var.aval.shape else "scalar")
        self._version = 0  # bumped by every in-place change, so views know to re-read
        self._view: tuple | None = None  # ("index", base, idx, seen) or ("op", base, seen, name)
        if builder.tracked is not None:
            builder.tracked.add(self)

    @property
    def _var(self) -> Var:
        if self._view is not None:
            self._refresh()
        return self._v

    def _refresh(self) -> None:
        """Re-read the base of a view that changed since the view was taken."""
        view = self._view
        base = view[1]
        base._var  # noqa: B018  (refresh the base first: it may itself be a view)
        if view[0] == "index":
            if base._version != view[3]:
                self._view = ("index", base, view[2], base._version)
                self._v = _tnp().getitem(base, view[2])._v
                self._version += 1
            return
        _, base, seen, prim, params = view
        if base._version == seen:
            return
        from .inplace import rederivable

        if not rederivable(self):
            raise UnsupportedOperationError(
                f"this array is a view ({prim.name}) of an array that was modified in place after the "
                "view was taken; NumPy would show the change through the view only where it did not "
                "copy, which tracegrad cannot tell here",
                source=user_source(),
                hint="take the view after the in-place update, or copy it (y = x.reshape(...).copy())")
        self._view = ("op", base, base._version, prim, params)
        self._v = bind(prim, base, **params)._v
        self._version += 1

    # -- abstract properties -------------------------------------------------------
    @property
    def aval(self) -> Aval:
        return self._v.aval

    @property
    def shape(self) -> tuple[int, ...]:
        return self._v.aval.shape

    @property
    def dtype(self) -> np.dtype:
        return self._v.aval.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self._v.aval.size

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d traced array")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d traced array")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        if self._builder.finished:
            return f"Tracer<{self.aval}, leaked from a finished trace>"
        return f"Tracer<{self.aval}>"

    def _fresh(self) -> Tracer:
        """A new array object holding the same value (NumPy's copy)."""
        return Tracer(self._builder, self._var)

    # -- NumPy protocols -----------------------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        from .dispatch import call_ufunc

        if method == "at" and not kwargs:
            from .inplace import ufunc_at

            return ufunc_at(ufunc, inputs)
        out = call_ufunc(ufunc, method, inputs, kwargs)
        if isinstance(out, Tracer) and any(out is i for i in inputs):
            return out._fresh()  # a ufunc returns a new array (np.positive(x) is not x)
        return out

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        from .dispatch import call_function

        if func is np.copy and args and args[0] is self and not kwargs:
            return self._fresh()
        if func in _INPLACE_FUNCTIONS:
            from .inplace import inplace_function

            handled, out = inplace_function(func, args, kwargs)
            if handled:
                return out
        if func in _LIKE and args and args[0] is self:
            from .inplace import traced_like

            out = traced_like(self._builder, func, args, kwargs)
            if out is not None:
                return out
        return call_function(func, args, kwargs)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self._builder.finished:
            raise leaked_error(self)
        raise ConcretizationError(
            f"a traced value {self.aval} cannot be converted to a concrete NumPy array while tracing",
            source=user_source(),
            hint="keep the computation in NumPy operations on the traced value "
            "(tracegrad.numpy.array([...]), np.stack or np.concatenate instead of np.array([...])); to fill an array with traced "
            "values (out[i] = ...), create it from a traced one (out = np.zeros_like(x)) or "
            "collect the pieces in a list and np.stack them",
        )

    # -- Python control flow and concrete conversion --------------------------------
    def __bool__(self) -> bool:
        if self._builder.finished:
            raise leaked_error(self)
        raise ControlFlowError(
            "Python control flow (if/while/and/or/bool) on a traced value is not traceable: "
            "branching on data is decided once at trace time, so the compiled code would be wrong "
            "for other inputs",
            source=user_source(),
            hint="compute both branches and select with np.where(condition, a, b)",
        )

    def _concrete(self, kind: str) -> Any:
        if self._builder.finished:
            raise leaked_error(self)
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

    def _data_dependent(self, what: str, hint: str) -> Any:
        if self._builder.finished:
            raise leaked_error(self)
        raise ConcretizationError(
            f"{what} needs the concrete numbers of a traced value {self.aval}, which exist only when "
            "the compiled function runs: the result would be decided once at trace time",
            source=user_source(), hint=hint)

    def item(self, *args: Any) -> Any:
        return self._data_dependent(
            "x.item()", "keep it an array (x.reshape(()) or x[i] for one element); convert with "
            "float(...) outside the compiled function, on its result")

    def tolist(self) -> Any:
        return self._data_dependent(
            "x.tolist()", "keep it an array inside the compiled function; call .tolist() on the result")

    @property
    def flat(self) -> Any:
        return self._data_dependent("x.flat", "use x.reshape(-1) (or x.ravel()) and index that")

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
    def __floordiv__(self, o): return _tnp().floor_divide(self, o)
    def __rfloordiv__(self, o): return _tnp().floor_divide(o, self)
    def __mod__(self, o): return _tnp().remainder(self, o)
    def __rmod__(self, o): return _tnp().remainder(o, self)
    def __divmod__(self, o): return _tnp().divmod(self, o)
    def __rdivmod__(self, o): return _tnp().divmod(o, self)
    def __pow__(self, o): return _tnp().power(self, o)
    def __rpow__(self, o): return _tnp().power(o, self)
    def __matmul__(self, o): return _tnp().matmul(self, o)
    def __rmatmul__(self, o): return _tnp().matmul(o, self)
    def __neg__(self): return _tnp().negative(self)
    def __pos__(self): return self._fresh()
    def __abs__(self): return _tnp().abs(self)
    def __lt__(self, o): return _tnp().less(self, o)
    def __le__(self, o): return _tnp().less_equal(self, o)
    def __gt__(self, o): return _tnp().greater(self, o)
    def __ge__(self, o): return _tnp().greater_equal(self, o)
    def __eq__(self, o): return _tnp().equal(self, o)  # type: ignore[override]
    def __ne__(self, o): return _tnp().not_equal(self, o)  # type: ignore[override]
    def __and__(self, o): return _tnp().bitwise_and(self, o)  # bitwise on ints, logical on bools
    def __rand__(self, o): return _tnp().bitwise_and(o, self)
    def __or__(self, o): return _tnp().bitwise_or(self, o)
    def __ror__(self, o): return _tnp().bitwise_or(o, self)
    def __xor__(self, o): return _tnp().bitwise_xor(self, o)
    def __rxor__(self, o): return _tnp().bitwise_xor(o, self)
    def __lshift__(self, o): return _tnp().left_shift(self, o)
    def __rlshift__(self, o): return _tnp().left_shift(o, self)
    def __rshift__(self, o): return _tnp().right_shift(self, o)
    def __rrshift__(self, o): return _tnp().right_shift(o, self)
    def __invert__(self): return _tnp().invert(self)

    # In-place operators modify this one object (every name bound to it sees the change),
    # compute in the promoted dtype and cast back with NumPy's same_kind rule.
    def __iadd__(self, o): return self._inplace("+=", _tnp().add, o)
    def __isub__(self, o): return self._inplace("-=", _tnp().subtract, o)
    def __imul__(self, o): return self._inplace("*=", _tnp().multiply, o)
    def __itruediv__(self, o): return self._inplace("/=", _tnp().divide, o)
    def __ipow__(self, o): return self._inplace("**=", _tnp().power, o)
    def __imatmul__(self, o): return self._inplace("@=", _tnp().matmul, o)
    def __iand__(self, o): return self._inplace("&=", _tnp().bitwise_and, o)
    def __ior__(self, o): return self._inplace("|=", _tnp().bitwise_or, o)
    def __ixor__(self, o): return self._inplace("^=", _tnp().bitwise_xor, o)
    def __ilshift__(self, o): return self._inplace("<<=", _tnp().left_shift, o)
    def __irshift__(self, o): return self._inplace(">>=", _tnp().right_shift, o)
    def __imod__(self, o): return self._inplace("%=", _tnp().remainder, o)
    def __ifloordiv__(self, o): return self._inplace("//=", _tnp().floor_divide, o)

    def _inplace(self, op: str, fn: Any, other: Any) -> Any:
        if self._builder.finished:
            raise leaked_error(self)
        result = fn(self, other)
        if self._kind == "scalar":
            return result  # NumPy scalars are immutable: `s += 1` rebinds the name only
        from .inplace import fit_inplace

        self._assign(fit_inplace(self, result, op), op)
        return self

    def _assign(self, new: Tracer, what: str) -> None:
        """Make this array hold ``new`` (same shape and dtype), writing through views."""
        from .inplace import detach_if_unshared, write_through

        if self._kind == "input":
            raise UnsupportedOperationError(
                f"in-place update ({what}) of the function argument '{self._v.hint or 'input'}': NumPy "
                "would modify the caller's array, and compiled functions never modify their arguments",
                source=user_source(),
                hint="copy it first (x = x.copy()) or write it functionally (x = x - ...), and return "
                "the new value if the caller needs it")
        detach_if_unshared(self)
        if self._view is not None:
            write_through(self, new, what)
        else:
            self._v = new._var
        self._version += 1

    def __getitem__(self, idx):
        out = _tnp().getitem(self, idx)
        if isinstance(out, Tracer) and out is not self:
            from .inplace import is_basic_index

            if is_basic_index(idx) and (out.ndim or not any(_is_int(i) for i in _as_tuple(idx))):
                out._view = ("index", self, idx, self._version)  # basic indexing gives a view
                out._kind = "array"
        return out

    def __setitem__(self, idx: Any, value: Any) -> None:
        if self._builder.finished:
            raise leaked_error(self)
        if self._kind == "scalar":
            raise UnsupportedOperationError(
                f"item assignment to a 0-d result ({self.aval}): NumPy scalars are immutable",
                source=user_source(), hint="assign into the array it came from, or rebind the name")
        from .inplace import is_basic_index, set_index

        view = value._view if isinstance(value, Tracer) else None
        if (view is not None and view[0] == "index" and view[1] is self and view[3] == self._version
                and is_basic_index(idx) and view[2] == idx):
            return  # `x[i] += v` already wrote through the view x[i]
        self._assign(set_index(self, idx, value), "item assignment")

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
    def ravel(self) -> Tracer: return _tnp().reshape(self, (-1,))

    def flatten(self) -> Tracer:
        out = _tnp().reshape(self, (-1,))
        return out._fresh() if out is self or out._view is not None else out  # always a copy

    def astype(self, dtype: Any, copy: bool = True) -> Tracer:
        out = _tnp().astype(self, dtype)
        return out._fresh() if out is self and copy else out  # astype copies by default

    def sum(self, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Tracer:
        return _tnp().sum(self, axis=axis, dtype=dtype, keepdims=keepdims)
    def mean(self, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Tracer:
        return _tnp().mean(self, axis=axis, dtype=dtype, keepdims=keepdims)
    def prod(self, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Tracer:
        return _tnp().prod(self, axis=axis, dtype=dtype, keepdims=keepdims)
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
        """``x.sort()`` sorts this array in place (every name bound to it sees the result)."""
        self._assign(_tnp().sort(self, axis, kind), "x.sort()")

    def copy(self) -> Tracer: return self._fresh()

    def fill(self, value: Any) -> None:
        self[...] = value

    def __getattr__(self, name: str) -> Any:
        # Other ndarray methods (x.prod(), x.cumsum(), ...) map to the tracegrad.numpy
        # function of the same name where one exists; otherwise a clear error, never a crash.
        if name.startswith("_") or not hasattr(np.ndarray, name):
            raise AttributeError(f"'Tracer' object has no attribute '{name}'")
        fn = getattr(_tnp(), name, None)
        if callable(fn):
            return functools.partial(fn, self)
        raise UnsupportedAttributeError(f"x.{name} (ndarray.{name}) is not supported on traced values",
                                    source=user_source(),
                                    hint=f"write it with supported operations, or use np.{name}(x) if tracegrad.numpy has it")


class UnsupportedAttributeError(UnsupportedOperationError, AttributeError):
    """An ndarray attribute a tracer lacks: a clear error that ``hasattr`` still reads as False."""


_INPLACE_FUNCTIONS = (np.copyto, np.put_along_axis, np.fill_diagonal)
_LIKE = (np.zeros_like, np.ones_like, np.full_like, np.empty_like)


def _is_int(i: Any) -> bool:
    return isinstance(i, int | np.integer) and not isinstance(i, bool)


def _as_tuple(idx: Any) -> tuple:
    return idx if isinstance(idx, tuple) else (idx,)
