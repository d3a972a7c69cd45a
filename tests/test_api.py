"""The public API: compile (caching, pytrees, statics), jvp, forward_grad, inspection."""

from __future__ import annotations

import networkx as nx
import numpy as np

import tracegrad as tg
import tracegrad.numpy as tnp


def seed_fn(theta):
    return (theta[0] + theta[1]) * theta[2]


def test_seed_article_example_value_and_basis_jvps():
    theta = np.array([3.0, -1.0, 2.0])
    f = tg.compile(seed_fn)
    assert f(theta) == 4.0
    grads = [f.jvp((theta,), (e,))[1] for e in np.eye(3)]
    np.testing.assert_array_equal(grads, [2.0, 2.0, 2.0])
    value, batched = f.jvp((theta,), (np.eye(3),), batched=True)
    assert value == 4.0
    np.testing.assert_array_equal(batched, [2.0, 2.0, 2.0])


def test_forward_gradient_mean_over_many_directions():
    g = tg.forward_grad(lambda t: t[0] ** 2 + t[1] ** 2, directions=100_000, seed=0)
    value, grad = g(np.array([2.0, 1.0]))  # one execution, ~10 ms here (no timing asserted)
    assert value == 5.0
    assert np.all(np.abs(grad - [4.0, 2.0]) < 0.05), grad


def test_forward_gradient_is_unbiased_for_both_distributions():
    w = np.array([0.5, -1.0, 2.0])
    f = lambda x: np.sum(np.sin(x) * w)
    x = np.array([0.1, 0.2, -0.3])
    true = np.cos(x) * w
    for dist in ("normal", "rademacher"):
        _, g = tg.forward_grad(f, directions=50_000, distribution=dist, seed=1)(x)
        np.testing.assert_allclose(g, true, atol=0.03)


def test_forward_grad_pytrees_and_argnums():
    def loss(params, x, y):
        logits = x @ params["w"] + params["b"]
        return tnp.cross_entropy(logits, y)

    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    value, grads = tg.forward_grad(loss, directions=4, seed=0)(params, x, y)
    assert set(grads) == {"w", "b"}
    assert grads["w"].shape == (4, 3) and grads["w"].dtype == np.float32
    # the estimate is (1/K) sum_k (g . v_k) v_k: check it against the exact gradient via basis JVPs
    f = tg.compile(loss)
    value2 = f(params, x, y)
    assert np.isclose(value, value2)
    both = tg.forward_grad(loss, argnums=(0, 1), seed=0)(params, x, y)[1]
    assert isinstance(both, tuple) and both[1].shape == x.shape


