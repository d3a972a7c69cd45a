"""custom_jvp / custom_vjp: user-defined derivative rules replace automatic differentiation."""

from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.custom import MAX_BASIS, CustomRuleError
from tracegrad.errors import GradientError, TangentError


def _log1pexp_plain(x):
    return np.where(x > 30.0, x, np.log1p(np.exp(x)))


@tg.custom_jvp
def log1pexp(x):
    return np.where(x > 30.0, x, np.log1p(np.exp(x)))


@log1pexp.defjvp
def _log1pexp_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return log1pexp(x), t * (1.0 - 1.0 / (1.0 + np.exp(x)))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


X = np.array([-3.0, 0.5, 2.0, 1000.0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_eager_call_is_the_plain_function():
    np.testing.assert_allclose(log1pexp(X), [np.log1p(np.exp(-3.0)), np.log1p(np.exp(0.5)),
                                             np.log1p(np.exp(2.0)), 1000.0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_log1pexp_stable_where_autodiff_is_nan():
    ones = np.ones_like(X)
    _, t_naive = tg.jvp(lambda x: np.log1p(np.exp(x)), (X,), (ones,))
    assert np.isnan(t_naive[-1])  # inf / inf
    g_plain = tg.grad(lambda x: np.sum(_log1pexp_plain(x)))(X)
    assert np.isnan(g_plain[-1])  # the classic where-nan: 0 * inf from the untaken branch
    y, t = tg.jvp(log1pexp, (X,), (ones,))
    np.testing.assert_allclose(y, log1pexp(X))
    assert np.isfinite(y).all() and np.isfinite(t).all()
    np.testing.assert_allclose(t, _sigmoid(X), rtol=1e-12)
    g = tg.grad(lambda x: np.sum(log1pexp(x)))(X)
    np.testing.assert_allclose(g, _sigmoid(X), rtol=1e-12)


def test_the_call_is_one_node_and_compiles_once():
    calls = []

    @tg.custom_jvp
    def f(x):
        calls.append(type(x).__name__)
        return np.sin(x) * 2.0

    @f.defjvp
    def f_jvp(primals, tangents):
        return f(primals[0]), 2.0 * np.cos(primals[0]) * tangents[0]

    c = tg.compile(lambda x: f(x) + 1.0)
    x = np.linspace(0.0, 1.0, 5)
    np.testing.assert_allclose(c(x), 2.0 * np.sin(x) + 1.0)
    g = c.graph(x)
    assert sum(n.primitive.name.startswith("custom_jvp_f") for n in g.nodes) == 1
    assert not any(n.primitive.name == "sin" for n in g.nodes)  # the body is not inlined
    traced = calls.count("Tracer")
    np.testing.assert_allclose(c(x + 1.0), 2.0 * np.sin(x + 1.0) + 1.0)
    assert calls.count("Tracer") == traced  # the cached compilation is reused: no retrace
    assert c.cache_size() == 1


def test_a_deliberately_wrong_rule_is_the_one_used():
    @tg.custom_jvp
    def f(x):
        return x * x

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return f(x), 7.0 * t  # not 2x

    x = np.array([1.0, 2.0, 3.0])
    _, t = tg.jvp(f, (x,), (np.array([1.0, 0.5, -1.0]),))
    np.testing.assert_allclose(t, [7.0, 3.5, -7.0])
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(f(x)))(x), [7.0, 7.0, 7.0])
    np.testing.assert_allclose(tg.jacfwd(f)(x), 7.0 * np.eye(3))
    # forward gradients (K random directions): the same estimate as for a function whose
    # true derivative is 7 everywhere, with the same directions
    est = tg.forward_grad(lambda x: np.sum(f(x)), directions=3, seed=1)(x)
    ref = tg.forward_grad(lambda x: 7.0 * np.sum(x), directions=3, seed=1)(x)
    np.testing.assert_allclose(est[0], np.sum(x * x))
    np.testing.assert_allclose(est[1], ref[1], rtol=1e-12)


def test_k_directions_call_the_rule_per_direction():
    seen = []

    @tg.custom_jvp
    def f(x, y):
        return {"s": x * y, "d": x - y}

    @f.defjvp
    def f_jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        seen.append(tx.shape)
        return f(x, y), {"s": tx * y + x * ty, "d": tx - ty}

    x, y = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    rng = np.random.default_rng(0)
    tx, ty = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    c = tg.compile(f)
    out, t = c.jvp((x, y), (tx, ty), batched=True)
    np.testing.assert_allclose(out["s"], x * y)
    np.testing.assert_allclose(t["s"], tx * y + x * ty)
    np.testing.assert_allclose(t["d"], tx - ty)
    assert seen and all(s == (2,) for s in seen)  # one direction at a time
    assert len(seen) == 4


def test_nested_in_a_bigger_function_with_pytrees_and_nondiff_args():
    @tg.custom_jvp(nondiff_argnums=(0,))
    def scaled_tanh(power, params):
        return np.tanh(params["w"] * params["b"]) ** power

    @scaled_tanh.defjvp
    def scaled_tanh_jvp(power, primals, tangents):
        (p,), (t,) = primals, tangents
        z = p["w"] * p["b"]
        th = np.tanh(z)
        dz = t["w"] * p["b"] + p["w"] * t["b"]
        return th ** power, power * th ** (power - 1) * (1 - th * th) * dz

    def loss(w, b):
        h = np.exp(0.1 * w)
        return np.sum(scaled_tanh(2, {"w": h, "b": b}) * 3.0) + np.sum(b * b)

    def reference(w, b):
        return np.sum(np.tanh(np.exp(0.1 * w) * b) ** 2 * 3.0) + np.sum(b * b)

    w, b = np.array([0.3, -1.0, 2.0]), np.array([0.5, 0.25, -0.7])
    g = tg.grad(loss, argnums=(0, 1))(w, b)
    g_ref = tg.grad(reference, argnums=(0, 1))(w, b)
    np.testing.assert_allclose(g[0], g_ref[0], rtol=1e-12)
    np.testing.assert_allclose(g[1], g_ref[1], rtol=1e-12)
    np.testing.assert_allclose(tg.jacfwd(loss)(w, b), g_ref[0], rtol=1e-12)
    np.testing.assert_allclose(tg.compile(loss)(w, b), reference(w, b), rtol=1e-14)
    # second order: the rule expands to ordinary traced ops
    h = tg.hessian(loss)(w, b)
    h_ref = tg.hessian(reference)(w, b)
    np.testing.assert_allclose(h, h_ref, rtol=1e-10, atol=1e-12)


@tg.custom_vjp
def clip_gradient(lo, hi, x):
    return x


def _clip_fwd(lo, hi, x):
    return x, (lo, hi)


def _clip_bwd(res, g):
    lo, hi = res
    return (None, None, np.clip(g, lo, hi))


clip_gradient.defvjp(_clip_fwd, _clip_bwd)


def test_custom_vjp_clips_the_gradient_in_reverse_mode():
    x = np.array([0.5, -2.0, 3.0])
    assert np.array_equal(clip_gradient(-1.0, 1.0, x), x)

    def f(x):
        return np.sum(clip_gradient(-1.0, 1.0, 5.0 * x) * np.array([1.0, 0.1, -3.0]))

    np.testing.assert_allclose(tg.compile(f)(x), np.sum(5.0 * x * np.array([1.0, 0.1, -3.0])))
    # d/dy = [1, 0.1, -3] clipped to [-1, 1], times 5 from the chain rule
    np.testing.assert_allclose(tg.grad(f)(x), 5.0 * np.array([1.0, 0.1, -1.0]))


def test_custom_vjp_with_nondiff_argnums_and_residuals():
    @tg.custom_vjp
    def f(scale, x):
        return np.sin(x) * scale

    def fwd(scale, x):
        return f(scale, x), np.cos(x)

    def bwd(scale, cos_x, ct):
        return (ct * cos_x * scale * 10.0,)  # 10x the true derivative: proves the rule runs

    f = tg.custom_vjp(f.fun, nondiff_argnums=(0,))
    f.defvjp(fwd, bwd)
    x = np.array([0.1, 0.7])
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(f(3.0, x)))(x), 30.0 * np.cos(x))


