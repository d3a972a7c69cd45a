"""A training step leaves nothing behind: no reference cycles (so memory is freed at once,
not when the cycle collector happens to run) and no growth over many steps."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from tracegrad.train import TrainConfig, Trainer
from tracegrad.tree import tree_flatten, tree_unflatten


def _trainer(**kw):
    cfg = {"model": "mlp", "data": "digits", "steps": 1000, "batch_size": 32, "lr": 0.01, "quiet": True,
           "plot": False, "eval_every": 10**6, "checkpoint_every": 10**6, "model_kwargs": {"hidden": [128]},
           "distribution": "rademacher"}
    cfg.update(kw)
    return Trainer(TrainConfig(**cfg))


def _steps(t, n):
    for _ in range(n):
        x, y = t.stream.next()
        _, grads = t.estimator(t.params, x, y, t.step)
        t.params, t.opt_state = t._update(grads, t.opt_state, t.params)
        t.step += 1


def test_pytree_functions_create_no_cycles():
    tree = {"a": [np.ones(3), (np.zeros(2), None)], "b": np.ones(1)}
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            leaves, td = tree_flatten(tree)
            tree_unflatten(td, leaves)
        assert gc.collect() == 0
    finally:
        gc.enable()
    with pytest.raises(ValueError, match="too few leaves"):
        tree_unflatten(td, leaves[:-1])


@pytest.mark.parametrize("mode,optimizer", [("forward", "sgd"), ("forward", "momentum"), ("backprop", "adam")])
def test_fifty_training_steps_leave_memory_flat_without_the_cycle_collector(mode, optimizer):
    t = _trainer(mode=mode, optimizer=optimizer)
    param_bytes = sum(p.nbytes for p in tree_flatten(t.params)[0])
    _steps(t, 5)  # warm: compile caches filled
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        _steps(t, 5)
        before = tracemalloc.get_traced_memory()[0]
        _steps(t, 50)
        after = tracemalloc.get_traced_memory()[0]
        cycles = gc.collect()
        settled = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        gc.enable()
    assert cycles == 0  # nothing a step made needed the cycle collector
    # what is still allocated after 50 more steps: less than one parameter set (a leak of the
    # old parameters, gradients or tangents per step would be 50 of them); the slack before
    # the collection is interpreter free lists, which gc.collect() empties
    assert settled - before < param_bytes
    assert after - before < 5 * param_bytes
    assert np.isfinite(float(t.loss_fn(t.params, *t.stream.next())))


# ---------------------------------------------------------------- the steady-state executor
def _loss(p, x, y):
    import tracegrad.numpy as tnp

    h = np.maximum(x @ p["w0"] + p["b0"], 0.0)
    return tnp.cross_entropy(h @ p["w1"] + p["b1"], y)


def _problem(dtype=np.float32):
    rng = np.random.default_rng(3)
    p = {"w0": rng.standard_normal((12, 16)).astype(dtype) * 0.3, "b0": np.zeros(16, dtype),
         "w1": rng.standard_normal((16, 5)).astype(dtype) * 0.3, "b1": np.zeros(5, dtype)}
    x = rng.standard_normal((8, 12)).astype(dtype)
    y = rng.integers(0, 5, 8)
    return p, x, y


def _dense(g):
    return {k: np.asarray(v) for k, v in g.items()}


@pytest.mark.parametrize("kw", [{}, {"directions": 3}, {"tangents": "rank1"}, {"tangents": "rank1", "rank": 2},
                                {"tangents": "rank1", "directions": 2, "distribution": "rademacher"},
                                {"keep_buffers": True}, {"keep_buffers": True, "tangents": "rank1"},
                                {"keep_buffers": True, "distribution": "rademacher"},
                                {"keep_buffers": True, "tangents": "rank1", "rank": 2, "distribution": "rademacher"},
                                {"keep_buffers": True, "dtype": np.float64}, {"dtype": np.float64, "tangents": "rank1"}])
def test_fast_path_gives_the_general_paths_numbers(kw):
    """Bit for bit: the plan (with its one-pass ``random.Batch`` draw for one direction of
    small float32 leaves, per-leaf draws otherwise) against a fresh estimator's general path."""
    import tracegrad as tg

    kw = dict(kw)
    p, x, y = _problem(kw.pop("dtype", np.float32))
    warm = tg.forward_grad(tg.compile(_loss), seed=7, **kw)
    for step in range(4):  # call 0 takes the general path, the others the cached plan
        value, g = warm(p, x, y, step=step)
        fresh = tg.forward_grad(tg.compile(_loss), seed=7, **kw)  # its first call: general path only
        v_ref, g_ref = fresh(p, x, y, step=step)
        assert value == v_ref
        for k, ref in _dense(g_ref).items():
            np.testing.assert_array_equal(np.asarray(g[k]), ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])  # float32: the one-pass Batch draw
