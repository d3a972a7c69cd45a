"""The fusion pass (transforms/fuse.py) and the fusion-group contract (ir/fusion.py):
group structure on real forward-gradient graphs, the verifier, the listing, and that a
fused graph computes exactly what the unfused one does on the NumPy backend."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASE_IDS, CASES

import tracegrad as tg
from tracegrad.backends import get_backend
from tracegrad.backends.cupy_codegen import generate
from tracegrad.ir import PRIMITIVES, Aval, Graph, Node, Var
from tracegrad.ir.fusion import GroupError, fusion_groups
from tracegrad.nn.models import cnn, loss_fn, mlp
from tracegrad.transforms import fuse
from tracegrad.transforms.fuse import kernel_count

F32 = np.dtype(np.float32)


def _mlp_step_graph(k=1, sizes=(784, 32, 32, 10), batch=8):
    model = mlp(list(sizes))
    params = model.init(0)
    x = np.ones((batch, sizes[0]), np.float32)
    y = np.zeros(batch, np.int64)
    return tg.compile(loss_fn(model)).jvp_graph(params, x, y, argnums=0, directions=k), (params, x, y)


def _cnn_step_graph(k=1):
    model = cnn(image_size=8, channels=(4, 4, 4, 4), hidden=16)
    params = model.init(0)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = np.array([3, 7])
    return tg.compile(loss_fn(model)).jvp_graph(params, x, y, argnums=0, directions=k), (params, x, y)


@pytest.mark.parametrize("k", [1, 4])
def test_mlp_forward_gradient_step_is_eight_kernels(k):
    """Per hidden layer ONE kernel (bias add, ReLU, mask, tangent bias add and select, primal
    and tangent together); the softmax cross-entropy tail takes six (two max/sum reductions,
    their epilogues, the label gathers)."""
    g, _ = _mlp_step_graph(k)
    fused = fuse(g).validate()
    assert kernel_count(fused) == 8
    groups = fusion_groups(fused)
    roles = fused.roles()
    for layer in groups[:2]:  # the two hidden layers
        assert sorted({n.primitive.name for n in layer.nodes}) == ["add", "gt", "maximum", "where"]
        assert {roles[n.out] for n in layer.nodes} == {"primal", "tangent"}
        assert layer.shape == (k, 8, 32)
        assert layer.reduction is None
    # every matmul stays outside the kernels (cuBLAS); every elementwise node is inside one
    for n in fused.nodes:
        if n.primitive.name == "matmul":
            assert n.fusion_group is None
        if n.primitive.elementwise and n.primitive.name != "stop_gradient":
            assert n.fusion_group is not None, n.primitive.name


def test_reductions_absorb_their_producers_and_epilogues():
    g, _ = _mlp_step_graph(1)
    groups = fusion_groups(fuse(g))
    by_red = {grp.reduction.primitive.name: grp for grp in groups if grp.reduction is not None
              and grp.reduction.params["axes"] == (1,)}
    sm = [grp for grp in groups if grp.reduction is not None and grp.reduction.primitive.name == "reduce_sum"
          and any(n.primitive.name == "exp" for n in grp.prologue)]
    assert len(sm) == 1  # sum(exp(v - max)) is one kernel: exp feeds the reduction in registers
    assert {n.primitive.name for n in sm[0].epilogue} >= {"log"}  # log(sum) runs once per row
    assert by_red["reduce_max"].prologue[0].primitive.name == "add"  # logits = matmul + bias, then max
    gathers = [grp for grp in groups if grp.nodes[0].primitive.name == "take_along_axis"]
    assert len(gathers) == 2 and all(grp.reduction is not None for grp in gathers)


def test_cnn_pool_and_its_jvp_share_a_kernel():
    g, _ = _cnn_step_graph(1)
    groups = fusion_groups(fuse(g).validate())
    pools = [grp for grp in groups if any(n.primitive.name == "max_pool2d" for n in grp.nodes)]
    assert len(pools) == 2
    for grp in pools:  # max_pool2d, its arg-max tests and the where-chain routing the tangent
        names = [n.primitive.name for n in grp.nodes]
        assert names.count("max_pool2d") == 1 and names.count("where") == 3 and names.count("eq") == 3


def test_gathered_operand_is_never_computed_in_the_same_group():
    g, _ = _mlp_step_graph(4)
    fused = fuse(g)
    group_of = {v: n.fusion_group for n in fused.nodes for v in n.outputs}
    for n in fused.nodes:
        if n.primitive.name == "take_along_axis":
            assert group_of.get(n.inputs[0]) != n.fusion_group


def test_fuse_leaves_its_input_alone_and_is_idempotent():
    g, _ = _mlp_step_graph(1)
    before = str(g)
    once = fuse(g)
    assert str(g) == before and all(n.fusion_group is None for n in g.nodes)
    assert str(fuse(once)) == str(once)


def test_listing_shows_groups_as_blocks():
    def f(x, w):
        return np.sum(np.tanh(x @ w) * 2.0)

    x, w = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    text = str(fuse(tg.compile(f).graph(x, w)))
    assert text == (
        "{ lambda x:f32[2,3] w:f32[3,4] .\n"
        "    a:f32[2,4] = matmul x w\n"
        "    fusion_group 0 {\n"
        "      b:f32[2,4] = tanh a\n"
        "      c:f32[2,4] = mul b 2.0\n"
        "      d:f32[] = reduce_sum[axes=(0, 1), keepdims=False] c\n"
        "    }\n"
        "  in ( d ) }")


def _v(*shape):
    return Var(Aval(shape, F32))


def test_validate_rejects_broken_groups():
    x, a, b, c = _v(3), _v(3), _v(3), _v(3)
    exp, sin = PRIMITIVES["exp"], PRIMITIVES["sin"]
    split = Graph([x], [Node(exp, (x,), (a,), {}, None, 0), Node(sin, (x,), (b,), {}, None, None),
                        Node(exp, (a,), (c,), {}, None, 0)], [b, c])
    with pytest.raises(AssertionError, match="not contiguous"):
        split.validate()
    y, i, t = _v(2, 3), Var(Aval((2, 1), np.dtype(np.int64))), _v(2, 1)
    gather = Graph([y, i], [Node(exp, (y,), (a := _v(2, 3),), {}, None, 0),
                            Node(PRIMITIVES["take_along_axis"], (a, i), (t,), {"axis": 1}, None, 0)], [t])
    with pytest.raises(GroupError, match="gathers operand 0 from inside"):
        gather.validate()
    s1, s2 = _v(), _v()
    two = Graph([x], [Node(PRIMITIVES["reduce_sum"], (x,), (s1,), {"axes": (0,), "keepdims": False}, None, 0),
                      Node(PRIMITIVES["reduce_max"], (x,), (s2,), {"axes": (0,), "keepdims": False}, None, 0)],
                [s1, s2])
    with pytest.raises(GroupError, match="more than one reduction"):
        two.validate()
    mm = Graph([y], [Node(PRIMITIVES["transpose"], (y,), (_v(3, 2),), {"perm": (1, 0)}, None, 0)], [y])
    with pytest.raises(GroupError, match="cannot be fused"):
        mm.validate()


def _numpy_both(graph, args):
    plain = get_backend("numpy").compile(graph)(*args)
    fused_graph = fuse(graph).validate()
    fused = get_backend("numpy").compile(fused_graph)(*args)
    return plain, fused


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fused_graph_gives_the_same_numbers_on_numpy(case):
    from tracegrad.testing import random_tangents
    from tracegrad.tree import tree_leaves

    f = tg.compile(case.fn)
    g = f.jvp_graph(*case.args, argnums=case.argnums, directions=3)
    rng = np.random.default_rng(0)
    tangents = [np.stack([t] * 3) for t in tree_leaves(random_tangents(case.args, case.argnums, rng))
                if t is not None]
    plain, fused = _numpy_both(g, [*tree_leaves(list(case.args)), *tangents])
    for p, q in zip(plain, fused):
        np.testing.assert_array_equal(p, q)  # same nodes, same order of operations: bit-identical


@pytest.mark.parametrize("build", [_mlp_step_graph, _cnn_step_graph])
def test_fused_model_steps_give_the_same_numbers_on_numpy(build):
    from tracegrad.tree import tree_leaves

    g, (params, x, y) = build(2)
    rng = np.random.default_rng(1)
    leaves = tree_leaves(params)
    tangents = [rng.standard_normal((2,) + v.shape).astype(np.float32) for v in leaves]
    plain, fused = _numpy_both(g, [*leaves, x, y, *tangents])
    assert np.isfinite(plain[0]) and np.shape(plain[1]) == (2,)
    for p, q in zip(plain, fused):
        np.testing.assert_array_equal(p, q)


def test_kernel_names_come_from_the_graph():
    prog = generate(tg.compile(lambda x: np.exp(x) + 1.0).graph(np.ones(3)))
    assert [k.name for k in prog.kernels] == ["f_k0_exp_add"]
    assert "<lambda>" not in prog.cuda_source and "<lambda>" not in prog.python_source


def test_groups_never_close_a_cycle_through_another_group():
    """A = {a1, a2} and C = {c1, c2} with a1 -> c1 and c2 -> a2: no node path leaves A and
    comes back, but as kernels A would have to run both before and after C."""
    from tracegrad.transforms.fuse import _State

    x = _v(4)
    exp, sin = PRIMITIVES["exp"], PRIMITIVES["sin"]
    a1, c1, c2, a2 = _v(4), _v(4), _v(4), _v(4)
    nodes = [Node(exp, (x,), (a1,)), Node(sin, (a1,), (c1,)), Node(exp, (x,), (c2,)), Node(sin, (c2,), (a2,))]
    producer = {n.out: i for i, n in enumerate(nodes)}
    st = _State(nodes, producer)
    st.members, st.group_of = {0: [0], 1: [1, 2]}, {0: 0, 1: 1, 2: 1}
    assert not st.valid([0], [3])
    st.members, st.group_of = {0: [0], 1: [1]}, {0: 0, 1: 1}  # without c2 in C it is fine
    assert st.valid([0], [3])
