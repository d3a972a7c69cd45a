"""The CuPy backend run end to end on the CPU stand-in (tests/fake_cupy.py): every op case
and its JVP (single and K batched directions) against the NumPy backend, in float64 and
float32; the MLP and CNN forward-gradient graphs; the one-GEMM ``[x; x_dot] @ W``."""

from __future__ import annotations

import numpy as np
from cupy_helpers import INT_CASES, as_f32, needs_gxx
from op_cases import CASES

import tracegrad as tg
from tracegrad.testing import random_tangents
from tracegrad.tree import tree_leaves

pytestmark = needs_gxx


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-11, "atol": 1e-12}


def _run_cases(cases, cast):
    """Build every executable first (their kernels then compile in one g++ run), then run."""
    plans = []
    for case in cases:
        args = cast(case.args)
        rng = np.random.default_rng(5)
        one = random_tangents(args, case.argnums, rng)
        per = [random_tangents(args, case.argnums, rng) for _ in range(2)]
        many = [None if per[0][i] is None else np.stack([p[i] for p in per]) for i in range(len(args))]
        f_np, f_cp = tg.compile(case.fn), tg.compile(case.fn, backend="cupy")
        # compile all three variants now; their kernels build lazily, together, at the first launch
        f_cp.source(*args)
        f_cp.source(*args, jvp=True, argnums=case.argnums)
        f_cp.source(*args, jvp=True, argnums=case.argnums, directions=2)
        plans.append((case, args, one, many, f_np, f_cp))
    for case, args, one, many, f_np, f_cp in plans:
        dtype = next((np.asarray(a).dtype for a in args if np.asarray(a).dtype.kind == "f"), np.float64)
        tol = _tol(dtype)
        got, want = f_cp(*args), f_np(*args)
        for g, w in zip(tree_leaves(got), tree_leaves(want)):
            assert np.asarray(g).dtype == np.asarray(w).dtype, case.name
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), **tol, err_msg=case.name)
        for tangents, batched in ((one, False), (many, True)):
            (gv, gt), (wv, wt) = f_cp.jvp(args, tangents, batched=batched), f_np.jvp(args, tangents, batched=batched)
            for g, w in zip(tree_leaves((gv, gt)), tree_leaves((wv, wt))):
                np.testing.assert_allclose(np.asarray(g), np.asarray(w), **tol, err_msg=f"{case.name} jvp")


def test_every_op_case_float64(emulated_cupy):
    _run_cases(CASES, list)


def test_every_op_case_float32(emulated_cupy):
    _run_cases(CASES, as_f32)


def test_integer_boolean_and_special_values(emulated_cupy):
    fs = [(name, tg.compile(fn, backend="cupy"), fn, args) for name, fn, args in INT_CASES]
    for _, f, _, args in fs:
        f.source(*args)
    for name, f, fn, args in fs:
        got, want = f(*args), tg.compile(fn)(*args)
        assert np.asarray(got).dtype == np.asarray(want).dtype, name
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)


def test_activity_perturbation_matches_the_numpy_backend(emulated_cupy):
    """Block-sparse, chunked (``GroupedImage``) and layerwise (``Stacked``) activity tangents
    lower to the CuPy backend and give the NumPy backend's estimates."""
    from tracegrad.nn.models import mlp

    model = mlp([12, 8, 8, 3])
    p = model.init(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 12)).astype(np.float32), rng.integers(0, 3, 5)

    def loss(p, x, y):
        return tg.numpy.cross_entropy(model.apply(p, x), y)

    for options in ({}, {"groups": 4, "mask": True}, {"groups": 4, "mask": True, "layerwise": True}):
        want = tg.activity_grad(loss, seed=0, **options)(p, x, y)
        got = tg.activity_grad(loss, seed=0, backend="cupy", **options)(p, x, y)
        np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=1e-6)
        for k in p:
            np.testing.assert_allclose(np.asarray(got[1][k]), want[1][k], rtol=1e-5, atol=1e-6, err_msg=k)
