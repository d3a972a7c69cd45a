"""Forward-gradient training (Baydin et al. 2022, Algorithm 1) with metrics and checkpoints.

Contract: each step takes the next batch of a seeded ``BatchStream``, computes the loss and
the forward-gradient estimate ``(1/K) Σ_k (∇f·v_k) v_k`` in one fused JVP execution
(``tracegrad.forward_grad``, compiled once and reused), and applies one optimizer update.
A run is a pure function of its config: the same seed gives bit-identical parameters, and
a run resumed from a checkpoint ends with exactly the parameters of an uninterrupted run.

The loss is the mean softmax cross-entropy of ``model.apply(params, x)``. Evaluation on the
test split runs a compiled primal function over chunks of ``eval_batch_size`` examples, so
memory stays bounded on large test sets. A ``DivergenceMonitor`` stops the run with
``TrainingDivergedError`` when the loss is non-finite or leaves a band around its recent
history; periodic checkpoints are written only while the loss is inside that band and the
parameters are finite, so the newest checkpoint predates any climb.

Defaults that train: ``optimizer`` and ``lr`` left ``None`` are filled in per model and
data set from ``DEFAULTS`` (``resolve_defaults``), measured to train every model on every
bundled data set; the trainer reports which it filled in (``Trainer.defaults_used``).

Never losing work: a new run refuses an output folder holding an earlier run's files
unless ``overwrite``; SIGINT (Ctrl-C) and SIGTERM stop the run at the next step boundary,
save a checkpoint, the metrics and the plot, and raise ``TrainingInterrupted``; resuming
falls back to the newest checkpoint that loads and removes stale temporary files. The
run's configuration is written to ``config.json`` beside the metrics.

``estimator`` picks the gradient estimator (``train/estimators.py``, one interface built by
``make_estimator``): ``forward`` (weight perturbation), ``activity`` (activity perturbation),
``local`` (activity perturbation of a model with local heads, a different objective) or
``backprop`` (the exact gradient of the same compiled loss, reverse mode); data,
initialization, optimizer, metrics and checkpoints stay identical, so they compare like with
like. ``mode`` is the old name of ``estimator`` and keeps working.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import numpy as tnp
from ..api import TANGENT_KINDS
from ..api import compile as tg_compile
from ..backends import to_device, to_host
from ..data import DATASETS, BatchStream, Dataset, load_dataset
from ..errors import OutputExistsError, TrainingDivergedError
from ..forward_grad import DISTRIBUTIONS
from ..optim import OPTIMIZERS, SCHEDULES, array_namespace, make_optimizer
from .checkpoint import (
    CheckpointError,
    checkpoint_path,
    clean_stale_temporaries,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from .divergence import DivergenceMonitor
from .estimators import ESTIMATORS, make_estimator
from .metrics import MetricsHistory, atomic_write_bytes

__all__ = [
    "DEFAULTS",
    "DEFAULT_STEPS",
    "MODELS",
    "MODES",
    "RUN_FILES",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "fit",
    "resolve_defaults",
]

MODELS = ("logreg", "mlp", "cnn")
MODES = ESTIMATORS  # the old name: forward, activity, local, backprop (train/estimators.py)
DEFAULT_STEPS = 2000  # used when neither steps nor epochs is given (~70 epochs of digits)

# Per-model, per-data-set optimizer and learning rate, used for the fields a config leaves
# None. Measured with 2000 steps of batch 64, seed 0, K=1 Rademacher direction (the
# defaults), on the shipped digits and real MNIST (24,345 train / 10,000 test images);
# test accuracy after 2000 steps in the comments. Plain SGD at a rate that suits logistic
# regression diverges for the networks (the forward gradient's variance grows with the
# number of parameters, docs/experiments.md); Adam normalizes each coordinate's step.
DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("logreg", "digits"): {"optimizer": "sgd", "lr": 0.01},     # 92.8% (Adam 1e-3: 85.2%)
    ("logreg", "mnist"): {"optimizer": "adam", "lr": 1e-3},     # 75.0% (SGD 1e-3: 70.3%)
    ("mlp", "digits"): {"optimizer": "adam", "lr": 1e-3},       # 90.8% (Adam 3e-4: 85.2%)
    ("mlp", "mnist"): {"optimizer": "adam", "lr": 3e-4},        # 62.4% (80% by 10k steps, docs)
    ("cnn", "digits"): {"optimizer": "adam", "lr": 3e-4},       # 62.9% (Adam 1e-3: 68% at 1500, then 36%)
    ("cnn", "mnist"): {"optimizer": "adam", "lr": 1e-3},        # small CNN: 65.5% (docs/experiments.md)
}

# Files a run writes into its output folder (besides ckpt-*.npz); a folder holding any of
# them is "used", and a new run refuses it without overwrite.
RUN_FILES = ("metrics.csv", "metrics.jsonl", "plot.png", "config.json", "summary.json")

# Config fields a resumed run must share with its checkpoint: changing any of them would
# silently continue a different run. lr, steps, eval/checkpoint cadence and out may change.
_RESUME_FIXED = ("model", "data", "batch_size", "optimizer", "schedule", "weight_decay", "directions",
                 "distribution", "seed", "model_kwargs", "estimator", "mode", "tangents", "groups", "mask",
                 "exact_output", "layerwise", "workers", "exchange")
# Why a field cannot change on resume, where the generic reason is not enough.
_RESUME_WHY = {"workers": "worker r of N trains on shard r of each batch with directions keyed by r, so the "
                          "same step with another number of workers is a different computation",
               "exchange": "the two exchanges round the update differently"}


@dataclass
class TrainConfig:
    """Everything that defines a training run; JSON-serializable (it is stored in checkpoints).

    Exactly one of ``steps`` and ``epochs`` may be set; with neither, ``DEFAULT_STEPS``.
    ``optimizer`` and ``lr`` left ``None`` take the per-model defaults in ``DEFAULTS``.
    ``out=None`` trains in memory and writes no files (and cannot resume); ``overwrite``
    lets a new run replace an earlier run's files in ``out``. ``mode`` is an alias of
    ``estimator`` (the old name; given to the constructor or ``dataclasses.replace`` it sets
    ``estimator``; ``to_dict`` writes both, so older readers find ``mode``)."""

    model: str = "logreg"
    data: str = "digits"
    data_dir: str | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    optimizer: str | None = None
    lr: float | None = None
    schedule: str = "constant"
    weight_decay: float = 0.0
    directions: int = 1
    distribution: str = "rademacher"  # unbiased like normal, ~15x cheaper to draw (docs/benchmarks.md)
    tangents: str = "dense"  # "rank1": weight tangents a bᵀ (ad/lowrank.py), applied as rank-1 updates
    backend: str = "numpy"
    seed: int = 0
    eval_every: int = 200
    checkpoint_every: int = 500
    log_every: int = 10
    out: str | None = None
    resume: bool = False
    quiet: bool = False
    plot: bool = True
    eval_batch_size: int = 1000
    keep_checkpoints: int = 3
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    estimator: str = "forward"  # forward | activity | local | backprop (train/estimators.py)
    overwrite: bool = False
    groups: int = 1  # activity, local: G block-sparse tangents per layer
    mask: bool = False  # activity, local: tangents masked by the activation's derivative
    exact_output: bool = False  # activity: the output layer takes its exact gradient, no tangent (local: always)
    layerwise: bool = False  # activity, local: every layer gets its own directions (no other layer's noise)
    workers: int = 1  # data-parallel workers (train/distributed.py); 1: this process alone
    engine: str = "mpi"  # workers > 1: "mpi" (one MPI process each) or "local" (one process plays all)
    exchange: str = "seeds"  # workers > 1: "seeds" (loss and K scalars each) or "dense" (all-reduce)

    @property
    def mode(self) -> str:
        """The old name of ``estimator``."""
        return self.estimator

    @mode.setter
    def mode(self, value: str) -> None:
        self.estimator = value

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first bad field; return ``self``."""

        def positive_int(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        for name, choices in (("model", MODELS), ("data", DATASETS), ("optimizer", tuple(OPTIMIZERS)),
                              ("schedule", SCHEDULES), ("distribution", DISTRIBUTIONS), ("estimator", ESTIMATORS)):
            if name == "optimizer" and self.optimizer is None:
                continue  # the per-model default
            if getattr(self, name) not in choices:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(choices)}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        if self.steps is not None:
            positive_int("steps", self.steps)
        if self.epochs is not None and not (isinstance(self.epochs, (int, float)) and self.epochs > 0
                                            and math.isfinite(self.epochs)):
            raise ValueError(f"epochs must be a positive number, got {self.epochs!r}")
        for name in ("batch_size", "directions", "groups", "eval_every", "checkpoint_every", "log_every",
                     "eval_batch_size", "keep_checkpoints"):
            positive_int(name, getattr(self, name))
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not (self.lr > 0 and math.isfinite(self.lr))):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or not (
                self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be a non-negative number, got {self.weight_decay!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.resume and self.out is None:
            raise ValueError("resume needs an output folder (out) to find the checkpoint in")
        if self.tangents not in TANGENT_KINDS:
            raise ValueError(f"unknown tangents {self.tangents!r}; choose one of {', '.join(TANGENT_KINDS)}")
        if self.estimator in ("activity", "local") and self.tangents != "dense":
            raise ValueError(f"tangents={self.tangents!r} perturbs weights; activity perturbation perturbs the "
                             "pre-activations (drop --tangents, or use --estimator forward)")
        if self.mode == "backprop" and self.tangents != "dense":
            raise ValueError(f"tangents={self.tangents!r} applies to forward gradients only; backprop computes "
                             "the exact gradient (drop --tangents, or use --mode forward)")
        if self.mode == "backprop" and self.directions != 1:
            raise ValueError(f"directions={self.directions} applies to forward gradients only; "
                             "backprop computes the exact gradient (drop --directions, or use "
                             "--mode forward)")
        if self.estimator not in ("activity", "local") and (self.groups != 1 or self.mask or self.layerwise):
            raise ValueError("groups, mask and layerwise apply to activity perturbation only (--estimator activity "
                             "or local)")
        if self.exact_output and self.estimator != "activity":
            raise ValueError("exact_output applies to --estimator activity (local losses always give the output "
                             "layer and the heads their exact gradients)")
        if self.estimator == "local" and self.model == "logreg":
            raise ValueError("estimator 'local' trains hidden blocks through local heads; logreg has none "
                             "(use --model mlp or cnn)")
        self._validate_workers(positive_int)
        return self

    def _validate_workers(self, positive_int: Callable[[str, Any], None]) -> None:
        from .distributed import ENGINES, EXCHANGES

        positive_int("workers", self.workers)
        for name, choices in (("engine", ENGINES), ("exchange", EXCHANGES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(choices)}")
        if self.workers == 1:
            return
        if self.mode != "forward":
            raise ValueError(f"workers={self.workers} trains with weight-perturbed forward gradients, whose "
                             "workers exchange only seeds and scalars; "
                             + ("data-parallel backprop is not implemented here (use --mode forward, e.g. "
                                "with --tangents rank1, or --workers 1)" if self.mode == "backprop" else
                                "activity perturbation is not distributed yet (use --mode forward, or "
                                "--workers 1)"))
        if self.batch_size % self.workers:
            raise ValueError(f"batch_size {self.batch_size} does not split into {self.workers} equal worker "
                             f"shards; use a multiple of {self.workers} (e.g. "
                             f"{self.workers * max(1, round(self.batch_size / self.workers))})")
        if self.backend != "numpy":
            raise ValueError(f"workers={self.workers} runs on the numpy backend only (got {self.backend!r})")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mode": self.estimator}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring keys this version does not know; a dict with only
        ``mode`` (older configs and checkpoints) gives that estimator."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "estimator" not in kw and "mode" in d:
            kw["estimator"] = d["mode"]
        return cls(**kw)


_dataclass_init = TrainConfig.__init__


@functools.wraps(_dataclass_init)
def _init_with_mode_alias(self: TrainConfig, *args: Any, mode: str | None = None, **kwargs: Any) -> None:
    # ``mode=`` (the old name) sets ``estimator``; it wins over an ``estimator`` passed beside it,
    # which is what ``dataclasses.replace(config, mode=...)`` does (it passes the old estimator)
    if mode is not None:
        kwargs["estimator"] = mode
    _dataclass_init(self, *args, **kwargs)


TrainConfig.__init__ = _init_with_mode_alias  # type: ignore[method-assign]


def resolve_defaults(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    """``config`` with ``optimizer``/``lr`` left ``None`` filled in from ``DEFAULTS`` for its
    model and data set, and a dict of the values filled in (empty when all were given).
    An explicit optimizer without an lr gets the default lr only if it is the default
    optimizer; otherwise that optimizer's usual rate (sgd/momentum 0.01, adam 1e-3)."""
    table = DEFAULTS.get((config.model, config.data), {"optimizer": "sgd", "lr": 0.01})
    filled: dict[str, Any] = {}
    if config.optimizer is None:
        filled["optimizer"] = table["optimizer"]
    if config.lr is None:
        optimizer = filled.get("optimizer", config.optimizer)
        filled["lr"] = table["lr"] if optimizer == table["optimizer"] else (
            1e-3 if optimizer == "adam" else 0.01)
    return dataclasses.replace(config, **filled), filled


def resume_conflict(saved: Mapping[str, Any], mine: Mapping[str, Any]) -> str | None:
    """Why a checkpoint made with config ``saved`` cannot continue as config ``mine``
    (``None`` when it can): the first field of ``_RESUME_FIXED`` that differs. A field the
    checkpoint predates counts as its default (the behaviour that run had)."""
    defaults = TrainConfig().to_dict()
    for key in _RESUME_FIXED:
        theirs = saved.get(key, defaults[key])
        if theirs != mine[key]:
            why = f" ({_RESUME_WHY[key]})" if key in _RESUME_WHY else ""
            return (f"was made with {key}={theirs!r} but this run has {key}={mine[key]!r}{why}; keep it "
                    "the same to resume")
    return None


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM stopped the run at a step boundary. ``checkpoint`` is the
    checkpoint saved on the way out (``None`` when nothing could be saved: no output
    folder, no step taken yet, or non-finite parameters); ``message`` says so in one line.
    A ``KeyboardInterrupt``, so code that catches Ctrl-C keeps working."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, out_dir: Path | None,
                 why_not: str | None = None, plot: bool = True):
        self.signum, self.step, self.checkpoint, self.out_dir = signum, step, checkpoint, out_dir
        name = signal.Signals(signum).name
        if checkpoint is not None:
            self.message = (f"interrupted by {name} at step {step}; saved {checkpoint} and the "
                            f"metrics{' and plot' if plot else ''} in {out_dir}; continue with --resume")
        else:
            self.message = f"interrupted by {name} at step {step}; nothing was saved ({why_not})"
        super().__init__(self.message)

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + int(self.signum)


@dataclass
class TrainResult:
    """What a finished run returns."""

    params: Any
    step: int
    train_time: float  # seconds of training, excluding evaluation and file writing
    total_time: float  # seconds of this call, everything included
    test_loss: float
    test_accuracy: float
    history: MetricsHistory
    out_dir: Path | None
    checkpoint: Path | None


def cross_entropy_loss(apply: Callable[[Any, Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """``loss(params, x, y)``: mean softmax cross-entropy of ``apply(params, x)``."""

    def loss(params: Any, x: Any, y: Any) -> Any:
        return tnp.cross_entropy(apply(params, x), y)

    return loss


def _build_model(cfg: TrainConfig, ds: Dataset) -> Any:
    # Imported here: the model zoo is a separate package and only the trainer needs it.
    from ..nn.models import build_model

    kwargs = dict(cfg.model_kwargs)
    if cfg.estimator == "local":
        kwargs.setdefault("local_heads", True)
    return build_model(cfg.model, ds.num_features, ds.num_classes, image_shape=ds.image_shape, **kwargs)


class Trainer:
    """One training run. ``Trainer(config).run()`` trains; construction loads data, builds
    and compiles the model and, with ``config.resume``, restores the latest checkpoint.

    ``model`` (anything with ``init(seed)`` and ``apply(params, x)``) and ``dataset`` may be
    passed in to bypass ``build_model``/``load_dataset``. ``log`` receives progress lines
    (default: print to stdout; nothing when ``config.quiet``)."""

    def __init__(self, config: TrainConfig, *, model: Any = None, dataset: Dataset | None = None,
                 log: Callable[[str], None] | None = None):
        cfg, self.defaults_used = resolve_defaults(config.validate())
        self.config = cfg = cfg.validate()
        self._log_fn = log if log is not None else (lambda s: print(s, flush=True))
        self.out_dir = Path(cfg.out) if cfg.out is not None else None
        if not cfg.resume:
            self._check_out_dir_unused()
        self.dataset = ds = dataset if dataset is not None else load_dataset(
            cfg.data, cfg.data_dir, flatten=cfg.model != "cnn")
        self.model = model if model is not None else _build_model(cfg, ds)

        # With a GPU backend the data moves to the device once, here; batches are sliced there.
        self._train = to_device((ds.x_train, ds.y_train), cfg.backend)
        self._test = to_device((ds.x_test, ds.y_test), cfg.backend)
        self.stream = BatchStream(*self._train, cfg.batch_size, cfg.seed)
        self.batches_per_epoch = self.stream.batches_per_epoch
        if cfg.steps is not None:
            self.total_steps = int(cfg.steps)
        elif cfg.epochs is not None:
            self.total_steps = max(1, math.ceil(cfg.epochs * self.batches_per_epoch))
        else:
            self.total_steps = DEFAULT_STEPS
        self.optimizer = make_optimizer(cfg.optimizer, float(cfg.lr), cfg.schedule,
                                        total_steps=self.total_steps,
                                        weight_decay=float(cfg.weight_decay))
        # in place: the trainer owns params and optimizer state, so no parameter-sized buffer
        # is allocated per step (same numbers as the functional update)
        self._update = self.optimizer.update_inplace or self.optimizer.update

        loss = cross_entropy_loss(self.model.apply)
        self.loss_fn = tg_compile(loss, backend=cfg.backend)  # the global loss (evaluation, finiteness)
        # keep_buffers: the estimate is applied before the next step, so its tangents may live
        # in buffers kept across steps (no parameter-sized allocation per step)
        self.estimator = make_estimator(cfg, self.model, self.loss_fn, keep_buffers=True)
        apply = self.model.apply

        def evaluate(params: Any, x: Any, y: Any) -> Any:
            logits = apply(params, x)
            return tnp.cross_entropy(logits, y), logits

        self.eval_fn = tg_compile(evaluate, backend=cfg.backend)
        self.engine: Any = None  # workers > 1: the data-parallel step (train/distributed.py)
        if cfg.workers > 1:
            from .distributed import make_engine

            self.engine = make_engine(cfg, self.loss_fn)
        # Rank 0 alone writes files and logs; every worker computes the same run.
        self.writes = self.engine is None or self.engine.rank == 0
        self.param_hash: str | None = None  # with workers: checked equal on all of them at the end

        self.params = to_device(self.model.init(cfg.seed), cfg.backend)
        self.opt_state = self.optimizer.init(self.params)
        self.step = 0
        self.train_time = 0.0
        self.history = MetricsHistory()
        self.monitor = DivergenceMonitor()
        self.last_checkpoint: Path | None = None
        self.resumed_from: Path | None = None
        self.resume_notes: list[str] = []  # checkpoints skipped because they did not load
        self._stop_signal: int | None = None
        if cfg.resume:
            self._resume()
            if self.step > self.total_steps:
                raise ValueError(
                    f"the checkpoint {self.resumed_from} is at step {self.step}, beyond the "
                    f"{self.total_steps} steps asked for; pass --steps larger than {self.step} "
                    "to continue it (a run cannot go back)")

    # -- checkpoints -----------------------------------------------------------------
    def _check_out_dir_unused(self) -> None:
        """A new run must not silently replace an earlier run's checkpoints and metrics."""
        if self.out_dir is None or self.config.overwrite or not self.out_dir.is_dir():
            return
        used = [p.name for _, p in list_checkpoints(self.out_dir)]
        used += [name for name in RUN_FILES if (self.out_dir / name).exists()]
        if used:
            raise OutputExistsError(
                f"{self.out_dir} holds an earlier run ({', '.join(used[:3])}"
                f"{', ...' if len(used) > 3 else ''}); continue it with --resume, pick another "
                "--out, or pass --overwrite to replace it")

    def _resume(self) -> None:
        assert self.out_dir is not None
        if not list_checkpoints(self.out_dir):
            raise CheckpointError(f"resume: no checkpoint (ckpt-*.npz) in {self.out_dir}; "
                                  "run without --resume to start a new run")
        ck, self.resume_notes = load_latest_checkpoint(self.out_dir)
        path = ck.path
        conflict = resume_conflict(ck.config, self.config.to_dict())
        if conflict is not None:
            raise CheckpointError(f"{path} {conflict}, or pick another out folder")
        params, opt_state = ck.restore(to_host(self.params), to_host(self.opt_state))
        self.params = to_device(params, self.config.backend)
        self.opt_state = to_device(opt_state, self.config.backend)
        try:
            self.estimator.set_state(ck.estimator_state)
            self.stream.load_state_dict(ck.stream_state)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: unusable random-number or batch state ({exc})") from None
        if isinstance(ck.estimator_state, list):
            self._log(f"{path}: made before counter-based tangents; the directions after step {ck.step} "
                      "come from (seed, step, leaf, direction) and differ from what that version would draw")
        self.step = ck.step
        self.train_time = ck.train_time
        self.history = MetricsHistory(r for r in ck.history if r["step"] <= ck.step)
        if ck.monitor_state:
            self.monitor.load_state_dict(ck.monitor_state)
        self.last_checkpoint = self.resumed_from = path

    def save_checkpoint(self) -> Path:
        """Write the current state to ``out/ckpt-<step>.npz`` (atomically). With workers,
        their parameters are checked identical first, and rank 0 alone writes."""
        if self.out_dir is None:
            raise CheckpointError("this run has no output folder (out=None); nothing to save into")
        if self.engine is not None:
            self.param_hash = self.engine.verify(self.params, self.step, self.opt_state)
            if not self.writes:
                self.last_checkpoint = checkpoint_path(self.out_dir, self.step)  # rank 0 writes it
                return self.last_checkpoint
        self.last_checkpoint = save_checkpoint(
            self.out_dir, step=self.step, params=to_host(self.params), opt_state=to_host(self.opt_state),
            estimator_state=self.estimator.state(), stream_state=self.stream.state_dict(),
            config=self.config.to_dict(), history=self.history.rows, train_time=self.train_time,
            keep=self.config.keep_checkpoints, monitor_state=self.monitor.state_dict())
        return self.last_checkpoint

    def _params_finite(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Whether the current params are finite and give a finite loss on the last batch —
        a cheap primal pass that keeps bad parameters out of checkpoints."""
        from ..tree import tree_leaves

        if not all(bool(array_namespace(leaf).isfinite(leaf).all()) for leaf in tree_leaves(self.params)):
            return False
        return bool(np.isfinite(self.loss_fn(self.params, x, y)))

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, params: Any = None) -> tuple[float, float]:
        """``(mean loss, accuracy)`` on the test split, in chunks of ``eval_batch_size``."""
        params = self.params if params is None else params
        (x_test, y_test), n, chunk = self._test, len(self.dataset.y_test), self.config.eval_batch_size
        loss_sum, correct = 0.0, 0
        for i in range(0, n, chunk):
            x, y = x_test[i:i + chunk], y_test[i:i + chunk]
            loss, logits = self.eval_fn(params, x, y)
            loss_sum += float(loss) * len(y)
            correct += int((logits.argmax(axis=1) == y).sum())  # NumPy or CuPy alike
        return loss_sum / n, correct / n

    # -- the loop --------------------------------------------------------------------
    def _log(self, msg: str) -> None:
        if not self.config.quiet and self.writes:
            self._log_fn(msg)

    def _write_metrics(self, plot: bool, note: str | None = None) -> None:
        if self.out_dir is None or not self.writes:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.history.write_csv(self.out_dir / "metrics.csv")
        self.history.write_jsonl(self.out_dir / "metrics.jsonl")
        if plot and self.config.plot and self.history.rows:
            cfg = self.config
            title = (f"{cfg.model} on {cfg.data}: {cfg.optimizer} lr={cfg.lr:g}, "
                     + (f"K={cfg.directions} forward-gradient directions" if cfg.estimator == "forward"
                        else f"{'local losses, ' if cfg.estimator == 'local' else ''}activity perturbation "
                        f"K={cfg.directions} G={cfg.groups}" + (" masked" if cfg.mask else "")
                        + (", exact output layer" if cfg.exact_output else "")
                        + (", layerwise" if cfg.layerwise else "")
                        if cfg.estimator in ("activity", "local") else "backprop"))
            self.history.plot(self.out_dir / "plot.png",
                              title=title if note is None else f"{title}\n{note}")

    def _write_config(self) -> None:
        """``config.json``: the resolved config, the defaults filled in, and the data set."""
        if self.out_dir is None or not self.writes:
            return
        from importlib.metadata import PackageNotFoundError, version

        try:
            __version__ = version("tracegrad")
        except PackageNotFoundError:
            __version__ = "unknown"

        ds = self.dataset
        doc = {"tracegrad_version": __version__, "config": self.config.to_dict(),
               "defaults_used": self.defaults_used,
               "dataset": {"name": ds.name, "data_dir": self.config.data_dir,
                           "train_examples": len(ds.y_train), "test_examples": len(ds.y_test)},
               "total_steps": self.total_steps}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.out_dir / "config.json", (json.dumps(doc, indent=2) + "\n").encode())

    def _start_fresh_out_dir(self) -> None:
        """A new run (with ``overwrite``) in a used folder: the earlier run's files would be
        mistaken for this run's, so they go."""
        if self.out_dir is None or not self.writes:
            return
        self._check_out_dir_unused()  # again: the folder may have filled since construction
        self.out_dir.mkdir(parents=True, exist_ok=True)
        old = [p for _, p in list_checkpoints(self.out_dir)]
        old += [self.out_dir / name for name in RUN_FILES if (self.out_dir / name).exists()]
        for p in old:
            p.unlink()
        if old:
            self._log(f"--overwrite: removed {len(old)} file(s) of an earlier run from {self.out_dir}")

    @contextmanager
    def _signals_stop_at_step_boundary(self) -> Iterator[None]:
        """While training, SIGINT and SIGTERM ask the loop to stop after the current step
        (so the state saved is consistent); a second Ctrl-C aborts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # the second Ctrl-C: stop now, save nothing more
            self._stop_signal = signum

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def _stop_for_signal(self, x: Any, y: Any) -> None:
        """Save what can be saved, then raise ``TrainingInterrupted``."""
        signum, self._stop_signal = self._stop_signal, None  # a later run() starts afresh
        assert signum is not None
        checkpoint, why_not = None, None
        if self.out_dir is None:
            why_not = "this run has no output folder"
        elif self.last_checkpoint is not None and self._checkpoint_step() == self.step:
            checkpoint = self.last_checkpoint
        elif self.step == 0:
            why_not = "no training step had finished yet"
        elif x is not None and not self._params_finite(x, y):
            why_not = "the parameters are no longer finite"
            if self.last_checkpoint is not None:
                why_not += f"; the last good checkpoint {self.last_checkpoint} is kept"
        else:
            checkpoint = self.save_checkpoint()
        if self.out_dir is not None and self.history.rows:
            self._write_metrics(plot=True, note=f"interrupted at step {self.step}")
        raise TrainingInterrupted(signum, self.step, checkpoint, self.out_dir, why_not,
                                  plot=self.config.plot)

    def _stop_requested(self) -> bool:
        """Whether to stop at this step boundary: a signal seen here, or with workers, one
        that any worker reported in the last step's exchange (so all stop together)."""
        if self.engine is None:
            return self._stop_signal is not None
        if self.engine.stop_signal is not None:
            self._stop_signal, self.engine.stop_signal = self.engine.stop_signal, None
            return True
        return False

    def _checkpoint_step(self) -> int | None:
        if self.last_checkpoint is None:
            return None
        return int(self.last_checkpoint.stem.split("-")[1])

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train up to ``total_steps`` (or only up to step ``stop_after``, then checkpoint
        and return, as if interrupted), evaluating and checkpointing on the way."""
        cfg = self.config
        start = time.perf_counter()
        if self.out_dir is not None and self.writes:
            stale = clean_stale_temporaries(self.out_dir)
            if stale:
                self._log(f"removed {len(stale)} stale temporary file(s) left in {self.out_dir} "
                          "by an interrupted write")
        if self.step == 0 and self.resumed_from is None:
            self._start_fresh_out_dir()
        for note in self.resume_notes:
            self._log(f"skipped an unreadable checkpoint: {note}")
        end = self.total_steps if stop_after is None else min(int(stop_after), self.total_steps)
        if self.resumed_from is not None:
            fallback = " (the newest checkpoint that loads)" if self.resume_notes else ""
            self._log(f"resumed from {self.resumed_from}{fallback} at step {self.step}")
            if self.step >= self.total_steps:
                self._log(f"the checkpoint is already at step {self.step} of {self.total_steps}: "
                          f"nothing to train; pass --steps larger than {self.step} to continue")
        self._write_config()

        from tqdm import tqdm  # imported here: only the training loop shows a bar

        remaining = end - self.step
        bar = tqdm(total=end, initial=self.step, unit="step", dynamic_ncols=True, leave=False,
                   disable=cfg.quiet or remaining < 100 or not sys.stderr.isatty())
        say = self._log if bar.disable else (lambda s: None if cfg.quiet else bar.write(s))
        # Throughput over the last 100 steps: a 10-step window swings several-fold with the
        # machine's load. The first step of a call compiles, so it is left out.
        step_times: deque[float] = deque(maxlen=100)
        first_step = True
        checkpoint_due = False
        x = y = None
        try:
            with self._signals_stop_at_step_boundary():
                while self.step < end:
                    if self._stop_requested():
                        self._stop_for_signal(x, y)
                    t0 = time.perf_counter()
                    x, y = self.stream.next()
                    if self.engine is not None:  # N workers: shards, seeds and scalars exchanged
                        loss, grads = self.engine.step(self.params, self.opt_state, x, y, self.step,
                                                       stop=self._stop_signal)
                    else:  # the tangents of (seed, step, leaf, direction): resumable without state
                        loss, grads = self.estimator(self.params, x, y, self.step)
                    loss = float(loss)
                    reason = self.monitor.update(loss)
                    if reason is not None:
                        self._diverged(self.step + 1, loss, reason)
                    self.params, self.opt_state = self._update(grads, self.opt_state, self.params)
                    dt = time.perf_counter() - t0
                    self.train_time += dt
                    if not first_step:
                        step_times.append(dt)
                    first_step = False
                    self.step += 1
                    bar.update(1)

                    step = self.step
                    is_eval = step % cfg.eval_every == 0 or step == self.total_steps
                    if is_eval or step % cfg.log_every == 0:
                        test_loss = test_acc = None
                        if is_eval:
                            test_loss, test_acc = self.evaluate()
                        rate = (len(step_times) * cfg.batch_size / sum(step_times)
                                if step_times and sum(step_times) > 0 else None)
                        self.history.append(
                            step=step, epoch=step / self.batches_per_epoch, wall_time=self.train_time,
                            train_loss=loss, test_loss=test_loss, test_accuracy=test_acc,
                            examples_per_sec=rate)
                        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                        if is_eval:
                            say(f"step {step}/{self.total_steps}  epoch {step / self.batches_per_epoch:.2f}  "
                                f"train loss {loss:.4f}  test loss {test_loss:.4f}  "
                                f"test accuracy {100 * test_acc:.2f}%  "
                                f"({rate or 0:.0f} examples/s)")
                    if self.out_dir is None:
                        continue
                    checkpoint_due = checkpoint_due or step % cfg.checkpoint_every == 0
                    if checkpoint_due or step == end:
                        if not self._params_finite(x, y):
                            self._diverged(step + 1, math.nan, "the parameters are no longer finite")
                        if step == end or self.monitor.in_band():
                            self.save_checkpoint()
                            self._write_metrics(plot=False)
                            checkpoint_due = False
                        # else: the loss is above its recent band; wait until it is back
                        # inside, so the newest checkpoint predates any climb.
                if self._stop_requested():  # a signal during the last step
                    self._stop_for_signal(x, y)
        finally:
            bar.close()

        test_loss = self.history.rows[-1]["test_loss"] if self.history.rows else None
        test_acc = self.history.rows[-1]["test_accuracy"] if self.history.rows else None
        if test_loss is None or self.history.rows[-1]["step"] != self.step:
            test_loss, test_acc = self.evaluate()
        if self.engine is not None:
            self.param_hash = self.engine.verify(self.params, self.step, self.opt_state)
        self._write_metrics(plot=True)
        return TrainResult(params=self.params, step=self.step, train_time=self.train_time,
                           total_time=time.perf_counter() - start, test_loss=test_loss,
                           test_accuracy=test_acc, history=self.history, out_dir=self.out_dir,
                           checkpoint=self.last_checkpoint)

    def _diverged(self, step: int, loss: float, reason: str) -> None:
        """Record the failing step, write metrics and the plot, raise TrainingDivergedError."""
        cfg = self.config
        self.history.append(step=step, epoch=step / self.batches_per_epoch, wall_time=self.train_time,
                            train_loss=loss)
        self._write_metrics(plot=True, note=f"diverged at step {step}")
        raise TrainingDivergedError(step, loss, self.last_checkpoint, float(cfg.lr),
                                    cfg.checkpoint_every, reason=reason)


def fit(config: TrainConfig | None = None, *, model: Any = None, dataset: Dataset | None = None,
        log: Callable[[str], None] | None = None, **overrides: Any) -> TrainResult:
    """Train with ``config`` (default ``TrainConfig()``) updated by keyword ``overrides``."""
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    return Trainer(config, model=model, dataset=dataset, log=log).run()

