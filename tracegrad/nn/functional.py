"""User-facing neural-network functions (NCHW layout), for model code.

Each works on traced values and on plain NumPy arrays alike (eagerly), like
``tracegrad.numpy``. conv2d and the pools are primitives (``tracegrad/ops/nn.py``);
flatten and relu are composites.
"""

from __future__ import annotations

from typing import Any

from .. import numpy as tnp
from ..ops import nn as _nn

__all__ = ["avg_pool2d", "conv2d", "flatten", "max_pool2d", "relu"]


def conv2d(x: Any, w: Any, stride: Any = 1, padding: Any = 0) -> Any:
    """Cross-correlation of ``x`` (N, C, H, W) with ``w`` (O, C, kh, kw) -> (N, O, H', W').

    ``stride`` and ``padding`` (zeros on both sides) are ints or (rows, cols) pairs;
    H' = (H + 2 padding - kh) // stride + 1. Add a bias with ``+ b.reshape(1, -1, 1, 1)``."""
    return _nn.conv2d(x, w, stride, padding)


def max_pool2d(x: Any, window: Any, stride: Any = None) -> Any:
    """Max over (kh, kw) windows of ``x`` (N, C, H, W); ``stride`` defaults to ``window``, no padding."""
    return _nn.max_pool2d(x, window, stride)


def avg_pool2d(x: Any, window: Any, stride: Any = None) -> Any:
    """Mean over (kh, kw) windows of ``x`` (N, C, H, W); ``stride`` defaults to ``window``, no padding."""
    return _nn.avg_pool2d(x, window, stride)


def flatten(x: Any) -> Any:
    """``x`` (N, ...) -> (N, prod(...)), the usual step from feature maps to a linear layer."""
    return tnp.reshape(x, (tnp.shape(x)[0], -1))


def relu(x: Any) -> Any:
    """``max(x, 0)`` elementwise (the tangent is zero where ``x <= 0``)."""
    return tnp.maximum(x, 0)
