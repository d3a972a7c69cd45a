"""Shared by the estimator tests: the sample mean of many stochastic gradient estimates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def mean_and_se(g: Callable[..., tuple[Any, Any]], args: tuple, calls: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per leaf of the (dict) estimate: the mean over ``calls`` independent estimates
    ``g(*args, step=t)`` (t = 0 .. calls-1) and its standard error."""
    samples = [g(*args, step=t)[1] for t in range(calls)]
    out = {}
    for k in samples[0]:
        s = np.stack([e[k] for e in samples])
        out[k] = (s.mean(0), s.std(0, ddof=1) / np.sqrt(calls))
    return out
