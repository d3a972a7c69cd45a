"""The ``tracegrad`` command line: ``tracegrad train ...``, ``tracegrad graph ...``.

Contract: ``main(argv)`` returns an exit status and never lets a usage error, a data error
or a diverged run escape as a traceback: those print ONE line ``tracegrad: error: ...`` on
stderr. The status says which: 2 for a usage error (a bad option or combination, an output
folder in use, ``--resume`` with nothing to resume, a traced function that is wrong for the
shapes given), 1 for a failure at run time (a diverged run, a data, checkpoint or I/O error,
a missing program or package such as Graphviz or CuPy), 128 + the signal
number for a run stopped by SIGINT/SIGTERM (which saves a checkpoint first). Progress and
results go to stdout.

Adding a subcommand is one entry in ``COMMANDS``: a ``Command(help, add_arguments, run)``
whose ``add_arguments(parser)`` declares its options and ``run(args) -> int`` executes it.
Heavy modules (the trainer, data loaders, matplotlib) are imported inside ``run``.
"""

from __future__ import annotations

import argparse
import math
import os
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
        # No "{prog}: " in front: main() prints "tracegrad: error: " already.
        raise CLIError(f"{message} (see '{self.prog} --help')")


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- argument types: errors name the value and the rule -------------------------------
def _number(convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert(text)``, which must satisfy ``ok``; errors say ``what``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_nonneg_float = _number(float, lambda v: v >= 0 and math.isfinite(v), "a non-negative number")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return values


# -- train ------------------------------------------------------------------------------
def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from .api import TANGENT_KINDS
    from .backends import BACKENDS
    from .data import DATASETS
    from .forward_grad import DISTRIBUTIONS
    from .optim import OPTIMIZERS, SCHEDULES
    from .train.trainer import DEFAULT_STEPS, DEFAULTS, MODELS, MODES, TrainConfig

    d = TrainConfig()
    per_model = "; ".join(f"{m} on {data}: {v['optimizer']} {v['lr']:g}" for (m, data), v in DEFAULTS.items())
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
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS),
                   help="(default per model and data set, measured to train; the run prints the "
                        f"ones in use: {per_model})")
    p.add_argument("--lr", type=_positive_float, metavar="LR",
                   help="learning rate (default per model and data set, see --optimizer)")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help=f"learning-rate schedule (default {d.schedule}; exp is the paper's "
                        "lr0 * e^(-1e-4 step))")
    p.add_argument("--weight-decay", type=_nonneg_float, metavar="WD",
                   help=f"L2 weight decay (default {d.weight_decay:g})")
    p.add_argument("--hidden", type=_int_list, metavar="N,N,...",
                   help="hidden layer sizes of the mlp (default 1024,1024), or the cnn's "
                        "hidden linear layer (one size, default 1024)")
    p.add_argument("--channels", type=_int_list, metavar="C,C,C,C",
                   help="the cnn's four conv channel counts (default 64,64,64,64; e.g. 8,8,16,16 "
                        "for a fast CPU run)")
    p.add_argument("--head-cells", type=_positive_int, metavar="N",
                   help="--model cnn --estimator local: average-pool each conv block's map to about NxN cells "
                        "for its head (default 2; 7 learns far better on MNIST, docs/experiments.md)")
    p.add_argument("--directions", type=_positive_int, metavar="K",
                   help=f"random tangent directions per step, averaged (default {d.directions})")
    p.add_argument("--distribution", choices=DISTRIBUTIONS,
                   help=f"distribution of the tangent directions (default {d.distribution})")
    p.add_argument("--tangents", choices=TANGENT_KINDS,
                   help="dense tangents, or rank-1 weight tangents a bᵀ (cheaper JVP, applied as a rank-1 "
                        f"update; default {d.tangents})")
    p.add_argument("--backend", choices=BACKENDS, help=f"(default {d.backend})")
    p.add_argument("--mode", "--estimator", choices=MODES, dest="mode",
                   help="forward: weight-perturbed forward gradients; activity: tangents at each layer's "
                        "pre-activation (tracegrad.activity_grad); local: activity perturbation with a local "
                        "loss head per hidden block (mlp, cnn; a different objective than the global loss); "
                        f"backprop: exact gradients, for comparison (default {d.mode}; --mode is the old name)")
    p.add_argument("--groups", type=_positive_int, metavar="G",
                   help=f"with --estimator activity or local: G block-sparse tangents per layer (default {d.groups})")
    p.add_argument("--mask", action="store_true", default=None,
                   help="with --estimator activity or local: mask the tangents by the activation's derivative")
    p.add_argument("--layerwise", action="store_true", default=None,
                   help="with --estimator activity or local: every layer gets its own K*G directions, so its "
                        "estimate carries none of the other layers' noise (one execution still; about the same "
                        "cost when the later layers are narrow)")
    p.add_argument("--exact-output", action="store_true", default=None, dest="exact_output",
                   help="with --estimator activity: no tangent at the output layer, which takes its exact gradient "
                        "(softmax cross-entropy's VJP, a local product); the hidden layers' estimates lose its noise")
    p.add_argument("--seed", type=_nonneg_int, metavar="S",
                   help=f"seed of the initialization, batches and directions (default {d.seed})")
    p.add_argument("--out", metavar="DIR",
                   help="output folder for metrics, plot and checkpoints (default runs/MODEL-DATA)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue from the latest checkpoint in --out (the newest one that loads)")
    start.add_argument("--overwrite", action="store_true",
                       help="start a new run in an --out folder that holds an earlier run, deleting "
                            "its checkpoints and metrics (without it such a folder is refused)")
    p.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help=f"evaluate on the test split every N steps (default {d.eval_every})")
    p.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help=f"write a checkpoint every N steps (default {d.checkpoint_every})")
    p.add_argument("--target-loss", type=_positive_float, metavar="L",
                   help="also report the training time and step at which the test loss first "
                        "reached L (in the final line and summary.json)")
    p.add_argument("--quiet", action="store_true", help="print only the final result")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="data-parallel workers, each on 1/N of every batch, exchanging seeds and scalars "
                        "(default 1; with --engine mpi this starts mpiexec -n N)")
    p.add_argument("--engine", choices=("mpi", "local"),
                   help=f"with --workers: one MPI process per worker, or one process playing them all "
                        f"(default {d.engine})")
    p.add_argument("--exchange", choices=("seeds", "dense"),
                   help="with --workers: send each worker's loss and K directional derivatives (seeds), or "
                        f"all-reduce the estimate (dense) (default {d.exchange})")


