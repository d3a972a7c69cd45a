"""The paper's MNIST CNN with forward gradients (Baydin et al. 2022, Sec. 5.2).

A thin wrapper over ``tracegrad train``: it runs

    tracegrad train --model cnn --channels 8,8,16,16 --hidden 256 --data mnist \
        --data-dir ../shared/data/mnist --optimizer adam --lr 1e-3 --steps 6000 \
        --eval-every 1000 --target-loss 1.0 --out runs/mnist-cnn

and any option given after it is passed on and wins (``--channels 64,64,64,64 --hidden 1024``
for the paper's size, ``--data-dir DIR``, ``--steps N``, ``--resume``, ...). The run says which
data set it uses; without MNIST at the data directory it stops with an error instead of
quietly training on something else.

Two 3x3 convs, max-pool 2, two 3x3 convs, max-pool 2, linear -> hidden -> 10, ReLU
throughout (as orobix/fwdgrad builds it). The full network costs ~6 GFLOPs per batch of 64,
so on 2 CPU cores the default here is a narrower CNN (8,8,16,16 channels, 256 hidden):
Adam at lr 1e-3, 6,000 steps, ~3 minutes, ~74% test accuracy. The paper's size costs
~0.3 s per step on 2 cores.
"""

import sys
from pathlib import Path

from tracegrad.cli import main

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
SETTINGS = ["--model", "cnn", "--channels", "8,8,16,16", "--hidden", "256", "--data", "mnist",
            "--data-dir", str(MNIST), "--optimizer", "adam", "--lr", "1e-3", "--steps", "6000",
            "--eval-every", "1000", "--checkpoint-every", "1000", "--target-loss", "1.0",
            "--out", "runs/mnist-cnn"]

if __name__ == "__main__":
    raise SystemExit(main(["train", *SETTINGS, *sys.argv[1:]]))
