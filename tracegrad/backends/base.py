"""What every backend provides: ``compile(graph) -> Executable``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..ir import Graph


@dataclass
class Executable:
    """A compiled graph: call it with the graph's inputs (flat) to get its outputs (a tuple)."""

    graph: Graph
    source: str
    fn: Callable[..., tuple]
    filename: str
    backend: str
    cuda_source: str = ""  # GPU backends: the CUDA translation unit (also shown in ``source``)
    launches: dict[str, int] = field(default_factory=dict)  # per call: kernels, cuBLAS calls, ...

    def __call__(self, *args: Any) -> tuple:
        return self.fn(*args)
