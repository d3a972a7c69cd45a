"""Forward-gradient training: the ``Trainer`` loop, checkpoints and metrics.

``fit(TrainConfig(...))`` or ``Trainer(config).run()`` trains a model from
``tracegrad.nn.models`` (or any object with ``init(seed)`` and ``apply(params, x)``) on a
``tracegrad.data`` set with ``tracegrad.forward_grad`` estimates and a ``tracegrad.optim``
optimizer, writing ``config.json``, ``metrics.csv``, ``metrics.jsonl``, ``plot.png`` and
``ckpt-*.npz`` into the run's output folder. Optimizer and learning rate default per model
and data set (``DEFAULTS``); a ``DivergenceMonitor`` stops runs whose loss leaves the band
around its recent history; Ctrl-C/SIGTERM raise ``TrainingInterrupted`` after saving.
"""

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    TrainError,
    clean_stale_temporaries,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from .divergence import DivergenceMonitor
from .metrics import COLUMNS, MetricsHistory
from .trainer import (
    DEFAULT_STEPS,
    DEFAULTS,
    MODELS,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    TrainingInterrupted,
    TrainResult,
    cross_entropy_loss,
    fit,
    resolve_defaults,
)

__all__ = [
    "COLUMNS",
    "DEFAULTS",
    "DEFAULT_STEPS",
    "MODELS",
    "Checkpoint",
    "CheckpointError",
    "DivergenceMonitor",
    "MetricsHistory",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "clean_stale_temporaries",
    "cross_entropy_loss",
    "fit",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest_checkpoint",
    "resolve_defaults",
    "save_checkpoint",
]
