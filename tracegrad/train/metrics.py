"""Training metrics: an in-memory history, CSV/JSONL files and a PNG plot.

Contract: a history is a list of rows, each a dict with exactly the keys in ``COLUMNS``.
``step`` is the number of updates applied, ``epoch`` the fractional number of passes over
the training split, ``wall_time`` the seconds spent training (batch fetch, forward-gradient
estimate and update; evaluation, checkpoints and file writing excluded), ``train_loss``
the loss of the batch of that step, ``test_loss``/``test_accuracy`` the evaluation on the
test split (``None`` on rows without an evaluation) and ``examples_per_sec`` the training
throughput since the previous row. Files are rewritten whole and atomically, so a reader
never sees half a file; missing values are empty cells in CSV and ``null`` in JSONL.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["COLUMNS", "MetricsHistory", "atomic_open", "atomic_write_bytes"]

COLUMNS = (
    "step",
    "epoch",
    "wall_time",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "examples_per_sec",
)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The temporary file is flushed and fsynced before the rename, so after a crash ``path``
    holds either its old contents or the new ones, never a torn mix."""
    path = Path(path)
    with atomic_open(path) as f:
        f.write(data)
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write that appears at ``path`` only once the block completes.

    The temporary file lives in the same folder (``os.replace`` is atomic only within one
    file system) and is created with ``open(..., "xb")`` so it gets the usual permissions."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _clean(value: Any) -> Any:
    """Python scalars for JSON; non-finite floats stay as they are (JSON has no nan)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return int(value)
    return float(value)


class MetricsHistory:
    """Rows of training metrics, in step order."""

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        self.rows: list[dict[str, Any]] = []
        for row in rows:
            self.append(**row)

    def append(self, **row: Any) -> dict[str, Any]:
        unknown = sorted(set(row) - set(COLUMNS))
        if unknown:
            raise ValueError(f"unknown metric column(s) {', '.join(unknown)}; columns are {COLUMNS}")
        clean = {c: _clean(row.get(c)) for c in COLUMNS}
        self.rows.append(clean)
        return clean

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def last(self, column: str) -> Any:
        """The most recent non-missing value of ``column`` (``None`` if there is none)."""
        for row in reversed(self.rows):
            if row[column] is not None:
                return row[column]
        return None

    def column(self, name: str, only_present: bool = True) -> tuple[list[Any], list[Any]]:
        """``(steps, values)`` of one column; rows where it is missing are skipped."""
        rows = [r for r in self.rows if r[name] is not None or not only_present]
        return [r["step"] for r in rows], [r[name] for r in rows]

    def first_reaching(self, column: str, target: float, *, below: bool = True) -> dict[str, Any] | None:
        """The first row whose ``column`` is ``<= target`` (``>=`` with ``below=False``), or
        ``None``: its ``step`` and ``wall_time`` are the "time to reach a loss/accuracy"
        that compares runs (e.g. forward gradients against backprop)."""
        for row in self.rows:
            v = row[column]
            if v is not None and (v <= target if below else v >= target):
                return row
        return None

    # -- files ---------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.rows, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> MetricsHistory:
        return cls(json.loads(text))

    def csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.rows:
            writer.writerow(["" if row[c] is None else repr(row[c]) for c in COLUMNS])
        return buf.getvalue()

    def jsonl_text(self) -> str:
        return "".join(json.dumps(row, allow_nan=True) + "\n" for row in self.rows)

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_bytes(path, self.csv_text().encode())

    def write_jsonl(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_bytes(path, self.jsonl_text().encode())

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Loss and accuracy against steps (top) and training wall time (bottom), as a PNG."""
        # Imported here: matplotlib costs ~0.5 s to import and only plotting needs it.
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = self.figure(title)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        return atomic_write_bytes(path, buf.getvalue())

    def figure(self, title: str | None = None) -> Any:
        """The matplotlib ``Figure`` that ``plot`` saves (2x2: loss and accuracy against steps
        and wall time); a panel with no data says why instead of showing empty axes."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
        for row_axes, xkey, xlabel in ((axes[0], "step", "step"),
                                       (axes[1], "wall_time", "training time (s)")):
            loss_ax, acc_ax = row_axes
            plotted = False
            for key, label, style in (("train_loss", "train (batch)", "-"),
                                      ("test_loss", "test", "o-")):
                xs = [r[xkey] for r in self.rows if _finite(r[key]) and _finite(r[xkey])]
                ys = [r[key] for r in self.rows if _finite(r[key]) and _finite(r[xkey])]
                if xs:
                    loss_ax.plot(xs, ys, style, label=label, markersize=3,
                                 alpha=0.6 if key == "train_loss" else 1.0)
                    plotted = True
            bad = [r[xkey] for r in self.rows if r["train_loss"] is not None
                   and not _finite(r["train_loss"]) and _finite(r[xkey])]
            for x in bad:  # where the loss became NaN/inf: a line, since it cannot be a point
                loss_ax.axvline(x, color="tab:red", linestyle="--", linewidth=1,
                                label="non-finite loss" if x == bad[0] else None)
            if plotted or bad:
                loss_ax.set_xlabel(xlabel)
                loss_ax.set_ylabel("cross-entropy loss")
                if plotted:
                    loss_ax.set_yscale("log")
                loss_ax.legend()
                loss_ax.grid(True, alpha=0.3)
            else:
                _empty_panel(loss_ax, "no finite loss was recorded")
            xs = [r[xkey] for r in self.rows if _finite(r["test_accuracy"]) and _finite(r[xkey])]
            ys = [100.0 * r["test_accuracy"] for r in self.rows
                  if _finite(r["test_accuracy"]) and _finite(r[xkey])]
            if xs:
                acc_ax.plot(xs, ys, "o-", color="tab:green", markersize=3)
                acc_ax.set_xlabel(xlabel)
                acc_ax.set_ylabel("test accuracy (%)")
                acc_ax.grid(True, alpha=0.3)
            else:  # e.g. a run that diverged before its first evaluation
                last = self.rows[-1]["step"] if self.rows else 0
                _empty_panel(acc_ax, f"no test evaluation before the run stopped (step {last})")
        if title:
            fig.suptitle(title)
        return fig


def _empty_panel(ax: Any, text: str) -> None:
    """A panel with nothing to show says so, instead of drawing meaningless axes."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)


def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(x)
