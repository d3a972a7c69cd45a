"""Every error type tracegrad raises.

Each error can carry the user's source location (``SourceInfo``) of the operation that
failed and a hint saying how to fix it; ``str(err)`` shows both, so a traceback names
the line in the user's file, not a line inside tracegrad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "ArgumentTypeError",
    "BackendUnavailableError",
    "CheckpointError",
    "ConcretizationError",
    "ControlFlowError",
    "DTypeError",
    "DataError",
    "GradientError",
    "GraphvizNotFoundError",
    "IndexOutOfBoundsError",
    "OutputExistsError",
    "RenderError",
    "ShapeError",
    "TangentError",
    "TraceError",
    "TracegradError",
    "TrainError",
    "TrainingDivergedError",
    "UnsupportedOperationError",
]


# Finds the user's source line (``tracing.source.user_source``, which installs itself here:
# errors sit below every other layer, so they do not import it).
_locate: list[Callable[[int], Any]] = []


def set_locator(locate: Callable[[int], Any]) -> None:
    """Called once by ``tracing.source``: ``locate(depth)`` finds the user's frame."""
    _locate[:] = [locate]


class TracegradError(Exception):
    """Base class: ``message`` plus optional user ``source`` location and ``hint``."""

    def __init__(self, message: str, *, source: Any = None, hint: str | None = None):
        self.message = message
        if source is None and _locate:
            source = _locate[0](2)  # the user's line that called into tracegrad
        self.source = source
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.source is not None:
            parts.append(f"  at {self.source.describe()}")
        if self.hint:
            parts.append(f"  fix: {self.hint}")
        return "\n".join(parts)


class ShapeError(TracegradError, ValueError):
    """Operand shapes that do not fit the operation (the message shows both shapes)."""


class IndexOutOfBoundsError(ShapeError, IndexError):
    """A constant index (an int or an index array known at trace time) outside the array."""


class DTypeError(TracegradError, TypeError):
    """An operand dtype the operation cannot take."""


class ControlFlowError(TracegradError, TypeError):
    """Python control flow (``if``, ``while``, ``bool()``) on a traced value."""


class ConcretizationError(TracegradError, TypeError):
    """A traced value was converted to a concrete Python number or NumPy array."""


class UnsupportedOperationError(TracegradError, NotImplementedError):
    """A NumPy function or method that tracegrad cannot trace."""


class ArgumentTypeError(TracegradError, TypeError):
    """An argument to a compiled function that is not an array, scalar or pytree of them."""


class TangentError(TracegradError, ValueError):
    """A tangent whose structure, shape or dtype does not match its primal."""


class GradientError(TracegradError, ValueError):
    """Reverse mode asked of something without a gradient: a non-scalar or non-float output,
    integer leaves among the differentiated arguments, argnums that name no argument."""


class TraceError(TracegradError, RuntimeError):
    """Misuse of tracing itself, e.g. a traced value leaking out of its trace."""


class BackendUnavailableError(TracegradError, RuntimeError):
    """The requested backend cannot run here (for example CuPy or a CUDA device is missing).

    About the environment, not a line of the user's model: no source location unless one is
    given (the innermost outside frame would be tracegrad's own trainer, say)."""

    def __init__(self, message: str, *, source: Any = None, hint: str | None = None):
        super().__init__(message, source=source, hint=hint)
        self.source = source


class GraphvizNotFoundError(TracegradError, RuntimeError):
    """Graphviz's ``dot`` program, which draws SVG and PNG images of graphs, is not installed.

    Like ``RenderError`` it is about the environment, not a line of the user's model, so it
    carries no source location unless one is given."""

    def __init__(self, message: str | None = None, *, source: Any = None, hint: str | None = None):
        super().__init__(
            message or "drawing a graph as SVG, PNG or HTML needs Graphviz's 'dot' program, "
                       "which is not on PATH",
            source=source,
            hint=hint or "install Graphviz (Debian/Ubuntu: sudo apt-get install graphviz; macOS: "
                         "brew install graphviz; conda: conda install graphviz), or write .dot or "
                         ".txt, which need no Graphviz")
        self.source = source


class RenderError(TracegradError, ValueError):
    """A graph could not be written: an unknown file suffix, or ``dot`` rejected the input."""

    def __init__(self, message: str, *, source: Any = None, hint: str | None = None):
        super().__init__(message, source=source, hint=hint)
        self.source = source


# -- run-time errors of data loading and training --------------------------------------
# These are not tied to a traced line of user code, so they are plain one-line messages
# (the CLI prints them as ``tracegrad: error: ...``) rather than ``TracegradError``s.


class DataError(ValueError):
    """A data file or data-set request is unusable; the message names the file and the fault."""


class TrainError(Exception):
    """Base class of training errors; the message is one line that says what to do."""


class CheckpointError(TrainError):
    """A checkpoint is missing, unreadable, or does not fit the run that loads it."""


class TrainingDivergedError(TrainError):
    """The loss became NaN or infinite, or left the band around its recent history (see
    ``tracegrad.train.divergence``); the last good checkpoint, from before the loss started
    to climb, is left untouched. ``reason`` says which rule fired."""

    def __init__(self, step: int, loss: float, checkpoint: Any, lr: float, checkpoint_every: int,
                 reason: str | None = None):
        self.step, self.loss, self.checkpoint = step, loss, checkpoint
        self.reason = reason or f"the loss is {loss}"
        self.suggested_lr = lr / 10.0
        if checkpoint is not None:
            kept = (f"the last good checkpoint {checkpoint} is kept "
                    f"(continue from it with --resume --lr {self.suggested_lr:g})")
        else:
            kept = f"no checkpoint had been written yet (one is written every {checkpoint_every} steps)"
        super().__init__(
            f"training diverged at step {step}: {self.reason}; {kept}; "
            f"try a smaller learning rate, e.g. --lr {self.suggested_lr:g}"
        )


class OutputExistsError(TrainError):
    """A new run was pointed at an output folder that holds an earlier run's files."""
