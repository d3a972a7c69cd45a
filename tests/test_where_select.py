"""``tg_where``, the NumPy lowering of ``np.where``: a bitwise select for large float results
(NumPy's where branches per element and is ~10x slower on a random mask) must give exactly
np.where's bits — NaN, inf and signed zeros included — for every broadcast and dtype."""

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.ops.elementwise import tg_where


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [((64, 1024), (8, 64, 1024), ()), ((8, 64, 128),) * 3,
                                    ((1, 1024), (64, 1), (8, 64, 1024)), ((300, 300), (), (300, 300)),
                                    ((3,), (3,), (3,))])
def test_bitwise_select_equals_np_where(dtype, shapes):
    rng = np.random.default_rng(0)
    cs, a_s, b_s = shapes
    cond = rng.random(cs) > 0.5
    a = rng.standard_normal(a_s).astype(dtype)
    b = rng.standard_normal(b_s).astype(dtype)
    if a.size > 4:
        a.flat[:4] = [np.nan, np.inf, -0.0, -np.inf]
    for other in (b, dtype(0.0), dtype(-0.0), 0.0, np.nan):
        got, want = tg_where(cond, a, other), np.where(cond, a, other)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    for mixed in (cond.astype(np.int64), 1):  # integer results and a scalar condition take np.where
        assert np.array_equal(tg_where(mixed, a, b), np.where(mixed, a, b), equal_nan=True)


def test_compiled_where_uses_it_and_keeps_the_values():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 1024)).astype(np.float32)

    def f(x):
        return np.where(x > 0, x * 2, 0.0)

    compiled = tg.compile(f)
    np.testing.assert_array_equal(compiled(x), f(x))
    assert "tg_where(" in compiled.source(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("size", [(64, 1024), (3, 4)])  # the bitwise path, and np.where's
def test_select_into_a_dying_operand_keeps_np_where_bits(dtype, size):
    """The NumPy backend's in-place plan passes ``out=`` (operand ``a`` or ``b`` itself)."""
    rng = np.random.default_rng(1)
    cond = rng.random(size[-1:]) > 0.5
    a = (rng.standard_normal(size) * 5).astype(dtype)
    b = (rng.standard_normal(size) * 5).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        a.flat[:4], b.flat[:4] = [np.nan, np.inf, -0.0, -np.inf], [-0.0, np.nan, 1.0, np.inf]
    for into in ("a", "b"):
        for other in (b, dtype(0)):
            aa, bb = a.copy(), (other.copy() if isinstance(other, np.ndarray) else other)
            if into == "b" and not isinstance(bb, np.ndarray):
                continue
            out = aa if into == "a" else bb
            got = tg_where(cond, aa, bb, out=out)
            want = np.where(cond, a, other)
            assert got is out
            assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_relu_jvp_selects_in_place():
    def f(w, x):
        return np.sum(np.maximum(x @ w, 0))

    w, x = np.ones((256, 256), np.float32), np.ones((256, 256), np.float32)
    src = tg.compile(f).source(w, x, jvp=True)
    assert any("tg_where(" in line and "out=" in line for line in src.splitlines()), src
