"""Training checkpoints: one ``.npz`` file per saved step, written atomically.

Contract: ``ckpt-<step:08d>.npz`` in the run's output folder holds everything needed to
continue a run bit for bit — the parameter leaves (``param_<i>``), the optimizer state's
leaves as flattened by ``tracegrad.tree`` (``opt_<i>``; the integer ``step`` of the state
is one of them), and one JSON string ``meta`` with the step, the training time so far,
the ``DirectionSampler`` and ``BatchStream`` states, the run's config and the metrics
history so far. Nothing is pickled: ``np.load(..., allow_pickle=False)`` reads it.

A file is written to a temporary name in the same folder, flushed and fsynced, then
``os.replace``d into place, so a crash leaves the previous checkpoint intact. Only the
``keep`` newest checkpoints are kept. The trainer refuses to save non-finite parameters,
so the newest checkpoint is always a good one.
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
from ..tree import tree_flatten, tree_unflatten
from .metrics import atomic_open

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "TrainError",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1
_NAME = re.compile(r"^ckpt-(\d{8,})\.npz$")


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
    """The checkpoint with the highest step in ``out_dir``, or ``None``."""
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``restore`` rebuilds params and optimizer state from templates."""

    path: Path
    step: int
    train_time: float
    param_leaves: list[np.ndarray]
    opt_leaves: list[np.ndarray]
    sampler_state: Any  # forward_grad.DirectionSampler.state(); a list in checkpoints before v2
    stream_state: dict[str, int]
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    def restore(self, params_template: Any, opt_state_template: Any) -> tuple[Any, Any]:
        """``(params, opt_state)`` with the templates' structure; checks shapes and dtypes."""
        params = _restore_tree(self.path, "parameters", params_template, self.param_leaves)
        opt_state = _restore_tree(self.path, "optimizer state", opt_state_template, self.opt_leaves)
        return params, opt_state


def _restore_tree(path: Path, what: str, template: Any, stored: list[np.ndarray]) -> Any:
    t_leaves, treedef = tree_flatten(template)
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
            raise CheckpointError(
                f"{path}: {what} array {i} is {s.dtype}{list(s.shape)} but this run expects "
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
    sampler_state: Any,
    stream_state: dict[str, int],
    config: dict[str, Any],
    history: list[dict[str, Any]],
    train_time: float,
    keep: int = 3,
) -> Path:
    """Write ``ckpt-<step>.npz`` atomically into ``out_dir`` and prune all but ``keep`` newest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for i, leaf in enumerate(tree_flatten(params)[0]):
        arrays[f"param_{i}"] = np.asarray(leaf)
    for i, leaf in enumerate(tree_flatten(opt_state)[0]):
        arrays[f"opt_{i}"] = np.asarray(leaf)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "train_time": float(train_time),
        "sampler_state": sampler_state,
        "stream_state": {k: int(v) for k, v in stream_state.items()},
        "config": config,
        "history": history,
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
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format')!r}, this tracegrad reads {CHECKPOINT_FORMAT}"
        )

    def numbered(prefix: str) -> list[np.ndarray]:
        n = sum(1 for k in arrays if k.startswith(prefix))
        missing = [i for i in range(n) if f"{prefix}{i}" not in arrays]
        if missing:
            raise CheckpointError(f"{path}: corrupt checkpoint, missing {prefix}{missing[0]}")
        return [arrays[f"{prefix}{i}"] for i in range(n)]

    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        train_time=float(meta["train_time"]),
        param_leaves=numbered("param_"),
        opt_leaves=numbered("opt_"),
        sampler_state=meta["sampler_state"],
        stream_state=meta["stream_state"],
        config=meta["config"],
        history=meta.get("history", []),
    )
