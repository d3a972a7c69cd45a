"""CUDA C building blocks shared by the generated kernels (pure Python, no CuPy).

Generated kernels name C types like NumPy dtypes (``float32``, ``int64``, ``bool``)
through the typedefs of ``PREAMBLE``, and call ``tg_*`` helpers that reproduce NumPy's
semantics where C differs (``np.maximum`` propagates NaN; ``np.sign(nan)`` is nan). The
preamble uses no headers, so one translation unit compiles unchanged with NVRTC (what
``cupy.RawModule`` uses), with ``nvcc --ptx`` (the tests) and, through a small shim, as
host C++ (the CPU emulation the tests run the kernels with).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "PREAMBLE",
    "SUPPORTED_DTYPES",
    "c_literal",
    "c_name",
    "convert",
    "ctype",
    "identity_literal",
    "index_ctype",
]

SUPPORTED_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                    "float32", "float64")

PREAMBLE = r"""// ---- tracegrad preamble: NumPy dtype names as C types; tg_* helpers with NumPy semantics
typedef signed char int8;
typedef short int16;
typedef int int32;
typedef long long int64;
typedef unsigned char uint8;
typedef unsigned short uint16;
typedef unsigned int uint32;
typedef unsigned long long uint64;
typedef float float32;
typedef double float64;

// np.maximum / np.minimum: a NaN in either operand wins
template <typename T> __device__ __forceinline__ T tg_maximum(T a, T b) { return (a > b || a != a) ? a : b; }
template <typename T> __device__ __forceinline__ T tg_minimum(T a, T b) { return (a < b || a != a) ? a : b; }
// np.sign: -1, 0 or 1, and nan for nan
template <typename T> __device__ __forceinline__ T tg_sign(T x) { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x); }
template <typename T> __device__ __forceinline__ T tg_abs(T x) { return x < T(0) ? T(-x) : x; }
// finite <=> x - x == 0 (inf - inf and nan - nan are nan); always true for integers
template <typename T> __device__ __forceinline__ bool tg_isfinite(T x) { return x - x == T(0); }
// integer power by squaring (np.power on integers); float overloads below
template <typename T> __device__ __forceinline__ T tg_pow(T a, T b) {
    T r = 1;
    for (; b > 0; b >>= 1) { if (b & 1) r *= a; a *= a; }
    return r;
}
#define TG_FLOAT_FN(name, f32, f64) \
    __device__ __forceinline__ float32 name(float32 x) { return f32(x); } \
    __device__ __forceinline__ float64 name(float64 x) { return f64(x); }
TG_FLOAT_FN(tg_exp, expf, exp)
TG_FLOAT_FN(tg_log, logf, log)
TG_FLOAT_FN(tg_log1p, log1pf, log1p)
TG_FLOAT_FN(tg_expm1, expm1f, expm1)
TG_FLOAT_FN(tg_sqrt, sqrtf, sqrt)
TG_FLOAT_FN(tg_sin, sinf, sin)
TG_FLOAT_FN(tg_cos, cosf, cos)
TG_FLOAT_FN(tg_tanh, tanhf, tanh)
TG_FLOAT_FN(tg_floor, floorf, floor)
TG_FLOAT_FN(tg_abs, fabsf, fabs)
__device__ __forceinline__ float32 tg_pow(float32 a, float32 b) { return powf(a, b); }
__device__ __forceinline__ float64 tg_pow(float64 a, float64 b) { return pow(a, b); }
// np.floor_divide / np.remainder (the remainder takes the divisor's sign) / np.fmod (the
// dividend's sign); integer division by 0 gives 0 as in NumPy; floats follow npy_divmod
template <typename T> __device__ __forceinline__ T tg_floor_divide(T a, T b) {
    if (b == 0) return 0;
    T q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? T(q - 1) : q;
}
template <typename T> __device__ __forceinline__ T tg_remainder(T a, T b) {
    if (b == 0) return 0;
    T r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? T(r + b) : r;
}
template <typename T> __device__ __forceinline__ T tg_fmod(T a, T b) { return b == 0 ? T(0) : T(a % b); }
#define TG_FLOAT_DIVMOD(T, FMOD, FLOOR, COPYSIGN) \
    __device__ __forceinline__ T tg_remainder(T a, T b) { \
        T m = FMOD(a, b); \
        if (b == 0) return m; \
        if (m != 0) { if ((b < 0) != (m < 0)) m += b; } else m = COPYSIGN(T(0), b); \
        return m; \
    } \
    __device__ __forceinline__ T tg_floor_divide(T a, T b) { \
        if (b == 0) return a / b; \
        T m = FMOD(a, b); \
        T d = (a - m) / b; \
        if (m != 0 && ((b < 0) != (m < 0))) d -= T(1); \
        if (d == 0) return COPYSIGN(T(0), a / b); \
        T f = FLOOR(d); \
        return d - f > T(0.5) ? T(f + 1) : f; \
    } \
    __device__ __forceinline__ T tg_fmod(T a, T b) { return FMOD(a, b); }
