"""In-place operators, item assignment and views on traced arrays follow NumPy exactly
(values, JVPs and gradients against finite differences, float64), or raise a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from cupy_helpers import needs_gxx

import tracegrad as tg
from tracegrad import errors
from tracegrad.testing import check_grad, check_jvp

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.standard_normal(shape)


def aliasing(x):
    x = x.copy()
    y = x
    y += 1.0
    return x + y  # NumPy: 2x + 2 (one object seen through both names)


def compound_ops(x, w):
    x = x * 1.0
    x -= 0.5 * w
    x *= w
    x /= 2.0 + w * w
    x **= 2
    return x


def slice_assign(x, v):
    x = x.copy()
    x[1:3] = v
    return x * x


def ellipsis_update(dx, g):
    dx = dx * 1.0
    dx[...] -= 0.1 * g
    return dx


def repeated_index(a):
    a = a * 1.0
    a[[0, 0, 2]] -= 1.0  # NumPy does not accumulate repeated indices: subtracts once
    a[[1, 1]] = a[[3, 4]]  # last write wins: a[1] = a[4]
    return a * a


def mask_assign(x):
    x = np.tanh(x)
    x[x > 0.2] = 0.0
    x[np.array([True, False, True, False, False, False])] *= 3.0
    return x


def view_write(x):
    x = x * 1.0
    v = x[:2]
    v += x[2:4]  # writes through the view into x
    w = x[1]
    x[1] *= 3.0  # the view w re-reads x
    return x + w


def nested_view(x):
    x = np.sin(x)
    row = x[1]
    part = row[1:]
    part *= 2.0
    t = x.T
    t[0] += 1.0  # transposes are views too: column 0 of x
    return x, row


def int_array_assign(x, v):
    x = x * 1.0
    x[np.array([[0, 2], [3, 3]]), 1] = v
    return x


def softmax_grad_style(scores, y):
    # The classic course-assignment softmax gradient: labels are an argument (traced).
    n = scores.shape[0]
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(n), y] -= 1
    return p * scores


def traced_repeated_index(x, idx, v):
    x = x * 1.0
    x[idx] = v  # idx traced and may repeat: the last write wins
    return x


def traced_mask(x, m):
    x = x * 1.0
    x[m] = 0.5
    return x


CASES = [
    ("aliasing", aliasing, [_x(4)], (0,)),
    ("compound_ops", compound_ops, [_x(3, 4), _x(3, 4)], (0, 1)),
    ("slice_assign", slice_assign, [_x(5), _x(2)], (0, 1)),
    ("ellipsis_update", ellipsis_update, [_x(3, 2), _x(3, 2)], (0, 1)),
    ("repeated_index", repeated_index, [_x(5)], (0,)),
    ("mask_assign", mask_assign, [_x(6)], (0,)),
    ("view_write", view_write, [_x(4, 3)], (0,)),
    ("nested_view", nested_view, [_x(3, 3)], (0,)),
    ("int_array_assign", int_array_assign, [_x(4, 3), _x(2, 2)], (0, 1)),
    ("softmax_grad_style", softmax_grad_style, [_x(4, 3), np.array([2, 0, 2, 1])], (0,)),
    ("traced_repeated_index", traced_repeated_index, [_x(5), np.array([2, 1, 1, -5]), _x(4)], (0, 2)),
    ("traced_mask", traced_mask, [_x(3, 2), np.array([True, False, True])], (0,)),
]


@pytest.mark.parametrize("name,fn,args,argnums", CASES, ids=[c[0] for c in CASES])
def test_values_match_numpy(name, fn, args, argnums):
    expect = fn(*[a.copy() for a in args])
    got = tg.compile(fn)(*args)
    for e, g in zip(tg.tree.tree_leaves(expect), tg.tree.tree_leaves(got)):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,fn,args,argnums", CASES, ids=[c[0] for c in CASES])
def test_jvp_matches_finite_differences(name, fn, args, argnums):
    check_jvp(fn, args, argnums)


@pytest.mark.parametrize("name,fn,args,argnums", CASES, ids=[c[0] for c in CASES])
def test_grad_matches_finite_differences(name, fn, args, argnums):
    def loss(*a):
        return sum(np.sum(np.sin(leaf)) for leaf in tg.tree.tree_leaves(fn(*a)))

    check_grad(loss, args, argnums)


def test_batched_directions_match_single_jvps():
    args = [_x(4, 3), np.array([2, 0, 2, 1])]
    f = tg.compile(softmax_grad_style)
    vs = RNG.standard_normal((3, 4, 3))
    _, batched = f.jvp(args, [vs, None], batched=True)
    for k in range(3):
        _, single = f.jvp(args, [vs[k], None])
        np.testing.assert_allclose(batched[k], single, rtol=1e-12, atol=1e-12)


def test_arguments_are_never_modified():
    def f(x):
        x += 1.0
        return x

    with pytest.raises(errors.UnsupportedOperationError, match="caller's array") as info:
        tg.compile(f)(np.ones(3))
    assert "x += 1.0" in str(info.value)

    def g(x):
        v = x[:2]  # a view of the argument: writing through it would modify the caller's array
        v *= 2.0
        return v

    with pytest.raises(errors.UnsupportedOperationError, match="caller's array"):
        tg.compile(g)(np.ones(3))


def test_copies_are_independent():
    def f(x):
        a = x.copy()
        b = +x
        c = x.astype(np.float64)
        d = np.positive(x)
        e = x.flatten()
        for arr in (a, b, c, d, e):
            arr += 1.0
        return a + b + c + d + e.reshape(x.shape)

    x = _x(2, 3)
    np.testing.assert_allclose(tg.compile(f)(x), f(x.copy()))


def test_scalars_are_immutable():
    def f(x, s):
        t = x.sum()
        u = t
        t += 1.0  # a NumPy scalar: rebinds t only
        s += 2.0  # a Python float argument: rebinds s only
        return t, u, s

    got = tg.compile(f)(np.ones(3), 1.5)
    np.testing.assert_allclose(got, (4.0, 3.0, 3.5))


def test_dtype_rules_follow_numpy():
    def f(x):
        y = x.astype(np.float32)
        y += np.float64(0.1)  # computed in float64, cast back: y stays float32
        return y

    out = tg.compile(f)(np.ones(3))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, f(np.ones(3)))

    def g(i):
        j = i * 1
        j += 1.5  # NumPy: cannot cast float64 to int64 with same_kind
        return j

    with pytest.raises(errors.DTypeError, match="same_kind"):
        tg.compile(g)(np.arange(3))

    def h(x):
        y = x * 1.0
        y += np.ones((2, 3))  # the result would have another shape
        return y

    with pytest.raises(errors.ShapeError, match="non-broadcastable"):
        tg.compile(h)(np.ones(3))


def test_reshape_views_refuse_rather_than_differ():
    def f(x):
        y = x * 2.0
        z = y.reshape(-1)  # a view or a copy depending on layout
        z += 1.0
        return y

    with pytest.raises(errors.UnsupportedOperationError, match="reshape"):
        tg.compile(f)(np.ones((2, 3)))

    def g(x):
        y = x * 2.0
        z = y.reshape(-1)
        y += 1.0  # z would show the change only if it was a view
        return z

    with pytest.raises(errors.UnsupportedOperationError, match="modified in place"):
        tg.compile(g)(np.ones((2, 3)))

    def h(x):
        y = x * 2.0
        z = y[None]  # adds a length-1 axis: always a view
        t = y.T
        y += 1.0
        return z, t

    x = _x(2, 3)
    for a, b in zip(tg.compile(h)(x), h(x.copy())):
        np.testing.assert_array_equal(a, b)


def test_temporaries_behind_reshapes_are_not_views():
    def f(a, b):
        z = np.tensordot(a, b, axes=1)  # its reshape is of a temporary: a fresh array
        z += 1.0
        return z

    a, b = _x(2, 3), _x(3, 2, 2)
    np.testing.assert_allclose(tg.compile(f)(a, b), f(a, b))


def test_bad_assignments_name_the_line():
    def f(x):
        y = x * 1.0
        y[5] = 1.0
        return y

    with pytest.raises(errors.TracegradError, match="out of bounds") as info:
        tg.compile(f)(np.ones(3))
    assert "y[5] = 1.0" in str(info.value)

    def g(x):
        y = x * 1.0
        y[:2] = np.ones(3)
        return y

    with pytest.raises(errors.ShapeError, match="could not broadcast"):
        tg.compile(g)(np.ones(3))

    def h(x, m):
        y = x * 1.0
        y[m] = np.ones(2)  # how many values a traced mask needs depends on the data
        return y

    with pytest.raises(errors.UnsupportedOperationError, match="depends on the data"):
        tg.compile(h)(np.ones(3), np.array([True, False, True]))


def test_preallocated_outputs_and_masked_boxes():
    def rnn(xs, w):
        hs = np.zeros_like(xs)  # a traced array: traced rows can be assigned into it
        h = np.zeros(xs.shape[1])
        for t in range(xs.shape[0]):
            h = np.tanh(xs[t] + h @ w)
            hs[t] = h
        return hs

    def box(x):
        y = x * 1.0
        y[y[:, 0] > 0, 1:] = -1.0  # a traced row mask with a slice
        return y

    args = [_x(3, 2), _x(2, 2)]
    np.testing.assert_allclose(tg.compile(rnn)(*args), rnn(*args), rtol=1e-12)
    check_jvp(rnn, args)
    check_grad(lambda xs, w: np.sum(rnn(xs, w) ** 2), args, (0, 1))
    x = _x(4, 3)
    np.testing.assert_array_equal(tg.compile(box)(x), box(x))
    check_grad(lambda x: np.sum(np.sin(box(x))), [x])


def test_constant_writes_copy_and_fill():
    def f(x):
        a = x * 1.0
        a[...] = np.array([3.0, 4.0, 5.0])  # every element a constant: still a traced array
        b = np.copy(x)
        b += 1.0
        c = x * 1.0
        c.fill(2.0)
        d = x * 1.0
        d[::-1] = np.array([1.0, 2.0, 3.0])
        return a + x, b, c, d

    x = _x(3)
    for got, want in zip(tg.compile(f)(x), f(x.copy())):
        np.testing.assert_array_equal(got, want)
    check_jvp(lambda x: f(x)[0], [x])


def test_missing_ndarray_methods_are_clear_errors():
    def f(x):
        return x.searchsorted(0.5)

    with pytest.raises(errors.UnsupportedOperationError, match="searchsorted") as info:
        tg.compile(f)(np.ones(3))
    assert "x.searchsorted(0.5)" in str(info.value)

    def g(x):
        assert not hasattr(x, "no_such_method")
        return x

    tg.compile(g)(np.ones(2))


@needs_gxx
def test_cupy_backend_agrees(emulated_cupy):
    """The same graphs on the CuPy backend (CPU stand-in): outputs and batched JVPs."""
    from tracegrad.testing import check_backends

    check_backends(softmax_grad_style, [_x(4, 3), np.array([2, 0, 2, 1])], (0,), directions=2)


def numpy_inplace_functions(x, y):
    a = x * 1.0
    np.copyto(a, y)
    b = x * 1.0
    np.put_along_axis(b, np.array([[0], [2]]), 9.0 * y[:, :1], axis=1)
    c = np.zeros_like(x[:, :2] @ np.ones((2, 2)))
    np.fill_diagonal(c, 3.0)
    d = x * 1.0
    np.subtract.at(d, (np.array([0, 0]), np.array([1, 1])), y[0, :2])  # repeats accumulate
    e = np.zeros_like(np.concatenate([x, x]))
    np.add.at(e, np.array([0, 3, 0]), y[[0, 1, 1]])  # the embedding-gradient pattern
    return a, b, c, d, e


def test_numpy_inplace_functions():
    args = [_x(2, 3), _x(2, 3)]
    for got, want in zip(tg.compile(numpy_inplace_functions)(*args), numpy_inplace_functions(*args)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    check_jvp(numpy_inplace_functions, args)
    check_grad(lambda x, y: sum(np.sum(np.sin(o)) for o in numpy_inplace_functions(x, y)), args, (0, 1))

    def into_numpy(x):
        out = np.zeros(3)
        np.copyto(out, x)  # a NumPy array cannot hold traced values
        return out

    with pytest.raises(errors.UnsupportedOperationError, match="NumPy array") as info:
        tg.compile(into_numpy)(np.ones(3))
    assert "np.copyto(out, x)" in str(info.value)