_TRAIN_OPTIONS = ("model", "data", "data_dir", "steps", "epochs", "batch_size", "optimizer", "lr",
                  "schedule", "weight_decay", "directions", "distribution", "backend", "seed", "eval_every",
                  "checkpoint_every", "mode", "tangents", "groups", "mask", "exact_output", "layerwise", "workers",
                  "engine", "exchange")


def _train_config(args: argparse.Namespace) -> Any:
    """The run's ``TrainConfig``: defaults (or, with --resume, the checkpoint's config)
    overridden by the options given on the command line."""
    import dataclasses
    from pathlib import Path

    from .train import TrainConfig, list_checkpoints
    from .train.checkpoint import load_latest_checkpoint

    given = {k: getattr(args, k) for k in _TRAIN_OPTIONS if getattr(args, k) is not None}
    base = TrainConfig()
    model, data = given.get("model", base.model), given.get("data", base.data)
    out = args.out if args.out is not None else str(Path("runs") / f"{model}-{data}")
    if args.resume:
        if not list_checkpoints(out):
            raise CLIError(f"--resume: no checkpoint (ckpt-*.npz) in {out}; "
                           "run without --resume to start a new run, or pass --out DIR")
        checkpoint, _ = load_latest_checkpoint(out)  # the trainer reports skipped ones
        base = TrainConfig.from_dict(checkpoint.config)
        if "steps" in given and given["steps"] < checkpoint.step:
            raise CLIError(f"--resume --steps {given['steps']}: the checkpoint {checkpoint.path} is "
                           f"already at step {checkpoint.step}; a run cannot go back, so pass --steps "
                           f"larger than {checkpoint.step} to continue it (or --out DIR for a new run)")
    if "steps" in given:
        base = dataclasses.replace(base, epochs=None)
    if "epochs" in given:
        base = dataclasses.replace(base, steps=None)
    model = given.get("model", base.model)
    model_kwargs = dict(base.model_kwargs) if model == base.model else {}
    if args.hidden is not None:
        if model == "logreg":
            raise CLIError("--hidden applies to --model mlp or cnn, not logreg")
        if model == "cnn" and len(args.hidden) != 1:
            raise CLIError(f"--hidden for the cnn is one size (its hidden linear layer), got {args.hidden}")
        model_kwargs["hidden"] = args.hidden if model == "mlp" else args.hidden[0]
    if args.channels is not None:
        if model != "cnn":
            raise CLIError("--channels applies to --model cnn only")
        if len(args.channels) != 4:
            raise CLIError(f"--channels takes four conv channel counts, got {len(args.channels)}")
        model_kwargs["channels"] = args.channels
    if args.head_cells is not None:
        if model != "cnn":
            raise CLIError("--head-cells applies to --model cnn only (the local heads of its conv blocks)")
        model_kwargs["head_cells"] = args.head_cells
    config = dataclasses.replace(base, **given, out=out, resume=args.resume, quiet=args.quiet,
                                 overwrite=args.overwrite, model_kwargs=model_kwargs)
    if config.data == "mnist" and config.data_dir is None:
        raise CLIError("--data mnist needs --data-dir DIR, the folder holding "
                       "train-images-idx3-ubyte[.gz] and the other three MNIST IDX files")
    try:
        config.validate()
    except ValueError as exc:  # a bad combination of options: a usage error
        raise CLIError(str(exc).replace("directions=", "--directions ").replace("workers=", "--workers ")) from None
    if args.resume:  # options that would silently continue a different run: a usage error
        from .train.trainer import resume_conflict

        conflict = resume_conflict(checkpoint.config, config.to_dict())
        if conflict is not None:
            raise CLIError(f"{checkpoint.path} {conflict.replace('workers=', '--workers ')}, or pick "
                           "another --out")
    return config


