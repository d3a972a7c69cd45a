"""Optimizers and learning-rate schedules for training with (forward) gradients.

Contract: optimizers are pure ``init``/``update`` function pairs over pytrees
of NumPy or CuPy arrays (see ``optimizers``); schedules are ``step -> lr``
callables (see ``schedules``). ``make_optimizer`` builds either from the
strings a command line gives.
"""

from __future__ import annotations

from .optimizers import (
    OPTIMIZERS,
    SCHEDULES,
    AdamState,
    MomentumState,
    Optimizer,
    SGDState,
    adam,
    array_namespace,
    make_optimizer,
    momentum,
    sgd,
)
from .schedules import (
    ConstantSchedule,
    CosineDecay,
    ExponentialDecay,
    Schedule,
    constant,
    cosine_decay,
    exponential_decay,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "AdamState",
    "ConstantSchedule",
    "CosineDecay",
    "ExponentialDecay",
    "MomentumState",
    "Optimizer",
    "SGDState",
    "Schedule",
    "adam",
    "array_namespace",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "make_optimizer",
    "momentum",
    "sgd",
]
