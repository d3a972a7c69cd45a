"""Models, initializers and neural-network ops: shapes, seeds, values and JVPs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from op_cases import naive_conv2d, naive_pool

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.errors import DTypeError, ShapeError
from tracegrad.nn import build_model, cnn, count_params, logistic_regression, mlp
from tracegrad.nn import functional as F
from tracegrad.nn.init import glorot_uniform, he_normal
from tracegrad.testing import check_jvp
from tracegrad.tree import tree_map


def _f64(params):
    return tree_map(lambda p: p.astype(np.float64), params)


def test_he_and_glorot_statistics():
    rng = np.random.default_rng(0)
    w = he_normal(rng, (400, 500), fan_in=400)
    assert w.dtype == np.float32
    assert abs(w.std() - math.sqrt(2 / 400)) < 0.002
    assert abs(w.mean()) < 0.002
    u = glorot_uniform(rng, (300, 100), 300, 100)
    limit = math.sqrt(6 / 400)
    assert u.min() >= -limit and u.max() <= limit
    assert abs(u.std() - limit / math.sqrt(3)) < 0.002  # std of U(-a, a) is a / sqrt(3)
    with pytest.raises(ValueError, match="fan_in"):
        he_normal(rng, (2, 2), fan_in=0)


@pytest.mark.parametrize("make", [lambda: logistic_regression(64, 10), lambda: mlp([64, 32, 16, 10]),
                                  lambda: cnn(1, 8, channels=(4, 4, 8, 8), hidden=16)],
                         ids=["logreg", "mlp", "cnn"])
def test_init_is_seeded_and_float32(make):
    model = make()
    a, b, c = model.init(0), model.init(0), model.init(1)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == np.float32
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a if a[k].std() > 0)


def test_model_shapes_and_parameter_counts():
    assert count_params(logistic_regression(784, 10).init(0)) == 784 * 10 + 10
    sizes = [784, 1024, 1024, 10]
    p = mlp(sizes).init(0)
    assert count_params(p) == sum(a * b + b for a, b in itertools.pairwise(sizes)) == 1_863_690
    assert [p[f"w{i}"].shape for i in range(3)] == [(784, 1024), (1024, 1024), (1024, 10)]
    # The paper's MNIST CNN: 4 convs of 64 channels, two pools, 3136 -> 1024 -> 10.
    c = cnn().init(0)
    assert c["conv0_w"].shape == (64, 1, 3, 3) and c["conv3_w"].shape == (64, 64, 3, 3)
    assert c["fc0_w"].shape == (3136, 1024) and c["fc1_w"].shape == (1024, 10)


def test_initial_loss_is_near_log_num_classes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    for model in (logistic_regression(64, 10), mlp([64, 128, 10]), cnn(1, 8, channels=(4, 4, 8, 8), hidden=32)):
        loss = tnp.cross_entropy(model.apply(model.init(0), x), y)
        assert abs(float(loss) - math.log(10)) < 0.3, (model.name, float(loss))


def test_mlp_apply_matches_plain_numpy():
    model = mlp([5, 7, 3])
    p = model.init(3)
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    want = np.maximum(x @ p["w0"] + p["b0"], 0) @ p["w1"] + p["b1"]
    np.testing.assert_allclose(tg.compile(model.apply)(p, x), want, rtol=1e-6)


def test_cnn_apply_matches_naive_loops():
    model = cnn(2, (8, 6), channels=(3, 4, 3, 2), hidden=5, num_classes=4)
    p = _f64(model.init(0))
    x = np.random.default_rng(2).standard_normal((3, 2, 8, 6))

    def conv_relu(h, i):
        return np.maximum(naive_conv2d(h, p[f"conv{i}_w"], (1, 1), (1, 1)) + p[f"conv{i}_b"][:, None, None], 0)

    h = naive_pool(conv_relu(conv_relu(x, 0), 1), (2, 2), (2, 2), np.max)
    h = naive_pool(conv_relu(conv_relu(h, 2), 3), (2, 2), (2, 2), np.max)
    h = np.maximum(h.reshape(3, -1) @ p["fc0_w"] + p["fc0_b"], 0)
    want = h @ p["fc1_w"] + p["fc1_b"]
    np.testing.assert_allclose(tg.compile(model.apply)(p, x), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.apply(p, x), want, rtol=1e-10, atol=1e-12)  # eager, no tracing
    # Flattened inputs are reshaped back to images.
    np.testing.assert_allclose(tg.compile(model.apply)(p, x.reshape(3, -1)), want, rtol=1e-10, atol=1e-12)


def test_cnn_loss_jvp_matches_finite_differences():
    model = cnn(1, 8, channels=(2, 3, 2, 2), hidden=6, num_classes=3)
    params = _f64(model.init(1))
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 3, 4)

    def loss(params, x, y):
        return tnp.cross_entropy(model.apply(params, x), y)

    check_jvp(loss, [params, x, y], argnums=(0,), seed=2, rtol=1e-5, atol=1e-7)


def test_conv_jvp_with_k_directions_in_one_execution():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    vx, vw = rng.standard_normal((5, 2, 3, 6, 6)), rng.standard_normal((5, 4, 3, 3, 3))
    f = tg.compile(lambda x, w: F.max_pool2d(F.conv2d(x, w, padding=1), 2))
    _, tk = f.jvp((x, w), (vx, vw), batched=True)
    assert tk.shape == (5, 2, 4, 3, 3)
    for k in range(5):
        np.testing.assert_allclose(tk[k], f.jvp((x, w), (vx[k], vw[k]))[1], rtol=1e-12, atol=1e-12)


def test_max_pool_tie_routes_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))  # all four positions tie; the first (row-major) wins
    v = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    _, t = tg.jvp(lambda x: F.max_pool2d(x, 2), (x,), (v,))
    np.testing.assert_array_equal(t, [[[[1.0]]]])


def test_conv_shape_errors_name_both_shapes():
    x, w = np.ones((2, 3, 5, 5)), np.ones((4, 2, 3, 3))
    with pytest.raises(ShapeError) as err:
        tg.compile(lambda x, w: F.conv2d(x, w))(x, w)
    msg = str(err.value)
    assert "(2, 3, 5, 5)" in msg and "(4, 2, 3, 3)" in msg and "channels" in msg
    assert "test_nn.py" in msg  # names the user's line
    with pytest.raises(ShapeError, match="4-D"):
        tg.compile(lambda x, w: F.conv2d(x, w))(np.ones((3, 5, 5)), np.ones((4, 3, 3, 3)))
    with pytest.raises(ShapeError, match="larger than"):
        tg.compile(lambda x: F.max_pool2d(x, 4))(np.ones((1, 1, 3, 3)))
    with pytest.raises(DTypeError, match="floating"):
        tg.compile(lambda x, w: F.conv2d(x, w))(np.ones((1, 1, 3, 3), np.int64), np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), stride=0)


def test_build_model_options_and_errors():
    assert build_model("mlp", 64, 10, hidden=[32]).init(0)["w0"].shape == (64, 32)
    small = build_model("cnn", 64, 10, image_shape=(1, 8, 8), channels=(4, 4, 8, 8), hidden=16)
    assert small.init(0)["fc0_w"].shape == (8 * 2 * 2, 16)
    assert build_model("cnn", 784, 10).init(0)["fc0_w"].shape == (3136, 1024)  # inferred 1x28x28
    with pytest.raises(ValueError, match="square"):
        build_model("cnn", 10, 10)
    with pytest.raises(ValueError, match="too small"):
        cnn(1, 3)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", 4, 2)


def test_conv_generated_source_is_one_readable_call():
    src = tg.compile(lambda x, w: F.conv2d(x, w, padding=1)).source(np.ones((1, 1, 4, 4)), np.ones((2, 1, 3, 3)))
    line = next(ln for ln in src.splitlines() if "# conv2d" in ln)
    assert "tg_conv2d(x, w, stride=(1, 1), padding=(1, 1))" in line and "lambda" not in src
