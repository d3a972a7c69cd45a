"""Training checkpoints: one ``.npz`` file per saved step, written atomically.

Contract: ``ckpt-<step:08d>.npz`` in the run's output folder holds everything needed to
continue a run bit for bit — the parameter leaves, named by their pytree path
(``params/w0``, ``params/b0``, ...), the optimizer state's leaves likewise
(``opt_state/mu/w0``, ``opt_state/step``, ...), and one JSON string ``meta`` with the
step, the training time so far, the ``DirectionSampler``, ``BatchStream`` and divergence
monitor states, the run's config and the metrics history so far. Nothing is pickled:
``np.load(..., allow_pickle=False)`` reads it (and ``np.load(path)["params/w0"]`` gives a
weight by name). Format 1 files (anonymous ``param_<i>``/``opt_<i>`` leaves) still load.

A file is written to a temporary name in the same folder (``.ckpt-*.tmp``), flushed and
fsynced, then ``os.replace``d into place, so a crash leaves the previous checkpoint
intact; ``clean_stale_temporaries`` removes what a killed process left behind. Only the
``keep`` newest checkpoints are kept. ``load_latest_checkpoint`` falls back to the newest
checkpoint that loads when newer ones are damaged, and says which it skipped.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, TrainError
from ..tree import TreeDef, tree_flatten, tree_unflatten
from .metrics import atomic_open

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "TrainError",
    "checkpoint_path",
    "clean_stale_temporaries",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest_checkpoint",
    "save_checkpoint",
    "tree_paths",
]

CHECKPOINT_FORMAT = 2
_READABLE_FORMATS = (1, 2)
_NAME = re.compile(r"^ckpt-(\d{8,})\.npz$")
# atomic_open's temporary names: .<final name>.<pid>.<8 hex digits>.tmp
_TMP_NAME = re.compile(r"^\.(?:ckpt-\d{8,}\.npz|metrics\.csv|metrics\.jsonl|plot\.png|config\.json|"
                       r"summary\.json)\.(\d+)\.[0-9a-f]{8}\.tmp$")


def tree_paths(tree: Any, prefix: str) -> list[str]:
    """The path of each leaf of ``tree``, in ``tree_flatten`` order: dict keys, namedtuple
    field names and list/tuple indices joined by ``/`` after ``prefix`` (``params/w0``)."""
    names: list[str] = []

    def walk(td: TreeDef, path: str) -> None:
        if td.kind == "leaf":
            names.append(path)
        elif td.kind == "dict":
            for key, child in zip(td.keys, td.children):
                walk(child, f"{path}/{key}")
        elif td.kind == "namedtuple":
            for field_name, child in zip(td.keys[0]._fields, td.children):
                walk(child, f"{path}/{field_name}")
        else:  # tuple, list (none has no leaves)
            for i, child in enumerate(td.children):
                walk(child, f"{path}/{i}")

    walk(tree_flatten(tree)[1], prefix)
    return names


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def clean_stale_temporaries(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the half-written temporary files (``.ckpt-*.tmp``, ...) that a killed run left
    in ``out_dir``; files of a process that is still alive are left alone. Returns what
    was removed."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    removed = []
    for p in out.iterdir():
        m = _TMP_NAME.match(p.name)
        if m and p.is_file() and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return sorted(removed)


def checkpoint_path(out_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(out_dir) / f"ckpt-{int(step):08d}.npz"


def list_checkpoints(out_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in ``out_dir``, oldest first."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in ``out_dir``, or ``None`` (it may not load:
    ``load_latest_checkpoint`` falls back to older ones)."""
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def load_latest_checkpoint(out_dir: str | os.PathLike[str]) -> tuple[Checkpoint, list[str]]:
    """The newest checkpoint in ``out_dir`` that loads, and one line per newer checkpoint
    that did not (why it was skipped). ``CheckpointError`` if there is none or none loads."""
    found = list_checkpoints(out_dir)
    if not found:
        raise CheckpointError(f"no checkpoint (ckpt-*.npz) in {out_dir}")
    skipped: list[str] = []
    for _, path in reversed(found):
        try:
            return load_checkpoint(path), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    raise CheckpointError(f"none of the {len(found)} checkpoint(s) in {out_dir} can be read: "
                          + "; ".join(skipped))


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``restore`` rebuilds params and optimizer state from templates."""

    path: Path
    step: int
    train_time: float
    param_leaves: list[np.ndarray]
    opt_leaves: list[np.ndarray]
    estimator_state: Any  # train.estimators: Estimator.state(); older files: the sampler's state alone
    stream_state: dict[str, int]
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    param_names: list[str] | None = None  # pytree paths (None: a format-1 file)
    opt_names: list[str] | None = None
    monitor_state: dict[str, Any] | None = None

    def restore(self, params_template: Any, opt_state_template: Any) -> tuple[Any, Any]:
        """``(params, opt_state)`` with the templates' structure; checks names, shapes, dtypes."""
        params = _restore_tree(self.path, "parameters", params_template, self.param_leaves,
                               self.param_names, "params")
        opt_state = _restore_tree(self.path, "optimizer state", opt_state_template, self.opt_leaves,
                                  self.opt_names, "opt_state")
        return params, opt_state


