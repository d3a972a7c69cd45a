"""The 8x8 handwritten digits shipped inside this package: the offline default data set.

Contract: ``load_digits_dataset`` needs no network and no other package: it reads
``digits.csv.gz`` beside this module (1797 rows of 64 pixels 0..16 and a label; the UCI
optdigits test set as distributed by scikit-learn, CC BY 4.0 / BSD-3-Clause; see
``DIGITS_LICENSE.txt``). The same ``(test_fraction, seed)`` always gives the same
train/test split (a permutation from ``np.random.default_rng(seed)``). Pixels (0..16)
are scaled to [0, 1], then standardized with train statistics like every other ``Dataset``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset, build_dataset

__all__ = ["DIGITS_FILE", "load_digits_arrays", "load_digits_dataset"]

DIGITS_FILE = Path(__file__).with_name("digits.csv.gz")


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8) float64 in 0..16, labels (1797,) int64)`` from the shipped file."""
    try:
        with gzip.open(DIGITS_FILE, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"digits: cannot read {DIGITS_FILE} ({exc}); reinstall tracegrad") from None
    if table.shape != (1797, 65):
        raise DataError(f"digits: {DIGITS_FILE} holds a {table.shape} table, expected (1797, 65); "
                        "reinstall tracegrad")
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)


def load_digits_dataset(test_fraction: float = 0.2, seed: int = 0, flatten: bool = True) -> Dataset:
    """Split the 1797 shipped digits into train/test deterministically by ``seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = load_digits_arrays()
    n = len(labels)
    n_test = round(n * test_fraction)
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction {test_fraction} leaves an empty split of {n} examples")
    perm = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    return build_dataset(
        "digits",
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        max_value=16.0,
        num_classes=10,
        flatten=flatten,
    )
