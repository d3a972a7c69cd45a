"""Block-sparse conv tangents (``tracegrad.ad.cells``), float64 on a small CNN with local heads:
the ``Cells`` path gives the same numbers as the dense path fed the same directions, its
estimates average to the exact local gradient (masked or not), and G equal to a conv layer's
number of units makes that layer's estimate exact."""

import numpy as np
import pytest
from estimates import mean_and_se

import tracegrad as tg
from tracegrad.ad.cells import cell_layout
from tracegrad.modes import ActivityMode
from tracegrad.nn.models import cnn

B = 3


def _model(channels=(2, 2, 4, 4), head_cells=2):
    m = cnn(1, 8, channels=channels, hidden=6, num_classes=3, local_heads=True, head_cells=head_cells)
    p = {k: v.astype(np.float64) for k, v in m.init(0).items()}
    rng = np.random.default_rng(1)
    for k, v in p.items():  # biases away from zero: the ReLU masks differ between units
        if k.endswith("_b"):
            p[k] = rng.standard_normal(v.shape) * 0.3
    return m, p, rng.standard_normal((B, 1, 8, 8)), rng.integers(0, 3, B)


def test_cell_layout_splits_into_g_blocks_inside_the_pool_windows():
    assert cell_layout((5, 8, 28, 28), 1568, (14, 14)) == (1, 2, 2)  # 8 channels x 14 x 14 blocks of 2x2
    assert cell_layout((5, 16, 14, 14), 1568, (7, 7)) == (2, 1, 1)  # 7x7 windows: no 2-pixel block fits
    assert cell_layout((5, 8, 28, 28), 1568, None) == (1, 2, 2)
    assert cell_layout((5, 8, 28, 28), 7, None) == (8, 4, 28)  # rows in 7 blocks of 4
    assert cell_layout((5, 8, 28, 28), 5, None) is None  # no split into exactly 5 blocks
    assert cell_layout((5, 8, 28, 28), 1, None) is None
    assert cell_layout((5, 8, 28), 4, None) is None


