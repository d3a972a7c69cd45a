"""The CuPy runtime pieces on the CPU stand-in: GPU tangent sampling (counter-based,
regenerable, checked against its NumPy reference), forward gradients that stay on the
device, optimizers fed device gradients, and the trainer with ``backend="cupy"``."""

from __future__ import annotations

import numpy as np
from cupy_helpers import needs_gxx

import tracegrad as tg
from tracegrad.backends.cuda_random import DeviceSampler, reference
from tracegrad.forward_grad import DirectionSampler
from tracegrad.optim import adam, momentum, sgd
from tracegrad.train import TrainConfig, Trainer

pytestmark = needs_gxx


def test_reference_generator_has_the_right_moments():
    r = reference("rademacher", 12345, 200_001)
    assert set(np.unique(r)) == {-1.0, 1.0} and abs(r.mean()) < 0.01
    z = reference("normal", 12345, 200_001)
    assert z.dtype == np.float32 and abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01
    assert abs(np.mean(z ** 4) - 3) < 0.1  # Gaussian kurtosis, not a uniform or a sign
    assert np.corrcoef(z[:-1], z[1:])[0, 1] < 0.01
    # a draw depends on its key only; different keys give fresh numbers
    assert np.array_equal(reference("normal", 7, 50), reference("normal", 7, 50))
    assert not np.allclose(reference("normal", 7, 50), reference("normal", 8, 50))


def test_device_sampler_kernel_matches_reference(emulated_cupy):
    s = DeviceSampler(emulated_cupy)
    # three rows of 5 (one key each) and one vector of 7 (one key), in one launch
    a, b = s.draw("rademacher", [[1, 2, 3], [99]], [(3, 5), (7,)], [np.float32, np.float64])
    assert b.dtype == np.float64 and a.shape == (3, 5)
    for row, key in zip(a, (1, 2, 3)):
        np.testing.assert_array_equal(row, reference("rademacher", key, 5))
    np.testing.assert_array_equal(b, reference("rademacher", 99, 7))
    (c,) = s.draw("normal", [[11, 12]], [(2, 133)], [np.float32])  # odd rows: a pair is half used
    np.testing.assert_allclose(c[0], reference("normal", 11, 133), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(c[1], reference("normal", 12, 133), rtol=2e-6, atol=2e-6)


def _loss(params, x, y):
    h = np.tanh(x @ params["w"] + params["b"])
    return tg.numpy.cross_entropy(h, y)


def _problem():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((6, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}
    return params, rng.standard_normal((10, 6)).astype(np.float32), rng.integers(0, 4, 10)


def test_forward_grad_on_cupy_samples_on_the_device(emulated_cupy):
    params, x, y = _problem()
    for k in (1, 3):
        est = tg.forward_grad(_loss, directions=k, distribution="rademacher", seed=5, backend="cupy")
        value, grads = est(params, x, y, step=7)
        # the same tangents, regenerated on the host from (seed, step, leaf, direction)
        host = DirectionSampler("rademacher", seed=5).draw_many([((k, 4), np.float32), ((k, 6, 4), np.float32)],
                                                                 step=7)
        vb, vw = host  # leaves in sorted order: b, w
        np.testing.assert_array_equal(vw[k - 1].ravel(), reference("rademacher", est.sampler.key(7, 1, k - 1), 24))
        v_np, jv = tg.compile(_loss).jvp((params, x, y), ({"b": vb, "w": vw}, None, None), batched=True)
        np.testing.assert_allclose(value, v_np, rtol=1e-6)
        np.testing.assert_allclose(grads["w"], np.tensordot(jv, vw, axes=1) / k, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grads["b"], np.tensordot(jv, vb, axes=1) / k, rtol=1e-5, atol=1e-6)


def test_optimizers_accept_gradients_from_another_namespace():
    """A host parameter meeting a device gradient moves to the device (here: both NumPy, the
    check is that the mixed path keeps dtypes and values)."""
    p = {"w": np.ones(3, np.float32)}
    g = {"w": np.full(3, 2.0, np.float64)}
    for opt in (sgd(0.1), momentum(0.1), adam(0.1)):
        new, _ = opt.update(g, opt.init(p), p)
        assert new["w"].dtype == np.float32 and np.all(new["w"] < 1)


def _config(tmp_path, **kw):
    base = {"model": "mlp", "data": "digits", "steps": 6, "batch_size": 32, "lr": 0.05, "backend": "cupy", "quiet": True,
                "plot": False, "eval_every": 3, "checkpoint_every": 3, "model_kwargs": {"hidden": [16]},
                "out": str(tmp_path / "run")}
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_on_cupy_trains_and_resumes_exactly(emulated_cupy, tmp_path):
    straight = Trainer(_config(tmp_path / "a")).run()
    assert straight.step == 6 and np.isfinite(straight.test_loss) and 0 <= straight.test_accuracy <= 1
    first = Trainer(_config(tmp_path / "b"))
    first.run(stop_after=3)
    resumed = Trainer(_config(tmp_path / "b", resume=True)).run()
    for k in straight.params:
        np.testing.assert_array_equal(straight.params[k], resumed.params[k])


def test_device_and_host_draw_the_same_directions(emulated_cupy):
    s = DirectionSampler("normal", seed=3)
    specs = [((2, 3, 5), np.float32), ((2, 7), np.float64)]
    dev = s.draw_many(specs, emulated_cupy, step=4)
    host = s.draw_many(specs, step=4)
    for d, h in zip(dev, host):
        assert d.dtype == h.dtype and d.shape == h.shape
        np.testing.assert_allclose(d, h, rtol=2e-6, atol=2e-6)


def test_check_backends_passes_and_catches_a_wrong_template(emulated_cupy, monkeypatch):
    import pytest

    from tracegrad.ir import PRIMITIVES
    from tracegrad.testing import check_backends

    params, x, y = _problem()
    check_backends(_loss, (params, x, y), argnums=(0,), directions=3)
    check_backends(lambda a: np.sin(a) * 2.0, (np.linspace(0, 1, 5),))
    monkeypatch.setitem(PRIMITIVES["sin"].lowerings, "cuda", lambda x: f"tg_cos({x})")
    with pytest.raises(AssertionError, match="cupy and numpy disagree"):
        check_backends(lambda a: np.sin(a) * 3.0, (np.linspace(0, 1, 5),))
