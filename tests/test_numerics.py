"""Numerical classes that used to be silently wrong or crash (issue 10).

Each test compares with plain NumPy values and with central finite differences in float64,
in forward mode (``check_jvp``) and reverse mode (``check_grad``), at the points where the
old rules broke: ties, constant functions, zeros, unselected non-finite branches.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.errors import TracegradError
from tracegrad.testing import check_grad, check_jvp


def _jvp(fn, *args):
    """Value and JVP of ``fn`` at ``args`` with all-ones tangents on float arguments."""
    tangents = tuple(np.ones_like(a) if np.asarray(a).dtype.kind == "f" else None for a in args)
    return tg.compile(fn).jvp(args, tangents)


def _grad(fn, *args, argnums=0):
    return tg.grad(lambda *a: np.sum(fn(*a)), argnums)(*args)


def _check_all(fn, *args, argnums=(0,)):
    """Value equals NumPy's; JVP and gradient match central finite differences."""
    np.testing.assert_allclose(tg.compile(fn)(*args), fn(*args), rtol=1e-12)
    check_jvp(fn, args, argnums)
    check_grad(lambda *a: np.sum(fn(*a)), args, argnums)


# ---------------------------------------------------------------- ties in smooth functions
def test_logaddexp_tie_has_symmetric_derivative():
    x = np.array([0.0, 1.5, -2.0])
    _, t = tg.compile(np.logaddexp).jvp((x, x.copy()), (np.ones(3), np.zeros(3)))
    np.testing.assert_allclose(t, 0.5)  # d/dx log(e^x + e^y) = e^(x - y_out) = 1/2 at x == y
    gx, gy = _grad(np.logaddexp, x, x.copy(), argnums=(0, 1))
    np.testing.assert_allclose(gx, 0.5)
    np.testing.assert_allclose(gy, 0.5)
    _check_all(np.logaddexp, x, x.copy(), argnums=(0, 1))
    _check_all(np.logaddexp, x, np.array([[0.0], [1.5]]), argnums=(0, 1))  # broadcasting, some ties


def test_softplus_at_zero_is_one_half():
    x = np.array([0.0, -3.0, 2.0])
    _, t = _jvp(tnp.softplus, x)
    np.testing.assert_allclose(t, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(_grad(tnp.softplus, x), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(tg.compile(tnp.softplus)(x), np.logaddexp(x, 0.0))
