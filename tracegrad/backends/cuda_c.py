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

from ..ir import PRIMITIVES

__all__ = [  # and PREAMBLE (== preamble(), computed on use)
    "SUPPORTED_DTYPES",
    "c_literal",
    "c_name",
    "convert",
    "ctype",
    "identity_literal",
    "index_ctype",
    "preamble",
]

SUPPORTED_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                    "float32", "float64")

_BASE = r"""// ---- tracegrad preamble: NumPy dtype names as C types; tg_* helpers with NumPy semantics
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

// a tg_<name> helper calling the float32 / float64 libm function (primitives declare them)
#define TG_FLOAT_FN(name, f32, f64) \
    __device__ __forceinline__ float32 name(float32 x) { return f32(x); } \
    __device__ __forceinline__ float64 name(float64 x) { return f64(x); }
"""


def preamble() -> str:
    """The typedefs, then every registered primitive's ``cuda_helper`` (its declaration in
    ``tracegrad/ops`` owns it), once each, in registration order."""
    helpers: list[str] = []
    for prim in PRIMITIVES.values():
        if prim.cuda_helper and prim.cuda_helper not in helpers:
            helpers.append(prim.cuda_helper)
    return _BASE + "\n".join(helpers) + "\n// ---- end of preamble\n"


def __getattr__(name: str) -> str:
    if name == "PREAMBLE":  # computed on use: a primitive registered later still gets its helper
        return preamble()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
