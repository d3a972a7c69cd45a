"""Per-primitive checks over the declarative case table (tests/op_cases.py)."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASE_IDS, CASES, numpy_reference

import tracegrad as tg
from tracegrad.testing import check_jvp, random_tangents
from tracegrad.tree import tree_leaves


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_compiled_matches_numpy(case):
    got = tg.compile(case.fn)(*case.args)
    want = numpy_reference(case)(*case.args)
    np.testing.assert_allclose(got, want, rtol=1e-6 if case.name == "astype" else 1e-12, atol=1e-12)
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).dtype == np.asarray(want).dtype


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jvp_matches_finite_differences(case):
    if case.extra.get("skip_fd"):
        pytest.skip("stop_gradient has no finite-difference counterpart (checked by hand below)")
    check_jvp(case.fn, case.args, case.argnums, seed=7, **case.extra.get("fd", {}))


@pytest.mark.parametrize("case", [c for c in CASES if c.deriv is not None], ids=lambda c: c.name)
def test_jvp_matches_hand_derived(case):
    (x,) = case.args
    v = np.random.default_rng(3).standard_normal(x.shape)
    _y, ydot = tg.jvp(case.fn, (x,), (v,))
    np.testing.assert_allclose(ydot, case.deriv(x) * v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_batched_directions_match_one_at_a_time(case):
    """K directions on a leading axis give the same tangents as K separate JVPs."""
    rng = np.random.default_rng(11)
    f = tg.compile(case.fn)
    per = [random_tangents(case.args, case.argnums, rng) for _ in range(3)]
    stacked = [None if per[0][i] is None else np.stack([p[i] for p in per]) for i in range(len(case.args))]
    _, batched = f.jvp(case.args, stacked, batched=True)
    for k in range(3):
        _, single = f.jvp(case.args, per[k])
        for b, s in zip(tree_leaves(batched), tree_leaves(single)):
            np.testing.assert_allclose(b[k], s, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if len(c.args) > 1], ids=lambda c: c.name)
def test_none_tangent_costs_nothing(case):
    """Inputs without tangents get no tangent input and no node depends on one."""
    f = tg.compile(case.fn)
    first = case.argnums[0]
    g = f.jvp_graph(*case.args, argnums=(first,))
    assert g.input_kinds.count("tangent") == (1 if np.asarray(case.args[first]).dtype.kind == "f" else 0)
    full = f.jvp_graph(*case.args, argnums=case.argnums)
    assert len(g.nodes) <= len(full.nodes)


def test_stop_gradient_blocks_the_tangent():
    x = np.array([1.0, -2.0, 3.0])
    _, t = tg.jvp(lambda a: a * tg.numpy.stop_gradient(a), (x,), (np.ones(3),))
    np.testing.assert_allclose(t, x)


def test_float32_stays_float32():
    x = np.ones((2, 3), np.float32)
    w = np.ones((3, 4), np.float32)
    f = tg.compile(lambda x, w: np.mean(np.tanh(x @ w) * 2.0 + 1))
    y, t = f.jvp((x, w), (None, np.ones_like(w)))
    assert np.asarray(y).dtype == np.float32 and np.asarray(t).dtype == np.float32


def test_take_along_axis_runtime_helper_matches_numpy():
    """The NumPy lowering's ``tg_take_along_axis`` (one fancy index with cached ranges)
    gives np.take_along_axis's elements, shapes and errors."""
    from tracegrad.ops.indexing import tg_take_along_axis

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    cases = [(rng.integers(-5, 5, (3, 4, 2)), 2), (rng.integers(0, 4, (3, 1, 5)), 1), (rng.integers(0, 3, (1, 4, 5)), 0),
             (rng.integers(0, 5, (3, 4, 1)), 2), (rng.integers(0, 5, (1, 1, 7)), 2)]
    for _ in range(2):  # the second round reads the cached ranges
        for idx, axis in cases:
            want = np.take_along_axis(x, idx, axis=axis)
            got = tg_take_along_axis(x, idx, axis)
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    with pytest.raises(IndexError):
        tg_take_along_axis(x, np.full((3, 4, 1), 5), 2)
