"""Activity-perturbed forward gradients (tracegrad.activity_grad, ad/perturb.py), in float64:
unbiased for the global objective (plain, masked, grouped), exact with G = width on one
layer, and clear errors for losses it cannot handle."""

import numpy as np
import pytest
from estimates import mean_and_se

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.errors import GradientError
from tracegrad.nn import functional as F

B, N_IN, H, C = 6, 4, 5, 3


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w0": rng.standard_normal((N_IN, H)), "b0": rng.standard_normal(H) * 0.5,
            "w1": rng.standard_normal((H, H)) / 2, "b1": rng.standard_normal(H) * 0.5,
            "w2": rng.standard_normal((H, C)), "b2": rng.standard_normal(C) * 0.1}


def _data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, N_IN)), rng.integers(0, C, B)


def per_example(p, x, y):
    h = np.maximum(x @ p["w0"] + p["b0"], 0)
    h = np.maximum(h @ p["w1"] + p["b1"], 0)
    z = h @ p["w2"] + p["b2"]
    m = np.max(z, axis=1, keepdims=True)
    return np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0] - np.take_along_axis(z, y[:, None], 1)[:, 0]


def mean_loss(p, x, y):
    return np.mean(per_example(p, x, y))




@pytest.mark.parametrize("options", [{}, {"mask": True}, {"groups": 5}, {"mask": True, "groups": 5}])
def test_mean_of_estimates_is_the_exact_gradient(options):
    p, (x, y) = _params(), _data()
    exact = tg.grad(mean_loss)(p, x, y)
    g = tg.activity_grad(per_example, directions=40, seed=3, **options)
    value, _ = g(p, x, y)
    assert value == pytest.approx(mean_loss(p, x, y), rel=1e-12)
    scale = max(np.abs(v).max() for v in exact.values())
    for k, (mean, se) in mean_and_se(g, (p, x, y), 32).items():
        err = np.abs(mean - exact[k])
        assert np.all(err <= 5 * se + 1e-12), (k, err.max(), se.max())
        assert se.max() < 0.1 * scale, k  # sharp enough to see a bias of the size of a gradient


def test_mask_and_groups_reduce_the_variance():
    p, (x, y) = _params(), _data()
    var = {}
    for name, opts in {"plain": {}, "mask": {"mask": True}, "mask+groups": {"mask": True, "groups": 5}}.items():
        stats = mean_and_se(tg.activity_grad(per_example, directions=5, seed=4, **opts), (p, x, y), 60)
        var[name] = sum(float(np.sum(se ** 2)) for k, (_, se) in stats.items() if k in ("w0", "w1"))
    assert var["mask"] < var["plain"]
    assert var["mask+groups"] < var["mask"]


def test_per_example_and_mean_losses_agree():
    p, (x, y) = _params(), _data()
    v1, g1 = tg.activity_grad(per_example, seed=7, mask=True, groups=2)(p, x, y, step=5)
    v2, g2 = tg.activity_grad(mean_loss, seed=7, mask=True, groups=2)(p, x, y, step=5)
    assert v1 == pytest.approx(v2, rel=1e-14)
    for k in p:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-12, atol=1e-14)
        assert np.any(g1[k] != 0)


def _two_args(layer):
    """The loss with layer ``layer``'s weight and bias as argument 0, the rest as argument 1."""
    def f(wb, rest, x, y):
        p = dict(rest)
        p[f"w{layer}"], p[f"b{layer}"] = wb
        return per_example(p, x, y)
    return f


