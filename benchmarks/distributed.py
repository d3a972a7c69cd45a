"""Data-parallel forward gradients: bytes per step, step time and its breakdown, and a model.

Measure (MNIST-sized MLP 784-1024-1024-10, 1.86M float32 parameters, global batch 64,
random inputs, SGD (or --optimizer adam), K=1; dense and rank-1 tangents; data-parallel
backprop for reference):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/distributed.py --json n1.json
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python benchmarks/distributed.py --json n2.json

Each prints, per tangent kind, the median step time of rank 0 split into JVP (its own
shard), allgather wait, and regenerate + combine, the optimizer update, and the bytes this
worker sent per step; under mpiexec also the latency of an allgather of 8·(K+2) bytes and of
an all-reduce of the 1.86M-float estimate. Then

    python benchmarks/distributed.py --predict n1.json n2.json

prints the model: per-step time and time to 80% test accuracy for N = 8..64 workers on
separate machines linked at 1 and 10 Gbit/s, for the seeds exchange with dense and rank-1
tangents, the dense exchange, and data-parallel backprop's all-reduce. Everything for N > 2
is a prediction from the measured costs, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tracegrad as tg
from tracegrad.nn.models import build_model
from tracegrad.optim import adam, sgd
from tracegrad.structured import LowRankGrad
from tracegrad.train import cross_entropy_loss
from tracegrad.train.distributed import DataParallel, MPIWorld, under_mpi_launcher

BATCH = 64
HIDDEN = [1024, 1024]
# Steps to 80% MNIST test accuracy. Forward gradients, one Rademacher direction per step,
# Adam 3e-4, batch 64: 80% is passed between steps 7,500 and 10,000 (docs/experiments.md),
# taken as 8,750. Backprop (SGD 0.1) is at 96% after 600 steps (same page); 300 steps to
# 80% is an assumption. With M = N·K directions per step the model assumes the extra steps
# come from the estimator's variance, which falls as 1/M: S(M) = S_BP + (S_FG1 - S_BP) / M.
S_FG1, S_BP = 8750, 300
ALPHA = 25e-6  # assumed one-way latency of a small message between machines (TCP, Ethernet), s
LINKS = (1e9, 10e9)  # bit/s


def _median(xs: list[float]) -> float:
    return float(np.median(xs))


def _time(fn, rounds: int) -> float:
    """Median seconds of ``fn()`` over ``rounds`` calls after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _median(times)


SHARDS = (64, 32, 16, 8, 4, 2, 1)  # a global batch of 64 over N = 1..64 workers
TERMS = 8  # per-direction costs from combining/applying 1 and TERMS workers' directions


def components(model, loss, x, y, rounds: int, optimizer: str) -> dict:
    """The costs the model is built from, each timed alone in this one process: the JVP and
    backprop at every shard size; regenerating one other worker's direction; combining and
    applying 1 and TERMS directions (their difference / (TERMS - 1) is the cost per extra
    direction). For rank-1 tangents also the apply through BLAS (one gemm for all terms,
    not what the engine does: its reduction order is the BLAS library's)."""
    params = model.init(0)
    leaves, treedef = tg.tree.tree_flatten(params)
    specs = [(leaf.shape, leaf.dtype) for leaf in leaves]
    vg = loss.value_and_grad
    out: dict = {"backprop": {b: _time(lambda b=b: vg(params, x[:b], y[:b]), rounds) for b in SHARDS}}
    coeffs = np.full((TERMS, 1), 1e-3)
    for tangents in ("dense", "rank1"):
        engine = DataParallel(loss, workers=TERMS, tangents=tangents)
        est = engine.estimate
        d = {"jvp": {b: _time(lambda b=b, e=est: e.derivatives(params, x[:b], y[:b], step=0), rounds)
                     for b in SHARDS}}
        d["regenerate"] = _time(lambda e=est: e.regenerate(specs, 0, 1), rounds)
        parts = [est.regenerate(specs, 0, w) for w in range(TERMS)]
        for n in (1, TERMS):
            def combine(n=n, e=engine, ps=parts):
                return e._combine(leaves, coeffs, ps.__getitem__, range(n))

            d[f"combine_{n}"] = _time(combine, rounds)
            variants = {"apply": combine()}
            if tangents == "rank1":
                variants["apply_blas"] = [LowRankGrad(g.u, g.v, g.shape) if isinstance(g, LowRankGrad) else g
                                          for g in variants["apply"]]
            for name, g in variants.items():
                opt = adam(1e-4) if optimizer == "adam" else sgd(1e-4)
                p = model.init(0)
                grads = tg.tree.tree_unflatten(treedef, g)
                state = opt.init(p)
                d[f"{name}_{n}"] = _time(lambda g=grads, o=opt, p=p, st=state: o.update_inplace(g, st, p), rounds)
        out[tangents] = d
    return out


