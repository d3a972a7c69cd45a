"""The CuPy backend on a real GPU, against the NumPy reference: every op case (value, JVP,
K batched directions; float64 and float32), the device tangent sampler, the MLP and CNN
forward-gradient steps, and the one-GEMM ``[x; x_dot] @ W`` batching."""

from __future__ import annotations

import numpy as np
import pytest
from cupy_helpers import INT_CASES, as_f32
from op_cases import CASE_IDS, CASES

import tracegrad as tg
from tracegrad.backends import to_device, to_host
from tracegrad.backends.cuda_random import DeviceSampler, reference
from tracegrad.nn.models import cnn, loss_fn, mlp
from tracegrad.optim import sgd
from tracegrad.testing import random_tangents
from tracegrad.tree import tree_leaves


def _close(got, want, dtype, what):
    tol = {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-12}
    got = to_host(got)
    for g, w in zip(tree_leaves(got), tree_leaves(want)):
        assert np.asarray(g).dtype == np.asarray(w).dtype, what
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **tol, err_msg=what)


@pytest.mark.parametrize("cast", [list, as_f32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_op_case_matches_numpy(cp, case, cast):
    args = cast(case.args)
    dtype = next((np.asarray(a).dtype for a in args if np.asarray(a).dtype.kind == "f"), np.float64)
    f_np, f_cp = tg.compile(case.fn), tg.compile(case.fn, backend="cupy")
    out = f_cp(*args)
    assert all(type(x).__module__.startswith("cupy") for x in tree_leaves(out))  # results stay on the device
    _close(out, f_np(*args), dtype, case.name)
    rng = np.random.default_rng(3)
    one = random_tangents(args, case.argnums, rng)
    _close(f_cp.jvp(args, one), f_np.jvp(args, one), dtype, f"{case.name} jvp")
    per = [random_tangents(args, case.argnums, rng) for _ in range(3)]
    many = [None if per[0][i] is None else np.stack([p[i] for p in per]) for i in range(len(args))]
    _close(f_cp.jvp(args, many, batched=True), f_np.jvp(args, many, batched=True), dtype, f"{case.name} K=3")


def test_integer_boolean_and_special_values(cp):
    for name, fn, args in INT_CASES:
        got, want = to_host(tg.compile(fn, backend="cupy")(*args)), tg.compile(fn)(*args)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)


def test_device_sampler_matches_its_reference(cp):
    s = DeviceSampler(cp)
    (r,) = s.draw("rademacher", [[2024]], [(1000,)], [np.float32])
    np.testing.assert_array_equal(cp.asnumpy(r), reference("rademacher", 2024, 1000))
    (z,) = s.draw("normal", [[2025, 2026]], [(2, 1001)], [np.float32])
    np.testing.assert_allclose(cp.asnumpy(z[1]), reference("normal", 2026, 1001), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("k", [1, 4])
def test_model_forward_gradient_graph_matches_numpy(cp, name, k):
    model = mlp([784, 256, 256, 10]) if name == "mlp" else cnn(channels=(16, 16, 16, 16), hidden=128)
    shape = (784,) if name == "mlp" else (1, 28, 28)
    rng = np.random.default_rng(0)
    params = model.init(0)
    x = rng.standard_normal((32,) + shape).astype(np.float32)
    y = rng.integers(0, 10, 32)
    t = {key: rng.standard_normal((k,) + v.shape).astype(np.float32) for key, v in params.items()}
    f_np, f_cp = tg.compile(loss_fn(model)), tg.compile(loss_fn(model), backend="cupy")
    (v1, t1), (v2, t2) = f_cp.jvp((params, x, y), (t, None, None), batched=True), \
        f_np.jvp((params, x, y), (t, None, None), batched=True)
    np.testing.assert_allclose(float(v1), float(v2), rtol=1e-4)
    np.testing.assert_allclose(cp.asnumpy(t1), t2, rtol=1e-3, atol=1e-4)


def test_primal_and_tangent_products_share_one_gemm(cp):
    model = mlp([784, 64, 64, 10])
    params = model.init(0)
    x, y = np.ones((8, 784), np.float32), np.zeros(8, np.int64)
    f = tg.compile(loss_fn(model), backend="cupy")
    src = f.source(params, x, y, jvp=True, argnums=0, directions=2)
    assert src.count("one GEMM for") == 2  # layers 2 and 3: [h; h_dot] @ W
    assert 'extern "C" __global__' in src  # the CUDA is shown with the Python


def test_forward_gradient_training_step_on_the_device(cp):
    model = mlp([64, 32, 10])
    params = to_device(model.init(0))
    rng = np.random.default_rng(0)
    x, y = cp.asarray(rng.standard_normal((64, 64)).astype(np.float32)), cp.asarray(rng.integers(0, 10, 64))
    est = tg.forward_grad(loss_fn(model), directions=8, seed=0, backend="cupy")
    opt = sgd(0.05)
    state = opt.init(params)
    losses = []
    for _ in range(40):
        value, grads = est(params, x, y)
        assert all(type(g).__module__.startswith("cupy") for g in tree_leaves(grads))
        params, state = opt.update(grads, state, params)
        losses.append(float(value))
    assert losses[-1] < losses[0]
