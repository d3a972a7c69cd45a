"""Python overhead of a steady-state call: what a cached-signature call spends outside the
generated code (issue 11, item 5), on a workload small enough that the overhead shows
(logistic regression 784 -> 10, batch 64, float32).

Interleaved, one call of each per round, ``perf_counter`` per call:
  fwd-grad   ``forward_grad(..., keep_buffers=True)`` Rademacher step (draw, JVP, estimate)
  jvp-code   the generated JVP function alone, on tangents drawn beforehand
  fill       the counter-based tangent draws alone (keys and one ``tracegrad.random.Batch``
             pass over both leaves, as the fast path draws them)
  call       a compiled forward call
  fwd-code   the generated forward function alone
Overhead = fwd-grad − jvp-code − fill, and call − fwd-code (medians and 5th percentiles).

    taskset -c 0 python benchmarks/overhead.py [--rounds 3000] [--tangents dense|rank1] [--profile]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

import tracegrad as tg
from tracegrad import numpy as tnp
from tracegrad import random as tg_random
from tracegrad.modes import PRIMAL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--tangents", choices=("dense", "rank1"), default="dense")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of 2,000 fwd-grad calls")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 784)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    p = {"w": (rng.standard_normal((784, 10)) * 0.01).astype(np.float32), "b": np.zeros(10, np.float32)}

    def loss(p: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return tnp.cross_entropy(x @ p["w"] + p["b"], y)

    f = tg.compile(loss)
    est = tg.forward_grad(f, distribution="rademacher", seed=0, tangents=args.tangents, keep_buffers=True)
    for step in range(5):
        est(p, x, y, step=step)
    f(p, x, y)
    leaves = [p["b"], p["w"], x, y]  # the dynamic leaves in pytree order (sorted keys)
    rank = 1 if args.tangents == "rank1" else 0
    jvp_fn, _, _ = f.jvp_executable((p, x, y), (True, True, False, False), (1,), rank)
    # the draw the fast path does for one direction of small float32 leaves: one
    # random.Batch pass over both leaves (keys included), into one buffer whose views are
    # the tangents. b: dense (1, 10); w: dense (1, 784, 10), or rank-1 factors a (1, 784, 1),
    # b (1, 10, 1) drawn as one row of 794
    shapes = [(1, 10), (1, 794) if rank else (1, 784, 10)]
    batch = tg_random.Batch("rademacher", [int(np.prod(s)) for s in shapes])
    buf = batch.buffer()
    drawn = [v.reshape(s) for v, s in zip(batch.views(buf), shapes)]
    if rank:
        tangents = [drawn[0], drawn[1][:, :784].reshape(1, 784, 1), drawn[1][:, 784:].reshape(1, 10, 1)]
    else:
        tangents = drawn
    fwd_fn = f._entry((p, x, y), PRIMAL)[0].executable.fn

    def fill() -> None:
        base = tg_random.step_key(0, 3)
        batch.fill_keys([tg_random.leaf_key(base, i, 0) for i in range(len(drawn))], buf)

    fill()
    calls = {"fwd-grad": lambda: est(p, x, y, step=3), "jvp-code": lambda: jvp_fn(*leaves, *tangents),
             "fill": fill, "call": lambda: f(p, x, y), "fwd-code": lambda: fwd_fn(*leaves)}
    times: dict[str, list[int]] = {k: [] for k in calls}
    for _ in range(args.rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter_ns()
            fn()
            times[name].append(time.perf_counter_ns() - t0)
    for label, q in (("median", 50), ("5th percentile", 5)):
        t = {k: np.percentile(v, q) / 1e3 for k, v in times.items()}
        parts = ", ".join(f"{k} {v:.1f}" for k, v in t.items())
        print(f"{label} µs: {parts}")
        print(f"  overhead: fwd-grad {t['fwd-grad'] - t['jvp-code'] - t['fill']:.1f} µs, "
              f"compiled call {t['call'] - t['fwd-code']:.1f} µs")
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(2000):
            est(p, x, y, step=3)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
