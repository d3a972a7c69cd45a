"""Benchmark: MLP 784-1024-1024-10 (ReLU, softmax cross-entropy, batch 64, float32).

Times, interleaved round-robin so machine noise hits every variant alike, reporting medians:
  plain NumPy primal · compiled primal · compiled JVP (fixed tangent) ·
  one forward-gradient step split into parts: sample tangents, JVP, update.
Run:  python benchmarks/bench_mlp.py [--rounds 200] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time

import numpy as np

import tracegrad as tg
from tracegrad.forward_grad import DirectionSampler
from tracegrad.tree import tree_flatten, tree_unflatten

SIZES = [784, 1024, 1024, 10]
BATCH = 64


def init(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(itertools.pairwise(SIZES)):
        params[f"w{i}"] = (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32)
        params[f"b{i}"] = np.zeros(b, np.float32)
    return params


def loss(params, x, y):
    h = x
    n = len(SIZES) - 1
    for i in range(n):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < n - 1:
            h = np.maximum(h, 0)
    # plain-NumPy softmax cross-entropy so the same function runs eagerly for the baseline
    m = np.max(h, axis=1, keepdims=True)
    logp = h - m - np.log(np.sum(np.exp(h - m), axis=1, keepdims=True))
    return -np.mean(np.take_along_axis(logp, y[:, None], axis=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--markdown", default=None, help="append a results table to this file")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    params = init()
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    f = tg.compile(loss)
    leaves, tree = tree_flatten(params)
    n_params = sum(v.size for v in leaves)
    fixed_t = tree_unflatten(tree, [rng.standard_normal(v.shape).astype(np.float32) for v in leaves])
    fixed_tk = tree_unflatten(tree, [v[None] for v in tree_flatten(fixed_t)[0]])
    normal = DirectionSampler("normal", seed=0)
    rademacher = DirectionSampler("rademacher", seed=0)
    lr = 1e-4
    state = {"params": params}

    specs = [((1,) + v.shape, v.dtype) for v in leaves]
    steps = {"normal": 0, "rademacher": 0}

    def sample_normal():
        steps["normal"] += 1
        return normal.draw_many(specs, step=steps["normal"])

    def sample_rademacher():
        steps["rademacher"] += 1
        return rademacher.draw_many(specs, step=steps["rademacher"])

    vs = sample_normal()
    _, jv = f.jvp((params, x, y), (tree_unflatten(tree, vs), None, None), batched=True)

    def jvp_exec():
        return f.jvp((state["params"], x, y), (tree_unflatten(tree, vs), None, None), batched=True)

    def update():
        scale = np.float32(-lr * float(jv[0]))
        new = [p + scale * v[0] for p, v in zip(leaves, vs)]
        return tree_unflatten(tree, new)

    fg = tg.forward_grad(loss, directions=1, seed=0)

    def full_step():
        _, g = fg(state["params"], x, y)
        return {k: state["params"][k] - lr * g[k] for k in g}

    variants = {
        "numpy primal (plain)": lambda: loss(params, x, y),
        "compiled primal": lambda: f(params, x, y),
        "compiled JVP, fixed tangent": lambda: f.jvp((params, x, y), (fixed_tk, None, None), batched=True),
        "step: sample tangent (normal)": sample_normal,
        "step: sample tangent (rademacher)": sample_rademacher,
        "step: JVP execution": jvp_exec,
        "step: update": update,
        "full forward-gradient step (normal)": full_step,
    }
    for fn in variants.values():  # warm up: compile, caches, BLAS threads
        for _ in range(3):
            fn()
    times = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    plain, prim, jvp_t = med["numpy primal (plain)"], med["compiled primal"], med["compiled JVP, fixed tangent"]
    lines = [
        (f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, float32, {n_params:,} parameters; "
        f"{args.rounds} interleaved rounds, medians; numpy {np.__version__}, python {platform.python_version()}"),
        "",
        "| variant | median ms |",
        "|---|---:|",
    ] + [f"| {k} | {v:.3f} |" for k, v in med.items()] + [
        "",
        f"- compiled primal / plain NumPy: **{prim / plain:.2f}x**",
        f"- JVP execution / compiled primal: **{jvp_t / prim:.2f}x**",
        (f"- normal sampling / JVP execution: {med['step: sample tangent (normal)'] / jvp_t:.2f}x; "
        f"rademacher sampling / JVP execution: {med['step: sample tangent (rademacher)'] / jvp_t:.2f}x"),
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
