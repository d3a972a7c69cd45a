"""The ``tracegrad`` command line: ``tracegrad train ...`` (more subcommands plug in).

Contract: ``main(argv)`` returns an exit status and never lets a usage error, a data error
or a diverged run escape as a traceback: those print ONE line ``tracegrad: error: ...`` on
stderr and return 2. Progress and results go to stdout.

Adding a subcommand is one entry in ``COMMANDS``: a ``Command(help, add_arguments, run)``
whose ``add_arguments(parser)`` declares its options and ``run(args) -> int`` executes it.
Heavy modules (the trainer, data loaders, matplotlib) are imported inside ``run``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn

__all__ = ["COMMANDS", "CLIError", "Command", "build_parser", "main"]

PROG = "tracegrad"


class CLIError(Exception):
    """A bad command line; the message is shown as ``tracegrad: error: <message>``."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of printing usage and exiting, so ``main``
    can report every failure the same way (one line, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{self.prog}: {message} (see '{self.prog} --help')")


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- argument types: errors name the value and the rule -------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


# -- train ------------------------------------------------------------------------------
def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .backends import BACKENDS
    from .data import DATASETS
    from .forward_grad import DISTRIBUTIONS
    from .optim import OPTIMIZERS, SCHEDULES
    from .train.trainer import DEFAULT_STEPS, MODELS, MODES, TrainConfig

    d = TrainConfig()
    # Defaults are None here and filled in later: with --resume, options not given on the
    # command line come from the checkpoint's config instead of these defaults.
    p.add_argument("--model", choices=MODELS, help=f"model to train (default {d.model})")
    p.add_argument("--data", choices=DATASETS, help=f"data set (default {d.data})")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with the MNIST IDX files (train-images-idx3-ubyte[.gz], ...)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, metavar="N",
                        help=f"number of updates (default {DEFAULT_STEPS})")
    length.add_argument("--epochs", type=_positive_float, metavar="E",
                        help="train for E passes over the training split instead of --steps")
    p.add_argument("--batch-size", type=_positive_int, metavar="B",
                   help=f"examples per step (default {d.batch_size})")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help=f"(default {d.optimizer})")
    p.add_argument("--lr", type=_positive_float, metavar="LR",
                   help=f"learning rate (default {d.lr:g})")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help=f"learning-rate schedule (default {d.schedule})")
    p.add_argument("--directions", type=_positive_int, metavar="K",
                   help=f"random tangent directions per step, averaged (default {d.directions})")
    p.add_argument("--distribution", choices=DISTRIBUTIONS,
                   help=f"distribution of the tangent directions (default {d.distribution})")
    p.add_argument("--backend", choices=BACKENDS, help=f"(default {d.backend})")
    p.add_argument("--mode", choices=MODES,
                   help=f"forward gradients, or exact gradients by backprop for comparison (default {d.mode})")
    p.add_argument("--seed", type=_nonneg_int, metavar="S",
                   help=f"seed of the initialization, batches and directions (default {d.seed})")
    p.add_argument("--out", metavar="DIR",
                   help="output folder for metrics, plot and checkpoints (default runs/MODEL-DATA)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in --out")
    p.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help=f"evaluate on the test split every N steps (default {d.eval_every})")
    p.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help=f"write a checkpoint every N steps (default {d.checkpoint_every})")
    p.add_argument("--quiet", action="store_true", help="print only the final result")


_TRAIN_OPTIONS = ("model", "data", "data_dir", "steps", "epochs", "batch_size", "optimizer", "lr",
                  "schedule", "directions", "distribution", "backend", "seed", "eval_every",
                  "checkpoint_every", "mode")


def _train_config(args: argparse.Namespace) -> Any:
    """The run's ``TrainConfig``: defaults (or, with --resume, the checkpoint's config)
    overridden by the options given on the command line."""
    import dataclasses
    from pathlib import Path

    from .train import TrainConfig, latest_checkpoint, load_checkpoint

    given = {k: getattr(args, k) for k in _TRAIN_OPTIONS if getattr(args, k) is not None}
    base = TrainConfig()
    model, data = given.get("model", base.model), given.get("data", base.data)
    out = args.out if args.out is not None else str(Path("runs") / f"{model}-{data}")
    if args.resume:
        path = latest_checkpoint(out)
        if path is None:
            raise CLIError(f"--resume: no checkpoint (ckpt-*.npz) in {out}; "
                           "run without --resume to start a new run, or pass --out DIR")
        base = TrainConfig.from_dict(load_checkpoint(path).config)
    if "steps" in given:
        base = dataclasses.replace(base, epochs=None)
    if "epochs" in given:
        base = dataclasses.replace(base, steps=None)
    config = dataclasses.replace(base, **given, out=out, resume=args.resume, quiet=args.quiet)
    if config.data == "mnist" and config.data_dir is None:
        raise CLIError("--data mnist needs --data-dir DIR, the folder holding "
                       "train-images-idx3-ubyte[.gz] and the other three MNIST IDX files")
    return config.validate()


def _run_train(args: argparse.Namespace) -> int:
    from .train import Trainer

    start = time.perf_counter()
    config = _train_config(args)
    say = (lambda s: None) if config.quiet else (lambda s: print(s, flush=True))
    trainer = Trainer(config)
    ds = trainer.dataset
    length = (f"{config.epochs:g} epochs = {trainer.total_steps} steps" if config.epochs is not None
              else f"{trainer.total_steps} steps")
    say(f"training {config.model} on {config.data} ({len(ds.y_train)} train / {len(ds.y_test)} test "
        f"examples) with {'forward gradients' if config.mode == 'forward' else 'backprop'}: {config.optimizer} lr={config.lr:g} ({config.schedule}), "
        f"{length} of batch {config.batch_size}, K={config.directions} {config.distribution} "
        f"direction(s), seed {config.seed} -> {config.out}")
    result = trainer.run()
    total = time.perf_counter() - start
    print(f"test accuracy {100 * result.test_accuracy:.2f}% (test loss {result.test_loss:.4f}) "
          f"after {result.step} steps; training time {result.train_time:.2f} s, "
          f"total {total:.2f} s; outputs in {result.out_dir}", flush=True)
    return 0


COMMANDS: dict[str, Command] = {
    "train": Command("train a model with forward gradients (Baydin et al. 2022)",
                     _add_train_arguments, _run_train),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog=PROG, description="tracegrad: a tracing compiler for forward-mode "
                                            "automatic differentiation and forward-gradient training")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from .data import DataError
    from .errors import TracegradError
    from .train import TrainError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CLIError as exc:
        return _fail(str(exc))
    except SystemExit as exc:  # --help and --version exit through argparse
        return int(exc.code or 0)
    if args.command is None:
        return _fail(f"choose a command: {', '.join(COMMANDS)} (see '{PROG} --help')")
    try:
        return COMMANDS[args.command].run(args)
    # ValueError: option combinations rejected by the config or the optimizer factories;
    # OSError: e.g. an output folder that cannot be written.
    except (CLIError, DataError, TrainError, TracegradError, ValueError, OSError) as exc:
        return _fail(_one_line(exc))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(PROG):
            return _fail(f"{exc.name} is not available in this installation of tracegrad")
        raise
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue from the latest checkpoint with --resume",
              file=sys.stderr, flush=True)
        return 130
