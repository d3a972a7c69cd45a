"""Piecewise-constant elementwise functions (ceil, trunc, rint, round) and the floating-point
predicates (isnan, isinf, signbit).

All are declared non-differentiable: their derivative is zero wherever it exists, so
forward and reverse mode emit nothing for them (``floor`` and ``isfinite``, declared with
the core set in ``elementwise.py``, are the same kind). Each lowers to the NumPy function of
the same name, so values (and dtypes: integers pass through ceil/trunc) match NumPy.
"""

from __future__ import annotations

from typing import Any

from ..tracing.tracer import bind
from ._rules import declare, numpy_function
from .elementwise import _c_call, _c_float_fn, _call


def _c_rounding_fn(name: str, f32: str, f64: str) -> str:
    """A ``tg_<name>`` C helper: the libm function on floats, the identity on integers."""
    return (f"// np.{name}: integers are already whole\n"
            f"template <typename T> __device__ __forceinline__ T tg_{name}(T x) {{ return x; }}\n"
            + _c_float_fn(name, f32, f64))


def _rounding(name: str, c32: str, c64: str, numpy_names: tuple[str, ...]) -> Any:
    return declare(name, _call(f"np.{name}"), elementwise=True, numpy_names=numpy_names, differentiable=False,
                   cuda=_c_call(f"tg_{name}"), cuda_helper=_c_rounding_fn(name, c32, c64))


ceil_p = _rounding("ceil", "ceilf", "ceil", ("ceil",))
trunc_p = _rounding("trunc", "truncf", "trunc", ("trunc", "fix"))
rint_p = _rounding("rint", "rintf", "rint", ("rint",))


def ceil(x: Any) -> Any: return bind(ceil_p, x)
def trunc(x: Any) -> Any: return bind(trunc_p, x)
def rint(x: Any) -> Any: return bind(rint_p, x)


def _round_cuda(x: str, decimals: int = 0) -> str:
    # NumPy's algorithm: scale by 10**decimals, round half to even, scale back.
    if decimals == 0:
        return f"tg_rint({x})"
    if decimals > 0:
        f = repr(10.0 ** decimals)
        return f"(tg_rint({x} * {f}) / {f})"
    f = repr(10.0 ** -decimals)
    return f"(tg_rint({x} / {f}) * {f})"


round_p = declare("round", lambda x, decimals: f"np.round({x}, {decimals})", elementwise=True,
                  numpy_names=("round", "around"), differentiable=False, cuda=_round_cuda)


def round_(x: Any, decimals: int = 0) -> Any:
    return bind(round_p, x, decimals=int(decimals))


@numpy_function(round_p)
def np_round(a: Any, decimals: int = 0, out: None = None) -> Any:
    """``np.round(a, decimals)``: half to even, like NumPy (``out=`` is not traceable)."""
    if out is not None:
        raise TypeError("np.round: out= is not supported on traced values; use the result")
    return round_(a, decimals)


# ---------------------------------------------------------------- predicates
isnan_p = declare("isnan", _call("np.isnan"), elementwise=True, numpy_names=("isnan",), differentiable=False,
                  cuda=lambda x: f"({x} != {x})")
isinf_p = declare("isinf", _call("np.isinf"), elementwise=True, numpy_names=("isinf",), differentiable=False,
                  cuda=_c_call("tg_isinf"), cuda_helper=(
                      "// infinite <=> not nan, and x - x is nan; never for integers\n"
                      "template <typename T> __device__ __forceinline__ bool tg_isinf(T x) "
                      "{ return x == x && (x - x) != (x - x); }"))
signbit_p = declare("signbit", _call("np.signbit"), elementwise=True, numpy_names=("signbit",),
                    differentiable=False, cuda=_c_call("tg_signbit"), cuda_helper=(
                        "// np.signbit: true for -0.0 and negative nan too (the sign bit itself)\n"
                        "template <typename T> __device__ __forceinline__ bool tg_signbit(T x) { return x < T(0); }\n"
                        "__device__ __forceinline__ bool tg_signbit(float32 x) { return signbit(x); }\n"
                        "__device__ __forceinline__ bool tg_signbit(float64 x) { return signbit(x); }"))


def isnan(x: Any) -> Any: return bind(isnan_p, x)
def isinf(x: Any) -> Any: return bind(isinf_p, x)
def signbit(x: Any) -> Any: return bind(signbit_p, x)
