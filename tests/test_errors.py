"""Bad input gives a clear tracegrad error naming the user's line — never a wrong number."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import errors


def line_of(fn, marker: str) -> str:
    """``file:line`` of the line in ``fn`` containing ``marker``."""
    lines, start = inspect.getsourcelines(fn)
    for i, text in enumerate(lines):
        if marker in text:
            return f"{__file__}:{start + i}"
    raise AssertionError(marker)


def test_shape_mismatch_names_both_shapes_and_the_line():
    def f(x, y):
        return x + y  # <- add

    with pytest.raises(errors.ShapeError) as info:
        tg.compile(f)(np.ones(3), np.ones(4))
    msg = str(info.value)
    assert "(3,)" in msg and "(4,)" in msg and "broadcast" in msg
    assert line_of(f, "<- add") in msg


def test_matmul_mismatch():
    def f(x, w):
        h = x @ w  # <- matmul
        return h

    with pytest.raises(errors.ShapeError) as info:
        tg.compile(f)(np.ones((2, 3)), np.ones((4, 5)))
    msg = str(info.value)
    assert "(2, 3)" in msg and "(4, 5)" in msg and "not aligned" in msg
    assert line_of(f, "<- matmul") in msg


def test_python_control_flow_on_traced_value():
    def f(x):
        if np.sum(x) > 0:  # <- branch
            return x
        return -x

    with pytest.raises(errors.ControlFlowError) as info:
        tg.compile(f)(np.ones(3))
    msg = str(info.value)
    assert "branching on data" in msg and "np.where" in msg
    assert line_of(f, "<- branch") in msg


def test_unsupported_numpy_function_is_named():
    def f(x):
        return np.unique(x)  # <- unique

    with pytest.raises(errors.UnsupportedOperationError) as info:
        tg.compile(f)(np.ones(3))
    assert "np.unique" in str(info.value) and line_of(f, "<- unique") in str(info.value)


def test_unsupported_ufunc_keyword():
    def f(x):
        return np.exp(x, out=np.empty(3))

    with pytest.raises(errors.UnsupportedOperationError, match="out"):
        tg.compile(f)(np.ones(3))


def test_non_array_argument_type():
    f = tg.compile(lambda x, name: x * 2)
    with pytest.raises(errors.ArgumentTypeError) as info:
        f(np.ones(2), "hello")
    assert "argument name" in str(info.value) and "str" in str(info.value) and "static_argnums" in str(info.value)


def test_concrete_conversion_of_traced_value():
    def f(x):
        return x * float(np.sum(x))  # <- float

    with pytest.raises(errors.ConcretizationError) as info:
        tg.compile(f)(np.ones(3))
    assert line_of(f, "<- float") in str(info.value)


def test_item_assignment_is_rejected():
    def f(x):
        x[0] = 1.0
        return x

    with pytest.raises(errors.UnsupportedOperationError, match="caller.s array"):
        tg.compile(f)(np.ones(3))


def test_tangent_shape_mismatch():
    f = tg.compile(lambda x: x * 2)
    with pytest.raises(errors.TangentError) as info:
        f.jvp((np.ones(3),), (np.ones(4),))
    assert "(4,)" in str(info.value) and "(3,)" in str(info.value)


def test_tangent_dtype_mismatch():
    f = tg.compile(lambda x: x * 2)
    with pytest.raises(errors.TangentError, match="float64.*float32"):
        f.jvp((np.ones(3, np.float32),), (np.ones(3),))


def test_integer_primal_with_a_tangent():
    f = tg.compile(lambda x, y: x[y])
    with pytest.raises(errors.TangentError, match="pass None"):
        f.jvp((np.ones(3), np.array([0, 1])), (np.ones(3), np.ones(2)))


def test_tangent_structure_mismatch():
    f = tg.compile(lambda p: p["w"] * 2)
    with pytest.raises(errors.TangentError, match="keys"):
        f.jvp(({"w": np.ones(2)},), ({"v": np.ones(2)},))


def test_errors_during_jvp_replay_still_name_user_line():
    # A traced float index used as an array index fails at trace time with a dtype error.
    def f(x, i):
        return x[i]  # <- index

    with pytest.raises(errors.DTypeError) as info:
        tg.compile(f)(np.ones(3), np.array([0.5]))
    assert line_of(f, "<- index") in str(info.value)


def test_forward_grad_needs_a_scalar_output():
    with pytest.raises(errors.TangentError, match="scalar"):
        tg.forward_grad(lambda x: x * 2, seed=0)(np.ones(3))


def test_forward_grad_rejects_integer_parameters():
    with pytest.raises(errors.TangentError, match="int64"):
        tg.forward_grad(lambda x: np.sum(x), seed=0)(np.arange(3))


def test_unknown_backend():
    with pytest.raises(errors.BackendUnavailableError, match="numpy"):
        tg.compile(lambda x: x, backend="tpu")


def test_traced_boolean_mask_indexing():
    def f(x):
        return x[x > 0]

    with pytest.raises(errors.UnsupportedOperationError, match="np.where"):
        tg.compile(f)(np.ones(3))


def test_leaked_tracer_from_another_trace():
    leaked = []

    def f(x):
        leaked.append(x)
        return x * 2

    def g(x):
        return x + leaked[0]

    tg.compile(f)(np.ones(2))
    with pytest.raises(errors.TraceError, match="after that trace ended"):
        tg.compile(g)(np.ones(2))
