"""Benchmark: forward gradients vs backprop, both from tracegrad's one tracer, passes and codegen.

Three measurements (Baydin et al. 2022 compare the same three):

1. Time per training step, for logistic regression, the MLP 784-1024-1024-10 and the MNIST CNN
   (full 64-channel config and a small one), float32, at one batch size or a sweep:
     primal      the compiled loss alone
     JVP/VJP exec  the fused primal+tangent graph (tangents drawn beforehand) / the fused
                 forward+backward graph, alone
     fwd-normal  forward gradient: draw normal tangents + fused JVP + SGD update
     fwd-rad     the same with Rademacher tangents
     backprop    value_and_grad (reverse mode) + SGD update
   All variants of a model run interleaved round-robin, so the noise of this shared machine
   hits all of them alike; medians are reported, as R_f = T(fwd)/T(primal),
   R_b = T(backprop)/T(primal) and R_f/R_b.
2. Peak memory of one step (tracemalloc: every NumPy buffer allocated during the step,
   after warm-up), including forward gradient vs backprop for the MLP at batch 1024.
3. Time-to-loss: short SGD runs of the trainer, forward gradient vs backprop, same data,
   seed and optimizer (each with its own learning rate: forward gradients diverge at
   backprop's), the two runs advanced alternately in chunks of ``--eval-every`` steps; the
   curves go to a PNG.

Run (the docs/experiments.md numbers):
    python benchmarks/fwd_vs_bwd.py --markdown /tmp/fwd_vs_bwd.md \
        --plot docs/img/fwd_vs_bwd_mnist.png --data-dir ../shared/data/mnist
Quick look:  python benchmarks/fwd_vs_bwd.py --models logreg,mlp --no-memory --no-curves
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import tracegrad as tg
from tracegrad.forward_grad import DirectionSampler
from tracegrad.nn.models import cnn, count_params, logistic_regression, loss_fn, mlp
from tracegrad.optim import sgd

MODELS: dict[str, Callable[[], Any]] = {
    "logreg": lambda: logistic_regression(784, 10),
    "mlp": lambda: mlp([784, 1024, 1024, 10]),
    "cnn-small": lambda: cnn(channels=(16, 16, 16, 16), hidden=128),
    "cnn": lambda: cnn(),  # the paper's MNIST CNN: 4 x 64-channel 3x3 convs, fc 3136-1024-10
    "mlp-deep": lambda: mlp([784] + [1024] * 6 + [10]),  # depth is what backprop's memory grows with
}
VARIANTS = ("primal", "jvp-exec", "vjp-exec", "fwd-normal", "fwd-rad", "backprop")
LR = 1e-3  # the update's cost does not depend on it


def make_variants(name: str, batch: int, seed: int = 0) -> tuple[dict[str, Callable[[], Any]], int]:
    """One step of each variant for ``name`` at ``batch``, on fixed random MNIST-shaped data."""
    model = MODELS[name]()
    params = model.init(seed)
    rng = np.random.default_rng(seed)
    shape = (batch, 1, 28, 28) if name.startswith("cnn") else (batch, 784)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 10, batch)
    f = tg.compile(loss_fn(model))
    opt = sgd(LR)
    state = opt.init(params)

    def step(estimate: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            _, grads = estimate(params, x, y)
            return opt.update(grads, state, params)

        return run

    vg = tg.value_and_grad(f)
    sampler = DirectionSampler("rademacher", seed)
    drawn = sampler.draw_many([((1,) + v.shape, v.dtype) for v in params.values()], step=0)
    tangent = dict(zip(params, drawn))
    variants = {
        "primal": lambda: f(params, x, y),
        "fwd-normal": step(tg.forward_grad(f, distribution="normal", seed=seed)),
        "fwd-rad": step(tg.forward_grad(f, distribution="rademacher", seed=seed)),
        "backprop": step(vg),
        # the two derivative executions alone: tangents drawn beforehand, no update
        "jvp-exec": lambda: f.jvp((params, x, y), (tangent, None, None), batched=True),
        "vjp-exec": lambda: vg(params, x, y),
    }
    return variants, count_params(params)


def time_variants(variants: dict[str, Callable[[], Any]], budget_s: float, max_rounds: int,
                  min_rounds: int = 5, clock: Callable[[], float] = time.perf_counter,
                  ) -> tuple[dict[str, float], dict[str, float], int]:
    """Median and minimum seconds per call, variants interleaved round-robin until the time
    budget is spent (at least ``min_rounds`` rounds). ``clock=time.process_time`` measures
    CPU time instead, which other processes on the machine inflate far less than wall time."""
    for fn in variants.values():  # warm up: tracing, compilation, BLAS threads, allocator
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        for k, fn in variants.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
        rounds += 1
    return ({k: statistics.median(v) for k, v in times.items()}, {k: min(v) for k, v in times.items()},
            rounds)


def peak_memory(fn: Callable[[], Any]) -> int:
    """Bytes of the largest set of buffers alive at once during one call (after warm-up)."""
    fn()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def timing_table(models: list[str], batches: list[int], budget_s: float, max_rounds: int,
                 clock: Callable[[], float] = time.perf_counter) -> list[str]:
    lines = [("| model | params | batch | primal ms | JVP exec ms | VJP exec ms | fwd-normal ms | fwd-rad ms | "
              "backprop ms | R_f normal | R_f rad | R_b | R_f/R_b normal | R_f/R_b rad | "
              "R_f/R_b rad (minima) | rounds |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in models:
        for batch in batches:
            variants, n_params = make_variants(name, batch)
            variants = {k: variants[k] for k in VARIANTS}
            med, low, rounds = time_variants(variants, budget_s, max_rounds, clock=clock)
            p, je, ve, fn_, fr, b = (med[k] * 1e3 for k in VARIANTS)
            row = (f"| {name} | {n_params:,} | {batch} | {p:.2f} | {je:.2f} | {ve:.2f} | {fn_:.2f} | {fr:.2f} | {b:.2f} | "
                   f"{fn_ / p:.2f} | {fr / p:.2f} | {b / p:.2f} | {fn_ / b:.2f} | {fr / b:.2f} | "
                   f"{low['fwd-rad'] / low['backprop']:.2f} | {rounds} |")
            print(row, flush=True)
            lines.append(row)
    return lines


def memory_table(cases: list[tuple[str, int]]) -> list[str]:
    lines = [("| model | batch | params MiB | primal | fwd-rad step | backprop step | backprop / fwd | "
              "JVP exec | VJP exec | VJP / JVP |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, batch in cases:
        variants, n_params = make_variants(name, batch)
        mb = {k: peak_memory(variants[k]) / 2**20 for k in ("primal", "fwd-rad", "backprop", "jvp-exec", "vjp-exec")}
        row = (f"| {name} | {batch} | {4 * n_params / 2**20:.1f} | {mb['primal']:.1f} | {mb['fwd-rad']:.1f} | "
               f"{mb['backprop']:.1f} | {mb['backprop'] / mb['fwd-rad']:.2f} | {mb['jvp-exec']:.1f} | "
               f"{mb['vjp-exec']:.1f} | {mb['vjp-exec'] / mb['jvp-exec']:.2f} |")
        print(row, flush=True)
        lines.append(row)
    return lines


def curves(models: list[str], data: str, data_dir: str | None, steps: int, eval_every: int,
           lr_backprop: float, lr_forward: dict[str, float], distribution: str, plot: str | None) -> list[str]:
    """Train forward and backprop side by side (alternating chunks); return a table, draw the curves."""
    from tracegrad.train import TrainConfig, Trainer, TrainingDivergedError

    results: dict[str, dict[str, Any]] = {}
    lines = ["| model | mode | lr | steps | training s | s/step | final test loss | final test accuracy |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    datasets: dict[bool, Any] = {}  # loaded once per layout (flat for dense models, images for the CNN)
    for name in models:
        trainers = {}
        lrs = {"forward": lr_forward[name], "backprop": lr_backprop}
        flat = not name.startswith("cnn")
        for mode in ("forward", "backprop"):
            cfg = TrainConfig(model=name, data=data, data_dir=data_dir, steps=steps, batch_size=64,
                              optimizer="sgd", lr=lrs[mode], mode=mode, distribution=distribution,
                              seed=0, eval_every=eval_every, log_every=10, out=None, quiet=True)
            if name == "cnn-small":
                cfg.model, cfg.model_kwargs = "cnn", {"channels": [16, 16, 16, 16], "hidden": 128}
            trainers[mode] = Trainer(cfg, dataset=datasets.get(flat))
            datasets[flat] = trainers[mode].dataset
        diverged: dict[str, int] = {}
        for end in range(eval_every, steps + 1, eval_every):
            for mode, t in trainers.items():
                if mode not in diverged:
                    try:
                        t.run(stop_after=end)
                    except TrainingDivergedError as err:
                        diverged[mode] = err.step
        results[name] = {}
        for mode, t in trainers.items():
            rows = [r for r in t.history.rows if np.isfinite(r["train_loss"])]
            results[name][(mode, lrs[mode])] = rows
            last = [r for r in rows if r["test_loss"] is not None][-1]
            note = f" (diverged at step {diverged[mode]})" if mode in diverged else ""
            row = (f"| {name} | {mode} | {lrs[mode]:g} | {last['step']}{note} | {last['wall_time']:.1f} | "
                   f"{1e3 * last['wall_time'] / last['step']:.1f} ms | {last['test_loss']:.4f} | "
                   f"{100 * last['test_accuracy']:.2f}% |")
            print(row, flush=True)
            lines.append(row)
    if plot:
        _plot(results, data, plot, distribution)
    return lines


def _plot(results: dict[str, dict[Any, Any]], data: str, path: str, distribution: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.6 * len(results)), squeeze=False,
                             constrained_layout=True)
    colors = {"forward": "tab:blue", "backprop": "tab:red"}
    for row, (name, by_mode) in zip(axes, results.items()):
        for (mode, lr), rows in by_mode.items():
            label = (f"forward gradient ({distribution}, lr {lr:g})" if mode == "forward"
                     else f"backprop (lr {lr:g})")
            ev = [r for r in rows if r["test_loss"] is not None]
            for ax, key in zip(row, ("wall_time", "step")):
                ax.plot([r[key] for r in rows], [r["train_loss"] for r in rows], "-", alpha=0.35,
                        color=colors[mode])
                ax.plot([r[key] for r in ev], [r["test_loss"] for r in ev], "o-", markersize=3,
                        color=colors[mode], label=label + " — test")
        row[0].set_xlabel("training time (s)")
        row[1].set_xlabel("step")
        for ax in row:
            ax.set_ylabel("cross-entropy (faint: train batch)")
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{name} on {data}")
        row[0].legend(fontsize=8)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="logreg,mlp,cnn-small,cnn", help="comma-separated, of " + ", ".join(MODELS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sweep", type=_ints, default=None, metavar="B1,B2,...",
                    help="time these batch sizes instead of --batch")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of timing per model and batch")
    ap.add_argument("--max-rounds", type=int, default=200)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or this process's CPU time (run with OPENBLAS_NUM_THREADS=1 so "
                         "idle BLAS threads do not spin into it); CPU time is robust to other load")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-cases",
                    default="logreg:64,mlp:64,mlp:1024,mlp:4096,mlp-deep:1024,cnn-small:64,cnn:64",
                    help="model:batch pairs for the memory table")
    ap.add_argument("--no-curves", action="store_true")
    ap.add_argument("--curve-models", default="logreg,mlp")
    ap.add_argument("--data-dir", default=None, help="MNIST IDX folder; without it the curves use digits")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.1, help="SGD learning rate of backprop")
    ap.add_argument("--lr-forward", default="logreg=1e-3,mlp=1e-4",
                    help="SGD learning rates of forward gradients per model, MODEL=LR,... (the best "
                         "that did not diverge in a short sweep, docs/experiments.md)")
    ap.add_argument("--distribution", default="normal", choices=("normal", "rademacher"),
                    help="tangent distribution of the forward-gradient runs (the paper's: normal)")
    ap.add_argument("--plot", default="docs/img/fwd_vs_bwd_time_to_loss.png")
    ap.add_argument("--markdown", default=None, help="write the tables to this file")
    args = ap.parse_args()

    header = (f"numpy {np.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs, "
              f"float32, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
              f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}")
    print(header, flush=True)
    out = [header, ""]
    models = [m for m in args.models.split(",") if m]
    batches = args.sweep or [args.batch]
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    out += [f"### Time per step ({args.clock} clock, medians, interleaved)", ""]
    out += timing_table(models, batches, args.budget, args.max_rounds, clock)
    if not args.no_memory:
        cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.memory_cases.split(",") if c]
        out += ["", "### Peak memory of one step (tracemalloc, MiB)", ""]
        out += memory_table(cases)
    if not args.no_curves:
        data = "mnist" if args.data_dir and os.path.isdir(args.data_dir) else "digits"
        lr_forward = {k: float(v) for k, v in (kv.split("=") for kv in args.lr_forward.split(",") if kv)}
        out += ["", f"### Time to loss ({data}, SGD, batch 64)", ""]
        out += curves([m for m in args.curve_models.split(",") if m], data,
                      args.data_dir if data == "mnist" else None, args.steps, args.eval_every, args.lr,
                      lr_forward, args.distribution, args.plot)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(out) + "\n")
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
