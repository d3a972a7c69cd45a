"""Elementwise primitives (NumPy broadcasting): each declared once with its JVP rule.

Rules return ``(primal_out, tangent_out)`` and build tangents with the combinators of
``tracegrad.ad.tangents``, so they hold for any number of tangent directions. Each
declaration also names the NumPy functions the primitive answers to, its CUDA template and
the C helper that template calls, and its folding identities.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._namespace import array_namespace
from ..ad import tangents as T
from ..ad.linear import LinearMap
from ..ad.rules import defbilinear, defjvp, defjvp_unary, defvjp_unary, scale_map, unbroadcast
from ..errors import UnsupportedOperationError
from ..ir import Aval
from ..tracing.source import user_source
from ..tracing.tracer import Tracer, aval_of, bind
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


def unary_float_op(name: str, c32: str, c64: str) -> Any:
    """Declare the unary ufunc ``np.<name>`` as a primitive: NumPy lowering to the ufunc itself
    (values match NumPy to the last bit), ``np.<name>`` dispatch, and a fused-CUDA helper
    ``tg_<name>`` calling the libm functions ``c32`` (float32) / ``c64`` (float64)."""
    return declare(name, _call(f"np.{name}"), elementwise=True, numpy_names=(name,),
                   cuda=_c_call(f"tg_{name}"), cuda_helper=_c_float_fn(name, c32, c64))


# ---------------------------------------------------------------- arithmetic
add_p = declare("add", _binop("+"), elementwise=True, numpy_names=("add",), cuda=_c_binop("+"),
                units=((1, 0), (0, 0)))
sub_p = declare("sub", _binop("-"), elementwise=True, numpy_names=("subtract",), cuda=_c_binop("-"),
                units=((1, 0),))
mul_p = declare("mul", _binop("*"), elementwise=True, numpy_names=("multiply",), cuda=_c_binop("*"),
                units=((1, 1), (0, 1)))
# Two Python scalars (weak 0-d operands: a Python-number argument or constant) divide and
# power with NumPy's semantics, not Python's: 1.0 / 0.0 is inf (not ZeroDivisionError) and
# (-1.0) ** 0.5 is nan (not a complex number). Only then the node carries ``scalar=True``.
div_p = declare("div", lambda a, b, scalar=False: f"np.true_divide({a}, {b}).item()" if scalar else f"{a} / {b}",
                elementwise=True, numpy_names=("divide", "true_divide"),
                cuda=lambda a, b, scalar=False: f"{a} / {b}", units=((1, 1),))
neg_p = declare("neg", lambda x: f"-{x}", elementwise=True, numpy_names=("negative",), cuda=lambda x: f"-{x}",
                involution=True)
pow_p = declare("pow", lambda a, b, scalar=False: f"np.power(float({a}), float({b})).item()" if scalar else f"{a} ** {b}",
                elementwise=True, numpy_names=("power",), ufunc_out=False, units=((1, 1),),
                cuda=lambda a, b, scalar=False: f"tg_pow({a}, {b})", cuda_helper="""\
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
def _python_scalars(*xs: Any) -> bool:
    return all(aval_of(x).weak and aval_of(x).shape == () for x in xs)


def div(a: Any, b: Any) -> Any:
    return bind(div_p, a, b, scalar=True) if _python_scalars(a, b) else bind(div_p, a, b)
def neg(a: Any) -> Any: return bind(neg_p, a)
def power(a: Any, b: Any) -> Any:
    if _python_scalars(a, b) and "f" in (aval_of(a).dtype.kind, aval_of(b).dtype.kind) \
            and "c" not in (aval_of(a).dtype.kind, aval_of(b).dtype.kind):
        return bind(pow_p, a, b, scalar=True)
    return bind(pow_p, a, b)
def maximum(a: Any, b: Any) -> Any: return bind(max_p, a, b)
def minimum(a: Any, b: Any) -> Any: return bind(min_p, a, b)


# np.divide / np.power (and ``/``, ``**`` on tracers) go through div / power, which choose
# NumPy's semantics for two Python scalars
@numpy_function(div_p)
def np_divide(a: Any, b: Any) -> Any:
    """``np.divide``: ``div`` (NumPy's, not Python's, result for two Python scalars)."""
    return div(a, b)


@numpy_function(pow_p)
def np_power(a: Any, b: Any) -> Any:
    """``np.power``: ``power`` (NumPy's, not Python's, result for two Python scalars)."""
    return power(a, b)


