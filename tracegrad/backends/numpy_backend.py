"""The NumPy backend: the reference lowering. Each primitive's NumPy template comes from
its declaration in ``tracegrad/ops``; this module only assembles and compiles them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph
from ..transforms.schedule import schedule
from ..transforms.share import share_conv_inputs
from .base import Executable
from .emit import compile_source, emit_function


def _lower(prim: Any, args: list[str], params: dict[str, Any]) -> str:
    return prim.lower("numpy", args, params)


class NumpyBackend:
    """Compiles a graph into a plain Python function calling NumPy."""

    name = "numpy"
    # Write elementwise results into dying temporaries (``emit.plan_inplace``) to cut peak
    # memory; False emits one fresh allocation per node (tests compare the two).
    inplace: bool = True

    def compile(self, graph: Graph) -> Executable:
        # Memory-aware node order: the emitter frees each temporary after its last use, so
        # the order decides how many are alive at once (transforms/schedule.py).
        graph = schedule(graph, inplace=self.inplace)
        # Convolutions of one input (a JVP's primal and weight-tangent products) share one
        # im2col (transforms/share.py). A lowering detail, like tg_conv2d itself: the
        # Executable keeps the graph before it, so listings, roles (primal/tangent) and
        # statistics show the JVP's own structure; the generated source shows the merge.
        lowered = share_conv_inputs(graph)
        if lowered is not graph:
            lowered = schedule(lowered, inplace=self.inplace)
        emitted = emit_function(lowered, _lower, module="np", inplace=self.inplace)
        namespace: dict[str, Any] = {"np": np}
        for node in lowered.nodes:  # helpers some lowerings call (e.g. tg_conv2d)
            namespace.update(node.primitive.runtime)
        fn, filename = compile_source(emitted, namespace)
        return Executable(graph, emitted.source, fn, filename, self.name)