def _describe_data(config: Any, ds: Any) -> str:
    """Which data set a run uses, said plainly (the examples once fell back silently)."""
    from pathlib import Path

    sizes = f"{len(ds.y_train)} train / {len(ds.y_test)} test examples"
    if config.data == "mnist":
        return f"MNIST from {Path(config.data_dir).resolve()} ({sizes})"
    return f"the 8x8 digits shipped with tracegrad, not MNIST ({sizes})"


def _run_train(args: argparse.Namespace) -> int:


    start = time.perf_counter()
    config = _train_config(args)
    if "PMI_SIZE" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ:
        from .train.distributed import launcher_size

        size = launcher_size()
        if size > 1 and not (config.workers == size and config.engine == "mpi"):
            raise CLIError(f"this command was started as {size} MPI processes, but it asks for "
                           f"--workers {config.workers}" + (" --engine local" if config.engine == "local" else "")
                           + f": each process would train alone and overwrite the others' files; pass "
                           f"--workers {size} (engine mpi), or start one process")
    if config.workers > 1 and config.engine == "mpi":
        from .train import distributed

        if not distributed.under_mpi_launcher():  # start the N workers, each running this command
            return distributed.launch(args.argv, config.workers)

        world = distributed.join_world(config.workers)
        with distributed.abort_on_failure(world, passes=_agreed_failures()):
            return _train(args, config, start, world.rank)
    return _train(args, config, start, 0)


