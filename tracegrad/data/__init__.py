"""Data sets and batching for training examples and benchmarks.

Contract: every loader returns a ``Dataset`` (float32 features standardized with
train-split statistics, int64 labels) or raises ``DataError`` with a one-line
message naming the file or option at fault. Nothing here downloads: "digits"
ships inside this package (digits.csv.gz, see DIGITS_LICENSE.txt), and "mnist" is read from a directory of IDX files that
the caller names explicitly.
"""

from __future__ import annotations

import os

from .batching import Batches, BatchStream, epoch_permutation, iterate_batches
from .dataset import DataError, Dataset
from .digits import load_digits_dataset
from .mnist import load_idx, load_mnist

__all__ = [
    "DATASETS",
    "BatchStream",
    "Batches",
    "DataError",
    "Dataset",
    "epoch_permutation",
    "iterate_batches",
    "load_dataset",
    "load_digits_dataset",
    "load_idx",
    "load_mnist",
]

DATASETS = ("digits", "mnist")


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, flatten: bool = True
) -> Dataset:
    """Load a data set by name: "digits" (offline, bundled) or "mnist" (needs ``data_dir``)."""
    key = name.lower()
    if key == "digits":
        return load_digits_dataset(flatten=flatten)
    if key == "mnist":
        if data_dir is None:
            raise DataError(
                "mnist: no data_dir given; pass the directory holding train-images-idx3-ubyte[.gz] "
                "and the other three IDX files"
            )
        return load_mnist(data_dir, flatten=flatten)
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
