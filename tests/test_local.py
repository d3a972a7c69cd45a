"""Local losses (tracegrad.nn mlp/cnn with local_heads, activity_grad(exact_last=True)) and the
gradient-estimator protocol (tracegrad/train/estimators.py), in float64 on small networks:
the mean of many estimates is the exact gradient of the *local* objective (tg.grad through the
stop-gradients), G = width makes it exact, heads and output layer are always exact."""

import dataclasses

import numpy as np
import pytest
from estimates import mean_and_se

import tracegrad as tg
from tracegrad.nn.models import cnn, mlp
from tracegrad.train.estimators import ESTIMATORS, GradientEstimator, make_estimator
from tracegrad.train.trainer import TrainConfig

B = 6


def _mlp(width=6):
    m = mlp([5, width, width, 3], local_heads=True)
    p = {k: v.astype(np.float64) for k, v in m.init(0).items()}
    rng = np.random.default_rng(1)
    for k, v in p.items():  # biases away from zero: not every ReLU mask is the same
        if k.startswith("b"):
            p[k] = rng.standard_normal(v.shape) * 0.3
    return m, p, rng.standard_normal((B, 5)), rng.integers(0, 3, B)




HIDDEN = ("w0", "b0", "w1", "b1")


@pytest.mark.parametrize("options", [{}, {"mask": True}, {"groups": 3}, {"mask": True, "groups": 2}])
def test_local_estimates_average_to_the_local_gradient(options):
    m, p, x, y = _mlp()
    value, exact = tg.value_and_grad(m.local_loss)(p, x, y)
    g = tg.activity_grad(m.local_loss, directions=30, seed=3, exact_last=True, **options)
    v, _ = g(p, x, y)
    assert v == pytest.approx(value, rel=1e-12)
    scale = max(np.abs(exact[k]).max() for k in HIDDEN)
    for k, (mean, se) in mean_and_se(g, (p, x, y), 30).items():
        if k in HIDDEN:
            assert np.all(np.abs(mean - exact[k]) <= 5 * se + 1e-12), k
            assert se.max() < 0.1 * scale, k  # sharp enough to see a bias the size of a gradient
        else:  # heads and output layer: their exact gradient, every draw
            np.testing.assert_allclose(mean, exact[k], rtol=1e-10, atol=1e-13)
            assert se.max() < 1e-12


def test_local_objective_differs_from_the_global_one():
    m, p, x, y = _mlp()
    local = tg.grad(m.local_loss)(p, x, y)
    glob = tg.grad(lambda p, x, y: tg.numpy.cross_entropy(m.apply(p, x), y))(p, x, y)
    assert not np.allclose(local["w0"], glob["w0"])  # block 0 learns from head 0, not the output
    np.testing.assert_allclose(local["w2"], glob["w2"], rtol=1e-12)  # the output layer: the same loss term


@pytest.mark.parametrize("mask", [False, True])
def test_groups_equal_to_the_width_give_the_exact_local_gradient(mask):
    m, p, x, y = _mlp(width=6)
    exact = tg.grad(m.local_loss)(p, x, y)
    g = tg.activity_grad(m.local_loss, groups=6, mask=mask, seed=0, exact_last=True)
    for step in (0, 1):
        _, est = g(p, x, y, step=step)
        for k in p:
            np.testing.assert_allclose(est[k], exact[k], rtol=1e-10, atol=1e-14, err_msg=k)


def test_hidden_blocks_do_not_add_noise_to_each_other():
    """Each block's estimate uses only its own head's directional derivatives: with block 1
    exact (G = its width), block 0's estimate is the same as when block 0 alone is noisy."""
    m, p, x, y = _mlp(width=6)
    _, est = tg.activity_grad(m.local_loss, groups=6, seed=0, exact_last=True)(p, x, y, step=0)
    _, est1 = tg.activity_grad(m.local_loss, groups=1, seed=0, exact_last=True)(p, x, y, step=0)
    exact = tg.grad(m.local_loss)(p, x, y)
    np.testing.assert_allclose(est["w1"], exact["w1"], rtol=1e-10)
    assert not np.allclose(est1["w1"], exact["w1"])  # G = 1 is noisy ...
    assert np.isfinite(est1["w0"]).all()


def test_masking_and_grouping_reduce_the_local_variance():
    m, p, x, y = _mlp()
    var = {}
    for name, opts in {"plain": {}, "mask": {"mask": True}, "mask+groups": {"mask": True, "groups": 3}}.items():
        stats = mean_and_se(tg.activity_grad(m.local_loss, directions=4, seed=4, exact_last=True, **opts),
                             (p, x, y), 40)
        var[name] = sum(float(np.sum(se ** 2)) for k, (_, se) in stats.items() if k in HIDDEN)
    assert var["mask"] < var["plain"] and var["mask+groups"] < var["mask"]


