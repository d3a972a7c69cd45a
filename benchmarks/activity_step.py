"""Step time of each gradient estimator on the MNIST MLP 784-1024-1024-10, batch 64, one thread.

Interleaved rounds (each estimator once per round, in turn), median ms per call of the
estimator alone (no optimizer update), so a loaded machine slows them all alike:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/activity_step.py --rounds 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tracegrad as tg
from tracegrad.nn.models import mlp


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
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
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(args.rounds + 2):
        for name, (fn, prm, stepped) in cases.items():
            t0 = time.perf_counter()
            fn(prm, x, y, step=r) if stepped else fn(prm, x, y)
            if r >= 2:  # the first calls compile
                times[name].append(time.perf_counter() - t0)
    base = float(np.median(times["backprop"]))
    print(f"MLP 784-1024-1024-10, batch {args.batch}, {args.rounds} interleaved rounds, median ms per call")
    for name, ts in times.items():
        print(f"  {name:28s} {1e3 * np.median(ts):7.1f} ms  ({np.median(ts) / base:.2f} x backprop)")


if __name__ == "__main__":
    main()
