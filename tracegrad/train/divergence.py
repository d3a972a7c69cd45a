"""Early divergence detection: the loss leaving a band around its recent history.

Contract: ``DivergenceMonitor.update(loss)`` is called once per training step with that
step's batch loss and returns ``None`` while the run is healthy, or a one-line reason once
it has diverged. A run has diverged when

- the loss is NaN or infinite; or
- the *level* of the loss (the median of the last ``short`` batch losses, so one unlucky
  batch never counts) is more than ``3 * initial + 1`` nats, where ``initial`` is the
  level of the run's first ``short`` steps: the model is then far worse than at
  initialization (a slow blow-up is caught here, long before the loss overflows); or
- the level is more than ``10 * recent + 1``, where ``recent`` is the median of the up to
  ``window`` losses before those ``short`` ones: a jump of an order of magnitude.

``in_band`` says whether the level is inside the band around the recent history
(``recent + max(4 sigma, recent / 2, 0.05)``, sigma a robust spread from the median
absolute deviation). The trainer writes periodic checkpoints only while the loss is in
the band, so when a run starts to climb, the newest checkpoint is one from before the
climb, not the last finite one. Forward-gradient losses are noisy; medians and the
generous thresholds keep a healthy run from being stopped by its own noise.

The state (initial level and the recent losses) is JSON-serializable and travels in the
checkpoint, so a resumed run judges divergence exactly as the uninterrupted one.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

__all__ = ["DivergenceMonitor"]


def _median(values: list[float]) -> float:
    """``float(np.median(values))`` for a short list of finite floats, in plain Python (the
    per-step check ran three NumPy medians: ~40 µs, a quarter of a logistic-regression
    step). The same number: the middle element, or the two middle ones' sum halved."""
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


class DivergenceMonitor:
    """Watches the per-step loss; see the module docstring for the rules."""

    def __init__(self, window: int = 100, short: int = 10) -> None:
        self.window, self.short = int(window), int(short)
        self.initial: float | None = None
        self.losses: deque[float] = deque(maxlen=self.window + self.short)

    # -- the three numbers the rules compare ----------------------------------------
    def level(self) -> float | None:
        """Median of the last ``short`` losses (``None`` until there are that many)."""
        if len(self.losses) < self.short:
            return None
        return _median(list(self.losses)[-self.short:])

    def _recent_median(self) -> float | None:
        """The median of the losses before the last ``short`` (``None`` while too few)."""
        before = list(self.losses)[:-self.short]
        return _median(before) if len(before) >= self.short else None

    def _recent(self) -> tuple[float, float] | None:
        """``(median, robust sigma)`` of the losses before the last ``short``."""
        med = self._recent_median()
        if med is None:
            return None
        before = list(self.losses)[:-self.short]
        sigma = 1.4826 * float(np.median(np.abs(np.asarray(before) - med)))
        return med, sigma

    def band(self) -> float | None:
        """The upper edge of the band around the recent history (``None`` while too short)."""
        recent = self._recent()
        if recent is None:
            return None
        med, sigma = recent
        return med + max(4.0 * sigma, 0.5 * med, 0.05)

    def in_band(self) -> bool:
        """Whether the current level is inside the band (``True`` while there is too little
        history to tell)."""
        level, upper = self.level(), self.band()
        return level is None or upper is None or level <= upper

    # -- per step ----------------------------------------------------------------------
    def update(self, loss: float) -> str | None:
        """Record one step's loss; a reason string once the run has diverged."""
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        self.losses.append(float(loss))
        level = self.level()
        if level is None:
            return None
        if self.initial is None:
            self.initial = level
        limit = 3.0 * self.initial + 1.0
        if level > limit:
            return (f"the loss level (median of the last {self.short} batches) is {level:.4g}, "
                    f"above 3 x its initial level {self.initial:.4g} + 1")
        recent = self._recent_median()  # the spread is for in_band only: not computed per step
        if recent is not None and level > 10.0 * recent + 1.0:
            return (f"the loss level (median of the last {self.short} batches) jumped to "
                    f"{level:.4g} from {recent:.4g} over the previous {len(self.losses) - self.short} steps")
        return None

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "losses": list(self.losses)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        initial = state.get("initial")
        self.initial = None if initial is None else float(initial)
        self.losses.clear()
        self.losses.extend(float(v) for v in state.get("losses", []))
