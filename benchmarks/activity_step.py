"""Step time of each gradient estimator on the MNIST MLP 784-1024-1024-10 (or, ``--model cnn``,
the CNN with channels 8, 8, 16, 16 and 128 hidden units), batch 64, one thread.

Interleaved rounds (each estimator once per round, in turn), median ms per call of the
estimator alone (no optimizer update), so a loaded machine slows them all alike:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/activity_step.py --rounds 20
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 python benchmarks/activity_step.py --model cnn \
        --groups 8 196 392 784
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tracegrad as tg
from tracegrad.nn.models import cnn, mlp


def cnn_cases(groups: list[int], batch: int, head_cells: int) -> tuple[dict, np.ndarray, np.ndarray, str]:
    """Backprop and local losses (masked, each G) on the small MNIST CNN."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    kw = {"channels": (8, 8, 16, 16), "hidden": 128}
    plain, local = cnn(**kw), cnn(**kw, local_heads=True, head_cells=head_cells)
    params, lparams = plain.init(0), local.init(0)
    loss = tg.compile(lambda p, x, y: tg.numpy.cross_entropy(plain.apply(p, x), y))
    cases = {"backprop": (tg.value_and_grad(loss), params, False)}
    for g in groups:
        cases[f"local, masked, G={g}"] = (tg.activity_grad(local.local_loss, mask=True, groups=g, seed=0,
                                                           exact_last=True), lparams, True)
    return cases, x, y, f"CNN channels 8,8,16,16 hidden 128 (local heads on {head_cells}x{head_cells} cells)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    p.add_argument("--groups", nargs="+", type=int, default=[8, 196, 784], help="with --model cnn: the G to time")
    p.add_argument("--head-cells", type=int, default=7, help="with --model cnn: the local heads' pooled grid")
    args = p.parse_args()
    if args.model == "cnn":
        return run(*cnn_cases(args.groups, args.batch, args.head_cells), args.rounds)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    plain, local = mlp([784, 1024, 1024, 10]), mlp([784, 1024, 1024, 10], local_heads=True)
    params, lparams = plain.init(0), local.init(0)
    loss = tg.compile(lambda p, x, y: tg.numpy.cross_entropy(plain.apply(p, x), y))
    cases = {
        "backprop": (tg.value_and_grad(loss), params, False),
        "weight perturbation (K=1)": (tg.forward_grad(loss, distribution="rademacher", seed=0), params, True),
        "activity, masked, G=1": (tg.activity_grad(loss, mask=True, seed=0), params, True),
        "activity, masked, G=64": (tg.activity_grad(loss, mask=True, groups=64, seed=0), params, True),
        "local, masked, G=256": (tg.activity_grad(local.local_loss, mask=True, groups=256, seed=0,
                                                  exact_last=True), lparams, True),
    }
    run(cases, x, y, "MLP 784-1024-1024-10", args.rounds)


def run(cases: dict, x: np.ndarray, y: np.ndarray, what: str, rounds: int) -> None:
    times: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(rounds + 2):
        for name, (fn, prm, stepped) in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(prm, x, y, step=r) if stepped else fn(prm, x, y)
            if r >= 2:  # the first calls compile
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    base, cbase = float(np.median(times["backprop"])), float(np.median(cpu["backprop"]))
    print(f"{what}, batch {len(x)}, {rounds} interleaved rounds, median ms per call (wall, CPU)")
    for name, ts in times.items():
        cs = cpu[name]
        print(f"  {name:28s} {1e3 * np.median(ts):7.1f} ms  ({np.median(ts) / base:.2f} x backprop)  "
              f"CPU {1e3 * np.median(cs):7.1f} ms  ({np.median(cs) / cbase:.2f} x)")


if __name__ == "__main__":
    main()