def test_fast_path_keeps_aux_and_argument_order(dtype):
    import tracegrad as tg

    p, x, y = _problem(dtype)

    def loss_aux(x, p, y):
        return _loss(p, x, y), {"scale": np.sum(x * x)}

    est = tg.forward_grad(loss_aux, argnums=(1, 0), has_aux=True, seed=1, tangents="rank1")
    for step in range(3):
        (value, aux), (gp, gx) = est(x, p, y, step=step)
        (v_ref, aux_ref), (gp_ref, gx_ref) = tg.forward_grad(loss_aux, argnums=(1, 0), has_aux=True, seed=1,
                                                             tangents="rank1")(x, p, y, step=step)
        assert value == v_ref and aux["scale"] == aux_ref["scale"] == np.sum(x * x)
        np.testing.assert_array_equal(np.asarray(gx), np.asarray(gx_ref))
        for k in p:
            np.testing.assert_array_equal(np.asarray(gp[k]), np.asarray(gp_ref[k]))


def test_estimates_are_fresh_unless_buffers_are_kept():
    import tracegrad as tg

    p, x, y = _problem()
    est = tg.forward_grad(_loss, seed=0)
    _, g1 = est(p, x, y, step=1)
    kept = g1["w0"].copy()
    _, g2 = est(p, x, y, step=2)
    _, g3 = est(p, x, y, step=3)
    np.testing.assert_array_equal(g1["w0"], kept)  # later calls did not write into it
    assert not np.shares_memory(g2["w0"], g3["w0"])

    est = tg.forward_grad(_loss, seed=0, keep_buffers=True)
    est(p, x, y, step=1)
    _, g2 = est(p, x, y, step=2)
    w0 = g2["w0"].copy()
    _, g3 = est(p, x, y, step=3)
    assert np.shares_memory(g2["w0"], g3["w0"])  # documented: the next call reuses the buffer
    assert not np.array_equal(w0, g3["w0"])


@pytest.mark.parametrize("tangents", ["dense", "rank1"])
def test_trainer_steps_allocate_no_parameter_sized_buffer(tangents):
    t = _trainer(optimizer="sgd", batch_size=4, model_kwargs={"hidden": [512]}, tangents=tangents)
    largest = max(p.nbytes for p in tree_flatten(t.params)[0])  # w0: 64 x 512 float32, 128 KiB
    _steps(t, 3)
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        peaks = []
        for _ in range(12):
            x, y = t.stream.next()  # the batch itself is not the step's
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            _, grads = t.estimator(t.params, x, y, t.step)
            t.params, t.opt_state = t._update(grads, t.opt_state, t.params)
            t.step += 1
            del grads
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
        gc.enable()
    # the tangents and the estimate live in kept buffers and the update works in place: the
    # step's peak is activation-sized (batch 4 x 512), far below one parameter-sized array,
    # and the same every step
    assert max(peaks) < largest / 2
    assert max(peaks[6:]) <= max(peaks[:6]) + 4096


