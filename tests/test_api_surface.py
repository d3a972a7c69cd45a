"""The JAX-style API surface (has_aux, jacfwd/jacrev/hessian, keyword arguments, pytree
registration) and the side effects tracing must not get silently wrong (np.random draws,
leaked tracers, changed argument containers). Derivatives are checked in float64 against
finite differences."""

from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import errors
from tracegrad.testing import numerical_grad, numerical_jvp
from tracegrad.tracing.effects import LeakedTracerWarning
from tracegrad.tree import tree_leaves

RNG = np.random.default_rng(1)


def _x(*shape):
    return RNG.standard_normal(shape)


# ---------------------------------------------------------------- np.random while tracing
MODULE_RNG = np.random.default_rng(0)


def test_global_np_random_is_refused_with_its_line():
    def f(x):
        return x * np.random.rand(*x.shape)

    with pytest.raises(errors.TraceError, match="np.random.rand") as info:
        tg.compile(f)(np.ones(3))
    assert "np.random.rand(*x.shape)" in str(info.value)
    assert "argument" in str(info.value)  # says the supported way: pass the noise in
    assert not hasattr(np.random.rand, "__wrapped__")  # the module is restored


def test_generators_the_function_uses_are_refused():
    def dropout(x):
        return x * (MODULE_RNG.random(x.shape) < 0.5)

    with pytest.raises(errors.TraceError, match="Generator"):
        tg.compile(dropout)(np.ones(3))

    class Layer:
        def __init__(self):
            self.rng = np.random.default_rng(1)

        def __call__(self, x):
            return x + self.rng.normal(size=x.shape)

    with pytest.raises(errors.TraceError, match="random"):
        tg.compile(Layer())(np.ones(3))

    def fresh(x):
        return x * np.random.default_rng().random(3)  # new entropy every call under NumPy

    with pytest.raises(errors.TraceError, match="default_rng"):
        tg.compile(fresh)(np.ones(3))


def test_seeded_randomness_inside_is_deterministic_and_allowed():
    def f(x):
        return x * np.random.default_rng(7).random(x.shape)  # the same numbers on every call

    np.testing.assert_array_equal(tg.compile(f)(np.ones(3)), f(np.ones(3)))


def test_noise_passed_in_is_fresh_every_call():
    f = tg.compile(lambda x, mask: x * mask)
    rng = np.random.default_rng(0)
    m1, m2 = rng.random(4) < 0.5, rng.random(4) < 0.5
    np.testing.assert_array_equal(f(np.ones(4), m1), m1 * 1.0)
    np.testing.assert_array_equal(f(np.ones(4), m2), m2 * 1.0)


