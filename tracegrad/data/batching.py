"""Deterministic mini-batching.

Contract: the order of examples in an epoch is a function of ``(seed, epoch)``
only — ``np.random.default_rng([seed, epoch]).permutation(n)`` — so any epoch can
be regenerated without replaying the ones before it. Each epoch visits every
example at most once; by default the trailing partial batch is dropped so every
batch has the same shape (one compiled kernel serves the whole run).

``BatchStream`` is the stateful form used by training loops: its
``state_dict()`` is two integers (epoch, position) plus consistency checks, so a
run restored from a checkpoint sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .._namespace import array_namespace, is_device_array

__all__ = ["BatchStream", "Batches", "epoch_permutation", "iterate_batches"]


def _check_xy(x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if int(batch_size) != batch_size or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """Example order for one epoch; seeding with the pair keeps epochs independent."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


class Batches:
    """One epoch of ``(xb, yb)`` batches; iterable any number of times with the same result."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        *,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        _check_xy(x, y, batch_size)
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.seed, self.epoch = int(seed), int(epoch)
        self.drop_last, self.shuffle = drop_last, shuffle

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def indices(self) -> np.ndarray:
        """The example order for this epoch (before cutting into batches)."""
        n = len(self.x)
        return epoch_permutation(n, self.seed, self.epoch) if self.shuffle else np.arange(n)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order, b = self.indices(), self.batch_size
        for i in range(len(self)):
            idx = order[i * b : (i + 1) * b]
            yield self.x[idx], self.y[idx]


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    *,
    drop_last: bool = True,
    shuffle: bool = True,
) -> Batches:
    """Batches of epoch ``epoch``, shuffled by ``(seed, epoch)``; ``len()`` gives the count."""
    return Batches(x, y, batch_size, seed, epoch, drop_last=drop_last, shuffle=shuffle)


class BatchStream:
    """An endless, resumable stream of batches running epoch after epoch.

    ``position`` counts the batches already taken from the current ``epoch``.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        seed: int = 0,
        *,
        drop_last: bool = True,
    ) -> None:
        _check_xy(x, y, batch_size)
        self.x, self.y = x, y
        self.batch_size, self.seed, self.drop_last = int(batch_size), int(seed), drop_last
        self.epoch = 0
        self.position = 0
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"batch_size {self.batch_size} exceeds the {len(x)} examples and drop_last=True: "
                "the stream would never yield a batch"
            )
        self._order_epoch = -1
        self._order = np.empty(0, dtype=np.int64)

    @property
    def batches_per_epoch(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _epoch_order(self) -> np.ndarray:
        # Cache the permutation: regenerating it per batch would cost O(n) each step.
        if self._order_epoch != self.epoch:
            self._order = epoch_permutation(len(self.x), self.seed, self.epoch)
            if is_device_array(self.x):  # data on a GPU: index it there
                self._order = array_namespace(self.x).asarray(self._order)
            self._order_epoch = self.epoch
        return self._order

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """The next ``(xb, yb)``; rolls over into the next epoch after its last batch."""
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
        b = self.batch_size
        idx = self._epoch_order()[self.position * b : (self.position + 1) * b]
        self.position += 1
        return self.x[idx], self.y[idx]

    __next__ = next

    def __iter__(self) -> BatchStream:
        return self

    def state_dict(self) -> dict[str, int]:
        """Plain integers, storable with ``np.savez`` or JSON."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_examples": len(self.x),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state_dict()`` output; refuses state taken from a different stream."""
        for key, mine in (
            ("seed", self.seed),
            ("batch_size", self.batch_size),
            ("num_examples", len(self.x)),
        ):
            if key in state and int(state[key]) != mine:
                raise ValueError(
                    f"BatchStream.load_state_dict: state has {key}={int(state[key])} "
                    f"but this stream has {key}={mine}"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.batches_per_epoch:
            raise ValueError(
                f"BatchStream.load_state_dict: epoch={epoch}, position={position} out of range "
                f"({self.batches_per_epoch} batches per epoch)"
            )
        self.epoch, self.position = epoch, position
