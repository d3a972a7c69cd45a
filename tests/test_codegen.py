"""Generated NumPy source: readable, deterministic, frees temporaries, debuggable."""

from __future__ import annotations

import linecache
import traceback

import numpy as np

import tracegrad as tg


def mlp(x, w1, w2):
    h = np.maximum(x @ w1, 0)
    return np.sum(h @ w2)


ARGS = (np.ones((2, 3)), np.ones((3, 4)), np.ones((4, 1)))


def test_one_statement_per_node_with_comments():
    f = tg.compile(mlp)
    src = f.source(*ARGS)
    g = f.graph(*ARGS)
    stmts = [ln for ln in src.splitlines() if " = " in ln and not ln.lstrip().startswith("#")]
    assert len(stmts) == len(g.nodes)
    assert all("# " in s and "test_codegen.py:" in s for s in stmts)
    assert "def mlp(x, w1, w2):" in src
    assert "a = x @ w1" in src and "b = np.maximum(a, 0, out=a)" in src  # a dies here


def test_temporaries_are_deleted_after_last_use():
    src = tg.compile(mlp).source(*ARGS)
    assert "    del a\n" in src  # x @ w1 dies after the relu
    assert "del x" not in src  # inputs belong to the caller


def test_codegen_is_deterministic():
    a = tg.compile(mlp).source(*ARGS, jvp=True)
    b = tg.compile(mlp).source(*ARGS, jvp=True)
    assert a == b


def test_source_is_registered_with_linecache_and_tracebacks_point_into_it():
    def f(x, i):
        return x[i] * 2

    c = tg.compile(f)
    try:
        c(np.ones(3), np.array([5]))
    except IndexError as err:
        frames = traceback.extract_tb(err.__traceback__)
    else:
        raise AssertionError("expected IndexError")
    gen = [fr for fr in frames if fr.filename.startswith("<tracegrad:")]
    assert gen, "the generated function must appear in the traceback"
    assert gen[-1].line.strip().startswith("a = x[i]")
    assert gen[-1].line.strip() == linecache.getline(gen[-1].filename, gen[-1].lineno).strip()


def test_zero_tangents_emit_no_code():
    f = tg.compile(mlp)
    src = f.source(*ARGS, jvp=True, argnums=(1,))
    # tangent only for w1: the jvp needs x @ w1_dot, the relu mask, and one more matmul
    assert src.count("@") == 4  # primal: 2 matmuls; tangent: 2 matmuls
    assert "def mlp_jvp(x, w1, w2, w1_dot):" in src