def test_cnn_local_heads_unbiased_and_exact_at_the_heads():
    model = cnn(1, 8, channels=(2, 2, 3, 3), hidden=6, num_classes=3, local_heads=True)
    p = {k: v.astype(np.float64) for k, v in model.init(0).items()}
    assert {"head0_w", "head3_w", "head4_w"} <= set(p) and p["head0_w"].shape == (2 * 2 * 2, 3)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 1, 8, 8)), rng.integers(0, 3, 3)
    exact = tg.grad(model.local_loss)(p, x, y)
    g = tg.activity_grad(model.local_loss, directions=12, mask=True, seed=5, exact_last=True)
    stats = mean_and_se(g, (p, x, y), 25)
    for k, (mean, se) in stats.items():
        if k.startswith(("head", "fc1")):
            np.testing.assert_allclose(mean, exact[k], rtol=1e-9, atol=1e-12, err_msg=k)
        else:
            assert np.all(np.abs(mean - exact[k]) <= 5 * se + 1e-12), k
    plain = cnn(1, 8, channels=(2, 2, 3, 3), hidden=6, num_classes=3)
    shared = plain.init(0)
    for k in shared:  # the heads are drawn last: the shared parameters are the plain model's
        np.testing.assert_array_equal(shared[k], model.init(0)[k])
    np.testing.assert_allclose(model.apply(p, x), plain.apply({k: p[k] for k in shared}, x), rtol=1e-12)


# ---------------------------------------------------------------- the estimator protocol
def test_every_estimator_behind_one_interface():
    m, p, x, y = _mlp()
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    for name in ESTIMATORS:
        kw = {"groups": 2, "mask": True} if name in ("activity", "local") else {}
        cfg = TrainConfig(model="mlp", estimator=name, seed=3, **kw).validate()
        est = make_estimator(cfg, m)
        assert isinstance(est, GradientEstimator) and est.name == name
        loss, grads = est(p32, x.astype(np.float32), y, 0)
        assert set(grads) == set(p) and np.isfinite(float(loss))
        state = est.state()
        assert state["estimator"] == name and (state["sampler"] is None) == (name == "backprop")
        make_estimator(cfg, m).set_state(state)
        if name != "backprop":
            make_estimator(cfg, m).set_state(state["sampler"])  # an older checkpoint's sampler state
            with pytest.raises(ValueError, match="seed"):
                make_estimator(dataclasses.replace(cfg, seed=4), m).set_state(state)
    with pytest.raises(ValueError, match="'forward' estimator's"):
        make_estimator(TrainConfig(estimator="backprop"), m).set_state(
            make_estimator(TrainConfig(estimator="forward"), m).state())
    with pytest.raises(ValueError, match="local heads"):
        make_estimator(TrainConfig(model="mlp", estimator="local"), mlp([5, 4, 3]))


def test_mode_is_an_alias_of_estimator():
    assert TrainConfig(mode="activity").estimator == "activity"
    cfg = TrainConfig(estimator="local", model="mlp")
    assert cfg.mode == "local" and cfg.to_dict()["mode"] == "local" and cfg.to_dict()["estimator"] == "local"
    assert dataclasses.replace(cfg, mode="backprop").estimator == "backprop"
    assert dataclasses.replace(cfg, estimator="forward").mode == "forward"
    assert TrainConfig.from_dict({"mode": "backprop"}).estimator == "backprop"  # an old config
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown estimator"):
        TrainConfig(estimator="sideways").validate()
    with pytest.raises(ValueError, match="logreg has none"):
        TrainConfig(estimator="local", model="logreg").validate()


def test_trainer_local_estimator_learns_and_resumes_bit_exactly(tmp_path):
    from tracegrad.data import load_dataset
    from tracegrad.train import Trainer, fit

    digits = load_dataset("digits")
    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": [32, 32]}, data="digits", steps=160, optimizer="sgd",
                      lr=0.1, quiet=True, plot=False, eval_every=80, checkpoint_every=80, estimator="local",
                      groups=8, mask=True, out=str(tmp_path / "a"))
    straight = fit(cfg, dataset=digits)
    assert straight.test_accuracy > 0.85  # chance is 10%
    t = Trainer(dataclasses.replace(cfg, out=str(tmp_path / "b")), dataset=digits)
    assert "head1_w" in t.params and t.estimator.name == "local"
    t.run(stop_after=80)
    resumed = Trainer(dataclasses.replace(cfg, out=str(tmp_path / "b"), resume=True), dataset=digits).run()
    for k in straight.params:
        np.testing.assert_array_equal(straight.params[k], resumed.params[k])
    from tracegrad.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="made with estimator='local' but this run has estimator='activity'"):
        Trainer(dataclasses.replace(cfg, out=str(tmp_path / "b"), resume=True, estimator="activity",
                                    steps=200), dataset=digits)
