"""Elementwise primitives (NumPy broadcasting): each declared once with its JVP rule.

Rules return ``(primal_out, tangent_out)`` and build tangents with the combinators of
``tracegrad.ad.tangents``, so they hold for any number of tangent directions. Each
declaration also names the NumPy functions the primitive answers to, its CUDA template and
the C helper that template calls, and its folding identities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ad import tangents as T
from ..ad.linear import LinearMap
from ..ad.rules import defbilinear, defjvp, defjvp_unary, defvjp_unary, scale_map, unbroadcast
from ..errors import UnsupportedOperationError
from ..ir import Aval
from ..tracing.source import user_source
from ..tracing.tracer import aval_of, bind
from ._rules import declare, no_flops, numpy_function


def _binop(sym: str):
    return lambda a, b: f"{a} {sym} {b}"


def _ndim(*xs: Any) -> int:
    return max(len(aval_of(x).shape) for x in xs)


def _call(fn: str):
    return lambda *args: f"{fn}({', '.join(args)})"


# CUDA C templates (fused kernels; tracegrad/backends/cuda_c.py has the typedefs and the
# TG_FLOAT_FN macro the helpers below use)
_c_binop, _c_call = _binop, _call


def _c_float_fn(name: str, f32: str, f64: str) -> str:
    """A ``tg_<name>`` C helper calling the float32 / float64 libm function."""
    return f"TG_FLOAT_FN(tg_{name}, {f32}, {f64})"


# ---------------------------------------------------------------- arithmetic
add_p = declare("add", _binop("+"), elementwise=True, numpy_names=("add",), cuda=_c_binop("+"),
                units=((1, 0), (0, 0)))
sub_p = declare("sub", _binop("-"), elementwise=True, numpy_names=("subtract",), cuda=_c_binop("-"),
                units=((1, 0),))
mul_p = declare("mul", _binop("*"), elementwise=True, numpy_names=("multiply",), cuda=_c_binop("*"),
                units=((1, 1), (0, 1)))
div_p = declare("div", _binop("/"), elementwise=True, numpy_names=("divide", "true_divide"), cuda=_c_binop("/"),
                units=((1, 1),))
neg_p = declare("neg", lambda x: f"-{x}", elementwise=True, numpy_names=("negative",), cuda=lambda x: f"-{x}",
                involution=True)
pow_p = declare("pow", _binop("**"), elementwise=True, numpy_names=("power",), ufunc_out=False, units=((1, 1),),
                cuda=_c_call("tg_pow"), cuda_helper="""\