def _pow_dx(x, p):
    """d/dx x**p = p x**(p-1), and exactly 0 where p == 0 (x**0 is constant; at x == 0 the
    formula would give 0 * inf = nan). ``None`` when p is a constant that is 0 everywhere."""
    if not isinstance(p, Tracer) and not np.any(np.asarray(p) != 0):
        return None
    d = mul(p, power(x, sub(p, 1)))
    if isinstance(p, Tracer) or not np.all(np.asarray(p) != 0):
        d = where(equal(p, 0), 0.0, d)
    return d


def _pow_jvp_x(g, y, x, p, **params):
    d = _pow_dx(x, p)
    return T.Zero(aval_of(y)) if d is None else g.scale(d, aval_of(y))


# JVPs: one term per operand tangent (``defjvp``); mul is bilinear, so its JVP and VJP come
# from the two scaling maps (``defbilinear``).
defjvp(add_p, lambda g, y, a, b: g, lambda g, y, a, b: g)
defjvp(sub_p, lambda g, y, a, b: g, lambda g, y, a, b: g.neg())
defbilinear(mul_p, lambda a, b: scale_map(b, aval_of(a), _ndim(a, b)), lambda a, b: scale_map(a, aval_of(b), _ndim(a, b)))
defjvp(div_p, lambda g, y, a, b, **params: g.scale(div(1, b), aval_of(y)),
       lambda g, y, a, b, **params: g.scale(neg(div(y, b)), aval_of(y)))
defjvp(neg_p, lambda g, y, x: g.neg())
# d/dp x**p = log(x) x**p; where x == 0 the limit (for p > 0) is 0, not nan.
defjvp(pow_p, _pow_jvp_x,
       lambda g, y, x, p, **params: g.scale(where(equal(x, 0), 0.0, mul(log(where(equal(x, 0), 1.0, x)), y)), aval_of(y)))


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
#
# Zero cotangents stay exactly zero through the rules whose derivative can be inf or nan at
# finite inputs (div, pow, sqrt, log, log1p): ``np.where(x > 0, np.sqrt(x), 0)`` sends a zero
# cotangent into sqrt where x <= 0, and 0 * inf would make the gradient nan there although the
# function does not depend on that branch. One compare and select per such rule in reverse
# mode; rules with finite derivatives (add, matmul, tanh, ...) pay nothing.
def _strong_zero(ct, value):
    """``value`` (a product with ``ct``), but exactly 0 wherever ``ct`` is 0."""
    return where(equal(ct, 0), 0.0, value)


def _finite_nonzero_constant(b):
    return not isinstance(b, Tracer) and bool(np.all(np.isfinite(b)) and np.all(np.asarray(b) != 0))


def add_vjp(ct, primals, y):
    a, b = primals
    return unbroadcast(ct, aval_of(a)), unbroadcast(ct, aval_of(b))


def sub_vjp(ct, primals, y):
    a, b = primals
    return unbroadcast(ct, aval_of(a)), unbroadcast(neg(ct), aval_of(b))


def div_vjp(ct, primals, y, scalar=False):
    a, b = primals
    ct_a = div(ct, b)
    ct_b = neg(mul(ct_a, y))
    if not _finite_nonzero_constant(b):  # dividing by 0 (as in sin(x) / x under a where)
        ct_a, ct_b = _strong_zero(ct, ct_a), _strong_zero(ct, ct_b)
    return unbroadcast(ct_a, aval_of(a)), unbroadcast(ct_b, aval_of(b))


def neg_vjp(ct, primals, y):
    return (neg(ct),)


def pow_vjp(ct, primals, y, scalar=False):
    x, p = primals
    d = _pow_dx(x, p)
    ct_x = mul(ct, 0.0) if d is None else _strong_zero(ct, mul(ct, d))
    # the same x == 0 convention as pow_jvp: d/dp x**p is 0 there, not nan
    ct_p = _strong_zero(ct, mul(ct, where(equal(x, 0), 0.0, mul(log(where(equal(x, 0), 1.0, x)), y))))
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
exp_p = unary_float_op("exp", "expf", "exp")
log_p = unary_float_op("log", "logf", "log")
log1p_p = unary_float_op("log1p", "log1pf", "log1p")
expm1_p = unary_float_op("expm1", "expm1f", "expm1")
sqrt_p = unary_float_op("sqrt", "sqrtf", "sqrt")
abs_p = declare("abs", _call("np.abs"), elementwise=True, numpy_names=("abs", "absolute", "fabs"),
                cuda=_c_call("tg_abs"), cuda_helper=(
                    "template <typename T> __device__ __forceinline__ T tg_abs(T x) { return x < T(0) ? T(-x) : x; }\n"
                    + _c_float_fn("abs", "fabsf", "fabs")))
