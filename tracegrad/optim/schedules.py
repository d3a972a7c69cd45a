"""Learning-rate schedules: callables ``step -> lr`` (a Python float).

Contract: ``step`` is the number of updates already applied (0 for the first
update). Schedules are small frozen dataclasses, so they compare, print and
pickle, and they return Python floats so a float32 parameter stays float32 when
multiplied by the learning rate (NumPy 2 treats Python scalars as weak).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ConstantSchedule",
    "CosineDecay",
    "ExponentialDecay",
    "Schedule",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "resolve_lr",
]

Schedule = Callable[[int], float]
LearningRate = float | Schedule


@dataclass(frozen=True)
class ConstantSchedule:
    lr: float

    def __call__(self, step: int) -> float:
        return float(self.lr)


@dataclass(frozen=True)
class ExponentialDecay:
    """``lr0 * exp(-k * step)``: the schedule of Baydin et al. (2022), forward gradients."""

    lr0: float
    k: float = 1e-4

    def __call__(self, step: int) -> float:
        return float(self.lr0 * math.exp(-self.k * step))


@dataclass(frozen=True)
class CosineDecay:
    """Half a cosine from ``lr0`` at step 0 to ``final_lr`` at ``total_steps``, flat after."""

    lr0: float
    total_steps: int
    final_lr: float = 0.0

    def __call__(self, step: int) -> float:
        frac = min(max(step, 0), self.total_steps) / self.total_steps
        return float(
            self.final_lr + (self.lr0 - self.final_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))
        )


def constant(lr: float) -> ConstantSchedule:
    """The same ``lr`` at every step."""
    return ConstantSchedule(float(lr))


def exponential_decay(lr0: float, k: float = 1e-4) -> ExponentialDecay:
    """``lr0 * exp(-k * step)``; ``k`` must be non-negative (a growing lr is a bug)."""
    if k < 0:
        raise ValueError(f"exponential_decay: k must be >= 0, got {k}")
    return ExponentialDecay(float(lr0), float(k))


def cosine_decay(lr0: float, total_steps: int, final_lr: float = 0.0) -> CosineDecay:
    """Cosine annealing over ``total_steps`` updates, then held at ``final_lr``."""
    if int(total_steps) != total_steps or total_steps <= 0:
        raise ValueError(
            f"cosine_decay: total_steps must be a positive integer, got {total_steps!r}"
        )
    return CosineDecay(float(lr0), int(total_steps), float(final_lr))


def resolve_lr(lr: LearningRate) -> Schedule:
    """Turn a float or a schedule into a schedule, so optimizers handle one case."""
    if callable(lr):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a float or a callable step -> lr, got {type(lr).__name__}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    return ConstantSchedule(float(lr))