TG_FLOAT_DIVMOD(float32, fmodf, floorf, copysignf)
TG_FLOAT_DIVMOD(float64, fmod, floor, copysign)
// ---- end of preamble
"""

# C++ keywords (and names the kernels use) that a graph variable name must not shadow
_RESERVED = frozenset(["alignas", "alignof", "and", "asm", "auto", "bitand", "bitor", "bool", "break", "case", "catch", "char", "class", "compl", "const", "constexpr", "const_cast", "continue", "decltype", "default", "delete", "do", "double", "dynamic_cast", "else", "enum", "explicit", "export", "extern", "false", "float", "for", "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace", "new", "noexcept", "not", "nullptr", "operator", "or", "private", "protected", "public", "register", "reinterpret_cast", "return", "short", "signed", "sizeof", "static", "static_assert", "static_cast", "struct", "switch", "template", "this", "throw", "true", "try", "typedef", "typeid", "typename", "union", "unsigned", "using", "virtual", "void", "volatile", "wchar_t", "while", "xor", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64", "blockIdx", "blockDim", "threadIdx", "gridDim"])


def c_name(name: str) -> str:
    """A graph name as a C identifier (``do`` is a C keyword: ``do_``)."""
    return name + "_" if name in _RESERVED or name.startswith("tg_") else name


def ctype(dtype: Any) -> str:
    """C type of a NumPy dtype (the preamble's typedefs); a clear error for the rest."""
    name = np.dtype(dtype).name
    if name not in SUPPORTED_DTYPES:
        raise NotImplementedError(f"the cupy backend's fused kernels do not support dtype {name}; "
                                  f"supported: {', '.join(SUPPORTED_DTYPES)}")
    return name


def c_literal(value: Any, dtype: Any) -> str:
    """A C expression of type ``ctype(dtype)`` equal to ``value`` converted to ``dtype``."""
    dtype = np.dtype(dtype)
    name = ctype(dtype)
    if dtype.kind == "b":
        return "true" if bool(value) else "false"
    if dtype.kind == "f":
        v = float(dtype.type(value))
        if math.isnan(v):
            return "__int_as_float(0x7fc00000)" if name == "float32" else "__longlong_as_double(0x7ff8000000000000LL)"
        if math.isinf(v):
            inf = "__int_as_float(0x7f800000)" if name == "float32" else "__longlong_as_double(0x7ff0000000000000LL)"
            return inf if v > 0 else f"(-{inf})"
        text = repr(v) + ("f" if name == "float32" else "")
        return f"({text})" if v < 0 or text.startswith("-") else text
    v = int(dtype.type(value))
    if name == "int64":
        text = "(-9223372036854775807LL - 1)" if v == -(2**63) else f"{v}LL"
    elif name == "uint64":
        text = f"{v}ULL"
    elif name == "int32":
        text = "(-2147483647 - 1)" if v == -(2**31) else str(v)
    elif name == "uint32":
        text = f"{v}U"
    else:
        text = f"{name}({v})"
    return f"({text})" if v < 0 and not text.startswith("(") else text


def identity_literal(kind: str, dtype: Any) -> str:
    """Start value of a reduction: ``zero``, ``lowest`` (-inf, int min) or ``highest``."""
    dtype = np.dtype(dtype)
    if kind == "zero":
        return c_literal(0, dtype)
    if dtype.kind == "f":
        return c_literal(-np.inf if kind == "lowest" else np.inf, dtype)
    if dtype.kind == "b":
        return c_literal(kind == "highest", dtype)
    info = np.iinfo(dtype)
    return c_literal(info.min if kind == "lowest" else info.max, dtype)


def convert(expr: str, src: Any, dst: Any) -> str:
    """``expr`` (of dtype ``src``) as ``dst``; booleans are never converted (C++ promotes
    them exactly, and a ``where`` condition must stay one)."""
    src, dst = np.dtype(src), np.dtype(dst)
    if src == dst or src.kind == "b":
        return expr
    return f"{ctype(dst)}({expr})"


def index_ctype(*sizes: int) -> str:
    """``int`` index arithmetic (fast on GPUs) while every size fits, else ``long long``."""
    return "int" if max(sizes, default=0) < 2**31 - 2**20 else "long long"
