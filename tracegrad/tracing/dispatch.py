"""Route NumPy ufuncs and array functions called on tracers to ``tracegrad.numpy``.

Only functions listed here are traced; anything else raises
``UnsupportedOperationError`` naming the function (never a silent fallback).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import UnsupportedOperationError
from .source import user_source


@functools.lru_cache(maxsize=1)
def _tables() -> tuple[dict[Any, Any], dict[Any, Any]]:
    from .. import numpy as tnp

    ufuncs = {
        np.add: tnp.add, np.subtract: tnp.subtract, np.multiply: tnp.multiply,
        np.divide: tnp.divide, np.negative: tnp.negative, np.positive: tnp.positive,
        np.power: tnp.power, np.square: tnp.square, np.reciprocal: tnp.reciprocal,
        np.exp: tnp.exp, np.log: tnp.log, np.log1p: tnp.log1p, np.expm1: tnp.expm1,
        np.log2: tnp.log2, np.log10: tnp.log10, np.sqrt: tnp.sqrt, np.absolute: tnp.abs,
        np.fabs: tnp.abs, np.sign: tnp.sign, np.sin: tnp.sin, np.cos: tnp.cos, np.tanh: tnp.tanh,
        np.maximum: tnp.maximum, np.minimum: tnp.minimum, np.equal: tnp.equal,
        np.not_equal: tnp.not_equal, np.less: tnp.less, np.less_equal: tnp.less_equal,
        np.greater: tnp.greater, np.greater_equal: tnp.greater_equal,
        np.logical_and: tnp.logical_and, np.logical_or: tnp.logical_or,
        np.logical_not: tnp.logical_not, np.isfinite: tnp.isfinite, np.floor: tnp.floor,
        np.logaddexp: tnp.logaddexp, np.matmul: tnp.matmul,
        np.bitwise_and: tnp.bitwise_and, np.bitwise_or: tnp.bitwise_or, np.bitwise_xor: tnp.bitwise_xor,
        np.invert: tnp.invert, np.left_shift: tnp.left_shift, np.right_shift: tnp.right_shift,
        np.floor_divide: tnp.floor_divide, np.remainder: tnp.remainder, np.fmod: tnp.fmod,
        np.divmod: tnp.divmod, np.logical_xor: tnp.logical_xor,
    }
    functions = {
        np.sum: tnp.sum, np.mean: tnp.mean, np.max: tnp.max, np.amax: tnp.max, np.min: tnp.min,
        np.amin: tnp.min, np.prod: tnp.prod, np.var: tnp.var, np.std: tnp.std, np.argmax: tnp.argmax,
        np.argmin: tnp.argmin, np.dot: tnp.dot, np.tensordot: tnp.tensordot, np.einsum: tnp.einsum,
        np.outer: tnp.outer, np.inner: tnp.inner, np.reshape: tnp.reshape, np.ravel: tnp.ravel,
        np.transpose: tnp.transpose, np.swapaxes: tnp.swapaxes, np.moveaxis: tnp.moveaxis,
        np.expand_dims: tnp.expand_dims, np.squeeze: tnp.squeeze, np.broadcast_to: tnp.broadcast_to,
        np.concatenate: tnp.concatenate, np.stack: tnp.stack, np.hstack: tnp.hstack,
        np.vstack: tnp.vstack, np.where: tnp.where, np.clip: tnp.clip,
        np.take_along_axis: tnp.take_along_axis, np.take: tnp.take, np.zeros_like: tnp.zeros_like,
        np.ones_like: tnp.ones_like, np.full_like: tnp.full_like, np.shape: tnp.shape,
        np.ndim: tnp.ndim, np.size: tnp.size, np.asarray: tnp.asarray,
    }
    return ufuncs, functions


def _name(obj: Any) -> str:
    return f"np.{getattr(obj, '__name__', repr(obj))}"


def call_ufunc(ufunc: np.ufunc, method: str, inputs: tuple, kwargs: dict) -> Any:
    ufuncs, _ = _tables()
    fn = ufuncs.get(ufunc)
    if fn is None:
        raise UnsupportedOperationError(f"{_name(ufunc)} is not supported on traced values",
                                        source=user_source(),
                                        hint="write it with supported tracegrad.numpy functions")
    if method != "__call__":
        raise UnsupportedOperationError(f"{_name(ufunc)}.{method} is not supported on traced values",
                                        source=user_source(), hint="use np.sum / np.max etc. instead")
    dtype = kwargs.pop("dtype", None)
    if kwargs:
        raise UnsupportedOperationError(
            f"{_name(ufunc)} with keyword(s) {', '.join(sorted(kwargs))} is not supported on traced values",
            source=user_source(), hint="traced code is functional: drop out=/where= and use the result")
    out = fn(*inputs)
    if dtype is None:
        return out
    from .. import numpy as tnp

    return tnp.astype(out, dtype)


def call_function(func: Any, args: tuple, kwargs: dict) -> Any:
    _, functions = _tables()
    fn = functions.get(func)
    if fn is None:
        raise UnsupportedOperationError(f"{_name(func)} is not supported on traced values",
                                        source=user_source(),
                                        hint="see tracegrad.numpy for the supported functions")
    try:
        return fn(*args, **kwargs)
    except TypeError as err:
        if "unexpected keyword" in str(err) or "positional argument" in str(err):
            raise UnsupportedOperationError(f"{_name(func)}: {err}", source=user_source(),
                                            hint="only the common NumPy arguments are supported") from None
        raise
