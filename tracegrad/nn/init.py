"""Seeded parameter initializers: ``fn(rng, shape, ...) -> array`` of ``dtype`` (float32).

``rng`` is a ``numpy.random.Generator``; drawing parameters in a fixed order from one
generator makes a model's ``init(seed)`` reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["glorot_uniform", "he_normal", "zeros"]


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, dtype: Any = np.float32) -> np.ndarray:
    """Normal with std ``sqrt(2 / fan_in)`` (He et al. 2015): keeps the scale of ReLU layers."""
    if fan_in < 1:
        raise ValueError(f"he_normal: fan_in must be >= 1, got {fan_in}")
    std = np.sqrt(2.0 / fan_in)
    return (rng.standard_normal(shape, dtype=np.float64) * std).astype(dtype)


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
                   dtype: Any = np.float32) -> np.ndarray:
    """Uniform on ``±sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio 2010)."""
    if fan_in + fan_out < 1:
        raise ValueError(f"glorot_uniform: fan_in + fan_out must be >= 1, got {fan_in} + {fan_out}")
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def zeros(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return np.zeros(shape, dtype)