sin_p = unary_float_op("sin", "sinf", "sin")
cos_p = unary_float_op("cos", "cosf", "cos")
tanh_p = unary_float_op("tanh", "tanhf", "tanh")
arctan_p = unary_float_op("arctan", "atanf", "atan")
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


def _strong_zero_vjp(derivative):
    def rule(ct, primals, y):
        return (_strong_zero(ct, mul(ct, derivative(primals[0], y))),)

    return rule


for _p in (log_p, log1p_p, sqrt_p):  # f'(x) is inf or nan at finite x (0, or outside the domain)
    _p.vjp = _strong_zero_vjp(_p.jvp.derivative)

# ---------------------------------------------------------------- selection
def tg_where(cond: Any, a: Any, b: Any, out: Any = None) -> Any:
    """``np.where(cond, a, b)`` (a runtime helper of the NumPy lowering). NumPy's where branches
    per element: on a random mask (a ReLU's) it runs ~10x slower than a multiply (120 ms for
    4M float32 here, where ``u * m`` takes 10). For large float results it selects the bits
    instead, ``(a & m) | (b & ~m)`` on the unsigned views — exactly np.where's values, NaN,
    inf and signed zeros included, at the speed of a bitwise AND. ``out``: the buffer of a
    dying operand ``a`` or ``b`` (the NumPy backend's in-place plan), written in place."""
    xp = array_namespace(a, b, cond)
    if xp is not np:
        r = xp.where(cond, a, b)
        if out is None:
            return r
        out[...] = r
        return out
    dt = np.result_type(a, b)
    shape = np.broadcast_shapes(np.shape(cond), np.shape(a), np.shape(b))
    if dt not in (np.float32, np.float64) or math.prod(shape) < 1 << 15:
        r = np.where(cond, a, b)
        if out is None:
            return r
        np.copyto(out, r)
        return out
    ui = np.uint32 if dt == np.float32 else np.uint64
    m = np.negative(np.asarray(cond, bool).astype(ui))  # all ones where cond, else zero
    av, bb = np.asarray(a, dt).view(ui), np.asarray(b, dt).view(ui)
    b_zero = not bb.ndim and bb == 0  # b is +0.0, whose bits are all zero
    if out is not None:  # out has the result's shape and dtype and is a or b itself
        ov = out.view(ui)
        if out is b:
            np.bitwise_and(ov, np.invert(m), out=ov)
            np.bitwise_or(ov, np.bitwise_and(av, m), out=ov)
            return out
        np.bitwise_and(av, m, out=ov)
        if not b_zero:
            np.bitwise_or(ov, np.bitwise_and(bb, np.invert(m)), out=ov)
        return out
    out = np.bitwise_and(av, m)
    if not b_zero:
        rest = np.bitwise_and(bb, np.invert(m))
        out = np.bitwise_or(out, rest, out=out) if out.shape == shape else np.bitwise_or(out, rest)
    if out.shape != shape:
        out = np.broadcast_to(out, shape).copy()
    return out.view(dt)


where_p = declare("where", _call("tg_where"), elementwise=True, numpy_ufunc="tg_where", numpy_names=("where",),
                  runtime={"tg_where": tg_where}, cuda=lambda c, a, b: f"{c} ? {a} : {b}")
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

