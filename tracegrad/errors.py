"""Every error type tracegrad raises.

Each error can carry the user's source location (``SourceInfo``) of the operation that
failed and a hint saying how to fix it; ``str(err)`` shows both, so a traceback names
the line in the user's file, not a line inside tracegrad.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TracegradError",
    "ShapeError",
    "DTypeError",
    "ControlFlowError",
    "ConcretizationError",
    "UnsupportedOperationError",
    "ArgumentTypeError",
    "TangentError",
    "GradientError",
    "TraceError",
    "BackendUnavailableError",
]


class TracegradError(Exception):
    """Base class: ``message`` plus optional user ``source`` location and ``hint``."""

    def __init__(self, message: str, *, source: Any = None, hint: str | None = None):
        self.message = message
        if source is None:
            from .tracing.source import user_source  # the user's line that called into tracegrad

            source = user_source(2)
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

    def with_source(self, source: Any) -> "TracegradError":
        """Attach ``source`` unless the error already knows where it came from."""
        if self.source is None:
            self.source = source
        return self


class ShapeError(TracegradError, ValueError):
    """Operand shapes that do not fit the operation (the message shows both shapes)."""


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
    """The requested backend cannot run here (for example CuPy or a CUDA device is missing)."""