def test_signature_key_tells_structures_shapes_dtypes_and_scalar_types_apart():
    from tracegrad.tree import tree_flatten_signature

    a, b = np.ones((2, 3), np.float32), np.ones(3)
    leaves, _ = tree_flatten_signature(({"w": a, "b": b}, [1.0, None], (True,)))
    assert [x is y for x, y in zip(leaves, [b, a, 1.0, True])] == [True] * 4  # tree_flatten's order
    assert leaves == tree_flatten(({"w": a, "b": b}, [1.0, None], (True,)))[0]
    variants = [({"w": a, "b": b},), ({"w": a, "c": b},), ([a, b],), ((a, b),), ({"w": a.astype(np.float64), "b": b},),
                ({"w": a.T, "b": b},), ({"w": a, "b": 1.0},), ({"w": a, "b": 1},), ({"w": a, "b": None},)]
    keys = [tree_flatten_signature(v)[1] for v in variants]
    assert len(set(keys)) == len(keys)
    assert tree_flatten_signature((np.float32(1.0),)) is None  # NumPy scalars take the general path


def test_compiled_fast_path_answers_like_the_general_path():
    import tracegrad as tg

    f = tg.compile(lambda p, s: (p["w"] * s).sum() + p["b"].sum())
    p = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(3)}
    assert f(p, 2.0) == 33.0
    assert f(p, 3) == 48.0  # an int scalar: its own signature
    assert f({"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}, 1.0) == np.float32(9.0)
    assert f(p, 2.0) == 33.0 and f(p, 0.5) == 10.5  # cached: the value of a traced scalar still counts
    with pytest.raises(tg.errors.ArgumentTypeError):
        f({"w": "x", "b": np.ones(3)}, 1.0)


def test_value_and_grad_fast_path_answers_like_the_general_path():
    import tracegrad as tg

    p, x, y = _problem(np.float64)
    vg = tg.value_and_grad(_loss)
    vg_xp = tg.value_and_grad(lambda x, p, y: _loss(p, x, y), argnums=(1, 0))
    for scale in (1.0, 0.5, 2.0):  # calls 2 and 3 take the cached path
        q = {k: v * scale for k, v in p.items()}
        value, g = vg(q, x, y)
        v_ref, g_ref = tg.value_and_grad(_loss)(q, x, y)  # a fresh one: general path
        assert value == v_ref
        for k in p:
            np.testing.assert_array_equal(g[k], g_ref[k])
        value2, (gp, gx) = vg_xp(x, q, y)
        assert value2 == v_ref and gx.shape == x.shape
        for k in p:
            np.testing.assert_array_equal(gp[k], g_ref[k])
    eps = 1e-6
    d = np.zeros_like(x)
    d[0, 0] = 1.0
    np.testing.assert_allclose(gx[0, 0], (_loss(q, x + eps * d, y) - _loss(q, x - eps * d, y)) / (2 * eps), rtol=1e-5)


def test_jvp_fast_path_answers_like_the_general_path():
    import tracegrad as tg

    p, x, y = _problem(np.float64)
    f = tg.compile(_loss)
    rng = np.random.default_rng(5)
    for _ in range(3):  # calls 2 and 3 take the cached path
        v = {k: rng.standard_normal(a.shape) for k, a in p.items()}
        v_part = {"w0": v["w0"], "b0": None, "w1": v["w1"], "b1": None}  # a None subtree: constant
        for tangent in (v, v_part):
            value, jv = f.jvp((p, x, y), (tangent, None, None))
            v_ref, jv_ref = tg.compile(_loss).jvp((p, x, y), (tangent, None, None))
            assert value == v_ref and jv == jv_ref
        batched = {k: np.stack([a, 2 * a]) for k, a in v.items()}
        _, jvb = f.jvp((p, x, y), (batched, None, None), batched=True)
        np.testing.assert_allclose(jvb, [jv_ref_full := f.jvp((p, x, y), (v, None, None))[1], 2 * jv_ref_full])
    with pytest.raises(tg.errors.TangentError):  # a new signature is checked again
        f.jvp((p, x, y), ({k: a.astype(np.float32) for k, a in v.items()}, None, None))
