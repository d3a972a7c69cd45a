"""Optimizers and schedules against hand-derived numbers.

Expected values are worked out in the comments from the update formulas, never
by calling the code under test.
"""

from __future__ import annotations

import math
import subprocess
import sys
import types

import numpy as np
import pytest

from tracegrad.optim import (
    AdamState,
    MomentumState,
    SGDState,
    adam,
    array_namespace,
    constant,
    cosine_decay,
    exponential_decay,
    make_optimizer,
    momentum,
    sgd,
)
from tracegrad.tree import tree_flatten, tree_unflatten


def run(opt, params, grads_seq):
    """Apply ``opt`` for each gradient in ``grads_seq``; return every intermediate params."""
    state = opt.init(params)
    history = []
    for g in grads_seq:
        params, state = opt.update(g, state, params)
        history.append(params)
    return history, state


def f64(*xs):
    return np.array(xs, dtype=np.float64)


# --- SGD -------------------------------------------------------------------------------------


def test_sgd_two_steps():
    # p0 = [1, -2], lr = 0.1
    # g1 = [0.5, 1]:  p1 = [1 - 0.05, -2 - 0.1]  = [0.95, -2.1]
    # g2 = [1, -1]:   p2 = [0.95 - 0.1, -2.1 + 0.1] = [0.85, -2.0]
    hist, state = run(sgd(0.1), f64(1.0, -2.0), [f64(0.5, 1.0), f64(1.0, -1.0)])
    np.testing.assert_allclose(hist[0], [0.95, -2.1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(hist[1], [0.85, -2.0], rtol=0, atol=1e-15)
    assert isinstance(state, SGDState) and state.step == 2


def test_sgd_weight_decay_is_l2_on_gradient():
    # wd = 0.1: g' = g + 0.1 p = [0.5 + 0.1, 1 - 0.2] = [0.6, 0.8]
    # p1 = [1 - 0.1*0.6, -2 - 0.1*0.8] = [0.94, -2.08]
    hist, _ = run(sgd(0.1, weight_decay=0.1), f64(1.0, -2.0), [f64(0.5, 1.0)])
    np.testing.assert_allclose(hist[0], [0.94, -2.08], rtol=0, atol=1e-15)


def test_sgd_does_not_mutate_inputs():
    p, g = f64(1.0, 2.0), f64(1.0, 1.0)
    opt = sgd(0.5)
    new_p, _ = opt.update(g, opt.init(p), p)
    np.testing.assert_array_equal(p, [1.0, 2.0])
    np.testing.assert_array_equal(new_p, [0.5, 1.5])


# --- momentum --------------------------------------------------------------------------------


def test_momentum_three_steps():
    # beta = 0.9, lr = 0.1, p0 = 1, grads 1, 2, -1; v <- 0.9 v + g, p <- p - 0.1 v
    # v1 = 1                     p1 = 1    - 0.1   = 0.9
    # v2 = 0.9*1 + 2   = 2.9     p2 = 0.9  - 0.29  = 0.61
    # v3 = 0.9*2.9 - 1 = 1.61    p3 = 0.61 - 0.161 = 0.449
    hist, state = run(momentum(0.1, beta=0.9), f64(1.0), [f64(1.0), f64(2.0), f64(-1.0)])
    np.testing.assert_allclose([h[0] for h in hist], [0.9, 0.61, 0.449], rtol=0, atol=1e-14)
    assert isinstance(state, MomentumState) and state.step == 3
    np.testing.assert_allclose(state.velocity, [1.61], rtol=0, atol=1e-14)


def test_momentum_nesterov_three_steps():
    # Same v; the step is g + 0.9 v.
    # v1 = 1,    step = 1 + 0.9        = 1.9    p1 = 1     - 0.19   = 0.81
    # v2 = 2.9,  step = 2 + 0.9*2.9    = 4.61   p2 = 0.81  - 0.461  = 0.349
    # v3 = 1.61, step = -1 + 0.9*1.61  = 0.449  p3 = 0.349 - 0.0449 = 0.3041
    opt = momentum(0.1, beta=0.9, nesterov=True)
    hist, _ = run(opt, f64(1.0), [f64(1.0), f64(2.0), f64(-1.0)])
    np.testing.assert_allclose([h[0] for h in hist], [0.81, 0.349, 0.3041], rtol=0, atol=1e-14)


def test_momentum_weight_decay():
    # wd = 0.5, p0 = 2, g = 1: g' = 1 + 0.5*2 = 2; v1 = 2; p1 = 2 - 0.1*2 = 1.8
    # g' = 1 + 0.5*1.8 = 1.9; v2 = 0.9*2 + 1.9 = 3.7; p2 = 1.8 - 0.37 = 1.43
    hist, _ = run(momentum(0.1, weight_decay=0.5), f64(2.0), [f64(1.0), f64(1.0)])
    np.testing.assert_allclose([h[0] for h in hist], [1.8, 1.43], rtol=0, atol=1e-14)


# --- Adam ------------------------------------------------------------------------------------


def test_adam_two_steps():
    # lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8; two coordinates.
    # Coordinate 0: p0 = 1, g1 = 0.5, g2 = -1.
    #   t=1: m = 0.1*0.5 = 0.05, v = 0.001*0.25 = 0.00025
    #        mhat = 0.05/0.1 = 0.5, vhat = 0.00025/0.001 = 0.25, sqrt = 0.5
    #        p1 = 1 - 0.1 * 0.5/(0.5 + 1e-8) = 0.900000002
    #   t=2: m = 0.9*0.05 + 0.1*(-1) = -0.055, v = 0.999*0.00025 + 0.001*1 = 0.00124975
    #        bc1 = 1 - 0.81 = 0.19, bc2 = 1 - 0.998001 = 0.001999
    #        mhat = -0.055/0.19 = -0.28947368421..., vhat = 0.00124975/0.001999 = 0.62518759...
    #        sqrt(vhat) = 0.79068805087..., step = mhat/(sqrt + eps) = -0.36610352240...
    #        p2 = 0.900000002 + 0.036610352240 = 0.936610354240...
    # Coordinate 1: p0 = -1, constant g = -2, so mhat = -2 and vhat = 4 at every t:
    #   each step moves by 0.1 * 2/(2 + 1e-8) = 0.0999999995
    #   p1 = -0.9000000005, p2 = -0.800000001
    hist, state = run(adam(0.1), f64(1.0, -1.0), [f64(0.5, -2.0), f64(-1.0, -2.0)])
    np.testing.assert_allclose(hist[0], [0.900000002, -0.9000000005], rtol=0, atol=1e-13)
    np.testing.assert_allclose(hist[1], [0.9366103542405656, -0.800000001], rtol=0, atol=1e-13)
    assert isinstance(state, AdamState) and state.step == 2
    np.testing.assert_allclose(state.mu, [-0.055, -0.38], rtol=0, atol=1e-15)
    np.testing.assert_allclose(state.nu, [0.00124975, 0.007996], rtol=0, atol=1e-15)


def test_adam_weight_decay_l2_vs_decoupled():
    # p0 = 2, g = 0.5, wd = 0.5, lr = 0.1, eps = 0 to keep the numbers exact.
    # L2:        g' = 0.5 + 0.5*2 = 1.5; first Adam step is g'/|g'| = 1   -> p1 = 2 - 0.1 = 1.9
    # decoupled: Adam step on g = 0.5 is 1; plus wd*p = 1 -> p1 = 2 - 0.1*(1 + 1) = 1.8
    l2, _ = run(adam(0.1, eps=0.0, weight_decay=0.5), f64(2.0), [f64(0.5)])
    dec, _ = run(adam(0.1, eps=0.0, weight_decay=0.5, decoupled=True), f64(2.0), [f64(0.5)])
    np.testing.assert_allclose(l2[0], [1.9], rtol=0, atol=1e-15)
    np.testing.assert_allclose(dec[0], [1.8], rtol=0, atol=1e-15)


def test_adam_converges_on_quadratic():
    # f(x) = sum(a * (x - c)^2), grad = 2 a (x - c); minimum at c.
    a = np.array([1.0, 10.0, 0.1], dtype=np.float32)
    c = np.array([3.0, -2.0, 0.5], dtype=np.float32)
    opt = adam(cosine_decay(0.1, total_steps=1500, final_lr=1e-3))
    x = np.zeros(3, dtype=np.float32)
    state = opt.init(x)
    for _ in range(1500):
        x, state = opt.update(2 * a * (x - c), state, x)
    np.testing.assert_allclose(x, c, atol=1e-3)
    assert x.dtype == np.float32


# --- shared behaviour ------------------------------------------------------------------------

ALL_OPTIMIZERS = [
    pytest.param(lambda: sgd(0.1, weight_decay=0.01), id="sgd"),
    pytest.param(lambda: momentum(0.1, weight_decay=0.01), id="momentum"),
    pytest.param(lambda: momentum(0.1, nesterov=True), id="nesterov"),
    pytest.param(lambda: adam(0.1, weight_decay=0.01), id="adam"),
    pytest.param(lambda: adam(0.1, weight_decay=0.01, decoupled=True), id="adamw"),
]


@pytest.mark.parametrize("make", ALL_OPTIMIZERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_dtype_preserved(make, dtype):
    # float64 gradients and a Python-float lr must not promote low-precision params.
    params = {"w": np.ones((2, 3), dtype=dtype), "b": np.zeros(3, dtype=dtype), "s": dtype(0.5)}
    grads = {"w": np.full((2, 3), 0.25), "b": np.ones(3), "s": np.float64(1.0)}
    opt = make()
    state = opt.init(params)
    for _ in range(2):
        params, state = opt.update(grads, state, params)
    for leaf in tree_flatten(params)[0] + tree_flatten(state)[0][1:]:
        assert isinstance(leaf, np.ndarray) and leaf.dtype == dtype
    assert params["s"].shape == ()


@pytest.mark.parametrize("make", ALL_OPTIMIZERS)
def test_pytree_matches_per_leaf(make):
    # A dict/list tree gives the same numbers as updating each leaf on its own.
    rng = np.random.default_rng(0)
    params = {"layer": [rng.normal(size=(3, 2)), rng.normal(size=2)], "scale": rng.normal(size=1)}
    grads_seq = [
        tree_unflatten(
            tree_flatten(params)[1], [rng.normal(size=p.shape) for p in tree_flatten(params)[0]]
        )
        for _ in range(3)
    ]
    hist, _ = run(make(), params, grads_seq)
    assert set(hist[-1]) == {"layer", "scale"} and isinstance(hist[-1]["layer"], list)
    leaves, _ = tree_flatten(params)
    for i, leaf in enumerate(leaves):
        single, _ = run(make(), leaf, [tree_flatten(g)[0][i] for g in grads_seq])
        np.testing.assert_array_equal(tree_flatten(hist[-1])[0][i], single[-1])


def test_structure_mismatch_is_an_error():
    opt = sgd(0.1)
    params = {"a": np.ones(2), "b": np.ones(2)}
    with pytest.raises(ValueError, match="grads has structure"):
        opt.update({"a": np.ones(2)}, opt.init(params), params)


@pytest.mark.parametrize("make", ALL_OPTIMIZERS)
def test_state_checkpoint_roundtrip(make, tmp_path):
    # Flatten the state, np.savez it, restore, and continue: same result as never stopping.
    rng = np.random.default_rng(1)
    params = {"w": rng.normal(size=(2, 2)).astype(np.float32), "b": np.zeros(2, np.float32)}
    grads = [{"w": rng.normal(size=(2, 2)), "b": rng.normal(size=2)} for _ in range(4)]
    opt = make()
    state = opt.init(params)
    p = params
    for g in grads[:2]:
        p, state = opt.update(g, state, p)
    leaves, treedef = tree_flatten(state)
    np.savez(tmp_path / "ckpt.npz", *leaves)
    with np.load(tmp_path / "ckpt.npz") as f:
        restored = tree_unflatten(treedef, [f[f"arr_{i}"] for i in range(len(leaves))])
    p_a, s_a = p, state
    p_b, s_b = p, restored
    for g in grads[2:]:
        p_a, s_a = opt.update(g, s_a, p_a)
        p_b, s_b = opt.update(g, s_b, p_b)
    for x, y in zip(tree_flatten(p_a)[0], tree_flatten(p_b)[0]):
        np.testing.assert_array_equal(x, y)
    assert s_b.step == 4


def test_schedule_drives_lr_per_step():
    # lr(t) = exp(-ln2 * t): 1 for the first update, 0.5 for the second.
    # p0 = 0, g = 1: p1 = -1, p2 = -1.5
    hist, _ = run(sgd(exponential_decay(1.0, k=math.log(2))), f64(0.0), [f64(1.0), f64(1.0)])
    np.testing.assert_allclose([h[0] for h in hist], [-1.0, -1.5], rtol=0, atol=1e-15)


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match="lr must be positive"):
        sgd(0.0)
    with pytest.raises(TypeError, match="lr must be a float"):
        sgd("0.1")
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        momentum(0.1, beta=1.0)
    with pytest.raises(ValueError, match="b2 must be"):
        adam(0.1, b2=-0.1)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        adam(0.1, weight_decay=-1.0)


# --- array namespace -------------------------------------------------------------------------


def test_array_namespace_numpy_and_fake_cupy(monkeypatch):
    assert array_namespace(np.ones(2)) is np
    assert array_namespace(1.0, np.float32(2)) is np
    fake_cupy = types.ModuleType("cupy")
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    FakeArray = type("ndarray", (), {"__module__": "cupy._core.core"})
    assert array_namespace(np.ones(1), FakeArray()) is fake_cupy


def test_import_does_not_pull_in_cupy():
    code = "import sys, tracegrad.optim, tracegrad.data; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- schedules -------------------------------------------------------------------------------


def test_constant_schedule():
    s = constant(0.1)
    assert s(0) == 0.1 and s(123456) == 0.1
    assert type(s(5)) is float


def test_exponential_decay_values():
    # lr0 * exp(-k t): t = 0 -> 0.2; t = 10_000 with k = 1e-4 -> 0.2/e = 0.0735758882342885
    s = exponential_decay(0.2, k=1e-4)
    assert s(0) == 0.2
    assert s(10_000) == pytest.approx(0.0735758882342885, rel=1e-12)
    assert s(20_000) == pytest.approx(0.2 * math.exp(-2), rel=1e-12)
    assert exponential_decay(0.5).k == 1e-4
    with pytest.raises(ValueError, match="k must be >= 0"):
        exponential_decay(0.1, k=-1.0)


def test_cosine_decay_values():
    # final + (lr0 - final) * (1 + cos(pi t / T)) / 2 with lr0 = 1, T = 100
    s = cosine_decay(1.0, total_steps=100)
    assert s(0) == 1.0
    assert s(50) == pytest.approx(0.5, abs=1e-15)  # cos(pi/2) = 0
    assert s(25) == pytest.approx((1 + math.sqrt(0.5)) / 2, abs=1e-15)  # cos(pi/4) = sqrt(.5)
    assert s(100) == pytest.approx(0.0, abs=1e-15)
    assert s(500) == pytest.approx(0.0, abs=1e-15)  # held after the end
    s2 = cosine_decay(1.0, total_steps=100, final_lr=0.1)
    assert s2(50) == pytest.approx(0.55, abs=1e-15)  # 0.1 + 0.9 * 0.5
    assert s2(100) == pytest.approx(0.1, abs=1e-15)
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        cosine_decay(1.0, total_steps=0)


# --- make_optimizer --------------------------------------------------------------------------


def test_make_optimizer_names_and_options():
    opt = make_optimizer("momentum", 0.1, nesterov=True, beta=0.5)
    assert opt.name == "momentum" and opt.hyperparams["nesterov"] is True
    assert opt.hyperparams["beta"] == 0.5
    assert make_optimizer("adam", 1e-3, decoupled=True, weight_decay=0.01).name == "adam"
    # total_steps is accepted with any schedule so a CLI can always pass it.
    assert make_optimizer("sgd", 0.1, total_steps=10).hyperparams["lr"](7) == 0.1


def test_make_optimizer_schedules():
    exp_opt = make_optimizer("sgd", 0.2, schedule="exp", k=1e-4)
    assert exp_opt.hyperparams["lr"](10_000) == pytest.approx(0.0735758882342885, rel=1e-12)
    cos_opt = make_optimizer("adam", 1.0, schedule="cosine", total_steps=100, final_lr=0.1)
    assert cos_opt.hyperparams["lr"](50) == pytest.approx(0.55, abs=1e-15)
    # The schedule is really used: a one-step SGD with lr(0) = 0.2 and g = 1.
    p, _ = exp_opt.update(f64(1.0), exp_opt.init(f64(0.0)), f64(0.0))
    np.testing.assert_allclose(p, [-0.2], rtol=0, atol=1e-15)


def test_make_optimizer_errors():
    with pytest.raises(
        ValueError, match="unknown optimizer 'rmsprop'; choose one of sgd, momentum, adam"
    ):
        make_optimizer("rmsprop", 0.1)
    with pytest.raises(
        ValueError, match="unknown schedule 'step'; choose one of constant, exp, cosine"
    ):
        make_optimizer("sgd", 0.1, schedule="step")
    with pytest.raises(ValueError, match="schedule 'cosine' needs total_steps"):
        make_optimizer("sgd", 0.1, schedule="cosine")
    with pytest.raises(ValueError, match="unknown option.* nesterov for optimizer 'sgd'"):
        make_optimizer("sgd", 0.1, nesterov=True)
    with pytest.raises(ValueError, match="option k applies to schedule 'exp'"):
        make_optimizer("sgd", 0.1, schedule="cosine", total_steps=5, k=0.1)
    with pytest.raises(ValueError, match="lr must be positive"):
        make_optimizer("adam", -1.0)