def _secondary_worker() -> bool:
    distributed = sys.modules.get("tracegrad.train.distributed")  # loaded only by data-parallel runs
    return distributed is not None and distributed.secondary_worker()


def _agreed_failures() -> tuple[type[BaseException], ...]:
    """What every data-parallel worker raises at the same step, from the same (exchanged) loss
    and the same parameters: these end each worker normally instead of aborting the job."""
    from .train.trainer import TrainingDivergedError, TrainingInterrupted

    return TrainingInterrupted, TrainingDivergedError


def _train(args: argparse.Namespace, config: Any, start: float, rank: int) -> int:
    """Train ``config`` in this process (worker ``rank`` of a data-parallel run: only rank 0
    prints progress and writes files; every worker prints its parameter hash)."""
    import json
    from pathlib import Path

    from .train import Trainer
    from .train.metrics import atomic_write_bytes

    say = (lambda s: None) if config.quiet or rank else (lambda s: print(s, flush=True))
    try:
        trainer = Trainer(config)
    except KeyboardInterrupt:
        raise _Interrupted("interrupted while loading the data and compiling the model, before "
                           "any training step; nothing was saved") from None
    config, ds = trainer.config, trainer.dataset
    length = (f"{config.epochs:g} epochs = {trainer.total_steps} steps" if config.epochs is not None
              else f"{trainer.total_steps} steps")
    say(f"data: {_describe_data(config, ds)}")
    say(f"training {config.model} on {config.data} with "
        f"{ {'forward': 'forward gradients', 'activity': 'activity-perturbed forward gradients', 'local': 'local losses and activity-perturbed forward gradients'}.get(config.mode, 'backprop')}: {config.optimizer} "
        f"lr={config.lr:g} ({config.schedule}), {length} of batch {config.batch_size}, "
        + (f"K={config.directions} {config.distribution} {config.tangents} direction(s), "
           if config.mode == "forward" else "")
        + (f"K={config.directions} {config.distribution} direction(s), " if config.mode in ("activity", "local") else "")
        + (f"G={config.groups} group(s){', masked' if config.mask else ''}"
           f"{', exact output layer' if config.exact_output else ''}{', layerwise' if config.layerwise else ''}, "
           if config.mode in ("activity", "local") else "")
        + (f"{config.workers} workers ({config.engine} engine, {config.exchange} exchange), "
           if config.workers > 1 else "")
        + f"seed {config.seed} -> {config.out}")
    if trainer.defaults_used:
        say("defaults in use for " + f"{config.model} on {config.data}: "
            + ", ".join(f"--{k} {v:g}" if isinstance(v, float) else f"--{k} {v}"
                        for k, v in trainer.defaults_used.items())
            + " (pass them to change)")
    result = trainer.run()
    total = time.perf_counter() - start
    if trainer.engine is not None:  # equal on every worker (checked), printed by each
        who = (f"worker {rank} of {config.workers}" if config.engine == "mpi"
               else f"{config.workers} workers (local engine)")
        print(f"{who}: parameter hash {trainer.param_hash} after step {result.step}", flush=True)
        if rank:
            return 0
    summary = {"model": config.model, "data": config.data, "data_dir": config.data_dir,
               "train_examples": len(ds.y_train), "test_examples": len(ds.y_test),
               "optimizer": config.optimizer, "lr": config.lr, "schedule": config.schedule,
               "batch_size": config.batch_size, "directions": config.directions,
               "distribution": config.distribution, "mode": config.mode, "estimator": config.mode, "tangents": config.tangents,
               "model_kwargs": config.model_kwargs, "steps": result.step,
               "test_accuracy": result.test_accuracy, "test_loss": result.test_loss,
               "train_time_s": result.train_time, "workers": config.workers,
               "param_hash": trainer.param_hash,
               "ms_per_step": 1e3 * result.train_time / max(result.step, 1)}
    reached = ""
    if args.target_loss is not None:
        hit = result.history.first_reaching("test_loss", args.target_loss)
        summary.update(target_loss=args.target_loss,
                       time_to_target_s=None if hit is None else hit["wall_time"],
                       steps_to_target=None if hit is None else hit["step"])
        reached = (f"; test loss <= {args.target_loss:g}: not reached" if hit is None else
                   f"; test loss <= {args.target_loss:g} after {hit['wall_time']:.1f} s of training "
                   f"(step {hit['step']})")
    if result.out_dir is not None:
        atomic_write_bytes(Path(result.out_dir) / "summary.json",
                           (json.dumps(summary, indent=2) + "\n").encode())
    print(f"test accuracy {100 * result.test_accuracy:.2f}% (test loss {result.test_loss:.4f}) "
          f"on {'MNIST' if config.data == 'mnist' else 'the 8x8 digits'} after {result.step} steps; "
          f"training time {result.train_time:.2f} s ({summary['ms_per_step']:.2f} ms/step), "
          f"total {total:.2f} s{reached}; outputs in {result.out_dir}", flush=True)
    return 0


