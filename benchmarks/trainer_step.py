"""Where a ``tracegrad train`` step spends its time outside the generated code: the pieces
of ``Trainer.run``'s loop body, timed one by one on the trainer's own objects (issue 11).

Per step, ``perf_counter_ns`` around each piece, as ``Trainer.run`` calls them:
  batch     ``stream.next()``: the batch gathered from the shuffled data set
  estimate  ``estimator(params, x, y, step)``: tangent draws, the generated JVP, the estimate
  monitor   ``float(loss)`` and the divergence monitor's per-step check
  update    the optimizer's in-place update
Medians (and 5th percentiles) over ``--steps`` steps after 5 warm-up steps, MNIST batch 64,
the model's default optimizer unless ``--optimizer`` says otherwise. ``--root`` imports
tracegrad from another checkout, to compare before and after a change in the same
conditions (run the two one after the other, or interleave several runs of each).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 python benchmarks/trainer_step.py \
        --model logreg [--optimizer sgd --lr 1e-4] [--steps 2000] [--root /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

PIECES = ("batch", "estimate", "monitor", "update")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("logreg", "mlp", "cnn"), default="logreg")
    ap.add_argument("--optimizer", choices=("sgd", "momentum", "adam"))
    ap.add_argument("--lr", type=float, help="learning rate (default: the model's)")
    ap.add_argument("--tangents", choices=("dense", "rank1"), default="dense")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--data-dir", default="/work/shared/data/mnist")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent),
                    help="the checkout whose tracegrad is imported")
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    from tracegrad.train import TrainConfig, Trainer

    cfg = {"model": args.model, "data": "mnist", "data_dir": args.data_dir, "steps": 10**9, "batch_size": 64,
           "quiet": True, "plot": False, "eval_every": 10**9, "checkpoint_every": 10**9,
           "distribution": "rademacher", "tangents": args.tangents}
    if args.optimizer:
        cfg["optimizer"] = args.optimizer
    if args.lr is not None:
        cfg["lr"] = args.lr
    t = Trainer(TrainConfig(**cfg))
    times: dict[str, list[int]] = {k: [] for k in PIECES}

    def steps(n: int) -> None:
        for _ in range(n):
            a = time.perf_counter_ns()
            x, y = t.stream.next()
            b = time.perf_counter_ns()
            loss, grads = t.estimator(t.params, x, y, t.step)
            c = time.perf_counter_ns()
            reason = t.monitor.update(float(loss))
            d = time.perf_counter_ns()
            t.params, t.opt_state = t._update(grads, t.opt_state, t.params)
            e = time.perf_counter_ns()
            t.step += 1
            if reason is not None:
                raise SystemExit(f"diverged: {reason}")
            for k, v in zip(PIECES, (b - a, c - b, d - c, e - d)):
                times[k].append(v)

    steps(5)
    for v in times.values():
        v.clear()
    steps(args.steps)
    total = [sum(parts) for parts in zip(*times.values())]
    print(f"{args.model}, {t.optimizer}, tangents {args.tangents}, tracegrad from {args.root}, {args.steps} steps")
    for label, q in (("median", 50), ("5th percentile", 5)):
        parts = ", ".join(f"{k} {np.percentile(v, q) / 1e3:.1f}" for k, v in times.items())
        print(f"{label} µs: {parts}; step {np.percentile(total, q) / 1e3:.1f}")


if __name__ == "__main__":
    main()
