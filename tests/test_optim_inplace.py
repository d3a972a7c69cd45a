"""In-place optimizer steps: the same numbers as the functional update, written into the
parameter and state arrays, gradients untouched, and no parameter-sized allocation once
the workspace is warm."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tracegrad.optim import adam, momentum, sgd
from tracegrad.tree import tree_flatten

CONFIGS = [
    (sgd, {}), (sgd, {"weight_decay": 0.1}),
    (momentum, {}), (momentum, {"nesterov": True}), (momentum, {"weight_decay": 0.05}),
    (adam, {}), (adam, {"weight_decay": 0.1}), (adam, {"weight_decay": 0.1, "decoupled": True}),
]


def _params(rng, dtype=np.float32):
    return {"w": rng.standard_normal((6, 5)).astype(dtype), "b": rng.standard_normal(5).astype(dtype),
            "w2": rng.standard_normal((6, 5)).astype(dtype)}  # two leaves of one shape share workspace


@pytest.mark.parametrize("make,kw", CONFIGS)
def test_inplace_matches_functional_bit_for_bit_and_writes_in_place(make, kw):
    rng = np.random.default_rng(1)
    opt = make(0.05, **kw)
    p_f = _params(rng)
    p_i = {k: v.copy() for k, v in p_f.items()}
    s_f, s_i = opt.init(p_f), opt.init(p_i)
    ids = [id(x) for x in tree_flatten((p_i, s_i))[0] if isinstance(x, np.ndarray)]
    for _ in range(4):
        g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in p_f.items()}
        g_before = {k: v.copy() for k, v in g.items()}
        p_f, s_f = opt.update(g, s_f, p_f)
        p_i, s_i = opt.update_inplace(g, s_i, p_i)
        for k, v in g.items():
            np.testing.assert_array_equal(v, g_before[k])  # gradients are only read
    for a, b in zip(tree_flatten((p_f, s_f))[0], tree_flatten((p_i, s_i))[0]):
        np.testing.assert_array_equal(a, b)
    assert [id(x) for x in tree_flatten((p_i, s_i))[0] if isinstance(x, np.ndarray)] == ids
    assert s_i.step == 4


@pytest.mark.parametrize("make,kw", CONFIGS)
def test_functional_update_mutates_nothing(make, kw):
    rng = np.random.default_rng(2)
    opt = make(0.05, **kw)
    p = _params(rng)
    s = opt.update({k: np.ones_like(v) for k, v in p.items()}, opt.init(p), p)[1]  # non-zero state
    p_copy = {k: v.copy() for k, v in p.items()}
    s_copy = [x.copy() if isinstance(x, np.ndarray) else x for x in tree_flatten(s)[0]]
    new_p, _ = opt.update({k: np.ones_like(v) for k, v in p.items()}, s, p)
    for k in p:
        np.testing.assert_array_equal(p[k], p_copy[k])
        assert not np.array_equal(new_p[k], p[k])
    for a, b in zip(tree_flatten(s)[0], s_copy):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [sgd, momentum, adam])
def test_warm_inplace_step_allocates_no_parameter_sized_buffer(make):
    opt = make(0.01)
    p = {"w": np.ones((256, 256), np.float32), "b": np.zeros(256, np.float32)}
    g = {"w": np.full((256, 256), 0.5, np.float32), "b": np.ones(256, np.float32)}
    s = opt.init(p)
    p, s = opt.update_inplace(g, s, p)  # warm: the workspace is allocated here
    w_bytes = p["w"].nbytes
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        p, s = opt.update_inplace(g, s, p)
        inplace_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        opt.update(g, s, p)
        functional_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert inplace_peak < w_bytes // 8
    assert functional_peak >= w_bytes  # the measurement sees a parameter-sized buffer


def test_inplace_copes_with_foreign_dtypes_and_read_only_parameters():
    ro = np.ones(3, np.float32)
    ro.flags.writeable = False
    for opt in (sgd(0.1), momentum(0.1), adam(0.1)):
        new, _ = opt.update_inplace({"w": np.full(3, 2.0, np.float64)}, opt.init({"w": ro}), {"w": ro})
        assert new["w"].dtype == np.float32 and np.all(new["w"] < 1) and new["w"] is not ro
        np.testing.assert_array_equal(ro, 1.0)


@pytest.mark.parametrize("make,kw", CONFIGS)
def test_flat_dict_fast_path_equals_the_general_path_bit_for_bit(make, kw):
    """A flat dict of NumPy parameters skips the tree walk (optimizers._flat_dict_pairs);
    the same parameters as a tuple (in the dict's tree order) take the general path. Both
    must give the same bits, dense and rank-1 gradients alike."""
    from tracegrad.optim.optimizers import _flat_dict_pairs, _flat_like
    from tracegrad.structured import LowRankGrad

    rng = np.random.default_rng(4)
    opt = make(0.05, **kw)
    p_d = _params(rng)
    p_t = tuple(p_d[k].copy() for k in sorted(p_d))
    s_d, s_t = opt.init(p_d), opt.init(p_t)
    for _ in range(3):
        g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in p_d.items()}
        g["w2"] = LowRankGrad(rng.standard_normal((6, 1)).astype(np.float32),
                              rng.standard_normal((5, 1)).astype(np.float32), (6, 5))
        ids = {k: id(v) for k, v in p_d.items()}
        pairs = _flat_dict_pairs(p_d, g)
        assert pairs is not None  # the dict takes the fast path, state included
        assert all(_flat_like(s, pairs) is not None for s in s_d[1:])
        p_d, s_d = opt.update_inplace(g, s_d, p_d)
        p_t, s_t = opt.update_inplace(tuple(g[k] for k in sorted(g)), s_t, p_t)
        assert list(p_d) == sorted(p_d) and {k: id(v) for k, v in p_d.items()} == ids  # in place
        for k, v in zip(sorted(p_d), p_t):
            np.testing.assert_array_equal(p_d[k], v)
    assert s_d.step == s_t.step == 3


def test_sgd_fast_path_leaves_bad_input_to_the_general_paths_errors():
    rng = np.random.default_rng(5)
    opt = sgd(0.1)
    p = _params(rng)
    state = opt.init(p)
    with pytest.raises(ValueError, match="structure"):  # a missing key: not a fast-path pair
        opt.update_inplace({"w": p["w"], "b": p["b"], "x": p["w2"]}, state, p)
    g = {k: np.ones_like(v, dtype=np.float64) for k, v in p.items()}  # other dtype: cast as before
    before = {k: v.copy() for k, v in p.items()}
    p2, _ = opt.update_inplace(g, state, p)
    for k in p:
        np.testing.assert_array_equal(p2[k], before[k] - np.float32(0.1))
    frozen = {k: v.copy() for k, v in p.items()}
    for v in frozen.values():
        v.flags.writeable = False
    p3, _ = opt.update_inplace(g, state, frozen)  # read-only parameters are copied, not written
    assert all(p3[k] is not frozen[k] for k in p)