class _Interrupted(Exception):
    """Ctrl-C outside the training loop (which saves and raises ``TrainingInterrupted``)."""


# -- graph ------------------------------------------------------------------------------
_GRAPH_SUFFIXES = (".svg", ".png", ".html", ".dot", ".gv", ".txt")


def _add_graph_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="MODULE:FUNCTION",
                   help="the function to trace: a dotted module (mypkg.models:loss) or a .py file "
                        "(path/to/model.py:loss)")
    p.add_argument("--shapes", required=True, metavar="SPEC",
                   help="shapes of the function's parameters by name, e.g. 'x=64x784,w=784x10'; "
                        "'s=()' is a scalar; ':DTYPE' sets one parameter's dtype ('y=64:int64'); "
                        "dots reach into pytrees: dict keys by name, list items by number "
                        "('params.w1=784x128,params.b1=128,layers.0=4x4')")
    p.add_argument("--dtype", default="float32", metavar="DTYPE",
                   help="dtype of parameters without ':DTYPE' (default float32)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--jvp", action="store_true",
                      help="the fused primal+tangent graph (tangents for every float "
                           "parameter, or --wrt)")
    mode.add_argument("--grad", action="store_true", help="the reverse-mode gradient graph")
    p.add_argument("--wrt", metavar="NAMES",
                   help="comma-separated parameters that get tangents (with --jvp or --grad)")
    p.add_argument("--directions", type=_positive_int, metavar="K",
                   help="with --jvp: K tangent directions at once")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the graph to FILE: " + ", ".join(_GRAPH_SUFFIXES) + " (from the suffix)")
    p.add_argument("--layout", choices=("auto", "dot", "builtin"), default="auto",
                   help="who lays out .svg/.png/.html: Graphviz's dot when installed, else the built-in "
                        "layered layout (auto, the default); or force one")
    p.add_argument("--stats", action="store_true",
                   help="print node counts, FLOPs, bytes moved and peak memory (and, for --jvp or "
                        "--grad, the ratios to the primal graph)")


Leaf = tuple[tuple[int, ...], Any]  # (shape, dtype) of one array


