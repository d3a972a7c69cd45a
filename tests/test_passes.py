"""Each Graph -> Graph pass tested alone, plus the IR verifier and printer."""

from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.ad import jvp_graph
from tracegrad.ir import PRIMITIVES, Aval, Graph, Literal, Node, Var
from tracegrad.transforms import cse, dce, fold, optimize

F64 = np.dtype(np.float64)


def v(*shape):
    return Var(Aval(shape, F64))


def node(name, ins, out, **params):
    return Node(PRIMITIVES[name], tuple(ins), (out,), params)


def test_dce_drops_unused_nodes_only():
    x, a, b, c = v(3), v(3), v(3), v(3)
    g = Graph([x], [node("exp", [x], a), node("sin", [x], b), node("mul", [a, a], c)], [c])
    out = dce(g).validate()
    assert [n.primitive.name for n in out.nodes] == ["exp", "mul"]
    assert g.nodes[1].primitive.name == "sin"  # input graph untouched


def test_cse_merges_identical_nodes():
    x, a, b, c = v(3), v(3), v(3), v(3)
    g = Graph([x], [node("exp", [x], a), node("exp", [x], b), node("add", [a, b], c)], [c])
    out = cse(g).validate()
    assert [n.primitive.name for n in out.nodes] == ["exp", "add"]
    assert out.nodes[1].inputs == (a, a)
    np.testing.assert_allclose(out.interpret(np.ones(3))[0], 2 * np.e)


def test_cse_respects_params():
    x, a, b, c = v(2, 3), v(3), v(2), v()
    g = Graph([x], [node("reduce_sum", [x], a, axes=(0,), keepdims=False),
                    node("reduce_sum", [x], b, axes=(1,), keepdims=False),
                    node("reduce_sum", [a], c, axes=(0,), keepdims=False)], [c, b])
    assert len(cse(g).nodes) == 3


def test_fold_evaluates_literal_nodes_and_identities():
    x, a, b, c, d = v(3), v(), v(3), v(3), v(3)
    two = Literal(2.0, Aval((), F64, weak=True))
    g = Graph([x], [
        node("mul", [two, two], a),            # 4.0, folded
        node("mul", [x, a], b),                # x * 4.0
        node("mul", [b, Literal(1.0, Aval((), F64, weak=True))], c),  # identity, removed
        node("add", [c, Literal(0.0, Aval((), F64, weak=True))], d),  # identity, removed
    ], [d])
    out = fold(g).validate()
    assert [n.primitive.name for n in out.nodes] == ["mul"]
    assert isinstance(out.nodes[0].inputs[1], Literal) and out.nodes[0].inputs[1].value == 4.0
    np.testing.assert_allclose(out.interpret(np.arange(3.0))[0], [0.0, 4.0, 8.0])


def test_fold_keeps_broadcasting_identities():
    # x * 1 where the 1 broadcasts x to a larger shape is not an identity
    x, a = v(3), v(2, 3)
    g = Graph([x], [node("mul", [x, Literal(np.ones((2, 3)), Aval((2, 3), F64))], a)], [a])
    assert len(fold(g).nodes) == 1


def test_fold_removes_double_negation():
    x, a, b = v(3), v(3), v(3)
    g = Graph([x], [node("neg", [x], a), node("neg", [a], b)], [b])
    out = dce(fold(g))
    assert out.nodes == [] and out.outputs == [x]


def test_validate_catches_bad_graphs():
    x, a = v(3), v(4)
    with pytest.raises(AssertionError, match="shape rule"):
        Graph([x], [node("exp", [x], a)], [a]).validate()
    y = v(3)
    with pytest.raises(AssertionError, match="before definition"):
        Graph([x], [node("exp", [y], v(3))], [x]).validate()


