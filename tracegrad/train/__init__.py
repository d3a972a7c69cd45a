"""Forward-gradient training: the ``Trainer`` loop, checkpoints and metrics.

``fit(TrainConfig(...))`` or ``Trainer(config).run()`` trains a model from
``tracegrad.nn.models`` (or any object with ``init(seed)`` and ``apply(params, x)``) on a
``tracegrad.data`` set with ``tracegrad.forward_grad`` estimates and a ``tracegrad.optim``
optimizer, writing ``metrics.csv``, ``metrics.jsonl``, ``plot.png`` and ``ckpt-*.npz``
into the run's output folder.
"""

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    TrainError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .metrics import COLUMNS, MetricsHistory
from .trainer import (
    DEFAULT_STEPS,
    MODELS,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    TrainResult,
    cross_entropy_loss,
    fit,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_STEPS",
    "MODELS",
    "Checkpoint",
    "CheckpointError",
    "MetricsHistory",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "cross_entropy_loss",
    "fit",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]
