"""The generated CUDA is valid CUDA: ``nvcc --ptx`` compiles the exact translation units the
CuPy backend hands to ``cupy.RawModule`` (no wrapper is added there). Many kernels share
one .cu file per test, because nvcc is slow to start. Plus the registry rule: every
fusible primitive declares its CUDA template next to its NumPy lowering."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from cupy_helpers import INT_CASES, as_f32
from op_cases import CASES

import tracegrad as tg
from tracegrad.backends.cuda_c import PREAMBLE
from tracegrad.backends.cupy_codegen import generate
from tracegrad.ir import Graph
from tracegrad.nn.models import cnn, loss_fn, mlp

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit) is not installed here")


def _renamed(graph: Graph, name: str) -> Graph:
    return Graph(graph.inputs, graph.nodes, graph.outputs, name, graph.input_kinds)


def _nvcc_ptx(kernels: list[str], tmp_path, stem: str) -> str:
    src = tmp_path / f"{stem}.cu"
    src.write_text(PREAMBLE + "\n" + "\n".join(kernels))
    out = tmp_path / f"{stem}.ptx"
    proc = subprocess.run([NVCC, "--ptx", "-o", str(out), str(src)], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return out.read_text()


def _int_graphs():
    for name, fn, args in INT_CASES:
        yield name, tg.compile(fn).graph(*args)


@needs_nvcc
def test_op_case_kernels_compile_with_nvcc(tmp_path):
    """Every op case, its JVP (K=2 directions), in float64 and float32, plus integer ops."""
    kernels, names = [], set()
    for cast, tag in ((list, "f64"), (as_f32, "f32")):
        for case in CASES:
            args = cast(case.args)
            f = tg.compile(case.fn)
            for kind, g in (("p", f.graph(*args)), ("j", f.jvp_graph(*args, argnums=case.argnums, directions=2))):
                prog = generate(_renamed(g, f"{case.name}_{tag}_{kind}"))
                kernels += [k.source for k in prog.kernels]
                names.update(k.name for k in prog.kernels)
    for name, g in _int_graphs():
        prog = generate(_renamed(g, name))
        kernels += [k.source for k in prog.kernels]
        names.update(k.name for k in prog.kernels)
    assert len(names) == len(kernels) > 300  # unique names: one translation unit holds them all
    ptx = _nvcc_ptx(kernels, tmp_path, "op_cases")
    for name in names:
        assert f".entry {name}(" in ptx


def _model_graph(model, x_shape, k, batch):
    params = model.init(0)
    x = np.zeros((batch,) + x_shape, np.float32)
    y = np.zeros(batch, np.int64)
    return tg.compile(loss_fn(model)).jvp_graph(params, x, y, argnums=0, directions=k)


@needs_nvcc
def test_mlp_and_cnn_forward_gradient_kernels_compile_with_nvcc(tmp_path):
    """The complete translation units of the MLP 784-1024-1024-10 and the MNIST CNN
    forward-gradient steps (batch 64; K = 1 and 4 directions), exactly as CuPy gets them."""
    for name, model, shape in (("mlp", mlp([784, 1024, 1024, 10]), (784,)), ("cnn", cnn(), (1, 28, 28))):
        for k in (1, 4):
            prog = generate(_renamed(_model_graph(model, shape, k, 64), f"{name}_k{k}"))
            path = tmp_path / f"{name}_k{k}.cu"
            path.write_text(prog.cuda_source)
            out = tmp_path / f"{name}_k{k}.ptx"
            proc = subprocess.run([NVCC, "--ptx", "-o", str(out), str(path)], check=False, capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, proc.stderr[-6000:]
            ptx = out.read_text()
            assert all(f".entry {kern.name}(" in ptx for kern in prog.kernels)