// integer power by squaring (np.power on integers); float overloads call powf / pow
template <typename T> __device__ __forceinline__ T tg_pow(T a, T b) {
    T r = 1;
    for (; b > 0; b >>= 1) { if (b & 1) r *= a; a *= a; }
    return r;
}
__device__ __forceinline__ float32 tg_pow(float32 a, float32 b) { return powf(a, b); }
__device__ __forceinline__ float64 tg_pow(float64 a, float64 b) { return pow(a, b); }""")
max_p = declare("maximum", _call("np.maximum"), elementwise=True, numpy_names=("maximum",), cuda=_c_call("tg_maximum"),
                cuda_helper="// np.maximum: a NaN in either operand wins\n"
                "template <typename T> __device__ __forceinline__ T tg_maximum(T a, T b) "
                "{ return (a > b || a != a) ? a : b; }")
min_p = declare("minimum", _call("np.minimum"), elementwise=True, numpy_names=("minimum",), cuda=_c_call("tg_minimum"),
                cuda_helper="// np.minimum: a NaN in either operand wins\n"
                "template <typename T> __device__ __forceinline__ T tg_minimum(T a, T b) "
                "{ return (a < b || a != a) ? a : b; }")

def add(a: Any, b: Any) -> Any: return bind(add_p, a, b)
def sub(a: Any, b: Any) -> Any: return bind(sub_p, a, b)
def mul(a: Any, b: Any) -> Any: return bind(mul_p, a, b)
def div(a: Any, b: Any) -> Any: return bind(div_p, a, b)
def neg(a: Any) -> Any: return bind(neg_p, a)
def power(a: Any, b: Any) -> Any: return bind(pow_p, a, b)
def maximum(a: Any, b: Any) -> Any: return bind(max_p, a, b)
def minimum(a: Any, b: Any) -> Any: return bind(min_p, a, b)


# JVPs: one term per operand tangent (``defjvp``); mul is bilinear, so its JVP and VJP come
# from the two scaling maps (``defbilinear``).
defjvp(add_p, lambda g, y, a, b: g, lambda g, y, a, b: g)
defjvp(sub_p, lambda g, y, a, b: g, lambda g, y, a, b: g.neg())
defbilinear(mul_p, lambda a, b: scale_map(b, aval_of(a), _ndim(a, b)), lambda a, b: scale_map(a, aval_of(b), _ndim(a, b)))
defjvp(div_p, lambda g, y, a, b: g.scale(div(1, b), aval_of(y)),
       lambda g, y, a, b: g.scale(neg(div(y, b)), aval_of(y)))
defjvp(neg_p, lambda g, y, x: g.neg())
# d/dp x**p = log(x) x**p; where x == 0 the limit (for p > 0) is 0, not nan.
defjvp(pow_p, lambda g, y, x, p: g.scale(mul(p, power(x, sub(p, 1))), aval_of(y)),
       lambda g, y, x, p: g.scale(where(equal(x, 0), 0.0, mul(log(where(equal(x, 0), 1.0, x)), y)), aval_of(y)))


def max_jvp(primals, tangents):
    a, b = primals
    y = maximum(a, b)
    return y, T.select(greater(a, b), tangents[0], tangents[1], aval_of(y))


def min_jvp(primals, tangents):
    a, b = primals
    y = minimum(a, b)
    return y, T.select(less(a, b), tangents[0], tangents[1], aval_of(y))


max_p.jvp, min_p.jvp = max_jvp, min_jvp


# VJPs: the cotangent of each operand, summed back to its own shape (``unbroadcast``).
def add_vjp(ct, primals, y):
    a, b = primals
    return unbroadcast(ct, aval_of(a)), unbroadcast(ct, aval_of(b))


def sub_vjp(ct, primals, y):
    a, b = primals
    return unbroadcast(ct, aval_of(a)), unbroadcast(neg(ct), aval_of(b))


def div_vjp(ct, primals, y):
    a, b = primals
    ct_a = div(ct, b)
    return unbroadcast(ct_a, aval_of(a)), unbroadcast(neg(mul(ct_a, y)), aval_of(b))


def neg_vjp(ct, primals, y):
    return (neg(ct),)


def pow_vjp(ct, primals, y):
    x, p = primals
    ct_x = mul(ct, mul(p, power(x, sub(p, 1))))
    # the same x == 0 convention as pow_jvp: d/dp x**p is 0 there, not nan
    ct_p = mul(ct, where(equal(x, 0), 0.0, mul(log(where(equal(x, 0), 1.0, x)), y)))
    return unbroadcast(ct_x, aval_of(x)), unbroadcast(ct_p, aval_of(p))


def _select_vjp(compare):
    # The cotangent goes where the JVP takes its tangent from: ``a`` where compare(a, b), else ``b``.
    def rule(ct, primals, y):
        a, b = primals
        pick_a = compare(a, b)
        return (unbroadcast(where(pick_a, ct, 0.0), aval_of(a)),
                unbroadcast(where(pick_a, 0.0, ct), aval_of(b)))

    return rule


add_p.vjp, sub_p.vjp, div_p.vjp = add_vjp, sub_vjp, div_vjp
neg_p.vjp, pow_p.vjp = neg_vjp, pow_vjp
max_p.vjp = _select_vjp(lambda a, b: greater(a, b))
min_p.vjp = _select_vjp(lambda a, b: less(a, b))

# ---------------------------------------------------------------- unary math
exp_p = declare("exp", _call("np.exp"), elementwise=True, numpy_names=("exp",), cuda=_c_call("tg_exp"),
                cuda_helper=_c_float_fn("exp", "expf", "exp"))
log_p = declare("log", _call("np.log"), elementwise=True, numpy_names=("log",), cuda=_c_call("tg_log"),
                cuda_helper=_c_float_fn("log", "logf", "log"))
log1p_p = declare("log1p", _call("np.log1p"), elementwise=True, numpy_names=("log1p",), cuda=_c_call("tg_log1p"),
                  cuda_helper=_c_float_fn("log1p", "log1pf", "log1p"))
expm1_p = declare("expm1", _call("np.expm1"), elementwise=True, numpy_names=("expm1",), cuda=_c_call("tg_expm1"),
                  cuda_helper=_c_float_fn("expm1", "expm1f", "expm1"))
sqrt_p = declare("sqrt", _call("np.sqrt"), elementwise=True, numpy_names=("sqrt",), cuda=_c_call("tg_sqrt"),
                 cuda_helper=_c_float_fn("sqrt", "sqrtf", "sqrt"))
abs_p = declare("abs", _call("np.abs"), elementwise=True, numpy_names=("abs", "absolute", "fabs"),
                cuda=_c_call("tg_abs"), cuda_helper=(
                    "template <typename T> __device__ __forceinline__ T tg_abs(T x) { return x < T(0) ? T(-x) : x; }\n"
                    + _c_float_fn("abs", "fabsf", "fabs")))
sin_p = declare("sin", _call("np.sin"), elementwise=True, numpy_names=("sin",), cuda=_c_call("tg_sin"),
                cuda_helper=_c_float_fn("sin", "sinf", "sin"))
cos_p = declare("cos", _call("np.cos"), elementwise=True, numpy_names=("cos",), cuda=_c_call("tg_cos"),
                cuda_helper=_c_float_fn("cos", "cosf", "cos"))
tanh_p = declare("tanh", _call("np.tanh"), elementwise=True, numpy_names=("tanh",), cuda=_c_call("tg_tanh"),
                 cuda_helper=_c_float_fn("tanh", "tanhf", "tanh"))
arctan_p = declare("arctan", _call("np.arctan"), elementwise=True, numpy_names=("arctan",), cuda=_c_call("tg_arctan"),
                   cuda_helper=_c_float_fn("arctan", "atanf", "atan"))
# logistic(x) = 1 / (1 + e^-x), written through tanh: exact, and never overflows.
logistic_p = declare("logistic", lambda x: f"0.5 * np.tanh(0.5 * {x}) + 0.5", elementwise=True, fresh=True,
                     cuda=lambda x: f"0.5f * tg_tanh(0.5f * {x}) + 0.5f")

def exp(x: Any) -> Any: return bind(exp_p, x)
def log(x: Any) -> Any: return bind(log_p, x)
def log1p(x: Any) -> Any: return bind(log1p_p, x)
def expm1(x: Any) -> Any: return bind(expm1_p, x)
def sqrt(x: Any) -> Any: return bind(sqrt_p, x)
def abs(x: Any) -> Any: return bind(abs_p, x)
def sin(x: Any) -> Any: return bind(sin_p, x)
def cos(x: Any) -> Any: return bind(cos_p, x)
def tanh(x: Any) -> Any: return bind(tanh_p, x)
def logistic(x: Any) -> Any: return bind(logistic_p, x)


defjvp_unary(exp_p, lambda x, y: y)
defjvp_unary(log_p, lambda x, y: div(1, x))
defjvp_unary(log1p_p, lambda x, y: div(1, add(x, 1)))
defjvp_unary(expm1_p, lambda x, y: add(y, 1))
defjvp_unary(sqrt_p, lambda x, y: div(0.5, y))
defjvp_unary(abs_p, lambda x, y: sign(x))
defjvp_unary(sin_p, lambda x, y: cos(x))
defjvp_unary(cos_p, lambda x, y: neg(sin(x)))
defjvp_unary(tanh_p, lambda x, y: sub(1, mul(y, y)))
defjvp_unary(logistic_p, lambda x, y: mul(y, sub(1, y)))
defjvp_unary(arctan_p, lambda x, y: div(1, add(1, mul(x, x))))

for _p in (exp_p, log_p, log1p_p, expm1_p, sqrt_p, abs_p, sin_p, cos_p, tanh_p, logistic_p, arctan_p):
    defvjp_unary(_p)  # ct * f'(x), with the derivative factor registered above

# ---------------------------------------------------------------- selection
where_p = declare("where", _call("np.where"), elementwise=True, fresh=True, numpy_names=("where",),
                  cuda=lambda c, a, b: f"{c} ? {a} : {b}")
clip_p = declare("clip", _call("np.clip"), elementwise=True, fresh=True, numpy_names=("clip",),
                 cuda=lambda x, lo, hi: f"tg_minimum(tg_maximum({x}, {lo}), {hi})")


def where(cond: Any, a: Any, b: Any) -> Any: return bind(where_p, cond, a, b)
def clip(x: Any, lo: Any, hi: Any) -> Any: return bind(clip_p, x, lo, hi)


@numpy_function(where_p)
def np_where(condition: Any, x: Any = None, y: Any = None) -> Any:
    """``np.where(condition, x, y)``; the one-argument form has a data-dependent shape."""
    if x is None or y is None:
        raise UnsupportedOperationError(
            "np.where(condition) with one argument returns data-dependent indices and is not traceable",
            source=user_source(), hint="use the three-argument form np.where(condition, a, b)")
    return where(condition, x, y)


@numpy_function(clip_p)
def np_clip(x: Any, a_min: Any = None, a_max: Any = None) -> Any:
    """``np.clip``: one missing bound makes it a ``maximum`` or a ``minimum``."""
    if a_min is None and a_max is None:
        raise ValueError("clip: one of a_min and a_max must be given")
    if a_min is None:
        return minimum(x, a_max)
    if a_max is None:
        return maximum(x, a_min)
    return clip(x, a_min, a_max)


def where_jvp(primals, tangents):
    c, a, b = primals
    y = where(c, a, b)
    return y, T.select(c, tangents[1], tangents[2], aval_of(y))


def clip_jvp(primals, tangents):
    # clip(x, lo, hi) == minimum(maximum(x, lo), hi); follow the same tie-breaking.
    x, lo, hi = primals
    tx, tlo, thi = tangents
    y = clip(x, lo, hi)
    out = aval_of(y)
    m = maximum(x, lo)
    t_m = T.select(greater(x, lo), tx, tlo, aval_of(m))
    return y, T.select(less(m, hi), t_m, thi, out)


where_p.jvp, clip_p.jvp = where_jvp, clip_jvp


def where_vjp(ct, primals, y):
    c, a, b = primals
    return None, unbroadcast(where(c, ct, 0.0), aval_of(a)), unbroadcast(where(c, 0.0, ct), aval_of(b))


def clip_vjp(ct, primals, y):
    # Mirrors clip_jvp: y = minimum(m, hi) picks m where m < hi; m = maximum(x, lo) picks x where x > lo.
    x, lo, hi = primals
    m_wins = less(maximum(x, lo), hi)
    x_wins = greater(x, lo)
    ct_m = where(m_wins, ct, 0.0)
    return (unbroadcast(where(x_wins, ct_m, 0.0), aval_of(x)),
            unbroadcast(where(x_wins, 0.0, ct_m), aval_of(lo)),
            unbroadcast(where(m_wins, 0.0, ct), aval_of(hi)))


where_p.vjp, clip_p.vjp = where_vjp, clip_vjp

# ---------------------------------------------------------------- non-differentiable
sign_p = declare("sign", _call("np.sign"), elementwise=True, numpy_names=("sign",), differentiable=False,
                 cuda=_c_call("tg_sign"), cuda_helper=(
                     "// np.sign: -1, 0 or 1, and nan for nan\n"
                     "template <typename T> __device__ __forceinline__ T tg_sign(T x) "
                     "{ return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x); }"))
floor_p = declare("floor", _call("np.floor"), elementwise=True, numpy_names=("floor",), differentiable=False,
                  cuda=_c_call("tg_floor"), cuda_helper=_c_float_fn("floor", "floorf", "floor"))
eq_p = declare("eq", _binop("=="), elementwise=True, numpy_names=("equal",), differentiable=False, cuda=_c_binop("=="))
ne_p = declare("ne", _binop("!="), elementwise=True, numpy_names=("not_equal",), differentiable=False,
               cuda=_c_binop("!="))
lt_p = declare("lt", _binop("<"), elementwise=True, numpy_names=("less",), differentiable=False, cuda=_c_binop("<"))
le_p = declare("le", _binop("<="), elementwise=True, numpy_names=("less_equal",), differentiable=False,
               cuda=_c_binop("<="))
gt_p = declare("gt", _binop(">"), elementwise=True, numpy_names=("greater",), differentiable=False, cuda=_c_binop(">"))
ge_p = declare("ge", _binop(">="), elementwise=True, numpy_names=("greater_equal",), differentiable=False,
               cuda=_c_binop(">="))
and_p = declare("logical_and", _call("np.logical_and"), elementwise=True, numpy_names=("logical_and",),
                differentiable=False, cuda=_c_binop("&&"))
or_p = declare("logical_or", _call("np.logical_or"), elementwise=True, numpy_names=("logical_or",),
               differentiable=False, cuda=_c_binop("||"))
not_p = declare("logical_not", _call("np.logical_not"), elementwise=True, numpy_names=("logical_not",),
                differentiable=False, cuda=lambda x: f"!{x}")
isfinite_p = declare("isfinite", _call("np.isfinite"), elementwise=True, numpy_names=("isfinite",),
                     differentiable=False, cuda=_c_call("tg_isfinite"), cuda_helper=(
                         "// finite <=> x - x == 0 (inf - inf and nan - nan are nan); always true for integers\n"
                         "template <typename T> __device__ __forceinline__ bool tg_isfinite(T x) "
                         "{ return x - x == T(0); }"))

def sign(x: Any) -> Any: return bind(sign_p, x)
def floor(x: Any) -> Any: return bind(floor_p, x)
def equal(a: Any, b: Any) -> Any: return bind(eq_p, a, b)
def not_equal(a: Any, b: Any) -> Any: return bind(ne_p, a, b)
def less(a: Any, b: Any) -> Any: return bind(lt_p, a, b)
def less_equal(a: Any, b: Any) -> Any: return bind(le_p, a, b)
def greater(a: Any, b: Any) -> Any: return bind(gt_p, a, b)
def greater_equal(a: Any, b: Any) -> Any: return bind(ge_p, a, b)
def logical_and(a: Any, b: Any) -> Any: return bind(and_p, a, b)
def logical_or(a: Any, b: Any) -> Any: return bind(or_p, a, b)
def logical_not(a: Any) -> Any: return bind(not_p, a)
def isfinite(a: Any) -> Any: return bind(isfinite_p, a)


# ---------------------------------------------------------------- dtype and gradient control
def _astype_abstract(avals: list[Aval], params: dict[str, Any]) -> Aval:
    return Aval(avals[0].shape, params["dtype"])


def _dtype_expr(dtype: Any) -> str:
    name = np.dtype(dtype).name
    return "bool" if name == "bool" else f"np.{name}"


astype_p = declare("astype", lambda x, dtype: f"np.asarray({x}, dtype={_dtype_expr(dtype)})",
                   abstract_eval=_astype_abstract, elementwise=True,
                   cuda=lambda x, dtype: f"{np.dtype(dtype).name}({x})")  # C types are named like NumPy's


def astype(x: Any, dtype: Any) -> Any:
    dtype = np.dtype(dtype)
    if aval_of(x).dtype == dtype and not aval_of(x).weak:
        return x
    return bind(astype_p, x, dtype=dtype)


def astype_jvp(primals, tangents, *, dtype):
    (x,) = primals
    y = astype(x, dtype)
    out = aval_of(y)
    if not aval_of(x).is_float:
        return y, T.Zero(out)
    return y, tangents[0].map(LinearMap("astype", lambda v, nb: astype(v, dtype), dtype=dtype), out)


astype_p.jvp = astype_jvp


def astype_vjp(ct, primals, y, *, dtype):
    (x,) = primals
    return (astype(ct, aval_of(x).dtype) if aval_of(x).is_float else None,)


astype_p.vjp = astype_vjp

stop_gradient_p = declare("stop_gradient", lambda x: x, differentiable=False, elementwise=True,
                          flops=no_flops, view=True, cuda=lambda x: x, fusion="view",
                          cupy=lambda layout, params, n: layout)


def stop_gradient(x: Any) -> Any:
    """The value of ``x``, treated as a constant by differentiation."""
    return bind(stop_gradient_p, x)