@pytest.mark.parametrize("layer,width", [(0, H), (1, H), (2, C)])
@pytest.mark.parametrize("mask", [False, True])
def test_groups_equal_to_the_width_give_the_exact_layer_gradient(layer, width, mask):
    p, (x, y) = _params(), _data()
    wb = (p[f"w{layer}"], p[f"b{layer}"])
    rest = {k: v for k, v in p.items() if not k.endswith(str(layer))}
    f = _two_args(layer)
    exact = tg.grad(lambda wb, rest, x, y: np.mean(f(wb, rest, x, y)))(wb, rest, x, y)
    value, est = tg.activity_grad(f, groups=width, mask=mask, seed=11)(wb, rest, x, y)
    assert value == pytest.approx(mean_loss(p, x, y), rel=1e-12)
    for e, g in zip(est, exact):
        np.testing.assert_allclose(e, g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mask", [False, True])
def test_conv_layer_with_reshaped_bias_is_exact_on_a_basis(mask):
    """With the scaled unit vectors sqrt(n) e_i as the n directions (E[u uᵀ] = I exactly
    over them), the estimate of the one perturbed layer is its exact gradient."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 4, 4))
    w, b = rng.standard_normal((4, 2, 3, 3)) / 3, rng.standard_normal(4)
    head = rng.standard_normal((4 * 16, 3)) / 4
    y = np.array([0, 2, 1])

    def f(w, b, head, x, y):
        h = np.maximum(F.conv2d(x, w, padding=1) + np.reshape(b, (1, -1, 1, 1)), 0)
        return tnp.cross_entropy(F.flatten(h) @ head, y)

    exact = tg.grad(f, argnums=(0, 1))(w, b, head, x, y)
    g = tg.activity_grad(f, argnums=(0, 1), directions=64, mask=mask)
    basis = 8.0 * np.eye(64).reshape(64, 1, 4, 4, 4) * np.ones((1, 3, 1, 1, 1))
    g.sampler.draw_many = lambda specs, xp, step: [basis.copy()]
    value, est = g(w, b, head, x, y)
    assert value == pytest.approx(f(w, b, head, x, y), rel=1e-12)
    for e, want in zip(est, exact):
        np.testing.assert_allclose(e, want, rtol=1e-10, atol=1e-13)


def test_nn_mlp_loss_runs():
    model = tg.nn.mlp([N_IN, H, C])
    p = model.init(0)
    x, y = _data()
    loss = tg.nn.loss_fn(model)
    value, est = tg.activity_grad(loss, mask=True, groups=H, seed=0)(p, x, y)
    assert value == pytest.approx(loss(p, x, y), rel=1e-12)
    assert set(est) == set(p) and all(est[k].shape == p[k].shape for k in p)


def test_a_loss_that_mixes_examples_is_refused():
    p, (x, y) = _params(), _data()

    def batch_norm(p, x, y):
        z = x @ p["w0"] + p["b0"]
        z = (z - np.mean(z, axis=0)) / np.std(z, axis=0)
        q = dict(p, w0=np.eye(N_IN, H), b0=np.zeros(H))
        return per_example({k: q[k] for k in p if k not in ("w0", "b0")} | {"w0": q["w0"], "b0": q["b0"]}, z[:, :N_IN], y)

    with pytest.raises(GradientError, match="separable over examples") as info:
        tg.activity_grad(batch_norm, argnums=0)({k: p[k] for k in p}, x, y)
    assert "test_activity.py" in str(info.value)


def test_a_parameter_outside_a_layer_is_refused():
    p, (x, y) = _params(), _data()

    def weight_decay(p, x, y):
        return mean_loss(p, x, y) + 1e-3 * np.sum(p["w0"] ** 2)

    with pytest.raises(GradientError, match="cannot estimate this use of a parameter") as info:
        tg.activity_grad(weight_decay)(p, x, y)
    assert "weight_decay" in str(info.value)


def test_a_value_that_is_not_a_sum_over_examples_is_refused():
    p, (x, y) = _params(), _data()
    with pytest.raises(GradientError, match="not a sum over examples"):
        tg.activity_grad(lambda p, x, y: np.max(per_example(p, x, y)))(p, x, y)


# ---------------------------------------------------------------- the trainer and the CLI
def test_trainer_activity_estimator_learns():
    from tracegrad.data import load_dataset
    from tracegrad.train import TrainConfig, fit

    digits = load_dataset("digits")
    cfg = {"model": "mlp", "model_kwargs": {"hidden": [32]}, "data": "digits", "steps": 150, "optimizer": "sgd",
           "lr": 0.1, "quiet": True, "plot": False, "eval_every": 150, "out": None,
           "mode": "activity", "groups": 8, "mask": True}
    r = fit(TrainConfig(**cfg), dataset=digits)
    assert r.test_accuracy > 0.85  # chance is 10%; weight perturbation is near chance at 150 steps
    with pytest.raises(ValueError, match="activity perturbation only"):
        TrainConfig(**dict(cfg, mode="forward")).validate()


def test_cli_estimator_option(tmp_path, capsys):
    from tracegrad.cli import main

    code = main(["train", "--model", "mlp", "--hidden", "16", "--estimator", "activity", "--mask",
                 "--groups", "4", "--steps", "20", "--eval-every", "20", "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "activity-perturbed forward gradients" in out and "G=4 group(s), masked" in out
    assert main(["train", "--groups", "4", "--steps", "5", "--out", str(tmp_path / "s")]) == 2
    assert "activity perturbation only" in capsys.readouterr().err
    code = main(["train", "--model", "mlp", "--hidden", "16", "--estimator", "activity", "--mask", "--groups", "4",
                 "--layerwise", "--exact-output", "--steps", "10", "--eval-every", "10", "--out", str(tmp_path / "t")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "G=4 group(s), masked, exact output layer, layerwise" in out
    for bad in (["--layerwise"], ["--estimator", "backprop", "--exact-output"]):
        assert main(["train", *bad, "--steps", "5", "--out", str(tmp_path / "u"), "--overwrite"]) == 2
        assert "activity" in capsys.readouterr().err


def _reference_estimate(p, x, y, us, mask, average, layerwise=False):
    """Activity perturbation of the 2-hidden-layer ReLU MLP ``per_example`` in plain NumPy:
    ``us[l]`` dense ``(N, B, w_l)``; returns the estimates and ``d`` ``(N, B)``. ``layerwise``:
    each layer's directions are its own (``d`` is ``(3N, B)``, layer l's at rows ``l*N`` on)."""
    if layerwise:
        n = us[0].shape[0]
        wide = []
        for i, u in enumerate(us):
            w = np.zeros((3 * n,) + u.shape[1:])
            w[i * n:(i + 1) * n] = u
            wide.append(w)
        return _reference_estimate(p, x, y, wide, mask, average)  # zero outside its rows: its own only
    zs, hs = [], [x]
    for i in range(3):
        zs.append(hs[-1] @ p[f"w{i}"] + p[f"b{i}"])
        if i < 2:
            hs.append(np.maximum(zs[-1], 0))
    e = np.exp(zs[2] - zs[2].max(axis=1, keepdims=True))
    delta = e / e.sum(axis=1, keepdims=True) - np.eye(zs[2].shape[1])[y]  # d loss_b / d z2_b
    used = [u * (zs[i] > 0) if mask and i < 2 else u for i, u in enumerate(us)]
    t = us[0] * (zs[0] > 0)  # the injection at the ReLU: f'(z) u
    t = (t @ p["w1"] + 0) * (zs[1] > 0) + us[1] * (zs[1] > 0)
    t = t @ p["w2"] + us[2]
    d = np.einsum("nbc,bc->nb", t, delta)
    out = {}
    for i in range(3):
        ct = np.einsum("nb,nbw->bw", d, used[i]) / (x.shape[0] * average)
        out[f"w{i}"], out[f"b{i}"] = hs[i].T @ ct, ct.sum(axis=0)
    return out, d


@pytest.mark.parametrize("layerwise", [False, True])
@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("chunk", [1, 1 << 30])
def test_grouped_directions_through_two_layers_match_a_numpy_reference(monkeypatch, mask, chunk, layerwise):
    """Block-sparse tangents pushed through the next matmul (``GroupedImage``: the product,
    the ReLU mask and the next product run chunk by chunk of groups) give the estimator's
    exact numbers, one group per chunk or all at once, K = 2 directions of G = 3 groups;
    ``layerwise``: every layer on its own directions (``Stacked``)."""
    from tracegrad.ad import perturb
    from tracegrad.modes import ActivityMode

    monkeypatch.setattr(perturb, "CHUNK_BYTES", chunk)
    rng = np.random.default_rng(4)
    width, k, g = 6, 2, 3
    p = {"w0": rng.standard_normal((N_IN, width)), "b0": rng.standard_normal(width) * 0.5,
         "w1": rng.standard_normal((width, width)) / 2, "b1": rng.standard_normal(width) * 0.5,
         "w2": rng.standard_normal((width, C)), "b2": rng.standard_normal(C) * 0.1}
    x, y = _data()
    compiled = tg.compile(per_example)
    wrt = (True,) * 6 + (False, False)
    entry, leaves = compiled._entry((p, x, y), ActivityMode(wrt, k * g, mask, k, g, layerwise=layerwise))
    assert "GroupedImage" not in entry.executable.source  # (a tangent kind, never a name in the code)
    blocks = [rng.standard_normal((k, g, B, width // g)), rng.standard_normal((k, g, B, width // g)),
              rng.standard_normal((k, g, B, C // g))]
    dense = []
    for bl in blocks:  # direction k*G + g: block g of the units, zero elsewhere
        j = bl.shape[-1]
        u = np.zeros((k * g, B, g * j))
        for kk in range(k):
            for gg in range(g):
                u[kk * g + gg, :, gg * j:(gg + 1) * j] = bl[kk, gg]
        dense.append(u)
    outs = entry.executable(*leaves, *blocks)
    want, d = _reference_estimate(p, x, y, dense, mask, k, layerwise)
    np.testing.assert_allclose(outs[-1], d, rtol=1e-12, atol=1e-12)
    for name, got in zip(sorted(p), outs[1:-1]):
        np.testing.assert_allclose(got, want[name], rtol=1e-11, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("mask", [False, True])
def test_layerwise_with_groups_equal_to_the_width_is_exact_for_every_layer_at_once(mask):
    """Each layer on its own directions, one unit per direction (G = width, Rademacher):
    d_n u_n = ∂ℓ/∂z_j u_j² — every layer's estimate is its exact gradient in one execution.
    Shared directions (not layerwise) mix the layers' units into each d_n and are not."""
    p, (x, y) = _params(), _data()
    exact = tg.grad(mean_loss)(p, x, y)
    value, est = tg.activity_grad(per_example, groups=H, mask=mask, layerwise=True, seed=4)(p, x, y)
    assert value == pytest.approx(mean_loss(p, x, y), rel=1e-12)
    for k in p:
        np.testing.assert_allclose(est[k], exact[k], rtol=1e-10, atol=1e-12, err_msg=k)
    _, shared = tg.activity_grad(per_example, groups=H, mask=mask, seed=4)(p, x, y)
    assert max(np.abs(shared[k] - exact[k]).max() for k in p) > 1e-3