def _cells_reference(u, layout, groups):
    """The dense (K*G, B, C, H, W) directions the Cells array ``u`` (K, B, C, H, W) stands for."""
    k, b, C, H, W = u.shape
    c, ph, pw = layout
    block = ((np.arange(C)[:, None, None] // c) * (H // ph) + np.arange(H)[None, :, None] // ph) * (W // pw) \
        + np.arange(W)[None, None, :] // pw
    out = np.zeros((k, groups, b, C, H, W))
    for g in range(groups):
        out[:, g] = u * (block == g)
    return out.reshape(k * groups, b, C, H, W)


@pytest.mark.parametrize(("mask", "head_cells"), [(False, 2), (True, 2), (True, 4), (True, None)])
def test_cells_give_the_dense_paths_numbers(mask, head_cells):
    """``head_cells=None``: the plain CNN and the global loss (no pools to align with; the Cells
    tangents reach the next conv layer through the densifying defaults)."""
    m, p, x, y = _model(head_cells=head_cells or 2)
    local = head_cells is not None
    k, groups = 2, 8 if head_cells in (2, None) else 32  # 1-pixel windows (head_cells 4 on 4x4): 32 blocks fit
    if local:
        f = tg.compile(m.local_loss)
    else:
        plain = cnn(1, 8, channels=(2, 2, 4, 4), hidden=6, num_classes=3)
        p = {name: p[name] for name in plain.init(0)}
        f = tg.compile(lambda p, x, y: tg.numpy.cross_entropy(plain.apply(p, x), y))
    wrt = tuple([True] * len(p) + [False, False])
    cells_entry, leaves = f._entry((p, x, y), ActivityMode(wrt, k * groups, mask, k, groups, local))
    dense_entry, _ = f._entry((p, x, y), ActivityMode(wrt, k * groups, mask, k, 1, local))
    rng = np.random.default_rng(5)
    cells_in, dense_in, kinds = [], [], []
    for v, d in zip([v for v in cells_entry.graph.inputs if v.hint and v.hint.startswith("activity_u")],
                    [v for v in dense_entry.graph.inputs if v.hint and v.hint.startswith("activity_u")]):
        u = rng.standard_normal(v.aval.shape)
        kinds.append(v.hint.rsplit("_", 1)[-1])
        if v.hint.endswith("_cells"):
            window = (v.aval.shape[-1] // head_cells,) * 2 if local else None
            layout = cell_layout(v.aval.shape[1:], groups, window)
            cells_in.append(u)
            dense_in.append(_cells_reference(u, layout, groups))
        elif v.hint.endswith("_units"):  # the hidden layer, 6 units < G: direction k*G + j is unit j
            cells_in.append(u)
            ref = np.zeros((k, groups) + u.shape[1:])
            for j in range(u.shape[-1]):
                ref[:, j, :, j] = u[:, :, j]
            dense_in.append(ref.reshape((k * groups,) + u.shape[1:]))
        else:
            cells_in.append(u)
            dense_in.append(u)
        assert dense_in[-1].shape == d.aval.shape
    # every conv layer takes block-sparse tangents (and, global, the output layer is perturbed too)
    assert kinds == ["cells"] * 4 + ["units"] * (1 if local else 2)
    a = cells_entry.executable(*leaves, *cells_in)
    b = dense_entry.executable(*leaves, *dense_in)
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        np.testing.assert_allclose(np.asarray(ra), np.asarray(rb), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("options", [{"groups": 8}, {"groups": 32}, {"groups": 32, "mask": True}])
def test_cells_estimates_average_to_the_local_gradient(options):
    m, p, x, y = _model()
    exact = tg.grad(m.local_loss)(p, x, y)
    g = tg.activity_grad(m.local_loss, directions=4, seed=3, exact_last=True, **options)
    for name, (mean, se) in mean_and_se(g, (p, x, y), 50).items():
        assert np.all(np.abs(mean - exact[name]) <= 5 * se + 1e-12), name
        if name.startswith("conv") and name.endswith("_w") and options["groups"] > 8:
            assert se.max() < 0.2 * np.abs(exact[name]).max(), name  # sharp enough to see a bias


def test_one_unit_per_block_gives_the_exact_local_gradient():
    # conv0/1: 2 x 8 x 8 = 128 units, conv2/3: 8 x 4 x 4 = 128 units: G = 128 puts one in each block
    m, p, x, y = _model(channels=(2, 2, 8, 8))
    exact = tg.grad(m.local_loss)(p, x, y)
    g = tg.activity_grad(m.local_loss, groups=128, mask=True, seed=0, exact_last=True)
    _, e = g(p, x, y)
    for name in exact:
        np.testing.assert_allclose(e[name], exact[name], rtol=1e-10, atol=1e-13, err_msg=name)


def test_dense_fallbacks_match_the_structured_maps():
    """``Cells.dense`` / ``Pooled.dense`` / ``Units.dense`` (what any other op sees) agree with
    the block-wise pool and matmul (eager NumPy, float64)."""
    from tracegrad.ad import tangents as T
    from tracegrad.ad.cells import Cells, Pooled, Units
    from tracegrad.ad.linear import LinearMap
    from tracegrad.ir import Aval
    from tracegrad.ops.linalg import matmul_left
    from tracegrad.ops.nn import avg_pool2d_map

    rng = np.random.default_rng(0)
    k, b, C, H, W = 2, 3, 4, 8, 8
    f64 = np.dtype("float64")
    cells = Cells(rng.standard_normal((k, b, C, H, W)), Aval((b, C, H, W), f64), (2, 2, 2))
    groups = 2 * 4 * 4
    head = rng.standard_normal((C * 2 * 2, 5))
    with T.directions_context((k * groups,)):
        dense = cells.dense()
        assert dense.shape == (k * groups, b, C, H, W)
        per_k = (dense.reshape(k, groups, b, C, H, W) != 0).sum(axis=1)
        assert np.all(per_k == 1)  # every unit lies in exactly one of the G directions of each k
        pool = avg_pool2d_map(np.zeros((b, C, H, W)), window=(4, 4), stride=(4, 4))
        pooled = cells.map(pool, Aval((b, C, 2, 2), f64))
        assert isinstance(pooled, Pooled)
        np.testing.assert_allclose(pooled.dense(), pool.dense(dense, 1), rtol=1e-12, atol=1e-15)
        flatten = LinearMap("reshape", lambda v, nb: v.reshape(v.shape[:nb] + (b, -1)), shape=(b, C * 4))
        flat = pooled.map(flatten, Aval((b, C * 4), f64))
        assert isinstance(flat, Pooled)
        out = flat.map(matmul_left(np.zeros((b, C * 4)), head), Aval((b, 5), f64))
        np.testing.assert_allclose(out.dense(), pool.dense(dense, 1).reshape(k * groups, b, -1) @ head, rtol=1e-12)
        units = Units(rng.standard_normal((k, b, 6)), Aval((b, 6), f64), groups)
        w = rng.standard_normal((6, 5))
        np.testing.assert_allclose(units.map(matmul_left(np.zeros((b, 6)), w), Aval((b, 5), f64)).dense(),
                                   units.dense() @ w, rtol=1e-12)