def test_custom_vjp_in_forward_mode_is_a_clear_error():
    with pytest.raises(TangentError, match=r"(?s)forward mode.*tracegrad\.custom_jvp"):
        tg.jvp(lambda x: clip_gradient(-1.0, 1.0, x), (np.ones(2),), (np.ones(2),))


def test_reverse_mode_through_a_large_custom_jvp_says_use_custom_vjp():
    x = np.linspace(-1.0, 1.0, MAX_BASIS + 1)
    with pytest.raises(GradientError, match="custom_vjp"):
        tg.grad(lambda x: np.sum(log1pexp(x)))(x)
    np.testing.assert_allclose(tg.forward_grad(lambda x: np.sum(log1pexp(x)), directions=2, seed=0)(x)[0],
                               np.sum(np.log1p(np.exp(x))))


def test_a_rule_with_the_wrong_structure_names_the_users_line():
    @tg.custom_jvp
    def f(x, y):
        return x + y, x * y

    @f.defjvp
    def bad_rule(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        return f(x, y), tx + ty  # one tangent for two outputs

    with pytest.raises(CustomRuleError, match="bad_rule returned a tangent output with structure") as err:
        tg.jvp(f, (np.ones(2), np.ones(2)), (np.ones(2), np.ones(2)))
    assert err.value.source.function == "bad_rule"
    assert "def bad_rule" in err.value.source.line
    assert "test_custom_rules.py" in str(err.value)


def test_a_tangent_of_the_wrong_shape_is_an_error():
    @tg.custom_jvp
    def f(x):
        return x * 2.0

    @f.defjvp
    def shape_rule(primals, tangents):
        return f(primals[0]), np.sum(tangents[0])

    with pytest.raises(CustomRuleError, match=r"shape \(\), expected \(3,\)|shape"):
        tg.jvp(f, (np.ones(3),), (np.ones(3),))


def test_bwd_returning_a_bare_array_is_an_error():
    @tg.custom_vjp
    def f(x):
        return x * 2.0

    def fwd(x):
        return f(x), None

    def bwd_bare(res, ct):
        return ct * 2.0  # should be (ct * 2.0,)

    f.defvjp(fwd, bwd_bare)
    with pytest.raises(CustomRuleError, match=r"bwd_bare must return a tuple of 1 cotangent"):
        tg.grad(lambda x: np.sum(f(x)))(np.ones(3))


def test_the_cupy_backend_runs_the_users_numpy_on_the_host(emulated_cupy):
    seen = []

    @tg.custom_jvp
    def f(x):
        seen.append(type(x))
        return np.log1p(np.exp(x))

    c = tg.compile(f, backend="cupy")
    got = c(emulated_cupy.asarray(X[:3]))
    np.testing.assert_allclose(emulated_cupy.asnumpy(got), np.log1p(np.exp(X[:3])), rtol=1e-14)
    assert seen[-1] is np.ndarray  # the stand-in's arrays are NumPy's; real CuPy ones are copied to the host