def test_every_pass_output_validates_on_real_graphs():
    def f(x, w, b):
        h = np.tanh(x @ w + b)
        return np.mean(h * h) + np.mean(h * h)

    rng = np.random.default_rng(0)
    args = (rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2))
    g = tg.compile(f).graph(*args, optimized=False).validate()
    for p in (dce, cse, fold, optimize):
        p(g).validate()
    j, _ = jvp_graph(g, [False, True, True], (5,))
    j.validate()
    o = optimize(j).validate()
    assert len(o.nodes) < len(j.nodes)  # CSE removed the duplicated mean
    ref = g.interpret(*args)[0]
    assert np.isclose(o.interpret(*args, rng.standard_normal((5, 3, 2)), rng.standard_normal((5, 2)))[0], ref)


# ---------------------------------------------------------------- memory-aware scheduling
def _mlp_jvp_graph(batch):
    import tracegrad.numpy as tnp
    from tracegrad.ad import jvp_graph
    from tracegrad.nn import mlp
    from tracegrad.transforms import optimize

    model = mlp([784, 1024, 1024, 10])
    params = model.init(0)
    x, y = np.zeros((batch, 784), np.float32), np.zeros(batch, np.int64)
    f = tg.compile(lambda p, x, y: tnp.cross_entropy(model.apply(p, x), y))
    primal = f.graph(params, x, y, optimized=False)
    fused, _ = jvp_graph(primal, [True] * 6 + [False, False], (1,))
    return optimize(fused), f, params, x, y


def test_schedule_lowers_the_peak_of_a_forward_mode_layer():
    from tracegrad.transforms.schedule import peak_live_bytes, schedule

    g, *_ = _mlp_jvp_graph(1024)
    s = schedule(g, inplace=True)
    s.validate()
    assert sorted(map(id, s.nodes)) == sorted(map(id, g.nodes))  # same nodes, new order
    mib = 1 << 20
    # Trace order keeps f, ḣ and three (1024, 1024) float32 products alive: 4 x 4 MiB.
    assert peak_live_bytes(g, inplace=True) == 16 * mib
    # ẋ@W first, summed in place, the ReLU's select written into its dying operand: 3 x 4 MiB
    assert peak_live_bytes(s, inplace=True) == 12 * mib


def test_scheduled_code_computes_the_same_numbers():
    from tracegrad.tree import tree_leaves

    g, f, params, x, y = _mlp_jvp_graph(1024)
    assert [n.primitive.name for n in f.jvp_graph(params, x, y, argnums=0, directions=1).nodes] != [
        n.primitive.name for n in g.nodes]  # the compiled program runs in the new order
    x = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    y = np.random.default_rng(2).integers(0, 10, len(y))
    t = {k: np.random.default_rng(1).standard_normal((1,) + v.shape).astype(np.float32) for k, v in params.items()}
    value, tangent = f.jvp((params, x, y), (t, None, None), batched=True)  # scheduled, in place
    want = g.interpret(*tree_leaves(params), x, y, *tree_leaves(t))  # trace order, one node at a time
    np.testing.assert_allclose(value, want[0], rtol=1e-6)
    np.testing.assert_allclose(tangent, want[1], rtol=1e-5, atol=1e-7)


def test_schedule_keeps_small_graphs_in_source_order():
    from tracegrad.transforms.schedule import schedule

    g = tg.compile(lambda a, b: np.sum(np.tanh(a) * b + a)).jvp_graph(np.ones(3), np.ones(3))
    assert schedule(g, inplace=True) is g


def test_cse_fold_and_dce_keep_fusion_groups():
    from tracegrad.transforms import fuse

    x = np.linspace(-1.0, 1.0, 6)
    g = tg.compile(lambda x: np.exp(x) * 1.0 + np.exp(x) + np.tanh(x)).graph(x, optimized=False)
    fused = fuse(g)
    before = {id(v): n.fusion_group for n in fused.nodes for v in n.outputs}
    assert any(grp is not None for grp in before.values())
    for p in (cse, fold, dce):
        out = p(fused)
        for n in out.nodes:
            assert n.fusion_group == before[id(n.out)], f"{p.__name__} dropped the fusion group of {n.primitive.name}"
    np.testing.assert_allclose(optimize(fused).interpret(x)[0], 2 * np.exp(x) + np.tanh(x))
