"""Smooth elementwise functions beyond the core set: trigonometric, hyperbolic, base-2/10
logarithms and exponentials, cube root, and the two-argument ``arctan2`` and ``hypot``.

Each is one primitive lowered to the NumPy ufunc of the same name (so values match NumPy
to the last bit) and to the C math function in fused CUDA kernels. The unary ones state
only their derivative factor (``defjvp_unary``), which reverse mode shares.
"""

from __future__ import annotations

import math
from typing import Any

from ..ad import tangents as T
from ..ad.rules import defjvp_unary, defvjp_unary, unbroadcast
from ..tracing.tracer import aval_of, bind
from ._rules import declare
from .elementwise import _c_call, _call, add, div, mul, neg, sqrt, sub, unary_float_op

# ---------------------------------------------------------------- unary
tan_p = unary_float_op("tan", "tanf", "tan")
arcsin_p = unary_float_op("arcsin", "asinf", "asin")
arccos_p = unary_float_op("arccos", "acosf", "acos")
sinh_p = unary_float_op("sinh", "sinhf", "sinh")
cosh_p = unary_float_op("cosh", "coshf", "cosh")
arcsinh_p = unary_float_op("arcsinh", "asinhf", "asinh")
arccosh_p = unary_float_op("arccosh", "acoshf", "acosh")
arctanh_p = unary_float_op("arctanh", "atanhf", "atanh")
log2_p = unary_float_op("log2", "log2f", "log2")
log10_p = unary_float_op("log10", "log10f", "log10")
exp2_p = unary_float_op("exp2", "exp2f", "exp2")
cbrt_p = unary_float_op("cbrt", "cbrtf", "cbrt")


def tan(x: Any) -> Any: return bind(tan_p, x)
def sinh(x: Any) -> Any: return bind(sinh_p, x)
def cosh(x: Any) -> Any: return bind(cosh_p, x)


def _one_minus_sq(x: Any) -> Any:
    return sub(1, mul(x, x))


_LN2, _LN10 = math.log(2), math.log(10)

defjvp_unary(tan_p, lambda x, y: add(1, mul(y, y)))
defjvp_unary(arcsin_p, lambda x, y: div(1, sqrt(_one_minus_sq(x))))
defjvp_unary(arccos_p, lambda x, y: neg(div(1, sqrt(_one_minus_sq(x)))))
defjvp_unary(sinh_p, lambda x, y: cosh(x))
defjvp_unary(cosh_p, lambda x, y: sinh(x))
defjvp_unary(arcsinh_p, lambda x, y: div(1, sqrt(add(mul(x, x), 1))))
# sqrt(x - 1) sqrt(x + 1) rather than sqrt(x^2 - 1): no cancellation near x = 1
defjvp_unary(arccosh_p, lambda x, y: div(1, mul(sqrt(sub(x, 1)), sqrt(add(x, 1)))))
defjvp_unary(arctanh_p, lambda x, y: div(1, _one_minus_sq(x)))
defjvp_unary(log2_p, lambda x, y: div(1 / _LN2, x))
defjvp_unary(log10_p, lambda x, y: div(1 / _LN10, x))
defjvp_unary(exp2_p, lambda x, y: mul(y, _LN2))
defjvp_unary(cbrt_p, lambda x, y: div(1 / 3, mul(y, y)))
for _p in (tan_p, arcsin_p, arccos_p, sinh_p, cosh_p, arcsinh_p, arccosh_p, arctanh_p,
           log2_p, log10_p, exp2_p, cbrt_p):
    defvjp_unary(_p)
del _p


# ---------------------------------------------------------------- binary
def _c_binary_fn(name: str, f32: str, f64: str) -> str:
    return (f"__device__ __forceinline__ float32 tg_{name}(float32 a, float32 b) {{ return {f32}(a, b); }}\n"
            f"__device__ __forceinline__ float64 tg_{name}(float64 a, float64 b) {{ return {f64}(a, b); }}")


arctan2_p = declare("arctan2", _call("np.arctan2"), elementwise=True, numpy_names=("arctan2",),
                    cuda=_c_call("tg_arctan2"), cuda_helper=_c_binary_fn("arctan2", "atan2f", "atan2"))
hypot_p = declare("hypot", _call("np.hypot"), elementwise=True, numpy_names=("hypot",),
                  cuda=_c_call("tg_hypot"), cuda_helper=_c_binary_fn("hypot", "hypotf", "hypot"))


def arctan2(y: Any, x: Any) -> Any: return bind(arctan2_p, y, x)
def hypot(a: Any, b: Any) -> Any: return bind(hypot_p, a, b)


def _arctan2_factors(a: Any, b: Any) -> tuple[Any, Any]:
    # d atan2(a, b) = (b da - a db) / (a^2 + b^2)
    r2 = add(mul(a, a), mul(b, b))
    return div(b, r2), neg(div(a, r2))


def _hypot_factors(a: Any, b: Any, h: Any) -> tuple[Any, Any]:
    # d hypot(a, b) = (a da + b db) / hypot(a, b)
    return div(a, h), div(b, h)


def arctan2_jvp(primals, tangents):
    a, b = primals
    ta, tb = tangents
    y = arctan2(a, b)
    out = aval_of(y)
    fa, fb = _arctan2_factors(a, b)
    return y, T.add(out, T.scale(ta, fa, out), T.scale(tb, fb, out))


def hypot_jvp(primals, tangents):
    a, b = primals
    ta, tb = tangents
    y = hypot(a, b)
    out = aval_of(y)
    fa, fb = _hypot_factors(a, b, y)
    return y, T.add(out, T.scale(ta, fa, out), T.scale(tb, fb, out))


def arctan2_vjp(ct, primals, y):
    a, b = primals
    fa, fb = _arctan2_factors(a, b)
    return unbroadcast(mul(ct, fa), aval_of(a)), unbroadcast(mul(ct, fb), aval_of(b))


def hypot_vjp(ct, primals, y):
    a, b = primals
    fa, fb = _hypot_factors(a, b, y)
    return unbroadcast(mul(ct, fa), aval_of(a)), unbroadcast(mul(ct, fb), aval_of(b))


arctan2_p.jvp, arctan2_p.vjp = arctan2_jvp, arctan2_vjp
hypot_p.jvp, hypot_p.vjp = hypot_jvp, hypot_vjp
