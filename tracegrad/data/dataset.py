"""The ``Dataset`` container and the error type shared by every loader.

Contract: a ``Dataset`` holds float32 features and int64 labels for a train and
a test split. Pixels are scaled to [0, 1] and then standardized with one scalar
mean and std computed on the *train* split only (so no test statistics leak into
training), and the same two numbers are applied to the test split. Features are
flattened to ``(N, D)`` by default, or kept as ``(N, 1, H, W)`` (NCHW) for
convolutional models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError

__all__ = ["DataError", "Dataset", "build_dataset"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test splits of a classification data set, ready to feed to a model.

    ``image_shape`` is the per-example shape before flattening, ``(C, H, W)``;
    ``mean``/``std`` are the train-split statistics (of the [0, 1]-scaled
    pixels) used to standardize both splits, kept so new inputs can be
    normalized the same way.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: float
    std: float

    @property
    def num_features(self) -> int:
        """Length of a flattened example (C*H*W)."""
        return int(np.prod(self.image_shape))

    @property
    def flattened(self) -> bool:
        return self.x_train.ndim == 2

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
            f"num_classes={self.num_classes}, image_shape={self.image_shape})"
        )


def build_dataset(
    name: str,
    train_images: np.ndarray,
    y_train: np.ndarray,
    test_images: np.ndarray,
    y_test: np.ndarray,
    *,
    max_value: float,
    num_classes: int,
    flatten: bool = True,
) -> Dataset:
    """Scale raw ``(N, H, W)`` images by ``1/max_value``, standardize with train stats, shape.

    Standardization uses a single scalar mean/std rather than per-pixel ones:
    MNIST's border pixels are constant zero in the train split, and per-pixel
    statistics would divide by a zero std there.
    """
    if train_images.ndim != 3 or test_images.ndim != 3:
        raise DataError(
            f"{name}: images must be (N, H, W), got train {train_images.shape} "
            f"and test {test_images.shape}"
        )
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{name}: train images are {train_images.shape[1:]} but test images are "
            f"{test_images.shape[1:]}"
        )
    scale = np.float32(1.0 / max_value)
    x_train = train_images.astype(np.float32) * scale
    x_test = test_images.astype(np.float32) * scale
    # Accumulate in float64: a float32 running sum over ~10^7 pixels loses digits.
    mean = float(x_train.mean(dtype=np.float64))
    std = float(x_train.std(dtype=np.float64))
    if not std > 0.0:
        raise DataError(f"{name}: train images are constant (std 0); cannot standardize")
    x_train -= np.float32(mean)
    x_train /= np.float32(std)
    x_test -= np.float32(mean)
    x_test /= np.float32(std)

    h, w = train_images.shape[1:]
    image_shape = (1, int(h), int(w))
    if flatten:
        x_train = x_train.reshape(len(x_train), h * w)
        x_test = x_test.reshape(len(x_test), h * w)
    else:
        x_train = x_train.reshape(len(x_train), *image_shape)
        x_test = x_test.reshape(len(x_test), *image_shape)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=np.asarray(y_train).astype(np.int64),
        x_test=x_test,
        y_test=np.asarray(y_test).astype(np.int64),
        num_classes=num_classes,
        image_shape=image_shape,
        mean=mean,
        std=std,
    )