def _parse_shapes(text: str, default_dtype: Any) -> dict[str, Any]:
    """``'x=64x784,y=64:int64,s=()'`` -> ``{name: (shape, dtype)}``; a dotted name describes a
    pytree: ``params.w1=784x128`` is the dict key ``w1`` of parameter ``params``, and
    ``layers.0.w=4x4`` the key ``w`` of item 0 of the list ``layers``."""
    rule = ("expected NAME=DIMS[:DTYPE] entries separated by commas, e.g. 'x=64x784,y=64:int64' "
            "(NAME may be a path into a pytree: params.w1=784x128, layers.0=4)")
    leaves: dict[tuple[str, ...], Leaf] = {}
    for entry in (e.strip() for e in text.split(",")):
        name, eq, rest = entry.partition("=")
        name = name.strip()
        path = tuple(part.strip() for part in name.split("."))
        if not eq or not path[0].isidentifier() or not all(path):
            raise CLIError(f"--shapes: bad entry {entry!r}: {rule}")
        dims_text, colon, dtype_text = rest.partition(":")
        dims_text = dims_text.strip()
        try:
            if dims_text in ("()", "scalar"):
                shape: tuple[int, ...] = ()
            else:
                shape = tuple(int(d) for d in dims_text.lower().replace("*", "x").split("x"))
                if any(d < 0 for d in shape):
                    raise ValueError
        except ValueError:
            raise CLIError(f"--shapes: bad dimensions {dims_text!r} for {name}: use non-negative "
                           "integers joined by 'x' (64x784), or () for a scalar") from None
        dtype = _parse_dtype(dtype_text.strip(), f"--shapes ({name})") if colon else default_dtype
        if path in leaves:
            raise CLIError(f"--shapes: {name} is given twice")
        leaves[path] = (shape, dtype)
    return _tree_of(leaves)


def _tree_of(leaves: dict[tuple[str, ...], Leaf]) -> dict[str, Any]:
    """Nested dicts (and lists, where every key is 0, 1, ... n-1) from dotted paths."""
    def build(prefix: tuple[str, ...], entries: dict[tuple[str, ...], Leaf]) -> Any:
        if () in entries:
            if len(entries) > 1:
                other = ".".join(prefix + next(p for p in entries if p))
                raise CLIError(f"--shapes: {'.'.join(prefix)} is given as one array and also as a pytree "
                               f"({other}); give one or the other")
            return entries[()]
        heads: dict[str, dict[tuple[str, ...], Leaf]] = {}
        for p, leaf in entries.items():
            heads.setdefault(p[0], {})[p[1:]] = leaf
        if prefix and all(h.isdigit() for h in heads):
            idx = sorted(int(h) for h in heads)
            if idx != list(range(len(idx))):
                gap = next(i for i in range(len(idx) + 1) if i not in idx)
                raise CLIError(f"--shapes: {'.'.join(prefix)} is a list, but item {gap} is missing "
                               f"(give {'.'.join(prefix)}.{gap}=...)")
            return [build((*prefix, str(i)), heads[str(i)]) for i in idx]
        return {h: build((*prefix, h), sub) for h, sub in heads.items()}

    return build((), leaves)


def _leaves(spec: Any, name: str) -> list[tuple[str, Leaf]]:
    """``(dotted name, (shape, dtype))`` of every array in one parameter's spec."""
    if isinstance(spec, tuple):
        return [(name, spec)]
    items = spec.items() if isinstance(spec, dict) else enumerate(spec)
    return [leaf for k, sub in items for leaf in _leaves(sub, f"{name}.{k}")]


def _zeros(spec: Any) -> Any:
    import numpy as np

    if isinstance(spec, tuple):
        return np.zeros(*spec)
    if isinstance(spec, dict):
        return {k: _zeros(v) for k, v in spec.items()}
    return [_zeros(v) for v in spec]


def _parse_dtype(text: str, where: str) -> Any:
    import numpy as np

    try:
        dtype = np.dtype(text)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise CLIError(f"{where}: unknown or non-numeric dtype {text!r} "
                       "(use e.g. float32, float64, int64)")
    return dtype


