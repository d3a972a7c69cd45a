"""Forward-gradient descent vs gradient descent on Beale and Rosenbrock (Baydin et al. 2022, Sec. 5.1).

Both optimizers get their numbers from ONE compiled JVP of the same function:
- forward-gradient descent (FGD): g = (∇f·v) v with one random v ~ N(0, I) per step
  (``tracegrad.forward_grad``);
- gradient descent (GD): the exact gradient, from the 2 basis directions run as K=2
  tangents in one execution (``f.jvp((θ,), (I,), batched=True)``).

    python examples/test_functions.py [--out DIR] [--seeds 5]

Writes ``<out>/beale.png`` and ``<out>/rosenbrock.png`` (trajectories over the contours,
loss against iterations and against wall time) and prints a summary table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import tracegrad as tg


def beale(t):
    x, y = t[0], t[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def rosenbrock(t):
    x, y = t[0], t[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


# name: (function, start, minimum, learning rate, iterations, plot window)
# Beale uses the paper's setting (lr 1e-2, 1000 iterations); the start points are ours.
PROBLEMS = {
    "beale": (beale, (1.0, 1.5), (3.0, 0.5), 1e-2, 1000, ((-0.5, 4.0), (-1.0, 2.0))),
    "rosenbrock": (rosenbrock, (-1.0, 1.0), (1.0, 1.0), 1e-3, 5000, ((-1.5, 1.5), (-0.5, 2.0))),
}


def descend(step_fn, start, lr, iterations):
    """Plain descent ``θ ← θ - lr g``; returns the trajectory, losses and cumulative seconds."""
    theta = np.array(start, dtype=np.float64)
    path, losses, times = [theta.copy()], [], []
    elapsed = 0.0
    for _ in range(iterations):
        t0 = time.perf_counter()
        value, g = step_fn(theta)
        theta = theta - lr * g
        elapsed += time.perf_counter() - t0
        path.append(theta.copy())
        losses.append(float(value))
        times.append(elapsed)
    return np.array(path), np.array(losses), np.array(times)


def run_problem(name, seeds, out_dir):
    fn, start, minimum, lr, iterations, window = PROBLEMS[name]
    f = tg.compile(fn)
    basis = np.eye(2)

    def exact(theta):
        value, grad = f.jvp((theta,), (basis,), batched=True)  # both basis JVPs in one execution
        return value, grad

    gd = descend(exact, start, lr, iterations)
    fgd = [descend(tg.forward_grad(f, directions=1, distribution="normal", seed=s), start, lr, iterations)
           for s in range(seeds)]

    rows = [("GD (exact gradient)", gd)] + [(f"FGD seed {s}", r) for s, r in enumerate(fgd)]
    print(f"\n{name}: start {start}, minimum {minimum}, lr {lr:g}, {iterations} iterations")
    print(f"  {'method':<22} {'final loss':>12} {'distance to min':>16} {'µs/iter':>9}")
    for label, (path, losses, times) in rows:
        dist = float(np.linalg.norm(path[-1] - np.array(minimum)))
        print(f"  {label:<22} {float(fn(path[-1])):>12.3e} {dist:>16.4f} {1e6 * times[-1] / iterations:>9.1f}")
    plot(name, fn, window, minimum, gd, fgd, out_dir / f"{name}.png")
    return gd, fgd


def plot(name, fn, window, minimum, gd, fgd, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (x0, x1), (y0, y1) = window
    xs, ys = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    zs = fn(np.stack([xs, ys]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    ax.contour(xs, ys, np.log1p(zs), levels=30, cmap="viridis", linewidths=0.6)
    ax.plot(*gd[0].T, color="black", lw=1.5, label="GD (exact gradient)")
    for s, (p, _, _) in enumerate(fgd):
        ax.plot(*p.T, lw=0.8, alpha=0.8, label="FGD" if s == 0 else None, color="tab:red")
    ax.plot(*minimum, "*", color="gold", ms=14, mec="black", label="minimum")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title(f"{name}: trajectories")
    ax.legend(loc="upper left", fontsize=8)
    for ax, x_key, xlabel in ((axes[1], 0, "iteration"), (axes[2], 1, "wall time (s)")):
        for label, (_, losses, times), color in [("GD", gd, "black")] + [
                ("FGD" if s == 0 else None, r, "tab:red") for s, r in enumerate(fgd)]:
            x = np.arange(1, len(losses) + 1) if x_key == 0 else times
            ax.semilogy(x, losses, color=color, lw=1.2 if color == "black" else 0.8, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("f(θ)")
        ax.legend(fontsize=8)
    axes[1].set_title("loss against iterations")
    axes[2].set_title("loss against wall time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"  plot: {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/test_functions", help="folder for the plots")
    p.add_argument("--seeds", type=int, default=5, help="forward-gradient runs (seeds) per function")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in PROBLEMS:
        run_problem(name, args.seeds, out)


if __name__ == "__main__":
    main()