def test_forward_grad_same_seed_same_numbers():
    f = lambda p: np.sum(p * p)
    p = np.arange(6.0).reshape(2, 3)
    a = tg.forward_grad(f, seed=5, directions=3)(p)[1]
    b = tg.forward_grad(f, seed=5, directions=3)(p)[1]
    c = tg.forward_grad(f, seed=6, directions=3)(p)[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_compile_caches_per_signature():
    calls = []

    @tg.compile
    def f(x, y):
        calls.append(1)
        return x * y

    f(np.ones(3), np.ones(3))
    f(np.zeros(3), np.full(3, 2.0))
    assert len(calls) == 1
    f(np.ones(4), np.ones(4))  # new shape
    f(np.ones(3, np.float32), np.ones(3, np.float32))  # new dtype
    assert len(calls) == 3 and f.cache_size() == 3
    np.testing.assert_array_equal(f(np.full(2, 3.0), np.full(2, 2.0)), [6.0, 6.0])


def test_static_argnums_and_decorator_with_options():
    @tg.compile(static_argnums=(1,))
    def f(x, axis):
        return np.sum(x, axis=axis)

    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(f(x, 0), [3.0, 5.0, 7.0])
    np.testing.assert_array_equal(f(x, 1), [3.0, 12.0])
    assert f.cache_size() == 2


def test_pytree_inputs_and_outputs():
    @tg.compile
    def f(p, xs):
        return {"a": p["w"] * xs[0], "b": [xs[1] + 1.0, None]}

    out = f({"w": np.array(2.0)}, (np.array([1.0, 2.0]), 3.0))
    np.testing.assert_array_equal(out["a"], [2.0, 4.0])
    assert out["b"][0] == 4.0 and out["b"][1] is None


def test_python_scalars_are_weakly_typed_like_numpy():
    f = tg.compile(lambda x, s: x * s + 1)
    x = np.ones(3, np.float32)
    assert f(x, 2.0).dtype == (x * 2.0 + 1).dtype == np.float32
    assert f(np.ones(3, np.int64), 2.5).dtype == np.float64


def test_jvp_with_none_tangent_and_closure_constants():
    scale = np.array([1.0, 2.0, 3.0])

    def f(x, data):
        return np.sum(np.exp(x) * data * scale)

    x, data = np.array([0.0, 1.0, -1.0]), np.array([1.0, 1.0, 2.0])
    y, t = tg.jvp(f, (x, data), (np.ones(3), None))
    assert np.isclose(y, np.sum(np.exp(x) * data * scale))
    assert np.isclose(t, np.sum(np.exp(x) * data * scale))
    g = tg.compile(f).jvp_graph(x, data, argnums=0)
    assert g.input_kinds == ["primal", "primal", "tangent"]


def test_jvp_of_integer_outputs_is_none():
    f = tg.compile(lambda x: (np.argmax(x), x * 2))
    (i, _y), (ti, ty) = f.jvp((np.array([1.0, 3.0, 2.0]),), (np.ones(3),))
    assert i == 1 and ti is None
    np.testing.assert_array_equal(ty, [2.0, 2.0, 2.0])


def test_inspection_graph_listing_networkx_and_source():
    f = tg.compile(seed_fn)
    theta = np.array([3.0, -1.0, 2.0])
    g = f.graph(theta)
    assert str(g) == (
        "{ lambda theta:f64[3] .\n"
        "    a:f64[] = index[0] theta\n"
        "    b:f64[] = index[1] theta\n"
        "    c:f64[] = add a b\n"
        "    d:f64[] = index[2] theta\n"
        "    e:f64[] = mul c d\n"
        "  in ( e ) }"
    )
    jg = f.jvp_graph(theta)
    text = str(jg)
    assert "theta:f64[3] theta_dot:f64[3]ᵗ" in text and text.count("\n") == len(jg.nodes) + 1
    dg = jg.to_networkx()
    assert isinstance(dg, nx.DiGraph)
    assert nx.is_directed_acyclic_graph(dg)
    prims = [d["primitive"] for _, d in dg.nodes(data=True) if d["kind"] == "node"]
    assert sorted(prims) == sorted(n.primitive.name for n in jg.nodes)
    roles = {d["role"] for _, d in dg.nodes(data=True)}
    assert roles == {"primal", "tangent"}
    src = f.source(theta)
    assert "def seed_fn(theta):" in src and "# add" in src and "test_api.py" in src


def test_jvp_of_a_jvp_graph_gives_second_derivatives():
    from tracegrad.ad import jvp_graph
    from tracegrad.transforms import optimize

    f = tg.compile(lambda x: np.sin(x) * x)
    x = np.array(0.7)
    g1, _ = jvp_graph(f.graph(x), [True])
    g2, _ = jvp_graph(optimize(g1), [True, True])
    g2 = optimize(g2).validate()
    # inputs: x, x_dot (first order), then their tangents; second output tangent = v1' f'' v2 + ...
    outs = g2.interpret(x, 1.0 * np.ones(()), np.ones(()), np.zeros(()))
    second = outs[3]
    np.testing.assert_allclose(second, 2 * np.cos(0.7) - 0.7 * np.sin(0.7), rtol=1e-12)
