"""Short tuning runs of local losses on the small MNIST CNN (issue 12): the exact local gradient
(``tg.value_and_grad(model.local_loss)``, reverse mode through the stop-gradients) against the
activity-perturbed estimate, so a failure can be told apart as the objective's / the learning
rate's (the exact runs fail too) or the estimator's noise (only the estimate fails).

A plain loop (no trainer), batch 64, test accuracy on the first 2000 test images every 200 steps:

    OMP_NUM_THREADS=1 python benchmarks/local_cnn_tuning.py --lr 0.1 --estimate exact --head-cells 2
    OMP_NUM_THREADS=1 python benchmarks/local_cnn_tuning.py --lr 0.05 --estimate 392 --head-cells 7

``--estimate``: ``exact`` or the number of groups G of the masked activity estimate;
``--optimizer sgd|adam``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tracegrad as tg
from tracegrad.data import BatchStream, load_dataset
from tracegrad.nn.models import accuracy, cnn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parent.parent.parent / "shared/data/mnist"))
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--estimate", default="exact")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    p.add_argument("--head-cells", type=int, default=7)
    p.add_argument("--steps", type=int, default=600)
    args = p.parse_args()
    ds = load_dataset("mnist", args.data_dir)
    m = cnn(channels=(8, 8, 16, 16), hidden=128, local_heads=True, head_cells=args.head_cells)
    params = m.init(0)
    if args.estimate == "exact":
        f = tg.value_and_grad(m.local_loss)

        def est(p, x, y, s):
            return f(p, x, y)
    else:
        g = tg.activity_grad(m.local_loss, groups=int(args.estimate), mask=True, seed=0, exact_last=True)

        def est(p, x, y, s):
            return g(p, x, y, step=s)
    stream = BatchStream(ds.x_train, ds.y_train, 64, 0)
    m1 = {k: np.zeros_like(v) for k, v in params.items()}
    m2 = {k: np.zeros_like(v) for k, v in params.items()}
    for s in range(1, args.steps + 1):
        x, y = stream.next()
        loss, grads = est(params, x, y, s)
        for k in params:
            if args.optimizer == "sgd":
                params[k] = params[k] - np.float32(args.lr) * grads[k]
            else:  # Adam, beta 0.9 / 0.999
                m1[k] = 0.9 * m1[k] + 0.1 * grads[k]
                m2[k] = 0.999 * m2[k] + 0.001 * grads[k] ** 2
                step = args.lr * (m1[k] / (1 - 0.9 ** s)) / (np.sqrt(m2[k] / (1 - 0.999 ** s)) + 1e-8)
                params[k] = (params[k] - step).astype(np.float32)
        if s % 200 == 0:
            acc = accuracy(m, params, ds.x_test[:2000], ds.y_test[:2000])
            print(f"{args.estimate} {args.optimizer} {args.lr:g} heads {args.head_cells}: step {s}, "
                  f"local loss {float(loss):.3f}, test acc. {100 * acc:.2f}%", flush=True)


if __name__ == "__main__":
    main()
