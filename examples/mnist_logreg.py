"""Logistic regression on MNIST with forward gradients (Baydin et al. 2022, Sec. 5.2).

    python examples/mnist_logreg.py [--data-dir ../shared/data/mnist] [--steps N] [--lr LR] ...

The paper: batch 64, SGD, lr 2e-4 with lr_i = lr_0 e^(-1e-4 i). On standardized inputs we
use SGD with a constant lr 1e-4 and one Rademacher direction: 100k steps take ~35 s on
2 CPU cores and reach ~89.5% test accuracy (docs/experiments.md).
"""

from _mnist import run

if __name__ == "__main__":
    run("logreg", __doc__, steps=100_000, optimizer="sgd", lr=1e-4, eval_every=10_000, target_loss=0.4)
