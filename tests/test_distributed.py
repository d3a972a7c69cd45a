"""Data-parallel forward gradients (train/distributed.py): the local engine equals a
hand-written reference applying the same directions, every worker's view of the update is
bit-identical, resume is bit-exact, and — with mpi4py — an `mpiexec -n 2` run ends with the
local engine's parameter hash and a killed worker ends the job quickly with a clear error."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import random as tg_random
from tracegrad.data import load_dataset
from tracegrad.errors import CheckpointError
from tracegrad.forward_grad import forward_grad
from tracegrad.optim import adam, sgd
from tracegrad.structured import LowRankGrad
from tracegrad.train import TrainConfig, Trainer, cross_entropy_loss
from tracegrad.train.distributed import DataParallel, find_mpiexec, param_hash
from tracegrad.tree import tree_flatten, tree_unflatten

ROOT = Path(__file__).resolve().parents[1]


def _model():
    ds = load_dataset("digits")
    r = np.random.default_rng(0)
    params = {"w": (0.1 * r.standard_normal((64, 10))).astype(np.float32), "b": np.zeros(10, np.float32)}

    def apply(p, x):
        return x @ p["w"] + p["b"]

    loss = tg.compile(cross_entropy_loss(apply))
    return params, loss, ds.x_train[:64].astype(np.float32), ds.y_train[:64]


def _reference_estimate(loss, params, x, y, step, workers, k, tangents, seed=0):
    """Σ_r Σ_k d_rk v_rk / (N K) in float64, from `random.sample` and one JVP per direction."""
    leaves, treedef = tree_flatten(params)
    b = len(x) // workers
    total = [np.zeros(leaf.shape) for leaf in leaves]
    for w in range(workers):
        xs, ys = x[w * b:(w + 1) * b], y[w * b:(w + 1) * b]
        for kk in range(k):
            vs = []
            for p, leaf in enumerate(leaves):
                if tangents == "rank1" and leaf.ndim >= 2:
                    m, n = leaf.shape[0], math.prod(leaf.shape[1:])
                    z = tg_random.sample("rademacher", seed, step, p, kk, (m + n,), worker=w)
                    vs.append(np.outer(z[:m], z[m:]).reshape(leaf.shape).astype(np.float32))
                else:
                    vs.append(tg_random.sample("rademacher", seed, step, p, kk, leaf.shape, worker=w))
            _, jv = loss.jvp((params, xs, ys), (tree_unflatten(treedef, vs), None, None))
            for t, v in zip(total, vs):
                t += float(jv) * v.astype(np.float64) / (workers * k)
    return total


def _dense(grads):
    return [np.asarray(g, np.float64) for g in tree_flatten(grads)[0]]


def test_worker_zero_keeps_single_process_keys_and_workers_differ():
    assert tg_random.direction_key(7, 3, 1, 2) == tg_random.direction_key(7, 3, 1, 2, 0)
    keys = {tg_random.direction_key(7, 3, 1, 2, w) for w in range(64)}
    keys |= {tg_random.direction_key(7, 3, 1, d) for d in range(3, 64)}
    assert len(keys) == 64 + 61
    with pytest.raises(ValueError, match=">= 0"):
        tg_random.direction_key(7, 3, 1, 2, -1)


@pytest.mark.parametrize("tangents", ["dense", "rank1"])
def test_local_engine_equals_reference_with_the_same_directions(tangents):
    params, loss, x, y = _model()
    engine = DataParallel(loss, workers=4, directions=2, tangents=tangents)
    value, grads = engine.step(params, None, x, y, step=5)
    expected = _reference_estimate(loss, params, x, y, 5, 4, 2, tangents)
    for g, e in zip(_dense(grads), expected):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-7)
    shard_losses = [float(loss(params, x[i:i + 16], y[i:i + 16])) for i in range(0, 64, 16)]
    assert value == pytest.approx(np.mean(shard_losses), rel=1e-6)
    if tangents == "rank1":
        assert isinstance(grads["w"], LowRankGrad) and grads["w"].ordered and grads["w"].rank == 8


def test_one_worker_with_one_direction_is_the_single_process_estimate_bit_for_bit():
    params, loss, x, y = _model()
    engine = DataParallel(loss, workers=1, directions=1, tangents="dense")
    _, grads = engine.step(params, None, x, y, step=3)
    _, single = forward_grad(loss, directions=1, distribution="rademacher", seed=0)(params, x, y, step=3)
    for g, s in zip(tree_flatten(grads)[0], tree_flatten(single)[0]):
        assert np.array_equal(g, s)


class _SeenWorld:
    """Worker `rank` of an MPI job whose allgather answers with rows computed beforehand."""

    def __init__(self, rank, table):
        self.rank, self.size, self.table = rank, len(table), table

    def allgather(self, row):
        assert np.array_equal(row[:-1], self.table[self.rank, :-1])  # this worker's own row
        return self.table.copy()


@pytest.mark.parametrize("tangents", ["dense", "rank1"])
def test_every_worker_applies_the_same_bits(tangents):
    """Each rank reuses its own tangents and regenerates the others': the updates (here
    Adam's, which densifies the factored estimate) must agree bit for bit."""
    params, loss, x, y = _model()
    local = DataParallel(loss, workers=3, directions=2, tangents=tangents)
    rows = [local._derive(params, x[:63], y[:63], 4, w) for w in range(3)]
    table = np.array([[value, *jv, 0.0] for value, jv, _ in rows])
    results = []
    for rank in range(3):
        engine = DataParallel(loss, workers=3, directions=2, tangents=tangents, world=_SeenWorld(rank, table))
        opt = adam(1e-2)
        p = {k: v.copy() for k, v in params.items()}
        _, grads = engine.step(p, None, x[:63], y[:63], step=4)
        p, _ = opt.update_inplace(grads, opt.init(p), p)
        results.append(param_hash(p))
    p = {k: v.copy() for k, v in params.items()}
    _, grads = local.step(p, None, x[:63], y[:63], step=4)
    opt = adam(1e-2)
    p, _ = opt.update_inplace(grads, opt.init(p), p)
    assert results == [param_hash(p)] * 3


