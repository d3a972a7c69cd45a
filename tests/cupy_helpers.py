"""Shared by the CuPy-backend tests: run the backend on the CPU stand-in (fake_cupy)."""

from __future__ import annotations

import numpy as np
import pytest
from fake_cupy import have_compiler

needs_gxx = pytest.mark.skipif(not have_compiler(), reason="g++ is needed to run generated kernels on the CPU")


def as_f32(args):
    return [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a for a in args]


_I = np.arange(-3, 5, dtype=np.int64).reshape(2, 4)
# Integer and boolean operands: tg_pow on integers, integer abs/sign/max, boolean sums, casts.
INT_CASES = [
    ("int_ops", lambda a: np.maximum(a, 1) * np.abs(a) + a ** 2 - np.sign(a), [_I]),
    ("int_float_mix", lambda a: np.sqrt(a * 1.0 + 4) + np.floor(a / 2), [_I]),
    ("bool_ops", lambda m: np.sum(m) + np.sum(m & ~m | m, axis=0), [_I > 0]),
    ("int32_min_max", lambda a: np.min(a.astype(np.int32), axis=1) + np.max(a.astype(np.int32)), [_I]),
    ("uint8_cast", lambda a: a.astype(np.uint8).astype(np.float32) * 0.5, [_I]),
    ("int_bitwise", lambda a: (a & 6) | (a ^ 3) + (~a) + ((a + 8) << 2 >> 1), [_I]),
    ("int_mod_floordiv", lambda a: a % 3 + a // 3 + np.fmod(a, -3) + a % (a - 1) + a // (a + 1), [_I]),
    ("float_mod_special", lambda x: x % 1.5 + x // 1.5 + np.fmod(x, -1.5) + x % 0.0 + np.fmod(x, 0.0) + x // 0.0,
     [np.array([5.3, -5.3, 0.0, -0.0, 3.0, -4.5], np.float32)]),
    ("nan_inf", lambda x: np.where(np.isfinite(x), np.maximum(x, np.float32(np.nan)), -np.inf) + np.sign(x),
     [np.array([1.0, np.nan, np.inf, -2.0], np.float32)]),
]
