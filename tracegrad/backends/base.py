"""What every backend provides: ``compile(graph) -> Executable``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..ir import Graph


@dataclass
class Executable:
    """A compiled graph: call it with the graph's inputs (flat) to get its outputs (a tuple)."""

    graph: Graph
    source: str
    fn: Callable[..., tuple]
    filename: str
    backend: str

    def __call__(self, *args: Any) -> tuple:
        return self.fn(*args)