def test_dense_exchange_matches_the_seeds_exchange():
    params, loss, x, y = _model()
    seeds = DataParallel(loss, workers=2, directions=2, tangents="rank1")
    dense = DataParallel(loss, workers=2, directions=2, tangents="rank1", exchange="dense")
    p1, p2 = ({k: v.copy() for k, v in params.items()} for _ in range(2))
    o1, o2 = sgd(0.5), sgd(0.5)
    s1, s2 = o1.init(p1), o2.init(p2)
    for step in range(3):
        l1, g1 = seeds.step(p1, s1, x, y, step)
        l2, g2 = dense.step(p2, s2, x, y, step)
        assert l1 == pytest.approx(l2, rel=1e-5) and (step or l1 == l2)  # same shards and directions
        p1, s1 = o1.update_inplace(g1, s1, p1)
        p2, s2 = o2.update_inplace(g2, s2, p2)
    for a, b in zip(tree_flatten(p1)[0], tree_flatten(p2)[0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(p1["w"], params["w"])


def _cfg(tmp_path, **kw):
    base = {"model": "mlp", "data": "digits", "model_kwargs": {"hidden": [16]}, "steps": 12, "batch_size": 32,
            "workers": 2, "engine": "local", "tangents": "rank1", "directions": 2, "optimizer": "adam",
            "lr": 1e-2, "checkpoint_every": 6, "eval_every": 12, "quiet": True, "plot": False,
            "out": str(tmp_path / "run")}
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_local_engine_resumes_bit_exactly_and_refuses_another_worker_count(tmp_path):
    full = Trainer(_cfg(tmp_path, out=None)).run()
    t = Trainer(_cfg(tmp_path))
    t.run(stop_after=6)
    resumed = Trainer(_cfg(tmp_path, resume=True))
    assert resumed.step == 6
    result = resumed.run()
    assert param_hash(result.params) == param_hash(full.params) == resumed.param_hash
    single = Trainer(_cfg(tmp_path, out=None, workers=1)).run()
    assert param_hash(single.params) != param_hash(full.params)  # other shards, other keys
    with pytest.raises(CheckpointError, match=r"workers=2 but this run has workers=4 \(worker r of N"):
        Trainer(_cfg(tmp_path, resume=True, workers=4))


@pytest.mark.parametrize("kw, message", [
    ({"mode": "backprop", "tangents": "dense", "directions": 1}, "data-parallel backprop is not implemented"),
    ({"batch_size": 33}, "batch_size 33 does not split into 2"),
    ({"engine": "threads"}, "unknown engine 'threads'"),
    ({"exchange": "grads"}, "unknown exchange 'grads'"),
])
def test_bad_worker_configs_say_what_to_use(tmp_path, kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _cfg(tmp_path, **kw).validate()


def test_mpi_engine_outside_mpiexec_says_how_to_launch(tmp_path, monkeypatch):
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py not installed (pip install 'tracegrad[mpi]')")
    from tracegrad.train.distributed import DistributedError, join_world

    with pytest.raises(DistributedError, match="needs 2 MPI processes, but this process was started alone"):
        join_world(2)


def test_without_mpi_the_errors_say_what_to_install(monkeypatch):
    from tracegrad.train import distributed

    monkeypatch.setattr(distributed, "_WORLD", [])
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import fails as if not installed
    with pytest.raises(distributed.DistributedError, match=r"needs mpi4py: pip install 'tracegrad\[mpi\]'.*--engine local"):
        distributed.join_world(2)
    monkeypatch.setattr(distributed, "find_mpiexec", lambda: None)
    with pytest.raises(distributed.DistributedError, match=r"--workers 2 needs mpiexec: pip install 'tracegrad\[mpi\]'"):
        distributed.launch(["train", "--workers", "2"], 2)


# -- with MPI ----------------------------------------------------------------------------------
needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or find_mpiexec() is None,
                               reason="mpi4py/mpiexec not installed (pip install 'tracegrad[mpi]')")
_ARGS = ["train", "--model", "mlp", "--data", "digits", "--hidden", "16", "--batch-size", "32",
         "--tangents", "rank1", "--directions", "2", "--workers", "2", "--eval-every", "1000"]


def _cli(args, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")}
    return subprocess.Popen([sys.executable, "-m", "tracegrad", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _hashes(output):
    return dict(re.findall(r"worker (\d) of 2: parameter hash ([0-9a-f]{16})", output))


@needs_mpi
@pytest.mark.parametrize("exchange, tangents", [("seeds", "rank1"), ("dense", "dense")])
def test_mpiexec_workers_are_identical_and_equal_the_local_engine(tmp_path, exchange, tangents):
    args = [*_ARGS, "--steps", "15", "--out", str(tmp_path / "mpi"), "--exchange", exchange]
    args[args.index("--tangents") + 1] = tangents
    proc = _cli(args)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    hashes = _hashes(out)
    assert set(hashes) == {"0", "1"} and hashes["0"] == hashes["1"], out
    local = Trainer(_cfg(tmp_path, steps=15, optimizer=None, lr=None, out=None, exchange=exchange,
                         tangents=tangents)).run()
    assert hashes["0"] == param_hash(local.params)
    assert not list(tmp_path.glob("mpi/*rank*"))  # rank 1 wrote nothing of its own
    assert sorted(p.name for p in (tmp_path / "mpi").iterdir()) == [
        "ckpt-00000015.npz", "config.json", "metrics.csv", "metrics.jsonl", "plot.png", "summary.json"]


def _pid_of_rank(rank, marker):
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env and marker.encode() in cmd:
            return int(entry.name)
    return None


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_a_killed_worker_stops_the_job_with_its_rank_and_resume_continues(tmp_path):
    out_dir = tmp_path / "killed"
    args = [*_ARGS, "--steps", "120", "--checkpoint-every", "10", "--out", str(out_dir)]
    proc = _cli(args)
    deadline = time.monotonic() + 90
    while not list(out_dir.glob("ckpt-*.npz")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    pid = _pid_of_rank(1, str(out_dir))
    assert pid is not None and proc.poll() is None, "the job ended before the worker could be killed"
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)  # no hang: mpiexec ends the survivor
    assert proc.returncode != 0
    assert f"worker 1 of 2 (pid {pid}" in out and "killed by signal 9" in out and "--resume" in out, out
    resumed = _cli([*args, "--resume"])
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out
    hashes = _hashes(out)
    assert hashes["0"] == hashes["1"]
    local = Trainer(_cfg(tmp_path, steps=120, optimizer=None, lr=None, out=None)).run()
    assert hashes["0"] == param_hash(local.params)


@needs_mpi
def test_an_error_on_one_worker_aborts_the_job_instead_of_hanging(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        "import numpy as np\n"
        "from tracegrad.train.distributed import abort_on_failure, join_world\n"
        "world = join_world(2)\n"
        "with abort_on_failure(world):\n"
        "    if world.rank == 1:\n"
        "        raise OSError('disk full')\n"
        "    world.allgather(np.zeros(3))  # rank 0 waits here for a worker that is gone\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([find_mpiexec(), "-n", "2", sys.executable, str(script)], env=env, text=True,
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "worker 1 of 2 failed: disk full; stopping all workers (exit status 1)" in proc.stderr
