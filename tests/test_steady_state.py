"""A training step leaves nothing behind: no reference cycles (so memory is freed at once,
not when the cycle collector happens to run) and no growth over many steps."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from tracegrad.train import TrainConfig, Trainer
from tracegrad.tree import tree_flatten, tree_unflatten


def _trainer(**kw):
    cfg = {"model": "mlp", "data": "digits", "steps": 1000, "batch_size": 32, "lr": 0.01, "quiet": True,
           "plot": False, "eval_every": 10**6, "checkpoint_every": 10**6, "model_kwargs": {"hidden": [128]},
           "distribution": "rademacher"}
    cfg.update(kw)
    return Trainer(TrainConfig(**cfg))


def _steps(t, n):
    for _ in range(n):
        x, y = t.stream.next()
        _, grads = t.estimator(t.params, x, y, t.step)
        t.params, t.opt_state = t._update(grads, t.opt_state, t.params)
        t.step += 1


def test_pytree_functions_create_no_cycles():
    tree = {"a": [np.ones(3), (np.zeros(2), None)], "b": np.ones(1)}
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            leaves, td = tree_flatten(tree)
            tree_unflatten(td, leaves)
        assert gc.collect() == 0
    finally:
        gc.enable()
    with pytest.raises(ValueError, match="too few leaves"):
        tree_unflatten(td, leaves[:-1])


@pytest.mark.parametrize("mode,optimizer", [("forward", "sgd"), ("forward", "momentum"), ("backprop", "adam")])
def test_fifty_training_steps_leave_memory_flat_without_the_cycle_collector(mode, optimizer):
    t = _trainer(mode=mode, optimizer=optimizer)
    param_bytes = sum(p.nbytes for p in tree_flatten(t.params)[0])
    _steps(t, 5)  # warm: compile caches filled
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        _steps(t, 5)
        before = tracemalloc.get_traced_memory()[0]
        _steps(t, 50)
        after = tracemalloc.get_traced_memory()[0]
        cycles = gc.collect()
        settled = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        gc.enable()
    assert cycles == 0  # nothing a step made needed the cycle collector
    # what is still allocated after 50 more steps: less than one parameter set (a leak of the
    # old parameters, gradients or tangents per step would be 50 of them); the slack before
    # the collection is interpreter free lists, which gc.collect() empties
    assert settled - before < param_bytes
    assert after - before < 5 * param_bytes
    assert np.isfinite(float(t.loss_fn(t.params, *t.stream.next())))
