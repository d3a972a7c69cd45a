"""transforms.share: convolutions of one input share one im2col (one conv2d with the
kernels stacked along the output channels, sliced back), with the numbers unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.nn import functional as F
from tracegrad.transforms.share import share_conv_inputs


def _net(p, x):
    h = np.maximum(F.conv2d(x, p["c0"], padding=1), 0.0)
    h = F.conv2d(h, p["c1"], stride=2)
    return np.sum(h * h)


def _args(dtype=np.float64):
    rng = np.random.default_rng(0)
    p = {"c0": rng.standard_normal((4, 2, 3, 3)).astype(dtype), "c1": rng.standard_normal((3, 4, 2, 2)).astype(dtype)}
    return p, rng.standard_normal((2, 2, 6, 6)).astype(dtype)


def _convs(source: str) -> int:
    return sum(1 for line in source.splitlines() if "tg_conv2d(" in line)


@pytest.mark.parametrize("tangents", ["dense", "rank1"])
def test_jvp_convolutions_share_their_input_and_keep_the_numbers(tangents):
    p, x = _args()
    f = tg.compile(_net)
    # the listing keeps the JVP's own five convolutions (primal, input tangent and weight
    # tangent of layer 2; primal and weight tangent of layer 1) ...
    graph = f.jvp_graph(p, x, argnums=0, directions=2, tangents=tangents)
    assert sum(n.primitive.name == "conv2d" for n in graph.nodes) == 5
    # ... the generated code merges each layer's primal and weight-tangent products
    assert _convs(f.source(p, x, jvp=True, argnums=0, directions=2, tangents=tangents)) == 3
    shared = share_conv_inputs(graph)
    assert sum(n.primitive.name == "conv2d" for n in shared.nodes) == 3
    shared.validate()
    # the generated (merged) code computes what the un-merged graph computes
    from tracegrad.modes import JVPMode

    rng = np.random.default_rng(1)
    tangent_inputs = [rng.standard_normal(v.aval.shape) for v in graph.inputs[3:]]  # p_c0, p_c1, x first
    mode = JVPMode((True, True, False), (2,), 1 if tangents == "rank1" else 0)
    fn, _, _ = f.jvp_executable((p, x), mode.mask, mode.batch, mode.rank)
    merged = fn(p["c0"], p["c1"], x, *tangent_inputs)
    expected = graph.interpret(p["c0"], p["c1"], x, *tangent_inputs)
    for a, b in zip(merged, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(shared.interpret(p["c0"], p["c1"], x, *tangent_inputs), expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_jvp_of_a_cnn_matches_finite_differences_after_sharing():
    p, x = _args()
    f = tg.compile(_net)
    rng = np.random.default_rng(2)
    v = {k: rng.standard_normal(a.shape) for k, a in p.items()}
    _, jv = f.jvp((p, x), (v, None))
    eps = 1e-6
    plus = _net({k: p[k] + eps * v[k] for k in p}, x)
    minus = _net({k: p[k] - eps * v[k] for k in p}, x)
    np.testing.assert_allclose(jv, (plus - minus) / (2 * eps), rtol=1e-6)


def test_a_weight_computed_from_a_member_output_is_not_merged():
    def chained(x, w):
        y = F.conv2d(x, w)  # (1, 2, 3, 3)
        w2 = np.reshape(y[:, :, :2, :2], (2, 1, 2, 2)) * np.ones((1, 2, 1, 1))  # from y: same kernel shape
        return np.sum(F.conv2d(x, w2)) + np.sum(y)

    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((2, 2, 2, 2))
    graph = tg.compile(chained).graph(x, w, optimized=False)
    assert share_conv_inputs(graph) is graph  # unchanged: merging would make a cycle
    # the value, by a direct correlation
    y = np.stack([np.einsum("chw,ochw->o", x[0, :, i:i + 2, j:j + 2], w) for i in range(3) for j in range(3)], 1)
    y = y.reshape(1, 2, 3, 3)
    w2 = np.reshape(y[:, :, :2, :2], (2, 1, 2, 2)) * np.ones((1, 2, 1, 1))
    y2 = np.stack([np.einsum("chw,ochw->o", x[0, :, i:i + 2, j:j + 2], w2) for i in range(3) for j in range(3)], 1)
    np.testing.assert_allclose(tg.compile(chained)(x, w), y2.sum() + y.sum(), rtol=1e-12)


def test_convolutions_with_different_padding_stay_apart():
    def two(x, w):
        return np.sum(F.conv2d(x, w, padding=1)) + np.sum(F.conv2d(x, w * 2.0))

    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3))
    graph = tg.compile(two).graph(x, w, optimized=False)
    assert share_conv_inputs(graph) is graph
