"""Low-rank tangents (ad/lowrank.py): JVPs equal the densified tangent's, the forward
gradient stays unbiased, directions regenerate from (seed, step), optimizers apply the
factored estimate in place, and the trainer learns and resumes with --tangents rank1."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import random as tg_random
from tracegrad.ad import jvp_graph
from tracegrad.ad.lowrank import LowRankInput
from tracegrad.forward_grad import forward_grad
from tracegrad.nn import functional as F
from tracegrad.optim import adam, momentum, sgd
from tracegrad.structured import LowRankGrad
from tracegrad.train import TrainConfig, Trainer, fit, latest_checkpoint
from tracegrad.transforms import optimize
from tracegrad.tree import tree_leaves


def _jvp_both(f, args, which, rank, k=2, seed=0):
    """JVP of ``f`` along rank-``rank`` tangents of ``args[which]`` and along their dense form."""
    r = np.random.default_rng(seed)
    w = args[which]
    m, rest = w.shape[0], math.prod(w.shape[1:])
    a, b = r.standard_normal((k, m, rank)), r.standard_normal((k, rest, rank))
    mask = [i == which for i in range(len(args))]
    kinds = [LowRankInput(rank) if i == which else None for i in range(len(args))]
    primal = tg.compile(f).graph(*args, optimized=False)
    graph, _ = jvp_graph(primal, mask, (k,), kinds=kinds)
    graph = optimize(graph).validate()
    _, jv = graph.interpret(*args, a, b)
    dense = np.einsum("kmr,knr->kmn", a, b).reshape((k,) + w.shape)
    tangents = tuple(dense if i == which else None for i in range(len(args)))
    _, expected = tg.compile(f).jvp(tuple(args), tangents, batched=True)
    return graph, jv, expected


def _materialized(graph, shape):
    return any(o.aval.shape == shape for n in graph.nodes for o in n.outputs)


@pytest.mark.parametrize("rank", [1, 3])
def test_matmul_both_sides_and_transpose_equal_the_dense_jvp(rank):
    r = np.random.default_rng(1)
    x, w, v = r.standard_normal((6, 5)), r.standard_normal((5, 4)), r.standard_normal((4, 3))

    def f(x, w, v):
        h = np.tanh(x @ w)  # matmul_right: x @ Ẇ
        g = w @ v  # matmul_left: Ẇ @ v
        t = x @ w.T.T  # transpose twice, then matmul_right
        return np.sum(h * 2.0) + np.sum(np.sin(g)) + np.sum(t ** 2)

    graph, jv, expected = _jvp_both(f, (x, w, v), 1, rank)
    np.testing.assert_allclose(jv, expected, rtol=1e-11, atol=1e-12)
    assert not _materialized(graph, (2, 5, 4)), "the weight tangent was materialized"


def test_batched_rows_and_an_unexploited_map_densify_correctly():
    r = np.random.default_rng(2)
    x, w = r.standard_normal((3, 6, 5)), r.standard_normal((5, 4))
    f = lambda x, w: np.sum(np.tanh(x @ w)) + np.sum(np.cos(w) * w)
    _, jv, expected = _jvp_both(f, (x, w), 1, 2)
    np.testing.assert_allclose(jv, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("stride,padding,k", [(1, 1, 2), (2, 0, 1), (1, 0, 3)])
def test_conv_kernel_tangent_equals_the_dense_jvp(stride, padding, k):
    r = np.random.default_rng(3)
    x, w = r.standard_normal((2, 3, 7, 7)), r.standard_normal((4, 3, 3, 3))
    f = lambda x, w: np.sum(np.tanh(F.conv2d(x, w, stride=stride, padding=padding)))
    graph, jv, expected = _jvp_both(f, (x, w), 1, 2, k=k)
    np.testing.assert_allclose(jv, expected, rtol=1e-11, atol=1e-12)
    assert not _materialized(graph, (k, 4, 3, 3, 3)), "the kernel tangent was materialized"


def _problem():
    r = np.random.default_rng(4)
    params = {"w1": r.standard_normal((5, 4)) * 0.5, "b1": r.standard_normal(4) * 0.1,
              "k": r.standard_normal((2, 1, 2, 2)) * 0.5}
    x, img = r.standard_normal((8, 5)), r.standard_normal((3, 1, 4, 4))

    def loss(p, x, img):
        h = np.tanh(x @ p["w1"] + p["b1"])
        c = np.tanh(F.conv2d(img, p["k"]))
        return np.mean(h ** 2) + np.sum(c) * 0.2

    return loss, params, x, img


@pytest.mark.parametrize("distribution,rank", [("rademacher", 1), ("normal", 1), ("rademacher", 2)])
def test_rank1_forward_gradient_is_unbiased(distribution, rank):
    loss, params, x, img = _problem()
    _, exact = tg.compile(loss).value_and_grad(params, x, img)
    # 300 i.i.d. estimates, each the average over 10 directions (3,000 rank-r tangents)
    g = forward_grad(loss, tangents="rank1", rank=rank, distribution=distribution, seed=7, directions=10)
    n = 300
    samples = {name: [] for name in params}
    for step in range(n):
        _, est = g(params, x, img, step=step)
        for name in params:
            samples[name].append(np.asarray(est[name], dtype=np.float64))
    for name in params:
        s = np.stack(samples[name])
        mean, sem = s.mean(0), s.std(0, ddof=1) / math.sqrt(n)
        # every entry within 4.5 standard errors of the exact gradient ...
        z = np.abs(mean - exact[name]) / np.maximum(sem, 1e-12)
        assert z.max() < 4.5, (name, z.max())
        # ... and along the gradient's direction: a scale bias (a missing 1/sqrt(r), a wrong
        # factor variance, a sign) shifts this projection by >= |g|; its standard error resolves 80% of it
        unit = exact[name].ravel() / np.linalg.norm(exact[name])
        proj = s.reshape(n, -1) @ unit
        proj_sem = proj.std(ddof=1) / math.sqrt(n)
        assert abs(proj.mean() - np.linalg.norm(exact[name])) < 4.5 * proj_sem, name
        if exact[name].ndim >= 2:  # the low-rank leaves (vectors keep dense tangents)
            assert 4.5 * proj_sem < 0.8 * np.linalg.norm(exact[name]), name


def test_rank1_estimates_are_factored_and_regenerate_from_seed_and_step():
    loss, params, x, img = _problem()
    g = forward_grad(loss, tangents="rank1", distribution="rademacher", seed=11)
    _, e1 = g(params, x, img, step=5)
    _, e2 = forward_grad(loss, tangents="rank1", distribution="rademacher", seed=11)(params, x, img, step=5)
    _, e3 = g(params, x, img, step=6)
    assert isinstance(e1["w1"], LowRankGrad) and e1["w1"].rank == 1
    assert isinstance(e1["k"], LowRankGrad) and e1["k"].u.shape == (2, 1) and e1["k"].v.shape == (4, 1)
    assert isinstance(e1["b1"], np.ndarray)  # vectors stay dense
    for name in params:
        assert np.array_equal(np.asarray(e1[name]), np.asarray(e2[name]))
        assert not np.array_equal(np.asarray(e1[name]), np.asarray(e3[name]))
    # the factors are the first (m + n) numbers of the direction of (seed, step, leaf, 0)
    t = _dense_direction("rademacher", 11, 5, 0)
    _, jv = tg.compile(loss).jvp((params, x, img), (t, None, None))
    for name in params:
        np.testing.assert_allclose(np.asarray(e1[name]), jv * t[name], rtol=1e-12)


def _dense_direction(dist, seed, step, k):
    """The rank-1 tangent of every leaf (pytree order b1, k, w1) of ``_problem``, densified."""
    b1 = tg_random.sample(dist, seed, step, 0, k, (4,)).astype(np.float64)
    dk = tg_random.sample(dist, seed, step, 1, k, (2 + 4,)).astype(np.float64)
    dw = tg_random.sample(dist, seed, step, 2, k, (5 + 4,)).astype(np.float64)
    return {"b1": b1, "k": np.outer(dk[:2], dk[2:]).reshape(2, 1, 2, 2), "w1": np.outer(dw[:5], dw[5:])}


def test_k_directions_average_into_one_rank_k_estimate():
    loss, params, x, img = _problem()
    g = forward_grad(loss, tangents="rank1", directions=3, distribution="normal", seed=2)
    _, est = g(params, x, img, step=0)
    assert est["w1"].rank == 3
    singles = []
    for k in range(3):
        t = _dense_direction("normal", 2, 0, k)
        _, jv = tg.compile(loss).jvp((params, x, img), (t, None, None))
        singles.append(jv * t["w1"])
    np.testing.assert_allclose(np.asarray(est["w1"]), np.mean(singles, 0), rtol=1e-6)


def test_listing_shows_the_factor_inputs():
    loss, params, x, img = _problem()
    src = tg.compile(loss).source(params, x, img, jvp=True, argnums=0, directions=1, tangents="rank1")
    header = src.splitlines()[1]
    for name in ("p_w1_a", "p_w1_b", "p_k_a", "p_k_b", "p_b1_dot"):
        assert name in header, header
    with pytest.raises(ValueError, match="tangents must be one of"):
        forward_grad(loss, tangents="rank-one")


@pytest.mark.parametrize("make", [lambda: sgd(0.1, weight_decay=0.01), lambda: momentum(0.1, nesterov=True),
                                  lambda: momentum(0.05, weight_decay=0.1), lambda: adam(0.01)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizers_apply_the_factored_estimate_in_place(make, dtype):
    r = np.random.default_rng(5)
    opt = make()
    p = {"w": r.standard_normal((6, 3, 2)).astype(dtype), "b": r.standard_normal(6).astype(dtype)}
    q = {k: v.copy() for k, v in p.items()}
    s, t = opt.init(p), opt.init(q)
    w_buffer = p["w"]
    for _ in range(3):
        g = LowRankGrad(r.standard_normal((6, 2)).astype(dtype), r.standard_normal((6, 2)).astype(dtype), (6, 3, 2))
        gb = r.standard_normal(6).astype(dtype)
        p, s = opt.update_inplace({"w": g, "b": gb}, s, p)
        q, t = opt.update_inplace({"w": np.asarray(g), "b": gb}, t, q)
    assert p["w"] is w_buffer  # updated where it lives
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(p["w"], q["w"], rtol=tol, atol=tol)
    assert not np.array_equal(p["w"], r.standard_normal((6, 3, 2)))


def test_low_rank_grad_adds_in_place_without_blas_fallback_errors():
    r = np.random.default_rng(6)
    g = LowRankGrad(r.standard_normal((70, 1)), r.standard_normal((3, 1)), (70, 3))
    target = np.ones((70, 3))
    g.add_to(target, -2.0)
    np.testing.assert_allclose(target, 1.0 - 2.0 * np.asarray(g), rtol=1e-14)
    strided = np.ones((70, 6))[:, ::2]  # not contiguous: the one-temporary path
    g.add_to(strided, 1.0)
    np.testing.assert_allclose(strided, 1.0 + np.asarray(g), rtol=1e-14)
    with pytest.raises(ValueError, match="do not form"):
        LowRankGrad(np.ones((3, 1)), np.ones((4, 2)), (3, 4))


@pytest.fixture(scope="module")
def digits():
    from tracegrad.data import load_dataset

    return load_dataset("digits")


def _cfg(**kw):
    base = {"model": "mlp", "model_kwargs": {"hidden": [32]}, "data": "digits", "steps": 300,
            "optimizer": "sgd", "lr": 0.01, "quiet": True, "plot": False, "eval_every": 100,
            "checkpoint_every": 100, "tangents": "rank1"}
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_with_rank1_tangents_learns_and_resumes_bit_exactly(tmp_path, digits):
    r = fit(_cfg(steps=600, lr=0.003, out=None), dataset=digits)
    assert r.test_accuracy > 0.5  # chance is 10%; dense tangents reach 0.62 here, rank-1 0.63
    assert r.history.rows[0]["train_loss"] > 1.2 * r.test_loss
    kw = {"optimizer": "momentum", "lr": 0.0005}
    full = fit(_cfg(out=str(tmp_path / "full"), **kw), dataset=digits)
    part = tmp_path / "part"
    Trainer(_cfg(out=str(part), **kw), dataset=digits).run(stop_after=150)
    assert latest_checkpoint(part).name == "ckpt-00000150.npz"
    resumed = Trainer(_cfg(out=str(part), resume=True, **kw), dataset=digits)
    assert resumed.config.tangents == "rank1" and resumed.step == 150
    res = resumed.run()
    assert all(np.array_equal(a, b) for a, b in zip(tree_leaves(res.params), tree_leaves(full.params)))
    from tracegrad.errors import CheckpointError

    with pytest.raises(CheckpointError, match="tangents"):
        Trainer(_cfg(out=str(part), resume=True, tangents="dense", **kw), dataset=digits)
    with pytest.raises(ValueError, match="forward gradients only"):
        _cfg(mode="backprop").validate()


def test_cli_train_with_rank1_tangents_saves_the_kind_and_resumes_with_it(tmp_path, capsys):
    from tracegrad.cli import main
    from tracegrad.train import load_checkpoint

    out = str(tmp_path / "run")
    assert main(["train", "--model", "mlp", "--hidden", "16", "--steps", "40", "--tangents", "rank1",
                 "--checkpoint-every", "20", "--out", out, "--quiet"]) == 0
    assert load_checkpoint(latest_checkpoint(out)).config["tangents"] == "rank1"
    assert main(["train", "--resume", "--steps", "60", "--out", out, "--quiet"]) == 0  # the kind comes back
    ck = load_checkpoint(latest_checkpoint(out))
    assert ck.step == 60 and ck.config["tangents"] == "rank1"
    capsys.readouterr()


def test_has_aux_and_a_transposed_weight_under_rank1():
    r = np.random.default_rng(8)
    w, x = r.standard_normal((3, 5)), r.standard_normal((4, 5))

    def f(w, x):
        z = x @ w.T  # the weight enters through a transpose: Ẇᵀ = b aᵀ stays factored
        return np.mean(np.tanh(z)), z

    (value, aux), est = forward_grad(f, has_aux=True, tangents="rank1", seed=3)(w, x, step=0)
    assert isinstance(est, LowRankGrad) and aux.shape == (4, 3)
    d = tg_random.sample("normal", 3, 0, 0, 0, (3 + 5,)).astype(np.float64)
    t = np.outer(d[:3], d[3:])
    _, jv = tg.compile(lambda w, x: np.mean(np.tanh(x @ w.T))).jvp((w, x), (t, None))
    np.testing.assert_allclose(np.asarray(est), jv * t, rtol=1e-12)
    np.testing.assert_allclose(value, np.mean(np.tanh(x @ w.T)), rtol=1e-14)


def test_rank1_on_emulated_cupy_matches_the_host(emulated_cupy):
    r = np.random.default_rng(9)
    params = {"w": r.standard_normal((6, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}
    x = r.standard_normal((10, 6)).astype(np.float32)

    def loss(p, x):
        return np.mean(np.tanh(x @ p["w"] + p["b"]) ** 2)

    for k in (1, 2):
        dev = forward_grad(loss, directions=k, tangents="rank1", distribution="rademacher", seed=5, backend="cupy")
        host = forward_grad(loss, directions=k, tangents="rank1", distribution="rademacher", seed=5)
        (vd, gd), (vh, gh) = dev(params, x, step=3), host(params, x, step=3)
        assert isinstance(gd["w"], LowRankGrad)
        np.testing.assert_allclose(vd, vh, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(gd["w"].dense()), np.asarray(gh["w"]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(gd["b"]), gh["b"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        forward_grad(loss, tangents="rank2", rank=3)


@pytest.mark.parametrize("blas", [True, False])
def test_sgd_and_momentum_apply_the_rank1_estimate_without_a_parameter_sized_temporary(blas, monkeypatch):
    import tracemalloc

    from tracegrad import structured

    if blas:
        pytest.importorskip("scipy")
    else:  # as without SciPy: the row-block fallback
        monkeypatch.setattr(structured, "_blas_update", lambda *a: False)

    r = np.random.default_rng(10)
    p = {"w": r.standard_normal((512, 512)).astype(np.float32)}  # 1 MiB
    g = {"w": LowRankGrad(r.standard_normal((512, 1)).astype(np.float32),
                          r.standard_normal((512, 1)).astype(np.float32), (512, 512))}
    for opt in (sgd(0.1), momentum(0.1)):
        s = opt.init(p)
        p, s = opt.update_inplace(g, s, p)  # warm: workspaces allocated once
        before = p["w"].copy()
        tracemalloc.start()
        p, s = opt.update_inplace(g, s, p)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 64 * 1024, (opt.name, peak)  # far below the 1 MiB a dense estimate needs
        assert not np.array_equal(p["w"], before)
        expected = before - 0.1 * np.asarray(g["w"]) if opt.name == "sgd" else None
        if expected is not None:
            np.testing.assert_allclose(p["w"], expected, rtol=1e-5, atol=1e-6)
