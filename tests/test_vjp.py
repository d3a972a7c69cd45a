"""Reverse mode: VJP rules over the op-case table, grad/value_and_grad, errors, and the
forward-gradient estimator measured against the exact (reverse-mode) gradient."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from op_cases import CASE_IDS, CASES

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import errors
from tracegrad.ad import jvp_graph, vjp_graph
from tracegrad.nn import functional as F
from tracegrad.ops import elementwise
from tracegrad.testing import check_grad, numerical_grad
from tracegrad.transforms import optimize


def _float_argnums(case) -> tuple[int, ...]:
    return tuple(i for i in case.argnums if np.asarray(case.args[i]).dtype.kind == "f")


def _basis_jvp_grad(compiled, args, i):
    """The exact gradient with respect to ``args[i]`` by forward mode: one JVP per basis
    direction, all in one batched execution."""
    x = np.asarray(args[i])
    eye = np.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
    tangents = [None] * len(args)
    tangents[i] = eye
    _, jv = compiled.jvp(tuple(args), tuple(tangents), batched=True)
    return np.reshape(jv, x.shape)


# ---------------------------------------------------------------- every primitive, via the case table
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vjp_matches_jvp_and_finite_differences(case):
    """grad of sum(f(x) * u), u a random cotangent, equals (1) the basis-direction JVPs, exactly,
    (2) <grad, v> == jvp(v) for a random v, and (3) central finite differences."""
    rng = np.random.default_rng(5)
    u = rng.standard_normal(np.shape(case.fn(*case.args)))

    def scalar(*args):
        return np.sum(case.fn(*args) * u)

    nums = _float_argnums(case)
    compiled = tg.compile(scalar)
    value, grads = tg.value_and_grad(compiled, argnums=nums)(*case.args)
    np.testing.assert_allclose(value, scalar(*case.args), rtol=1e-12)
    compiled.grad_graph(*case.args, argnums=nums).validate()
    # float32 round trips (the astype case) round differently in the two modes
    tol = {"rtol": 1e-6, "atol": 1e-7} if case.name == "astype" else {"rtol": 1e-10, "atol": 1e-12}
    for i, g in zip(nums, grads):
        x = np.asarray(case.args[i])
        assert g.shape == x.shape and g.dtype == x.dtype
        np.testing.assert_allclose(g, _basis_jvp_grad(compiled, case.args, i), **tol)
        v = rng.standard_normal(x.shape)
        tangents = [None] * len(case.args)
        tangents[i] = v
        _, jv = compiled.jvp(case.args, tangents)
        np.testing.assert_allclose(np.sum(g * v), jv, **tol)
        if not case.extra.get("skip_fd"):
            fd = case.extra.get("fd", {})
            want = numerical_grad(scalar, case.args, i, fd.get("eps", 1e-6))
            np.testing.assert_allclose(g, want, rtol=fd.get("rtol", 1e-5), atol=fd.get("atol", 1e-6))


def test_check_grad_catches_a_wrong_rule(monkeypatch):
    x = np.array([0.3, -1.2, 2.0])
    check_grad(lambda a: np.sum(np.sin(a)), [x])
    monkeypatch.setattr(elementwise.sin_p, "vjp", lambda ct, primals, y: (ct * y,))  # sin, not cos
    with pytest.raises(AssertionError, match="finite differences"):
        check_grad(lambda a: np.sum(np.sin(a)), [x])


def test_non_differentiable_primitives_emit_nothing():
    def f(x):
        return np.sum(tnp.stop_gradient(x) * x + np.floor(x) + (x > 0) * 1.0)

    x = np.array([0.5, -1.5, 2.5])
    g = tg.grad(f)(x)
    np.testing.assert_array_equal(g, x)  # only the x factor of stop_gradient(x) * x
    graph = tg.compile(f).grad_graph(x)
    names = [n.primitive.name for n in graph.nodes]
    # floor and the comparison feed only the value; nothing of theirs runs twice or backwards
    assert names.count("floor") == 1 and names.count("gt") == 1 and "scatter_add" not in names


def test_gradient_of_an_unused_input_is_zero_and_typed():
    g = tg.grad(lambda a, b: np.sum(a * 2.0), argnums=(0, 1))(np.ones(2), np.ones((3,), np.float32))
    np.testing.assert_array_equal(g[0], [2.0, 2.0])
    np.testing.assert_array_equal(g[1], np.zeros(3))
    assert g[1].dtype == np.float32


# ---------------------------------------------------------------- composite functions
def _mlp_loss(params, x, y):
    h = np.maximum(x @ params["w0"] + params["b0"], 0)
    return tnp.cross_entropy(h @ params["w1"] + params["b1"], y)


def _mlp_params(rng):
    return {"w0": rng.standard_normal((6, 5)) * 0.5, "b0": rng.standard_normal(5) * 0.1,
            "w1": rng.standard_normal((5, 3)) * 0.5, "b1": rng.standard_normal(3) * 0.1}


def test_mlp_cross_entropy_value_and_grad():
    rng = np.random.default_rng(0)
    params, x, y = _mlp_params(rng), rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    value, grads = tg.value_and_grad(_mlp_loss)(params, x, y)
    assert value == pytest.approx(float(tg.compile(_mlp_loss)(params, x, y)), rel=1e-12)
    assert set(grads) == set(params)
    fd = numerical_grad(_mlp_loss, (params, x, y), 0)
    for k in params:
        assert grads[k].shape == params[k].shape
        np.testing.assert_allclose(grads[k], fd[k], rtol=1e-5, atol=1e-7)

    # exact against forward mode: one basis JVP per parameter, all in one execution
    f = tg.compile(_mlp_loss)
    for k, p in params.items():
        eye = np.eye(p.size).reshape((p.size,) + p.shape)
        tangent = {j: (eye if j == k else np.zeros((p.size,) + q.shape)) for j, q in params.items()}
        _, jv = f.jvp((params, x, y), (tangent, None, None), batched=True)
        np.testing.assert_allclose(grads[k], jv.reshape(p.shape), rtol=1e-10, atol=1e-12)


def test_backward_pass_keeps_only_what_it_needs():
    """2 forward matmuls + 3 backward ones: the cotangent of the data x @ w0 is never formed."""
    rng = np.random.default_rng(0)
    params, x, y = _mlp_params(rng), rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    graph = tg.compile(_mlp_loss).grad_graph(params, x, y)
    names = [n.primitive.name for n in graph.nodes]
    assert names.count("matmul") == 5
    assert names.count("exp") == 1  # softmax's exp is computed once and reused backwards
    assert len(graph.outputs) == 1 + len(params)


def _cnn_loss(params, x, y):
    h = np.maximum(F.conv2d(x, params["conv"], padding=1) + params["cb"].reshape(1, -1, 1, 1), 0)
    h = F.max_pool2d(h, 2)
    h = F.flatten(h)
    return tnp.cross_entropy(h @ params["fc"], y)


def test_cnn_conv_pool_value_and_grad():
    rng = np.random.default_rng(1)
    params = {"conv": rng.standard_normal((3, 2, 3, 3)) * 0.4, "cb": rng.standard_normal(3) * 0.1,
              "fc": rng.standard_normal((3 * 2 * 2, 4)) * 0.4}
    x, y = rng.standard_normal((5, 2, 5, 4)), rng.integers(0, 4, 5)
    _, grads = tg.value_and_grad(_cnn_loss)(params, x, y)
    fd = numerical_grad(_cnn_loss, (params, x, y), 0)
    for k in params:
        np.testing.assert_allclose(grads[k], fd[k], rtol=1e-5, atol=1e-7)
    # the input gradient too (argnums=1): exact against basis JVPs
    f = tg.compile(_cnn_loss)
    gx = tg.grad(f, argnums=1)(params, x, y)
    np.testing.assert_allclose(gx, _basis_jvp_grad(f, (params, x, y), 1), rtol=1e-10, atol=1e-12)


def test_float32_model_gets_float32_gradients():
    rng = np.random.default_rng(2)
    params = {k: v.astype(np.float32) for k, v in _mlp_params(rng).items()}
    x, y = rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 3, 8)
    value, grads = tg.value_and_grad(_mlp_loss)(params, x, y)
    assert np.asarray(value).dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    exact = tg.grad(_mlp_loss)({k: v.astype(np.float64) for k, v in params.items()}, x.astype(np.float64), y)
    for k in params:
        np.testing.assert_allclose(grads[k], exact[k], rtol=1e-4, atol=1e-5)


def test_second_order_forward_over_reverse():
    """jvp_graph(vjp_graph(f)) is a Hessian-vector product (gathers included)."""
    def f(x, i):
        return np.sum(np.tanh(x[i]) * x[i] ** 2) + np.sum(np.exp(x) * 0.1)

    x, i, v = np.array([0.3, -0.8, 1.1, 0.5]), np.array([0, 2, 2, 3]), np.array([1.0, -2.0, 0.5, 0.25])
    primal = tg.compile(f).graph(x, i, optimized=False)
    hvp_graph, _ = jvp_graph(optimize(vjp_graph(primal, [True, False])), [True, False])
    hvp = hvp_graph.validate().interpret(x, i, v)[-1]
    grad = tg.grad(f)
    eps = 1e-6
    np.testing.assert_allclose(hvp, (grad(x + eps * v, i) - grad(x - eps * v, i)) / (2 * eps), rtol=1e-6)


# ---------------------------------------------------------------- API: pytrees, argnums, caching
def test_gradient_structure_follows_pytrees():
    def f(tree, scale):
        (a, b), c = tree["pair"], tree["list"]
        return scale * (np.sum(a * b) + np.sum(c[0] ** 2) + np.sum(c[1]))

    tree = {"pair": (np.array([1.0, 2.0]), np.array([3.0, 4.0])),
            "list": [np.array([[1.0, -1.0]]), np.ones(3, np.float32)], "none": None}
    value, g = tg.value_and_grad(f)(tree, 2.0)
    assert value == pytest.approx(2.0 * (11.0 + 2.0 + 3.0))
    assert isinstance(g, dict) and set(g) == {"pair", "list", "none"} and g["none"] is None
    assert isinstance(g["pair"], tuple) and isinstance(g["list"], list)
    np.testing.assert_allclose(g["pair"][0], [6.0, 8.0])
    np.testing.assert_allclose(g["pair"][1], [2.0, 4.0])
    np.testing.assert_allclose(g["list"][0], [[4.0, -4.0]])
    assert g["list"][1].dtype == np.float32
    both = tg.grad(f, argnums=(1, 0))(tree, 2.0)
    assert isinstance(both, tuple) and both[0] == pytest.approx(16.0)
    np.testing.assert_allclose(both[1]["pair"][0], g["pair"][0])


def test_compiled_once_per_signature():
    calls = []

    def f(w, x):
        calls.append(1)
        return np.sum(np.tanh(x @ w))

    vg = tg.value_and_grad(f)
    w, x = np.ones((3, 2)), np.ones((4, 3))
    for _ in range(3):
        vg(w, x)
    assert len(calls) == 1 and vg.compiled.cache_size() == 1
    vg(w, np.ones((5, 3)))
    tg.grad(vg.compiled, argnums=1)(w, x)
    assert len(calls) == 3 and vg.compiled.cache_size() == 3
    src = vg.compiled.source(w, x, grad=True)
    assert "def f_vjp(" in src and "matmul" in src


# ---------------------------------------------------------------- errors
def _line_of(fn, marker: str) -> str:
    lines, start = inspect.getsourcelines(fn)
    return next(f"{__file__}:{start + i}" for i, t in enumerate(lines) if marker in t)


def test_non_scalar_output_names_the_line():
    def f(x):
        return np.tanh(x) * 2.0  # <- vector output

    with pytest.raises(errors.GradientError) as info:
        tg.grad(f)(np.ones(3))
    msg = str(info.value)
    assert "scalar" in msg and "(3,)" in msg and "np.sum" in msg
    assert _line_of(f, "<- vector output") in msg


def test_integer_leaves_in_argnums_are_refused_by_name():
    def loss(params, labels):
        return np.sum(params["w"]) * 1.0 + np.sum(labels) * 0.0

    params = {"w": np.ones(3), "step": np.array(4)}
    with pytest.raises(errors.GradientError, match=r"params_step.*int64"):
        tg.grad(loss)(params, np.arange(3))
    with pytest.raises(errors.GradientError, match="labels"):
        tg.grad(loss, argnums=1)({"w": np.ones(3)}, np.arange(3))
    # integer data outside argnums is fine and gets no gradient
    assert set(tg.grad(loss)({"w": np.ones(3)}, np.arange(3))) == {"w"}


def test_other_misuse_errors():
    x = np.ones(3)
    with pytest.raises(errors.GradientError, match="argnums names argument 2"):
        tg.grad(lambda a, b: np.sum(a * b), argnums=2)(x, x)
    with pytest.raises(errors.GradientError, match="non-negative int"):
        tg.grad(lambda a: np.sum(a), argnums="a")
    with pytest.raises(errors.GradientError, match="static"):
        tg.grad(lambda a, n: np.sum(a) * n, argnums=1, static_argnums=1)(x, 2)
    with pytest.raises(errors.GradientError, match="2 outputs"):
        tg.grad(lambda a: (np.sum(a), np.sum(a * a)))(x)
    with pytest.raises(errors.GradientError, match="dtype int64"):
        tg.grad(lambda a: np.argmax(a))(x)


# ---------------------------------------------------------------- forward gradients vs the true gradient
def _smooth(x):
    return np.sum(np.sin(x) * np.linspace(-1.0, 2.0, x.size)) + 0.5 * np.sum(x * x * x) / x.size


@pytest.mark.parametrize("distribution", ["normal", "rademacher"])
def test_forward_gradient_mean_converges_to_the_true_gradient(distribution):
    """The mean of K forward gradients (∇f·v) v is unbiased. Per coordinate its standard
    deviation is sqrt((|g|² + g_i²) / K) for normal v (E[v_i² v_j²] = 1 + 2δ_ij) and
    sqrt((|g|² - g_i²) / K) for Rademacher v (v_i² = 1), so 5 standard deviations bound the
    error for all 10 coordinates except with probability < 1e-5; at K = 40000 that is
    within 4% of |g|, tight enough that a 10% error in any coordinate of size |g|/3 fails."""
    x = np.linspace(-1.0, 1.5, 10)
    true = tg.grad(_smooth)(x)
    k = 40_000
    _, est = tg.forward_grad(_smooth, directions=k, distribution=distribution, seed=3)(x)
    sq = np.sum(true**2)
    var = (sq + true**2) if distribution == "normal" else (sq - true**2)
    sd = np.sqrt(var / k)
    assert np.all(np.abs(est - true) < 5 * sd + 1e-12), (est, true, sd)
    assert 5 * sd.max() < 0.04 * np.sqrt(sq)


def test_forward_gradient_cosine_similarity_matches_theory():
    """cos(g_fwd, ∇f) = |u·v|/|v| for the unit gradient u and v ~ N(0, I_n): the |cosine| of a
    uniformly random direction, with mean Γ(n/2) / (√π Γ((n+1)/2)) ≈ sqrt(2/(πn)) (the
    asymptotic form is within 0.6% at n = 50) and variance 1/n - mean². M = 3000 samples put
    the sample mean within 4 standard errors (about 5.5% of the mean) with probability > 0.9999."""
    n, m = 50, 3000
    x = np.linspace(-2.0, 2.0, n)
    true = tg.grad(_smooth)(x)
    fg = tg.forward_grad(_smooth, directions=1, distribution="normal", seed=11)
    cos = np.empty(m)
    for s in range(m):
        g = fg(x)[1]
        cos[s] = g @ true / (np.linalg.norm(g) * np.linalg.norm(true))
    assert np.all(cos >= -1e-12)  # (∇f·v)² ≥ 0: a forward gradient never points uphill
    exact = math.exp(math.lgamma(n / 2) - math.lgamma((n + 1) / 2)) / math.sqrt(math.pi)
    assert abs(exact - math.sqrt(2 / (math.pi * n))) < 0.006 * exact
    se = math.sqrt(1 / n - exact**2) / math.sqrt(m)
    assert abs(cos.mean() - exact) < 4 * se, (cos.mean(), exact, se)


# ---------------------------------------------------------------- training with backprop
def test_backprop_training_reaches_high_accuracy():
    from tracegrad.train import TrainConfig, fit

    cfg = TrainConfig(model="logreg", data="digits", steps=300, lr=0.1, mode="backprop", out=None, quiet=True)
    result = fit(cfg)
    assert result.test_accuracy > 0.93
    # same data, init and optimizer: the first logged batch loss does not depend on the mode
    # (it is measured before the update of that step)
    fwd = fit(cfg, mode="forward", steps=1, log_every=1)
    bwd = fit(cfg, steps=1, log_every=1)
    assert fwd.history.rows[0]["train_loss"] == pytest.approx(bwd.history.rows[0]["train_loss"], rel=1e-6)
    assert not np.allclose(fwd.params["w"], bwd.params["w"])


def test_cli_train_backprop(tmp_path, capsys):
    from tracegrad.cli import main

    assert main(["train", "--mode", "backprop", "--steps", "20", "--lr", "0.1", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    assert "test accuracy" in capsys.readouterr().out
    # mode is fixed for a resumed run
    assert main(["train", "--mode", "forward", "--steps", "30", "--resume", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    assert "estimator='backprop'" in capsys.readouterr().err
