"""User-tagged activity-perturbation points (``tracegrad.perturb_point``), in float64: layers the
compiler would not find itself are perturbed at the tag and the estimate stays unbiased."""

import numpy as np
import pytest
from estimates import mean_and_se

import tracegrad as tg
from tracegrad.ad.perturb import analyze
from tracegrad.errors import GradientError

B = 6


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    p = {"w0": rng.standard_normal((4, 5)), "g": rng.standard_normal(5) + 1, "w1": rng.standard_normal((5, 5)) / 2,
         "b1": rng.standard_normal(5) * 0.3, "w2": rng.standard_normal((5, 3))}
    return p, rng.standard_normal((B, 4)), rng.integers(0, 3, B)


def tagged(p, x, y):
    h = tg.perturb_point(np.tanh(x @ p["w0"]) * p["g"])  # a gain after a nonlinearity
    z = tg.perturb_point(np.sum(h[:, :, None] * p["w1"][None], axis=1) + p["b1"])  # a hand-written matmul
    return tg.numpy.cross_entropy(np.maximum(z, 0) @ p["w2"], y)


def untagged(p, x, y):
    h = np.tanh(x @ p["w0"]) * p["g"]
    z = np.sum(h[:, :, None] * p["w1"][None], axis=1) + p["b1"]
    return tg.numpy.cross_entropy(np.maximum(z, 0) @ p["w2"], y)




def test_perturb_point_is_the_identity_elsewhere():
    p, x, y = _setup()
    assert tagged(p, x, y) == pytest.approx(untagged(p, x, y), rel=1e-14)
    g1, g2 = tg.grad(tagged)(p, x, y), tg.grad(untagged)(p, x, y)
    for k in p:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-13)
    v = {k: np.ones_like(a) for k, a in p.items()}
    assert tg.jvp(tagged, (p, x, y), (v, None, None))[1] == pytest.approx(
        tg.jvp(untagged, (p, x, y), (v, None, None))[1], rel=1e-12)


def test_tagged_points_the_compiler_cannot_find_give_unbiased_estimates():
    p, x, y = _setup()
    with pytest.raises(GradientError, match="perturb_point"):  # untagged, the gain and the hand-written
        tg.activity_grad(untagged)(p, x, y)  # matmul are parameters used outside a layer
    exact = tg.grad(tagged)(p, x, y)
    for options in ({}, {"mask": True}):
        g = tg.activity_grad(tagged, directions=64, seed=1, **options)
        for k, (mean, se) in mean_and_se(g, (p, x, y), 60).items():
            assert np.all(np.abs(mean - exact[k]) <= 5 * se + 1e-12), (options, k)
            assert 5 * se.max() < 0.75 * np.abs(exact[k]).max(), k  # a zero estimate would fail


def test_a_tag_after_a_nonlinearity_takes_over_the_layer_before_it():
    rng = np.random.default_rng(3)
    p = {"w0": rng.standard_normal((4, 5)), "b0": rng.standard_normal(5), "w1": rng.standard_normal((5, 3))}
    x, y = rng.standard_normal((B, 4)), rng.integers(0, 3, B)

    def post(p, x, y):  # perturb the activation after the ReLU, not the pre-activation
        return tg.numpy.cross_entropy(tg.perturb_point(np.maximum(x @ p["w0"] + p["b0"], 0)) @ p["w1"], y)

    graph = tg.compile(post).graph(p, x, y)
    points = analyze(graph, [True, True, True, False, False]).points
    assert [pt.base.primitive.name for pt in points] == ["perturb_point", "matmul"]
    assert [n.primitive.name for n in points[0].param_nodes] == ["matmul", "add", "maximum"]
    exact = tg.grad(post)(p, x, y)
    # G = width with only that point perturbed on a basis: exact (the output layer is exact_last)
    _, est = tg.activity_grad(post, groups=5, seed=0, exact_last=True)(p, x, y, step=0)
    for k in p:
        np.testing.assert_allclose(est[k], exact[k], rtol=1e-10, atol=1e-14, err_msg=k)
