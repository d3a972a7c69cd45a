"""Counter-based tangents (tracegrad/random.py): each direction is a pure function of
(seed, step, param, direction), equal to the device sampler's reference, with the moments a
forward gradient needs (mean 0, E[v vᵀ] = I) and no correlation between coordinates."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import random as tgr
from tracegrad.backends.cuda_random import reference
from tracegrad.forward_grad import DirectionSampler


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
@pytest.mark.parametrize("n", [1, 63, 64, 65, 1001, 70_000])
def test_host_fast_path_equals_the_plain_reference(distribution, n):
    key = tgr.direction_key(7, 3, 1, 0)
    got = tgr.fill(distribution, key, np.empty(n, np.float32))
    want = reference(distribution, key, n)
    np.testing.assert_array_equal(got, want)  # normal too: same ufuncs in the same order on the host


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_batch_draws_every_segment_as_its_own_fill(distribution):
    """random.Batch (the steady-state draw of many small leaves in one pass) gives each
    segment the numbers of fill at its key, bit for bit, whatever the segments' sizes
    (padding to whole blocks / pairs included) and whatever the buffer held before."""
    sizes = [10, 7840, 1, 63, 64, 65, 0, 3, 129]
    batch = tgr.Batch(distribution, sizes)
    keys = [tgr.direction_key(11, 5, p, 0) for p in range(len(sizes))]
    buf = batch.buffer()
    buf[...] = np.nan
    batch.fill_keys(keys, buf)
    views = batch.views(buf)
    for key, n, view in zip(keys, sizes, views):
        assert view.shape == (n,) and (n == 0 or np.shares_memory(view, buf))
        np.testing.assert_array_equal(view, reference(distribution, key, n))
    other = [tgr.direction_key(11, 6, p, 0) for p in range(len(sizes))]  # the next step: new numbers
    batch.fill_keys(other, buf)
    assert not np.array_equal(views[1], reference(distribution, keys[1], 7840))
    np.testing.assert_array_equal(views[1], tgr.fill(distribution, other[1], np.empty(7840, np.float32)))
    with pytest.raises(ValueError, match="distribution"):
        tgr.Batch("uniform", [3])


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_threaded_and_chunked_fills_give_the_same_numbers(distribution, monkeypatch):
    key = tgr.direction_key(1, 2, 3, 4)
    n = 300_001  # above the thread threshold, several chunks, odd
    split = tgr.fill(distribution, key, np.empty(n, np.float32))
    one = tgr.fill(distribution, key, np.empty(n, np.float32), threads=False)
    monkeypatch.setattr(tgr, "_CHUNK", 1000)
    small_chunks = tgr.fill(distribution, key, np.empty(n, np.float32), threads=False)
    np.testing.assert_array_equal(split, one)
    np.testing.assert_array_equal(small_chunks, one)
    as64 = tgr.fill(distribution, key, np.empty(n, np.float64))
    np.testing.assert_array_equal(as64, one.astype(np.float64))  # float32 numbers, widened


def test_directions_regenerate_from_their_coordinates():
    a = tgr.sample("normal", 5, 10, 2, 1, (3, 4))
    b = tgr.sample("normal", 5, 10, 2, 1, (3, 4))
    np.testing.assert_array_equal(a, b)
    # the sampler's step-t tangents of leaf p, row k are exactly those
    s = DirectionSampler("normal", seed=5)
    v0, v1, v2 = s.draw_many([((2, 7), np.float32), ((1, 5), np.float64), ((2, 3, 4), np.float32)], step=10)
    np.testing.assert_array_equal(v2[1], a)
    np.testing.assert_array_equal(v0[0], tgr.sample("normal", 5, 10, 0, 0, (7,)))
    assert v1.dtype == np.float64
    np.testing.assert_array_equal(v1[0], tgr.sample("normal", 5, 10, 1, 0, (5,), np.float64))
    # a draw does not depend on what was drawn before or on how many directions there are
    (alone,) = s.draw_many([((3, 3, 4), np.float32)], step=10, first_param=2)
    np.testing.assert_array_equal(alone[1], a)


def test_different_coordinates_give_unrelated_directions():
    n = 4096
    base = (3, 4, 5, 6)
    variants = [base] + [tuple(c + (1 if i == j else 0) for i, c in enumerate(base)) for j in range(4)]
    draws = np.stack([tgr.sample("rademacher", *c, (n,)) for c in variants])
    assert len({tgr.direction_key(*c) for c in variants}) == len(variants)
    corr = draws @ draws.T / n
    off = corr[~np.eye(len(variants), dtype=bool)]
    assert np.abs(off).max() < 5 / np.sqrt(n)  # 5 sigma for independent ±1 vectors
    # many keys: no exact repeats among their first blocks (overlapping streams would show)
    keys = [tgr.direction_key(0, t, p, k) for t in range(20) for p in range(5) for k in range(4)]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_moments_mean_zero_identity_covariance(distribution):
    d, m = 8, 6000
    v = np.stack([tgr.sample(distribution, 11, t, 0, 0, (d,)) for t in range(m)]).astype(np.float64)
    assert np.abs(v.mean(0)).max() < 5 / np.sqrt(m)
    cov = v.T @ v / m
    np.testing.assert_allclose(cov, np.eye(d), atol=6 * np.sqrt(2 / m) + 1e-3)
    if distribution == "normal":
        kurt = np.mean(v ** 4, axis=0)
        assert np.all(np.abs(kurt - 3) < 0.3)  # Gaussian, not a sign or a uniform


def test_forward_grad_step_argument_makes_calls_reproducible():
    def f(p):
        return np.sum(np.sin(p["w"]) * p["b"])

    p = {"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "b": np.ones(4, np.float32)}
    est = tg.forward_grad(f, seed=3, distribution="rademacher")
    g0 = est(p)[1]
    g1 = est(p)[1]  # call 1 is step 1: a new direction
    assert not np.array_equal(g0["w"], g1["w"])
    again = tg.forward_grad(f, seed=3, distribution="rademacher")
    np.testing.assert_array_equal(again(p, step=1)[1]["w"], g1["w"])
    np.testing.assert_array_equal(again(p, step=0)[1]["w"], g0["w"])
    with pytest.raises(ValueError, match="step must be >= 0"):
        est(p, step=-1)


def test_sampler_state_is_the_seed_only_and_old_states_load():
    s = DirectionSampler("normal", seed=9)
    state = s.state()
    assert json.loads(json.dumps(state)) == {"version": 2, "seed": 9, "distribution": "normal"}
    DirectionSampler("normal", seed=9).set_state(state)
    with pytest.raises(ValueError, match="seed 9"):
        DirectionSampler("normal", seed=10).set_state(state)
    # checkpoints from the stream-based sampler (a list of bit-generator states) still load
    DirectionSampler("normal", seed=9).set_state([{"bit_generator": "PCG64"}, {}, {"device_counter": 3}])
    with pytest.raises(ValueError, match="unknown sampler state"):
        s.set_state({"version": 99})


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="distribution"):
        tgr.fill("uniform", 1, np.empty(3, np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        tgr.direction_key(0, -1, 0, 0)
    with pytest.raises(ValueError, match="contiguous"):
        tgr.fill("normal", 1, np.empty((4, 4), np.float32)[:, 1])


def test_trainer_checkpoints_hold_no_sampler_stream_and_old_ones_resume(tmp_path):
    from tracegrad.train import TrainConfig, Trainer
    from tracegrad.train.checkpoint import load_checkpoint

    cfg = {"model": "mlp", "data": "digits", "steps": 4, "batch_size": 16, "lr": 0.05, "quiet": True,
           "plot": False, "eval_every": 2, "checkpoint_every": 2, "model_kwargs": {"hidden": [8]}, "seed": 4}
    straight = Trainer(TrainConfig(**cfg, out=str(tmp_path / "a"))).run()
    first = Trainer(TrainConfig(**cfg, out=str(tmp_path / "b")))
    first.run(stop_after=2)
    ck = load_checkpoint(first.last_checkpoint)
    assert ck.estimator_state == {"version": 1, "estimator": "forward",
                                  "sampler": {"version": 2, "seed": 4, "distribution": first.config.distribution}}
    # rewrite it as a checkpoint of the stream-based sampler (format 1 sampler state, no estimator state)
    with np.load(first.last_checkpoint) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["estimator_state"]
    meta["sampler_state"] = [{"state": {}}, {"state": {}}, {"device_counter": 0}]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(first.last_checkpoint, **arrays)
    lines: list[str] = []
    resumed = Trainer(TrainConfig(**{**cfg, "quiet": False}, out=str(tmp_path / "b"), resume=True), log=lines.append)
    assert any("before counter-based tangents" in line for line in lines)
    result = resumed.run()
    for k in straight.params:  # the steps after the resume draw (seed, step, ...) as the straight run did
        np.testing.assert_array_equal(straight.params[k], result.params[k])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not installed here")
def test_device_sampler_source_compiles_with_nvcc(tmp_path):
    from tracegrad.backends.cuda_random import KERNEL_NAMES, SOURCE

    src = tmp_path / "sampler.cu"
    src.write_text(SOURCE)
    out = tmp_path / "sampler.ptx"
    proc = subprocess.run([shutil.which("nvcc"), "--ptx", "-o", str(out), str(src)], check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ptx = out.read_text()
    assert all(f".entry {name}(" in ptx for name in KERNEL_NAMES.values())