def _load_target(spec: str) -> tuple[Any, str]:
    """The function named by ``MODULE:FUNCTION`` and a display name."""
    import importlib
    import importlib.util
    import os
    from pathlib import Path

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise CLIError(f"expected MODULE:FUNCTION, got {spec!r} "
                       "(e.g. mypkg.models:loss or model.py:loss)")
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise CLIError(f"no such file: {module_name}")
            sys.path.insert(0, str(path.resolve().parent))  # sibling modules import, as with python FILE
            mod_spec = importlib.util.spec_from_file_location(f"_tracegrad_graph_{path.stem}", path)
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except CLIError:
        raise
    except ModuleNotFoundError as exc:
        raise CLIError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed: say which and why
        raise CLIError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise CLIError(f"{spec} is a {type(fn).__name__}, not a function")
    return fn, spec


def _graph_arguments(fn: Any, shapes: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """Call arguments (zero arrays, or pytrees of them, of the given shapes; defaults in
    between) and the positional parameter names, in order."""
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        raise CLIError("cannot read the function's parameters to match --shapes") from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise CLIError(f"--shapes names unknown parameter {unknown[0]!r}; the function takes "
                       f"{', '.join(names) or 'no positional parameters'}")
    missing = [p.name for p in positional if p.name not in shapes and p.default is p.empty]
    missing += [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if missing:
        raise CLIError(f"--shapes is missing parameter(s) {', '.join(missing)}; give each a shape, "
                       f"e.g. {missing[0]}=8x4")
    last = max((i for i, n in enumerate(names) if n in shapes), default=-1)
    args = [_zeros(shapes[p.name]) if p.name in shapes else p.default for p in positional[:last + 1]]
    return args, names[:last + 1]


def _run_graph(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from .api import Compiled
    from .errors import TracegradError
    from .viz import compare_stats, draw

    if args.output is not None and Path(args.output).suffix.lower() not in _GRAPH_SUFFIXES:
        raise CLIError(f"-o {args.output}: unknown suffix; use one of {', '.join(_GRAPH_SUFFIXES)}")
    if args.wrt is not None and not (args.jvp or args.grad):
        raise CLIError("--wrt needs --jvp (or --grad)")
    if args.directions is not None and not args.jvp:
        raise CLIError("--directions needs --jvp")
    dtype = _parse_dtype(args.dtype, "--dtype")
    shapes = _parse_shapes(args.shapes, dtype)
    saved_path = list(sys.path)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as 'python -m' does: modules in the current folder import
    try:
        fn, spec = _load_target(args.target)
        call_args, names = _graph_arguments(fn.fn if isinstance(fn, Compiled) else fn, shapes)
        compiled = fn if isinstance(fn, Compiled) else Compiled(fn)
        argnums = None
        if args.wrt is not None:
            wanted = [w.strip() for w in args.wrt.split(",") if w.strip()]
            for w in wanted:
                if "." in w and w.partition(".")[0] in shapes:
                    raise CLIError(f"--wrt takes whole parameters ({w.partition('.')[0]}), not parts of "
                                   f"one ({w})")
                if w not in shapes:
                    raise CLIError(f"--wrt names {w!r}, which is not a parameter given in --shapes")
                for leaf, (_, leaf_dtype) in _leaves(shapes[w], w):
                    if leaf_dtype.kind != "f":
                        raise CLIError(f"--wrt: {leaf} has dtype {leaf_dtype} and cannot have a tangent")
            argnums = tuple(names.index(w) for w in wanted)
        try:
            primal = compiled.graph(*call_args)
            if args.grad:
                wrt = {} if argnums is None else {"argnums": argnums}
                graph = compiled.grad_graph(*call_args, **wrt)
            elif args.jvp:
                graph = compiled.jvp_graph(*call_args, argnums=argnums, directions=args.directions)
            else:
                graph = primal
        except (CLIError, TracegradError):
            raise
        except Exception as exc:  # noqa: BLE001 - the user's function failed while traced
            raise CLIError(f"tracing {spec} failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path[:] = saved_path
    try:
        if args.output is not None:
            drawing = draw(graph, args.output, engine=args.layout)
            how = f"; layout: {drawing.engine_name}" if drawing.engine else ""
            if drawing.engine == "builtin" and args.layout == "auto":
                how += " (Graphviz's dot not found; install it for its layout)"
            print(f"wrote {drawing.path} ({graph.name}: {len(graph.nodes)} nodes{how})", flush=True)
    finally:  # the numbers are printed even when the drawing fails
        if args.stats:
            stats = graph.stats()
            print(stats, flush=True)
            if graph is not primal:
                label = "gradient graph" if args.grad else "JVP graph"
                print(compare_stats(primal.stats(), stats, label=label), flush=True)
    if args.output is None and not args.stats:
        print(graph.pretty(source=True), flush=True)
    return 0


COMMANDS: dict[str, Command] = {
    "train": Command("train a model with forward gradients (Baydin et al. 2022)",
                     _add_train_arguments, _run_train),
    "graph": Command("draw or measure the traced graph of a function (SVG, PNG, HTML, DOT, text)",
                     _add_graph_arguments, _run_graph),
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
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    while text.startswith(f"{PROG}: "):  # never "tracegrad: error: tracegrad: ..."
        text = text[len(PROG) + 2:]
    return text


def _fail(message: str, status: int = 2) -> int:
    if not _secondary_worker():  # data-parallel workers fail together (divergence); rank 0 says so
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status
    (0 success, 2 usage error, 1 run-time failure, 128 + N when stopped by signal N)."""
    from .data import DataError
    from .errors import (
        BackendUnavailableError,
        GraphvizNotFoundError,
        OutputExistsError,
        RenderError,
        TracegradError,
    )
    from .train import TrainError
    from .train.trainer import TrainingInterrupted

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --workers N` re-runs it
    except CLIError as exc:
        return _fail(_one_line(exc))
    except SystemExit as exc:  # --help and --version exit through argparse
        return int(exc.code or 0)
    if args.command is None:
        return _fail(f"choose a command: {', '.join(COMMANDS)} (see '{PROG} --help')")
    try:
        return COMMANDS[args.command].run(args)
    # Run-time failures: a diverged run, unusable data or checkpoints, a missing program or
    # package (Graphviz, CuPy), a failed render, an output folder that cannot be written.
    except (DataError, TrainError, BackendUnavailableError, GraphvizNotFoundError, RenderError,
            OSError) as exc:
        status = 2 if isinstance(exc, OutputExistsError) else 1  # a used --out: change the command
        return _fail(_one_line(exc), status)
    # Usage errors: the command line, or the function it names (a shape error, a gradient of
    # a non-scalar), must change.
    except (CLIError, TracegradError) as exc:
        return _fail(_one_line(exc), 2)
    except ValueError as exc:  # e.g. an optimizer factory rejecting an option combination
        return _fail(_one_line(exc), 2)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(PROG):
            return _fail(f"{exc.name} is not available in this installation of tracegrad", 1)
        raise
    except TrainingInterrupted as exc:
        if not _secondary_worker():  # every worker stops at the same step; rank 0 says so
            print(f"{PROG}: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_status
    except _Interrupted as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:  # outside the loop's own handling, e.g. a second Ctrl-C
        print(f"{PROG}: interrupted; {_what_is_kept(args)}", file=sys.stderr, flush=True)
        return 130


def _what_is_kept(args: argparse.Namespace) -> str:
    """After an abrupt stop: which checkpoint a --resume would continue from, if any."""
    if args.command != "train":
        return "nothing was written"
    from pathlib import Path

    from .train import list_checkpoints

    out = args.out or str(Path("runs") / f"{args.model or 'logreg'}-{args.data or 'digits'}")
    found = list_checkpoints(out)
    if not found:
        return f"no checkpoint was saved in {out}"
    return f"the latest checkpoint is {found[-1][1]}; continue with --resume"