@pytest.mark.parametrize("options", [{"groups": 1}, {"groups": 5, "mask": True}])
def test_layerwise_estimates_are_unbiased(options):
    p, (x, y) = _params(), _data()
    exact = tg.grad(mean_loss)(p, x, y)
    g = tg.activity_grad(per_example, directions=8, seed=9, layerwise=True, **options)
    for k, (mean, se) in mean_and_se(g, (p, x, y), 32).items():
        assert np.all(np.abs(mean - exact[k]) <= 5 * se + 1e-12), k


def test_structured_tangents_equal_the_dense_path_on_smooth_activations(monkeypatch):
    """Differential check of the tangent kinds (``Blocks``, ``GroupedImage`` with recorded
    scales and negations, ``Stacked``): the same graph with every block-sparse tangent
    densified at once gives the same numbers, for tanh and a negated, scaled activation."""
    from tracegrad.ad import perturb
    from tracegrad.ad import tangents as T
    from tracegrad.modes import ActivityMode

    def f(p, x, y):
        h = np.tanh(x @ p["w0"] + p["b0"])
        h = -0.5 * np.tanh(h @ p["w1"] + p["b1"])
        z = h @ p["w2"] + p["b2"]
        m = np.max(z, axis=1, keepdims=True)
        return np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0] - np.take_along_axis(z, y[:, None], 1)[:, 0]

    rng = np.random.default_rng(8)
    width, k, g = 6, 2, 3
    p = {"w0": rng.standard_normal((N_IN, width)), "b0": rng.standard_normal(width),
         "w1": rng.standard_normal((width, width)), "b1": rng.standard_normal(width),
         "w2": rng.standard_normal((width, C)), "b2": rng.standard_normal(C)}
    x, y = _data()
    wrt = (True,) * 6 + (False, False)
    blocks = [rng.standard_normal((k, g, B, width // g)), rng.standard_normal((k, g, B, width // g)),
              rng.standard_normal((k, g, B, C // g))]
    for layerwise in (False, True):
        mode = ActivityMode(wrt, k * g, True, k, g, layerwise=layerwise)
        entry, leaves = tg.compile(f)._entry((p, x, y), mode)
        got, source = entry.executable(*leaves, *blocks), entry.executable.source
        with monkeypatch.context() as m:
            m.setattr(perturb.Blocks, "map", lambda self, lm, out: T.Tangent.map(self, lm, out))
            m.setattr(perturb.Blocks, "scale", lambda self, factor, out: T.Tangent.scale(self, factor, out))
            entry, leaves = tg.compile(f)._entry((p, x, y), mode)
            assert entry.executable.source != source  # the dense path
            want = entry.executable(*leaves, *blocks)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_a_loss_tail_that_mixes_examples_is_refused():
    """Mixing after the last layer (in the tail that the estimate contracts with its exact
    per-example gradient) is caught too: the separability check pushes the tangents through
    the tail instead of contracting it."""
    p, (x, y) = _params(), _data()

    def centred(p, x, y):
        h = np.maximum(x @ p["w0"] + p["b0"], 0)
        h = np.maximum(h @ p["w1"] + p["b1"], 0)
        z = h @ p["w2"] + p["b2"]
        z = z - np.mean(z, axis=0)  # couples every example's logits
        m = np.max(z, axis=1, keepdims=True)
        return np.log(np.sum(np.exp(z - m), axis=1)) + m[:, 0] - np.take_along_axis(z, y[:, None], 1)[:, 0]

    with pytest.raises(GradientError, match="separable over examples"):
        tg.activity_grad(centred, groups=5, mask=True)(p, x, y)


def test_contracted_tails_give_the_propagated_derivatives():
    """The loss tail contracted with its exact per-example gradient equals pushing every
    tangent through it (the separability check's path), for the global and the local loss."""
    from tracegrad.modes import ActivityMode

    model = tg.nn.mlp([N_IN, H, H, C], local_heads=True)
    pl = model.init(1)
    x, y = _data()
    for fn, params, last in ((per_example, _params(), False), (model.local_loss, pl, True)):
        compiled = tg.compile(fn)
        leaves = compiled._signature((params, x, y))[0]
        wrt = tuple(isinstance(v, np.ndarray) and v.dtype.kind == "f" for v in leaves[:-2]) + (False, False)
        outs = []
        for contract in (True, False):
            entry, lv = compiled._entry((params, x, y), ActivityMode(wrt, 4, True, 4, exact_last=last,
                                                                      contract_tails=contract))
            if contract:
                assert "einsum('nbr,br->nb'" in entry.executable.source
            rng = np.random.default_rng(3)
            us = [rng.standard_normal(v.aval.shape) for v in entry.graph.inputs if v.hint.startswith("activity_u")]
            outs.append(entry.executable(*lv, *us))
        for a, b in zip(*outs):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
