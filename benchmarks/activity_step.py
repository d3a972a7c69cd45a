"""Step time of each gradient estimator on the MNIST MLP 784-1024-1024-10 (or, ``--model cnn``,
the CNN with channels 8, 8, 16, 16 and 128 hidden units), batch 64, one thread.

Interleaved rounds (each estimator once per round, in turn), median CPU ms per training step
(the estimate and an in-place SGD update of every parameter, the same for all), so a loaded
machine slows them all alike; the wall-time medians are printed too:

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
        "activity, masked, G=64, layerwise": (tg.activity_grad(loss, mask=True, groups=64, seed=0,
                                                               layerwise=True), params, True),
        "activity, masked, G=256": (tg.activity_grad(loss, mask=True, groups=256, seed=0), params, True),
        "activity, masked, G=256, layerwise": (tg.activity_grad(loss, mask=True, groups=256, seed=0,
                                                                layerwise=True), params, True),
        "activity, masked, G=16, layerwise": (tg.activity_grad(loss, mask=True, groups=16, seed=0,
                                                               layerwise=True), params, True),
        "local, masked, G=256": (tg.activity_grad(local.local_loss, mask=True, groups=256, seed=0,
                                                  exact_last=True), lparams, True),
    }
    run(cases, x, y, "MLP 784-1024-1024-10", args.rounds)


def run(cases: dict, x: np.ndarray, y: np.ndarray, what: str, rounds: int) -> None:
    times: dict[str, list[float]] = {k: [] for k in cases}
    walls: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(rounds + 2):
        for name, (fn, prm, stepped) in cases.items():
            t0, w0 = time.process_time(), time.perf_counter()
            _, grads = fn(prm, x, y, step=r) if stepped else fn(prm, x, y)
            for k, gk in grads.items():  # SGD, in place (a small rate: the parameters barely move)
                prm[k] -= np.float32(1e-6) * gk
            if r >= 2:  # the first calls compile
                times[name].append(time.process_time() - t0)
                walls[name].append(time.perf_counter() - w0)
    base = float(np.median(times["backprop"]))
    print(f"{what}, batch {len(x)}, {rounds} interleaved rounds, median ms per step (estimate + SGD update)")
    print(f"  {'estimator':40s} {'CPU ms':>8s} {'x backprop':>11s} {'wall ms':>8s}")
    for name, ts in times.items():
        print(f"  {name:40s} {1e3 * np.median(ts):8.1f} {np.median(ts) / base:11.2f} {1e3 * np.median(walls[name]):8.1f}")


if __name__ == "__main__":
    main()
