"""Logistic regression on MNIST with forward gradients (Baydin et al. 2022, Sec. 5.2).

A thin wrapper over ``tracegrad train``: it runs

    tracegrad train --model logreg --data mnist --data-dir ../shared/data/mnist \
        --optimizer sgd --lr 1e-4 --steps 100000 --eval-every 10000 --target-loss 0.4 \
        --out runs/mnist-logreg

and any option given after it is passed on and wins (``--data-dir DIR``, ``--steps N``,
``--resume``, ``--overwrite``, ...; see ``tracegrad train --help``). The run says which data
set it uses; without MNIST at the data directory it stops with an error instead of quietly
training on something else (``--data digits`` trains on the shipped 8x8 digits).

The paper: batch 64, SGD, lr 2e-4 with lr_i = lr_0 e^(-1e-4 i). On standardized inputs we
use SGD with a constant lr 1e-4 and one Rademacher direction: 100k steps take ~35 s on
2 CPU cores and reach ~89.5% test accuracy (docs/experiments.md).
"""

import sys
from pathlib import Path

from tracegrad.cli import main

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
SETTINGS = ["--model", "logreg", "--data", "mnist", "--data-dir", str(MNIST), "--optimizer", "sgd",
            "--lr", "1e-4", "--steps", "100000", "--eval-every", "10000", "--checkpoint-every", "10000",
            "--target-loss", "0.4", "--out", "runs/mnist-logreg"]

if __name__ == "__main__":
    raise SystemExit(main(["train", *SETTINGS, *sys.argv[1:]]))