# ---------------------------------------------------------------- floor division and remainders
# NumPy's divmod family. floor_divide is piecewise constant (zero derivative); remainder
# a - b * floor(a / b) has derivative 1 in a and -floor(a / b) in b (fmod: -trunc(a / b)).
# C helpers: integer division by 0 gives 0 as in NumPy; floats follow NumPy's npy_divmod.
floor_divide_p = declare("floor_divide", _call("np.floor_divide"), elementwise=True, numpy_names=("floor_divide",),
                         differentiable=False, cuda=_c_call("tg_floor_divide"), cuda_helper="""\
// np.floor_divide: the quotient rounded towards -inf
template <typename T> __device__ __forceinline__ T tg_floor_divide(T a, T b) {
    if (b == 0) return 0;
    T q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? T(q - 1) : q;
}
#define TG_FLOAT_FLOOR_DIVIDE(T, FMOD, FLOOR, COPYSIGN) \\
    __device__ __forceinline__ T tg_floor_divide(T a, T b) { \\
        if (b == 0) return a / b; \\
        T m = FMOD(a, b); \\
        T d = (a - m) / b; \\
        if (m != 0 && ((b < 0) != (m < 0))) d -= T(1); \\
        if (d == 0) return COPYSIGN(T(0), a / b); \\
        T f = FLOOR(d); \\
        return d - f > T(0.5) ? T(f + 1) : f; \\
    }
TG_FLOAT_FLOOR_DIVIDE(float32, fmodf, floorf, copysignf)
TG_FLOAT_FLOOR_DIVIDE(float64, fmod, floor, copysign)""")
remainder_p = declare("remainder", _call("np.remainder"), elementwise=True, numpy_names=("remainder", "mod"),
                      cuda=_c_call("tg_remainder"), cuda_helper="""\
// np.remainder (np.mod, %): the remainder takes the divisor's sign
template <typename T> __device__ __forceinline__ T tg_remainder(T a, T b) {
    if (b == 0) return 0;
    T r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? T(r + b) : r;
}
#define TG_FLOAT_REMAINDER(T, FMOD, COPYSIGN) \\
    __device__ __forceinline__ T tg_remainder(T a, T b) { \\
        T m = FMOD(a, b); \\
        if (b == 0) return m; \\
        if (m != 0) { if ((b < 0) != (m < 0)) m += b; } else m = COPYSIGN(T(0), b); \\
        return m; \\
    }
TG_FLOAT_REMAINDER(float32, fmodf, copysignf)
TG_FLOAT_REMAINDER(float64, fmod, copysign)""")
fmod_p = declare("fmod", _call("np.fmod"), elementwise=True, numpy_names=("fmod",), cuda=_c_call("tg_fmod"),
                 cuda_helper="""\
// np.fmod: the remainder takes the dividend's sign
template <typename T> __device__ __forceinline__ T tg_fmod(T a, T b) { return b == 0 ? T(0) : T(a % b); }
__device__ __forceinline__ float32 tg_fmod(float32 a, float32 b) { return fmodf(a, b); }
__device__ __forceinline__ float64 tg_fmod(float64 a, float64 b) { return fmod(a, b); }""")


def floor_divide(a: Any, b: Any) -> Any: return bind(floor_divide_p, a, b)
def remainder(a: Any, b: Any) -> Any: return bind(remainder_p, a, b)
def fmod(a: Any, b: Any) -> Any: return bind(fmod_p, a, b)


def _remainder_db(prim):
    """d/db of ``y = prim(a, b)``: minus the integer quotient (floor for remainder, trunc for
    fmod), recovered exactly from y: (a - y) / b is an integer up to rounding."""
    if prim is remainder_p:
        return lambda a, b, y: neg(floor_divide(a, b))
    return lambda a, b, y: neg(floor(add(div(sub(a, y), b), 0.5)))


def _remainder_rules(prim):
    db = _remainder_db(prim)

    def jvp(primals, tangents):
        a, b = primals
        ta, tb = tangents
        y = bind(prim, a, b)
        out = aval_of(y)
        if not out.is_float:
            return y, T.Zero(out)
        t_b = T.scale(tb, db(a, b, y), out) if not T.is_zero(tb) else tb
        return y, T.add(out, ta, t_b)

    def vjp(ct, primals, y):
        a, b = primals
        return unbroadcast(ct, aval_of(a)), unbroadcast(mul(ct, db(a, b, y)), aval_of(b))

    prim.jvp, prim.vjp = jvp, vjp


_remainder_rules(remainder_p)
_remainder_rules(fmod_p)

# ---------------------------------------------------------------- smooth two-operand functions
# logaddexp is a primitive (not max + log1p(exp(-|a - b|))) so that its derivative is the
# smooth weight exp(a - y): a composite through maximum/abs takes a one-sided derivative at
# a == b (0 and 1 instead of 0.5 and 0.5), and softplus(0) would get 0 instead of 0.5.
logaddexp_p = declare("logaddexp", _call("np.logaddexp"), elementwise=True, numpy_names=("logaddexp",),
                      cuda=lambda a, b: f"(tg_maximum({a}, {b}) + tg_log1p(tg_exp(-tg_abs({a} - {b}))))")


def logaddexp(a: Any, b: Any) -> Any: return bind(logaddexp_p, a, b)


