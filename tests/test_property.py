"""Property-based tests: random compositions of primitives, compiled vs NumPy, JVP vs FD."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import tracegrad as tg
from tracegrad.testing import check_jvp

# Smooth ops on a domain where they are well behaved (no kinks hit, no log of negatives).
UNARY = {
    "sin": np.sin,
    "tanh": np.tanh,
    "exp_tanh": lambda x: np.exp(np.tanh(x)),
    "log1p_sq": lambda x: np.log1p(x * x),
    "sqrt_sq1": lambda x: np.sqrt(x * x + 1.0),
    "square": lambda x: x * x,
    "neg": lambda x: -x,
    "scale": lambda x: 0.5 * x - 1.0,
    "softmax": lambda x: np.exp(x - np.max(x, axis=-1, keepdims=True))
    / np.sum(np.exp(x - np.max(x, axis=-1, keepdims=True)), axis=-1, keepdims=True),
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0),
    "maximum_smooth": lambda a, b: np.maximum(a, b + 10.0),
    "where": lambda a, b: np.where(b > 0, a, b),
}
REDUCE = {
    "sum0": lambda x: np.sum(x, axis=0, keepdims=True),
    "mean_last": lambda x: np.mean(x, axis=-1, keepdims=True),
    "max_all": lambda x: np.max(x, keepdims=True),
    "transpose_back": lambda x: x.T.T,
}

SHAPES = [(3, 4), (1, 4), (3, 1), (4,), ()]


@st.composite
def programs(draw):
    """A list of steps; each step appends one value computed from earlier ones."""
    n_inputs = 2
    steps = []
    for i in range(draw(st.integers(1, 6))):
        avail = n_inputs + i
        kind = draw(st.sampled_from(["unary", "binary", "reduce"]))
        if kind == "unary":
            steps.append(("unary", draw(st.sampled_from(sorted(UNARY))), draw(st.integers(0, avail - 1))))
        elif kind == "binary":
            steps.append(("binary", draw(st.sampled_from(sorted(BINARY))),
                          draw(st.integers(0, avail - 1)), draw(st.integers(0, avail - 1))))
        else:
            steps.append(("reduce", draw(st.sampled_from(sorted(REDUCE))), draw(st.integers(0, avail - 1))))
    shapes = (draw(st.sampled_from(SHAPES[:3])), draw(st.sampled_from(SHAPES)))
    return steps, shapes


def build(steps):
    def f(x, y):
        vals = [x, y]
        for step in steps:
            if step[0] == "unary":
                v = vals[step[2]]
                # softmax reduces over axis -1, which a 0-d value lacks (NumPy raises too).
                vals.append(UNARY[step[1]](v) if step[1] != "softmax" or np.ndim(v) >= 1 else v)
            elif step[0] == "binary":
                vals.append(BINARY[step[1]](vals[step[2]], vals[step[3]]))
            else:
                v = vals[step[2]]
                vals.append(REDUCE[step[1]](v) if np.ndim(v) >= 1 else v)
        return np.sum(vals[-1] * vals[-1]) + vals[-1]

    return f


@given(programs(), st.integers(0, 2**16))
def test_random_programs_compile_to_numpy_results(program, seed):
    steps, shapes = program
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(s) for s in shapes]
    f = build(steps)
    np.testing.assert_allclose(tg.compile(f)(*args), f(*args), rtol=1e-10, atol=1e-10)


@given(programs(), st.integers(0, 2**16))
def test_random_programs_jvp_matches_finite_differences(program, seed):
    steps, shapes = program
    rng = np.random.default_rng(seed)
    args = [rng.uniform(-1.5, 1.5, s) for s in shapes]
    check_jvp(build(steps), args, seed=seed, rtol=1e-4, atol=1e-5)
