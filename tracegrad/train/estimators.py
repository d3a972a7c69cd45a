"""Gradient estimators behind one interface, for the trainer (issue 12).

An estimator turns ``(params, x, y, step)`` into ``(loss, grads)``; the trainer neither knows
nor cares how. Four implement it:

- ``forward``: weight-perturbation forward gradients (``tracegrad.forward_grad``, Baydin et al.
  2022): ``(∇f·v) v`` for random weight tangents v; unbiased for the global loss, variance
  growing with the parameter count.
- ``activity``: activity-perturbed forward gradients (``tracegrad.activity_grad``, Ren et al.
  2023): tangents at every layer's pre-activation, optionally masked and grouped; unbiased for
  the global loss.
- ``local``: activity perturbation of a model with local heads (``tracegrad.nn`` ``mlp``/``cnn``
  with ``local_heads=True``): each hidden block learns from its own head's loss through a
  stop-gradient, heads and output layer take their exact local gradient. Unbiased for the
  *local* objective (the sum of the heads' and the output's cross-entropies), which is not
  the global loss.
- ``backprop``: the exact gradient of the global loss (reverse mode), for comparison.

``state()`` / ``set_state()`` carry what a checkpoint must record. The random directions are
a pure function of ``(seed, step, leaf, direction)`` (``tracegrad.random``), so the state is
only the seed and distribution, kept to refuse resuming with different ones; checkpoints
made before this interface stored the sampler's state alone (``sampler_state``) and still
load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .. import numpy as tnp
from ..activity import activity_grad
from ..api import compile as tg_compile
from ..api import value_and_grad
from ..forward_grad import forward_grad

__all__ = ["ESTIMATORS", "Estimator", "GradientEstimator", "make_estimator"]

ESTIMATORS = ("forward", "activity", "local", "backprop")
STATE_VERSION = 1


@runtime_checkable
class Estimator(Protocol):
    """What the trainer needs from a gradient estimator."""

    name: str
    objective: Callable[..., Any]  # loss(params, x, y): the function whose gradient it estimates

    def __call__(self, params: Any, x: Any, y: Any, step: int) -> tuple[Any, Any]:
        """``(loss, gradient estimate)`` for one batch at training step ``step``."""
        ...

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores (JSON-serializable)."""
        ...

    def set_state(self, state: Any) -> None:
        """Accept a checkpoint's ``state()`` (or an older checkpoint's sampler state)."""
        ...


class GradientEstimator:
    """The estimators tracegrad ships: ``estimate(*args, step=...)`` (a ``forward_grad`` /
    ``activity_grad`` / ``value_and_grad`` function) on ``objective``; ``sampler`` is the
    direction sampler (None for backprop)."""

    def __init__(self, name: str, objective: Callable[..., Any], estimate: Callable[..., tuple[Any, Any]],
                 sampler: Any = None):
        self.name, self.objective, self._estimate, self.sampler = name, objective, estimate, sampler

    def __call__(self, params: Any, x: Any, y: Any, step: int) -> tuple[Any, Any]:
        if self.sampler is None:
            return self._estimate(params, x, y)
        return self._estimate(params, x, y, step=step)

    def state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "estimator": self.name,
                "sampler": None if self.sampler is None else self.sampler.state()}

    def set_state(self, state: Any) -> None:
        """Check a stored state against this estimator. Accepts this module's format and the
        sampler states of older checkpoints (a dict with the seed, or a list of bit-generator
        states from before counter-based tangents), which carry no estimator name."""
        if isinstance(state, dict) and "estimator" in state:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown estimator state version {state.get('version')!r}")
            if state["estimator"] != self.name:
                raise ValueError(f"the state is the {state['estimator']!r} estimator's, this is {self.name!r}")
            state = state["sampler"]
        if self.sampler is not None and state is not None:
            self.sampler.set_state(state)

    def __repr__(self) -> str:
        return f"<{self.name} gradient estimator of {getattr(self.objective, '__name__', 'a loss')}>"


def _cross_entropy(apply: Callable[[Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    def loss(params: Any, x: Any, y: Any) -> Any:
        return tnp.cross_entropy(apply(params, x), y)

    return loss


def make_estimator(config: Any, model: Any, loss: Callable[..., Any] | None = None, *,
                   keep_buffers: bool = False) -> GradientEstimator:
    """The estimator ``config.estimator`` names, for ``model`` (``init``/``apply``, and
    ``local_loss`` for ``local``) with ``config``'s directions, distribution, seed, tangents,
    groups, mask and backend. ``loss`` (default: the mean cross-entropy of ``model.apply``,
    compiled) is the global objective; ``local`` ignores it and uses ``model.local_loss``.
    ``keep_buffers``: the forward estimator forms each estimate in buffers kept across
    calls (``forward_grad(keep_buffers=True)``), so an estimate is valid only until the
    next call — right for a trainer that applies it at once."""
    name = config.estimator
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    if name == "local":
        local = getattr(model, "local_loss", None)
        if local is None:
            raise ValueError(f"estimator 'local' needs a model with local heads; {getattr(model, 'name', model)!r} "
                             "has none (use --model mlp or cnn, which get local_heads=True with --estimator local)")
        objective = tg_compile(local, backend=config.backend)
    else:
        objective = loss if loss is not None else tg_compile(_cross_entropy(model.apply), backend=config.backend)
    if name == "backprop":
        return GradientEstimator(name, objective, value_and_grad(objective, argnums=0))
    if name == "forward":
        est = forward_grad(objective, argnums=0, directions=config.directions, distribution=config.distribution,
                           seed=config.seed, tangents=config.tangents, keep_buffers=keep_buffers)
    else:  # activity, local: tangents at the pre-activations; local adds exact gradients at the heads
        est = activity_grad(objective, argnums=0, directions=config.directions, groups=config.groups,
                            mask=config.mask, distribution=config.distribution, seed=config.seed,
                            exact_last=name == "local" or bool(getattr(config, "exact_output", False)),
                            layerwise=bool(getattr(config, "layerwise", False)))
    return GradientEstimator(name, objective, est, est.sampler)