def _restore_tree(path: Path, what: str, template: Any, stored: list[np.ndarray],
                  names: list[str] | None, prefix: str) -> Any:
    t_leaves, treedef = tree_flatten(template)
    if names is not None:
        wanted = tree_paths(template, prefix)
        if wanted != names:
            missing = [n for n in wanted if n not in names]
            extra = [n for n in names if n not in wanted]
            detail = (f"this run needs {missing[0]!r}, which it lacks" if missing
                      else f"it has {extra[0]!r}, which this run does not" if extra
                      else "its arrays are in a different order")
            raise CheckpointError(f"{path}: {what} do not match this run's ({detail}); "
                                  "the checkpoint comes from a different model or optimizer")
    if len(t_leaves) != len(stored):
        raise CheckpointError(
            f"{path}: {what} have {len(stored)} arrays but this run's model has {len(t_leaves)}; "
            "the checkpoint comes from a different model or optimizer"
        )
    out = []
    for i, (t, s) in enumerate(zip(t_leaves, stored)):
        if isinstance(t, (int, np.integer)) and not isinstance(t, bool) and np.ndim(s) == 0:
            out.append(int(s))  # e.g. the optimizer's step counter stays a Python int
            continue
        t = np.asarray(t)
        if s.shape != t.shape or s.dtype != t.dtype:
            label = repr(names[i]) if names is not None else f"array {i}"
            raise CheckpointError(
                f"{path}: {what} {label} is {s.dtype}{list(s.shape)} but this run expects "
                f"{t.dtype}{list(t.shape)}; the checkpoint comes from a different model"
            )
        out.append(np.array(s))
    return tree_unflatten(treedef, out)


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    *,
    step: int,
    params: Any,
    opt_state: Any,
    estimator_state: Any,
    stream_state: dict[str, int],
    config: dict[str, Any],
    history: list[dict[str, Any]],
    train_time: float,
    keep: int = 3,
    monitor_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``ckpt-<step>.npz`` atomically into ``out_dir`` and prune all but ``keep`` newest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    param_names, opt_names = tree_paths(params, "params"), tree_paths(opt_state, "opt_state")
    for name, leaf in zip(param_names, tree_flatten(params)[0]):
        arrays[name] = np.asarray(leaf)
    for name, leaf in zip(opt_names, tree_flatten(opt_state)[0]):
        arrays[name] = np.asarray(leaf)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "train_time": float(train_time),
        "estimator_state": estimator_state,
        "stream_state": {k: int(v) for k, v in stream_state.items()},
        "config": config,
        "history": history,
        "param_names": param_names,
        "opt_names": opt_names,
        "monitor_state": monitor_state,
    }
    arrays["meta"] = np.array(json.dumps(meta, allow_nan=True))

    final = checkpoint_path(out, step)
    with atomic_open(final) as f:
        np.savez(f, **arrays)
    for _, old in list_checkpoints(out)[: -max(int(keep), 1)]:
        old.unlink()
    return final


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``; ``CheckpointError`` if unusable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not a tracegrad checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({exc})") from None
    if meta.get("format") not in _READABLE_FORMATS:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format')!r}, this tracegrad reads "
            f"{', '.join(map(str, _READABLE_FORMATS))}"
        )

    def numbered(prefix: str) -> list[np.ndarray]:  # format 1: param_0, param_1, ...
        n = sum(1 for k in arrays if k.startswith(prefix))
        missing = [i for i in range(n) if f"{prefix}{i}" not in arrays]
        if missing:
            raise CheckpointError(f"{path}: corrupt checkpoint, missing {prefix}{missing[0]}")
        return [arrays[f"{prefix}{i}"] for i in range(n)]

    def named(names: list[str]) -> list[np.ndarray]:
        missing = [n for n in names if n not in arrays]
        if missing:
            raise CheckpointError(f"{path}: corrupt checkpoint, missing {missing[0]}")
        return [arrays[n] for n in names]

    try:
        if meta["format"] == 1:
            param_names = opt_names = None
            param_leaves, opt_leaves = numbered("param_"), numbered("opt_")
        else:
            param_names, opt_names = list(meta["param_names"]), list(meta["opt_names"])
            param_leaves, opt_leaves = named(param_names), named(opt_names)
        return Checkpoint(
            path=path,
            step=int(meta["step"]),
            train_time=float(meta["train_time"]),
            param_leaves=param_leaves,
            opt_leaves=opt_leaves,
            # checkpoints from before the estimator protocol stored the direction sampler's state
            estimator_state=meta["estimator_state"] if "estimator_state" in meta else meta["sampler_state"],
            stream_state=meta["stream_state"],
            config=meta["config"],
            history=meta.get("history", []),
            param_names=param_names,
            opt_names=opt_names,
            monitor_state=meta.get("monitor_state"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({type(exc).__name__}: {exc})") from None