# ---------------------------------------------------------------- leaked tracers
def test_leaked_tracer_warns_at_trace_and_raises_on_use():
    state = {}

    def batchnorm(x):
        m = x.mean(axis=0)
        state["running_mean"] = m  # a side effect: happens only while tracing
        return x - m

    f = tg.compile(batchnorm)
    with pytest.warns(LeakedTracerWarning, match=r"m = x.mean\(axis=0\)"):
        f(_x(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(_x(4, 2))  # cached: no trace, no warning, and the store is skipped
    with pytest.raises(errors.TraceError, match="cached") as info:
        state["running_mean"] * 0.9
    assert 'state["running_mean"] * 0.9' in str(info.value)
    with pytest.raises(errors.TraceError, match="after that trace ended"):
        float(state["running_mean"][0])
    assert "leaked" in repr(state["running_mean"])
    with pytest.raises(errors.TraceError, match="after that trace ended"):
        tg.compile(lambda x: x + state["running_mean"])(np.ones(2))


def test_changed_argument_containers_are_refused():
    def step(params):
        params["w"] = params["w"] * 2.0
        return params["w"].sum()

    with pytest.raises(errors.TraceError, match="changed a container"):
        tg.compile(step)({"w": np.ones(2)})


def test_no_false_leak_warnings_for_plain_functions():
    def f(x, w):
        h = np.tanh(x @ w)
        cache = (x, h)  # a local: dies with the call
        return h.sum() + cache[1].mean()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tg.compile(f)(_x(3, 2), _x(2, 2))
        tg.value_and_grad(f, 1)(_x(3, 2), _x(2, 2))


# ---------------------------------------------------------------- clear errors instead of crashes
@pytest.mark.parametrize("expr", ["x.item()", "x.tolist()", "x.flat"])
def test_concrete_conversions_name_the_line(expr):
    ns = {}
    exec(f"def f(x):\n    return {expr}\n", ns)  # noqa: S102 - builds a one-line test function
    with pytest.raises(errors.ConcretizationError, match="trace time"):
        tg.compile(ns["f"])(np.ones(1))


def test_jvp_with_bare_arrays_says_primals_are_a_tuple():
    with pytest.raises(errors.TangentError, match="primals must be a tuple"):
        tg.jvp(np.sin, np.ones(2), np.ones(2))
    with pytest.raises(errors.TangentError, match="tangents must be a tuple"):
        tg.compile(np.sin).jvp((np.ones(2),), np.ones(2))


def test_list_argument_is_explained():
    def f(x):
        return x.shape[0] * np.sum(x)

    with pytest.raises(errors.ArgumentTypeError, match="Python list of 3 numbers") as info:
        tg.compile(f)([1.0, 2.0, 3.0])
    assert "np.asarray(x)" in str(info.value)


def test_rank_above_64_is_a_clear_error():
    # NumPy itself stops at 64 dimensions; an input cannot exceed it, a reshape inside can
    assert tg.compile(lambda x: x + 1)(np.ones((1,) * 33)).shape == (1,) * 33
    with pytest.raises(errors.ShapeError, match="rank 65") as info:
        tg.compile(lambda x: x.reshape((1,) * 65))(np.ones(1))
    assert "x.reshape" in str(info.value)


def test_mod_and_floordiv_work_or_say_so():
    f = tg.compile(lambda x: (x % 1.5, x // 1.5))
    x = np.array([-2.5, 0.3, 4.0])
    try:
        got = f(x)
    except errors.UnsupportedOperationError as err:
        assert "not supported" in str(err)
    else:
        np.testing.assert_array_equal(got[0], x % 1.5)
        np.testing.assert_array_equal(got[1], x // 1.5)


# ---------------------------------------------------------------- keyword arguments
def test_keyword_arguments_and_static_argnames():
    calls = []

    def f(x, scale=2.0, mode="mul"):
        calls.append(mode)
        return x * scale if mode == "mul" else x - scale

    c = tg.compile(f, static_argnames="mode")
    x = _x(3)
    np.testing.assert_allclose(c(x, scale=3.0), x * 3.0)
    np.testing.assert_allclose(c(x, scale=4.0), x * 4.0)  # traced: the same compilation
    np.testing.assert_allclose(c(x, mode="sub"), x - 2.0)
    np.testing.assert_allclose(c(x, 1.0, "sub"), x - 1.0)  # static by position too
    assert calls == ["mul", "sub", "sub"]
    g = tg.grad(lambda w, x, power=2: np.sum(w ** power * x))
    np.testing.assert_allclose(g(x, x, power=3), 3 * x ** 3)
    with pytest.raises(errors.ArgumentTypeError, match="not hashable"):
        c(x, mode=[1])
    fg = tg.forward_grad(lambda w, x, scale=1.0: np.sum(w * x) * scale, directions=2, seed=0)
    value, est = fg(x, x, scale=2.0)
    v = tg.forward_grad(lambda w, x: np.sum(w * x) * 2.0, directions=2, seed=0)(x, x)
    np.testing.assert_allclose(value, v[0])
    np.testing.assert_allclose(est, v[1])  # same seed, same directions: the same estimate


# ---------------------------------------------------------------- has_aux
def _loss_aux(w, x):
    pred = np.tanh(x @ w)
    loss = np.mean(pred ** 2)
    return loss, {"pred": pred, "n": x.shape[0]}


def test_has_aux():
    w, x = _x(3, 2), _x(4, 3)
    (value, aux), g = tg.value_and_grad(_loss_aux, has_aux=True)(w, x)
    np.testing.assert_allclose(value, _loss_aux(w, x)[0], rtol=1e-12)
    np.testing.assert_allclose(aux["pred"], np.tanh(x @ w), rtol=1e-12)
    assert aux["n"] == 4
    num = numerical_grad(lambda w, x: _loss_aux(w, x)[0], [w, x], 0)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)
    g2, aux2 = tg.grad(_loss_aux, has_aux=True)(w, x)
    np.testing.assert_allclose(g2, g, rtol=1e-12)
    np.testing.assert_allclose(aux2["pred"], aux["pred"])
    (v3, aux3), est = tg.forward_grad(_loss_aux, has_aux=True, directions=4000, seed=0)(w, x)
    np.testing.assert_allclose(v3, value, rtol=1e-12)
    np.testing.assert_allclose(aux3["pred"], aux["pred"])
    assert np.linalg.norm(est - g) < 0.1 * np.linalg.norm(g)  # an unbiased estimate, 4000 directions
    with pytest.raises(errors.GradientError, match="pair"):
        tg.grad(lambda w: np.sum(w), has_aux=True)(w)


# ---------------------------------------------------------------- Jacobians and Hessians
def _vector_fn(x, p):
    return {"y": np.tanh(x[:, None] * p["a"]).sum(axis=1), "z": np.sum(x ** 2) * p["b"]}


def _numerical_jacobian(fn, args, argnum, out_key):
    """Columns by central differences, one per input element."""
    leaves = tree_leaves(args[argnum])
    cols = []
    for k, leaf in enumerate(leaves):
        for e in range(leaf.size):
            basis = [np.zeros_like(v) for v in leaves]
            basis[k].reshape(-1)[e] = 1.0
            tree = tg.tree.tree_unflatten(tg.tree.tree_structure(args[argnum]), basis)
            tangents = [None] * len(args)
            tangents[argnum] = tree
            cols.append(numerical_jvp(fn, args, tangents)[out_key])
    return cols


@pytest.mark.parametrize("jac", [tg.jacfwd, tg.jacrev])
def test_jacobians_match_finite_differences(jac):
    x = _x(3)
    p = {"a": _x(3, 2), "b": _x(2)}
    J = jac(_vector_fn, (0, 1))(x, p)
    assert J["y"][0].shape == (3, 3) and J["y"][1]["a"].shape == (3, 3, 2) and J["z"][1]["b"].shape == (2, 2)
    cols = _numerical_jacobian(_vector_fn, [x, p], 0, "y")
    np.testing.assert_allclose(J["y"][0], np.stack(cols, axis=-1), rtol=1e-6, atol=1e-8)
    cols = _numerical_jacobian(_vector_fn, [x, p], 1, "z")
    np.testing.assert_allclose(J["z"][1]["a"].reshape(2, -1), np.stack(cols[:6], axis=-1), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(J["z"][1]["b"], np.stack(cols[6:], axis=-1), rtol=1e-6, atol=1e-8)
    single = jac(_vector_fn)(x, p)
    np.testing.assert_allclose(single["y"], J["y"][0])


def test_hessian_matches_finite_differences_of_the_gradient():
    def f(p, x):
        return np.sum(np.sin(p["a"] * x) * p["b"] ** 2) + np.sum(p["a"] ** 3)

    p, x = {"a": _x(3), "b": _x(3)}, _x(3)
    H = tg.hessian(f)(p, x)
    g = tg.grad(f)
    for k in ("a", "b"):
        for e in range(3):
            dp = {"a": np.zeros(3), "b": np.zeros(3)}
            dp[k][e] = 1e-5
            plus = g({q: p[q] + dp[q] for q in p}, x)
            minus = g({q: p[q] - dp[q] for q in p}, x)
            for j in ("a", "b"):
                np.testing.assert_allclose(H[j][k][:, e], (plus[j] - minus[j]) / 2e-5, rtol=1e-5, atol=1e-7)
    Hxy = tg.hessian(lambda a, b: np.sum(a ** 2 * b), (0, 1))(_x(2), _x(2))
    assert len(Hxy) == 2 and Hxy[0][1].shape == (2, 2)


# ---------------------------------------------------------------- user pytrees
class Params(NamedTuple):
    w: np.ndarray
    b: np.ndarray


@tg.register_dataclass
@dataclasses.dataclass
class Layer:
    w: np.ndarray
    b: np.ndarray


@dataclasses.dataclass
class Scaled:
    value: np.ndarray
    scale: float


tg.register_dataclass(Scaled, meta_fields=("scale",))


class Box:
    def __init__(self, inner):
        self.inner = inner


tg.register_pytree_node(Box, lambda b: ([b.inner], None), lambda aux, kids: Box(kids[0]))


def _model(p, x):
    return np.sum(np.tanh(x @ p.w + p.b) ** 2)


@pytest.mark.parametrize("make", [Params, Layer], ids=["namedtuple", "dataclass"])
def test_user_pytrees_trace_and_differentiate(make):
    p, x = make(_x(3, 2), _x(2)), _x(4, 3)
    g = tg.grad(_model)(p, x)
    assert type(g) is make
    num = numerical_grad(_model, [p, x], 0)
    np.testing.assert_allclose(g.w, num.w, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.b, num.b, rtol=1e-6, atol=1e-8)
    _, t = tg.jvp(_model, (p, x), (make(np.ones((3, 2)), np.zeros(2)), None))
    np.testing.assert_allclose(t, np.sum(num.w), rtol=1e-6)


def test_meta_fields_are_static_and_custom_nodes_round_trip():
    calls = []

    def f(s):
        calls.append(s.scale)
        return Box(s.value * s.scale)

    c = tg.compile(f)
    out = c(Scaled(np.ones(2), 3.0))
    assert isinstance(out, Box)
    np.testing.assert_array_equal(out.inner, [3.0, 3.0])
    c(Scaled(np.ones(2), 3.0))
    c(Scaled(np.ones(2), 4.0))  # another static value: a new compilation
    assert calls == [3.0, 4.0]
    assert "Scaled" in repr(tg.tree.tree_structure(Scaled(np.ones(2), 3.0)))