def logaddexp_jvp(primals, tangents):
    a, b = primals
    ta, tb = tangents
    y = logaddexp(a, b)
    out = aval_of(y)
    t_a = T.scale(ta, exp(sub(a, y)), out) if not T.is_zero(ta) else ta
    t_b = T.scale(tb, exp(sub(b, y)), out) if not T.is_zero(tb) else tb
    return y, T.add(out, t_a, t_b)


def logaddexp_vjp(ct, primals, y):
    a, b = primals
    return (unbroadcast(mul(ct, exp(sub(a, y))), aval_of(a)),
            unbroadcast(mul(ct, exp(sub(b, y))), aval_of(b)))


logaddexp_p.jvp, logaddexp_p.vjp = logaddexp_jvp, logaddexp_vjp

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

# Bitwise operators: NumPy's ``&``, ``|``, ``^``, ``~``, ``<<``, ``>>`` are bitwise on integers
# (and logical on booleans: the functions below route booleans to the logical primitives).
bitwise_and_p = declare("bitwise_and", _binop("&"), elementwise=True, numpy_names=("bitwise_and",),
                        differentiable=False, cuda=_c_binop("&"))
bitwise_or_p = declare("bitwise_or", _binop("|"), elementwise=True, numpy_names=("bitwise_or",),
                       differentiable=False, cuda=_c_binop("|"))
bitwise_xor_p = declare("bitwise_xor", _binop("^"), elementwise=True, numpy_names=("bitwise_xor",),
                        differentiable=False, cuda=_c_binop("^"))
invert_p = declare("invert", lambda x: f"~{x}", elementwise=True, numpy_names=("invert", "bitwise_not"),
                   differentiable=False, cuda=lambda x: f"~{x}")
left_shift_p = declare("left_shift", _binop("<<"), elementwise=True, numpy_names=("left_shift",),
                       differentiable=False, cuda=_c_binop("<<"))
right_shift_p = declare("right_shift", _binop(">>"), elementwise=True, numpy_names=("right_shift",),
                        differentiable=False, cuda=_c_binop(">>"))


def _both_bool(*xs: Any) -> bool:
    return all(aval_of(x).dtype == np.bool_ for x in xs)


@numpy_function(bitwise_and_p)
def bitwise_and(a: Any, b: Any) -> Any:
    return logical_and(a, b) if _both_bool(a, b) else bind(bitwise_and_p, a, b)


@numpy_function(bitwise_or_p)
def bitwise_or(a: Any, b: Any) -> Any:
    return logical_or(a, b) if _both_bool(a, b) else bind(bitwise_or_p, a, b)


@numpy_function(bitwise_xor_p)
def bitwise_xor(a: Any, b: Any) -> Any:
    return not_equal(a, b) if _both_bool(a, b) else bind(bitwise_xor_p, a, b)


@numpy_function(invert_p)
def invert(x: Any) -> Any:
    # ~True is -2 for a Python bool but False for NumPy's bool: booleans negate logically
    return logical_not(x) if _both_bool(x) else bind(invert_p, x)


def left_shift(a: Any, b: Any) -> Any: return bind(left_shift_p, a, b)
def right_shift(a: Any, b: Any) -> Any: return bind(right_shift_p, a, b)

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


# activity perturbation (ad/perturb.py): a user-tagged injection point; the identity otherwise
perturb_point_p = declare("perturb_point", lambda x: x, elementwise=True, flops=no_flops, view=True,
                          cuda=lambda x: x, fusion="view", cupy=lambda layout, params, n: layout)


def perturb_point(x: Any) -> Any:
    """``x`` itself, marked as an activity-perturbation point for ``tracegrad.activity_grad``: a
    tangent is injected there besides the automatic points (``x @ W + b``, ``conv2d(x, W) + b``).
    The parameters used between the nearest earlier points and ``x`` (a user-written layer, a
    gain after a nonlinearity) get their estimate from the local VJP of those nodes with
    ``d ⊙ u`` as cotangent; an automatic point whose output reaches ``x`` only through
    elementwise ops without parameters (``perturb_point(relu(x @ W + b))``) is perturbed at
    ``x`` instead. Everywhere else (``grad``, ``jvp``, ``forward_grad``, eager NumPy) the identity."""
    return bind(perturb_point_p, x)


def _perturb_point_jvp(primals: list[Any], tangents: list[T.Tangent]) -> tuple[Any, T.Tangent]:
    return perturb_point(primals[0]), tangents[0]


perturb_point_p.jvp = _perturb_point_jvp
perturb_point_p.vjp = lambda ct, primals, y: (ct,)