def measure(rounds: int, world: object | None, optimizer: str = "sgd") -> dict:
    workers = 1 if world is None else world.size  # type: ignore[attr-defined]
    model = build_model("mlp", 784, 10, hidden=HIDDEN)
    r = np.random.default_rng(0)
    x = r.random((BATCH, 784), dtype=np.float32)
    y = r.integers(0, 10, BATCH)
    loss = tg.compile(cross_entropy_loss(model.apply))
    nparams = sum(int(np.size(v)) for v in tg.tree.tree_leaves(model.init(0)))
    out: dict = {"workers": workers, "params": nparams, "batch": BATCH, "rounds": rounds, "optimizer": optimizer}
    for tangents in ("dense", "rank1"):
        params = model.init(0)
        opt = adam(1e-4) if optimizer == "adam" else sgd(1e-4)
        state = opt.init(params)
        engine = DataParallel(loss, workers=workers, tangents=tangents, world=world)
        rows = []
        for step in range(rounds + 2):
            before = dict(engine.times)
            sent = engine.bytes_sent
            t0 = time.perf_counter()
            _, grads = engine.step(params, state, x, y, step)
            t1 = time.perf_counter()
            params, state = opt.update_inplace(grads, state, params)
            t2 = time.perf_counter()
            if step >= 2:  # compile and first-touch excluded
                row = {k: engine.times[k] - before[k] for k in engine.times}
                row.update(step=t2 - t0, optimizer=t2 - t1, bytes=engine.bytes_sent - sent)
                rows.append(row)
        out[tangents] = {k: _median([row[k] for row in rows]) for k in rows[0]}
    # backprop on this worker's shard (the data-parallel reference), and the collectives
    params = model.init(0)
    vg = tg.compile(cross_entropy_loss(model.apply)).value_and_grad
    out["backprop_shard"] = _time(lambda: vg(params, x[:BATCH // workers], y[:BATCH // workers]), rounds)
    if world is None:
        out["components"] = components(model, loss, x, y, rounds, optimizer)
    if world is not None:
        row = np.zeros(3)
        times = []
        for _ in range(2000):
            t0 = time.perf_counter()
            world.allgather(row)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - t0)
        out["allgather_24B"] = _median(times[100:])
        buf = np.zeros(nparams, np.float32)
        times = []
        for _ in range(rounds + 2):
            t0 = time.perf_counter()
            world.allreduce_sum(buf)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - t0)
        out["allreduce_params"] = _median(times[2:])
    return out


def report(m: dict) -> None:
    print(f"N={m['workers']}, {m['params']:,} parameters, global batch {m['batch']}, {m['optimizer']}, "
          f"medians of {m['rounds']} steps")
    for tangents in ("dense", "rank1"):
        t = m[tangents]
        print(f"  {tangents:5s}: step {1e3 * t['step']:7.2f} ms = JVP {1e3 * t['jvp']:6.2f} + allgather wait "
              f"{1e3 * t['exchange']:6.3f} + regenerate+combine {1e3 * t['combine']:6.2f} + optimizer "
              f"{1e3 * t['optimizer']:6.2f}; sent {t['bytes']:.0f} B/step")
    print(f"  backprop on the shard: {1e3 * m['backprop_shard']:.2f} ms")
    if "allgather_24B" in m:
        print(f"  allgather 24 B: {1e6 * m['allgather_24B']:.1f} us; all-reduce {m['params']:,} float32: "
              f"{1e3 * m['allreduce_params']:.2f} ms")


def predict(m1: dict, m2: dict) -> None:
    """The model, from the components timed in the N=1 run (K=1), checked against the
    measured N=2 step; then N = 8..64 on separate machines."""
    p, c = m1["params"], m1["components"]

    def ring_allreduce(n: int, bw: float, alpha: float = ALPHA) -> float:
        return 2 * (n - 1) * alpha + 2 * (n - 1) / n * 4 * p * 8 / bw

    def allgather(n: int, bw: float, alpha: float = ALPHA) -> float:
        return math.ceil(math.log2(n)) * alpha + n * 24 * 8 / bw

    def fg_seeds(tangents: str, n: int, gather: float, apply: str = "apply") -> float:
        d = c[tangents]
        per_dir = (d["regenerate"] + (d[f"combine_{TERMS}"] - d["combine_1"]) / (TERMS - 1)
                   + max(d[f"{apply}_{TERMS}"] - d[f"{apply}_1"], 0.0) / (TERMS - 1))
        return d["jvp"][str(BATCH // n)] + d["combine_1"] + d[f"{apply}_1"] + (n - 1) * per_dir + gather

    def fg_dense(tangents: str, n: int, reduce: float) -> float:
        d = c[tangents]
        return d["jvp"][str(BATCH // n)] + d["combine_1"] + c["dense"]["apply_1"] + reduce

    def backprop(n: int, reduce: float) -> float:
        return c["backprop"][str(BATCH // n)] + c["dense"]["apply_1"] + reduce

    print("Per-direction costs (ms):", ", ".join(
        f"{t}: JVP b64 {1e3 * c[t]['jvp']['64']:.1f}, regenerate {1e3 * c[t]['regenerate']:.2f}, combine "
        f"{1e3 * (c[t][f'combine_{TERMS}'] - c[t]['combine_1']) / (TERMS - 1):.2f}, apply "
        f"{1e3 * (c[t][f'apply_{TERMS}'] - c[t]['apply_1']) / (TERMS - 1):.2f}" for t in ("dense", "rank1"))
          + f"; rank-1 apply through one BLAS gemm: {1e3 * c['rank1']['apply_blas_1']:.2f} ms for 1 term, "
          f"{1e3 * c['rank1'][f'apply_blas_{TERMS}']:.2f} ms for {TERMS}")
    if "allgather_24B" in m2:
        print("N=2 on this machine, model vs measured step (ms):", ", ".join(
            f"{t} {1e3 * fg_seeds(t, 2, m2['allgather_24B']):.1f} vs {1e3 * m2[t]['step']:.1f}"
            for t in ("dense", "rank1")))
    print()
    print("| N | link | FG seeds, dense tangents | FG seeds, rank-1 | FG seeds, rank-1, BLAS apply | "
          "FG dense exchange, rank-1 JVP | backprop + all-reduce | time to 80%: FG rank-1 seeds (BLAS) | "
          "backprop |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (8, 16, 32, 64):
        for bw in LINKS:
            seeds = [fg_seeds(t, n, allgather(n, bw)) for t in ("dense", "rank1")]
            blas = fg_seeds("rank1", n, allgather(n, bw), "apply_blas")
            dense_x = fg_dense("rank1", n, ring_allreduce(n, bw))
            bp = backprop(n, ring_allreduce(n, bw))
            steps_fg = S_BP + (S_FG1 - S_BP) / n
            print(f"| {n} | {bw / 1e9:g} Gbit/s | {1e3 * seeds[0]:.1f} ms | {1e3 * seeds[1]:.1f} ms | "
                  f"{1e3 * blas:.1f} ms | {1e3 * dense_x:.1f} ms | {1e3 * bp:.1f} ms | {steps_fg * seeds[1]:.0f} s "
                  f"({steps_fg * blas:.0f} s), {steps_fg:.0f} steps | {S_BP * bp:.0f} s, {S_BP} steps |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", type=Path, help="write the measurements here (rank 0)")
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                    help="sgd applies rank-1 estimates as rank-1 updates; adam densifies them (default sgd)")
    ap.add_argument("--predict", nargs=2, type=Path, metavar=("N1_JSON", "N2_JSON"))
    args = ap.parse_args()
    if args.predict:
        predict(*(json.loads(p.read_text()) for p in args.predict))
        return
    world = None
    if under_mpi_launcher():
        from mpi4py import MPI

        world = MPIWorld(MPI.COMM_WORLD)
        if world.size == 1:
            world = None
    m = measure(args.rounds, world, args.optimizer)
    if world is None or world.rank == 0:
        report(m)
        if args.json:
            args.json.write_text(json.dumps(m, indent=1))


if __name__ == "__main__":
    main()
