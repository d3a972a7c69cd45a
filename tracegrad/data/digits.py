"""The 8x8 handwritten digits bundled with scikit-learn: the offline default data set.

Contract: ``load_digits_dataset`` needs no network and no files of ours; the
same ``(test_fraction, seed)`` always gives the same train/test split (a
permutation from ``np.random.default_rng(seed)``), independent of scikit-learn's
own random state. Pixels (0..16) are scaled to [0, 1], then standardized with
train statistics like every other ``Dataset``.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset, build_dataset

__all__ = ["load_digits_dataset"]


def load_digits_dataset(test_fraction: float = 0.2, seed: int = 0, flatten: bool = True) -> Dataset:
    """Split scikit-learn's 1797 digits into train/test deterministically by ``seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    # Imported here: scikit-learn takes ~0.5 s to import and only this loader needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)  # (1797, 8, 8) float64 with values 0..16
    labels = np.asarray(bunch.target)
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
