"""Seeing the graphs: networkx/DOT/SVG/PNG/HTML views, values on nodes, and cost statistics.

Tests of Graphviz's own drawings need ``dot``; the others hide it from PATH and check the
built-in layout; the HTML tests need Chromium; each skips with the reason when its program
is missing.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from op_cases import CASES
from PIL import Image

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.errors import GraphvizNotFoundError, RenderError
from tracegrad.ir import PRIMITIVES
from tracegrad.nn import functional as F
from tracegrad.viz import compare_stats, listing
from tracegrad.viz.dot import COLORS

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz 'dot' not installed (apt-get install graphviz)")
CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(c)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless HTML test needs chromium "
                                                              "(apt-get install chromium)")

SVG_NS = "{http://www.w3.org/2000/svg}"
THETA = np.array([3.0, -1.0, 2.0])
V = np.array([1.0, 0.0, 0.0])


def seed_fn(theta):
    return (theta[0] + theta[1]) * theta[2]


SEED_LINE = "return (theta[0] + theta[1]) * theta[2]"


def mlp(x, w1, b1, w2):
    h = np.maximum(x @ w1 + b1, 0.0)
    return h @ w2


def mlp_args(dtype=np.float64):
    r = np.random.default_rng(0)
    shapes = [(8, 4), (4, 5), (5,), (5, 3)]
    return tuple(r.standard_normal(s).astype(dtype) for s in shapes)


@pytest.fixture(scope="module")
def seed_graphs():
    f = tg.compile(seed_fn)
    return f.graph(THETA), f.jvp_graph(THETA)


# ---------------------------------------------------------------- cost rules
def test_cost_rules_run_on_every_op_case():
    seen: set[str] = set()
    for case in CASES:
        for graph in (tg.compile(case.fn).graph(*case.args),
                      tg.compile(case.fn).jvp_graph(*case.args, argnums=case.argnums)):
            s = graph.stats()
            assert all(isinstance(c.flops, int) and c.flops >= 0 and c.bytes >= 0 for c in s.nodes), case.name
            assert s.peak_bytes >= s.input_bytes + s.constant_bytes
            seen.update(c.primitive for c in s.nodes)
    assert not sorted(set(PRIMITIVES) - seen), "some cost rules were never evaluated"


@pytest.mark.parametrize("fn, args, flops", [
    (lambda a, b: a @ b, [np.ones((3, 4)), np.ones((4, 5))], 2 * 3 * 4 * 5),
    (lambda a, b: a @ b, [np.ones((2, 3, 4)), np.ones((4, 5))], 2 * 2 * 3 * 4 * 5),
    (lambda a, b: a @ b, [np.ones((3, 4)), np.ones(4)], 2 * 3 * 4),
    (lambda a, b: np.einsum("ij,jk->ik", a, b), [np.ones((3, 4)), np.ones((4, 5))], 2 * 3 * 4 * 5),
    (lambda x, w: F.conv2d(x, w), [np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3))],
     2 * 2 * 4 * 6 * 6 * 3 * 3 * 3),  # 2*N*O*H'*W'*C*kh*kw
    (lambda x: F.max_pool2d(x, 2), [np.ones((1, 1, 4, 4))], 4 * 4),  # 4 windows of 4
    (lambda x: np.sum(x, axis=1), [np.ones((3, 4))], 12),  # reductions: input size
    (lambda x: np.argmax(x), [np.ones((3, 4))], 12),
    (lambda x: np.exp(x) + 1.0, [np.ones((3, 4))], 12 + 12),  # elementwise: 1 per output
    (lambda x: x.reshape(4, 3).T, [np.ones((3, 4))], 0),  # data movement: 0
])
def test_flop_conventions(fn, args, flops):
    assert tg.compile(fn).graph(*args).stats().flops == flops


def test_mlp_stats_hand_counted():
    g = tg.compile(mlp).graph(*mlp_args())
    s = g.stats()
    # x(8,4) @ w1(4,5): 2*8*4*5 = 320; + b1: 8*5 = 40; relu (maximum): 40; @ w2(5,3): 2*8*5*3 = 240
    assert [c.primitive for c in s.nodes] == ["matmul", "add", "maximum", "matmul"]
    assert [c.flops for c in s.nodes] == [320, 40, 40, 240]
    assert s.flops == 640
    assert s.counts == {"matmul": 2, "add": 1, "maximum": 1}
    # bytes (float64): read operands + write output; the scalar 0.0 is free
    #   matmul 256 + 160 + 320 = 736; add 320 + 40 + 320 = 680; maximum 320 + 320 = 640;
    #   matmul 320 + 120 + 192 = 632
    assert [c.bytes for c in s.nodes] == [736, 680, 640, 632]
    assert s.bytes == 2688
    # peak: inputs 256+160+40+120 = 576 live throughout; the add and the relu write into
    # their dying operand (a, then b: one (8, 5) buffer of 320); the last matmul's output
    # (192) joins it: 576 + 320 + 192 = 1088
    assert s.input_bytes == 576 and s.constant_bytes == 0
    assert [c.live_bytes for c in s.nodes] == [896, 896, 896, 1088]
    assert s.peak_bytes == 1088 and s.peak_node == 3 and s.peak_temporary_bytes == 512
    assert "graph mlp: 4 nodes (matmul 2, add 1, maximum 1)" in str(s)


def test_jvp_stats_and_comparison():
    f = tg.compile(mlp)
    args = mlp_args()
    jg = f.jvp_graph(*args, argnums=(1, 2, 3))
    s = jg.stats()
    # primal 640 + gt 40 (relu mask); tangents: x @ w1_dot 320, + b1_dot 40, where 40,
    # relu' @ w2 240, relu @ w2_dot 240, sum of both 24
    assert s.flops == 640 + 40 + 320 + 40 + 40 + 240 + 240 + 24 == 1584
    assert s.flops_by_role == {"primal": 680, "tangent": 904}
    cmp = compare_stats(f.graph(*args), jg)
    assert cmp.flops_ratio == pytest.approx(1584 / 640)
    assert str(cmp).startswith("JVP graph: 2.5x primal FLOPs, ")
    # K directions multiply the tangent work, not the primal work
    k4 = compare_stats(f.graph(*args), f.jvp_graph(*args, argnums=(1, 2, 3), directions=4))
    assert k4.flops_ratio > 3 * cmp.flops_ratio - 2


def test_peak_memory_follows_views_and_deletes():
    def fn(x):
        return np.sum((x.reshape(10, 10) * 2.0).T)

    s = tg.compile(fn).graph(np.ones(100)).stats()
    assert [c.primitive for c in s.nodes] == ["reshape", "mul", "transpose", "reduce_sum"]
    # reshape and transpose are views (no bytes, no new memory); mul allocates 800 B
    assert [c.bytes for c in s.nodes] == [0, 1600, 0, 808]
    assert [c.live_bytes for c in s.nodes] == [800, 1600, 1600, 1608]
    assert s.peak_bytes == 1608


# ---------------------------------------------------------------- networkx
def test_networkx_structure_of_the_seed_graph(seed_graphs):
    g, _ = seed_graphs
    d = g.to_networkx()
    assert isinstance(d, nx.DiGraph) and nx.is_directed_acyclic_graph(d)
    assert d.number_of_nodes() == 1 + 5 + 1 and d.number_of_edges() == 8
    assert sorted(d.nodes) == ["in0", "n0", "n1", "n2", "n3", "n4", "out0"]
    add = d.nodes["n2"]
    assert (add["kind"], add["primitive"], add["role"], add["shape"], add["dtype"]) == \
        ("node", "add", "primal", (), "float64")
    assert add["name"] == "c" and add["operands"] == ["a", "b"] and add["group"] is None
    assert add["source"] == f"test_viz.py:{seed_fn.__code__.co_firstlineno + 1}"
    assert add["source_line"] == SEED_LINE and add["source_function"] == "seed_fn"
    assert add["flops"] == 1 and add["value"] is None
    assert d.nodes["n0"]["params"] == {"template": (("int", 0),)} and d.nodes["n0"]["params_text"] == "0"
    assert d.nodes["in0"]["kind"] == "input" and d.nodes["in0"]["shape"] == (3,)
    assert d.nodes["out0"]["kind"] == "output"
    assert d.edges["n0", "n2"]["operand"] == 0 and d.edges["n1", "n2"]["operand"] == 1
    assert d.edges["in0", "n0"]["shape"] == (3,) and d.edges["n2", "n4"]["shape"] == ()
    assert list(d.predecessors("out0")) == ["n4"]


def test_networkx_roles_of_the_jvp_graph(seed_graphs):
    _, jg = seed_graphs
    d = jg.to_networkx(values=(THETA, V))
    kinds = [d.nodes[n]["kind"] for n in d]
    assert kinds.count("input") == 2 and kinds.count("output") == 2 and kinds.count("node") == 12
    assert [d.nodes[f"in{i}"]["role"] for i in range(2)] == ["primal", "tangent"]
    roles = [d.nodes[n]["role"] for n in d if d.nodes[n]["kind"] == "node"]
    assert roles.count("primal") == 5 and roles.count("tangent") == 7
    assert d.nodes["out0"]["value"] == "4" and d.nodes["out1"]["value"] == "2"  # f and ∂f/∂θ₁
    tangent_edges = [e for e in d.edges if d.edges[e]["role"] == "tangent"]
    assert tangent_edges and all(d.nodes[u]["role"] == "tangent" for u, _ in tangent_edges)


def test_networkx_edge_lists_a_repeated_operand_and_constants_get_nodes():
    c = np.arange(3.0)
    d = tg.compile(lambda x: x * x + c).graph(np.ones(3)).to_networkx()
    mul = next(n for n in d if d.nodes[n]["primitive"] == "mul")
    assert d.edges["in0", mul]["operands"] == [0, 1]
    consts = [n for n in d if d.nodes[n]["kind"] == "constant"]
    assert consts == ["c0"] and d.nodes["c0"]["shape"] == (3,)


def test_fusion_groups_become_attributes_and_clusters():
    from tracegrad.transforms.fuse import fuse

    x, w = np.ones((4, 3)), np.ones((3, 5))
    g = fuse(tg.compile(lambda x, w: np.sum(np.tanh(x @ w) * 2.0 + 1.0)).jvp_graph(x, w, argnums=(1,)))
    groups = {n.fusion_group for n in g.nodes} - {None}
    assert groups  # the tanh/mul/add chains (primal and tangent) fuse
    d = g.to_networkx()
    labelled = [n for n in d if d.nodes[n].get("group") is not None]
    assert {d.nodes[n]["group"] for n in labelled} == groups
    matmuls = [n for n in d if d.nodes[n].get("primitive") == "matmul"]
    assert matmuls and all(d.nodes[n]["group"] is None for n in matmuls)  # GEMMs stay outside kernels
    dot = g.to_dot()
    assert dot.count("subgraph \"cluster_fused_") == len(groups)
    for k in groups:
        assert f'label="fused: {k}"' in dot
    unfused = tg.compile(lambda x: x + 1).graph(x).to_dot()  # the NumPy backend does not fuse
    assert "cluster_fused_" not in unfused


# ---------------------------------------------------------------- DOT, SVG, PNG, text
def test_dot_text_marks_roles_inputs_outputs_and_shapes(seed_graphs):
    _, jg = seed_graphs
    dot = jg.to_dot()
    (pf, _), (tf, _) = COLORS["primal"], COLORS["tangent"]
    lines = {m.group(1): m.group(0) for m in re.finditer(r'^  "(\w+)" \[.*$', dot, re.MULTILINE)}
    assert len(lines) == 2 + 12 + 2
    assert "shape=invhouse" in lines["in0"] and f'fillcolor="{tf}"' in lines["in1"]
    assert "shape=doubleoctagon" in lines["out0"] and "shape=doubleoctagon" in lines["out1"]
    assert f'fillcolor="{pf}"' in lines["n0"] and "<b>index</b>" in lines["n0"]
    # 6 index nodes with 1 operand, 6 add/mul nodes with 2, 2 outputs
    assert dot.count(" -> ") == 6 * 1 + 6 * 2 + 2 and dot.count('label="f64[3]"') == 6


@needs_dot
def test_dot_parses_and_svg_png_are_drawn(seed_graphs, tmp_path):
    _, jg = seed_graphs
    proc = subprocess.run(["dot", "-Tsvg"], input=jg.to_dot().encode(), capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    svg = proc.stdout.decode()
    assert svg.count('class="node"') == 16 and svg.count('class="edge"') == 20
    assert 'id="n11"' in svg and COLORS["tangent"][0] in svg

    from PIL import Image

    out_svg, out_png = jg.render(tmp_path / "j.svg"), jg.render(tmp_path / "j.png")
    assert out_svg.read_text().count('class="node"') == 16
    img = Image.open(out_png).convert("RGB")
    assert img.width > 300 and img.height > 300
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 20  # not a blank image
    have = {c for _, c in colors}
    assert tuple(bytes.fromhex(COLORS["primal"][0][1:])) in have
    assert tuple(bytes.fromhex(COLORS["tangent"][0][1:])) in have


@pytest.fixture
def no_dot(tmp_path, monkeypatch):
    """A PATH without Graphviz, as after a bare ``pip install``."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    saved = os.environ.get("PATH", "")
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("dot") is None
    return saved


def test_render_dot_and_txt_need_no_graphviz(seed_graphs, tmp_path, no_dot):
    g, _ = seed_graphs
    assert g.render(tmp_path / "g.dot").read_text() == g.to_dot()
    text = g.render(tmp_path / "g.txt", values=(THETA,)).read_text()
    assert "c:f64[] = add a b" in text and "= 2" in text and "# out0 = 4" in text
    with pytest.raises(RenderError, match="unknown suffix '.pdf'"):
        g.render(tmp_path / "g.pdf")
    with pytest.raises(GraphvizNotFoundError, match="apt-get install graphviz"):
        g.render(tmp_path / "g.svg", engine="dot")  # asked for by name: a clear error


def _svg_tree(text: str) -> ET.Element:
    return ET.fromstring(text)


def _ids(root: ET.Element, cls: str) -> list[str]:
    return [e.get("id") for e in root.iter(f"{SVG_NS}g") if e.get("class") == cls]


def test_svg_png_html_without_graphviz(seed_graphs, tmp_path, no_dot):
    from PIL import Image

    from tracegrad.viz import draw

    _, jg = seed_graphs
    d = draw(jg, tmp_path / "j.svg", values=(THETA, V))
    assert d.engine == "builtin" and d.engine_name == "tracegrad's built-in layered layout"
    root = _svg_tree(d.path.read_text())
    # every node and edge of the view, with the ids the HTML view looks for
    assert sorted(_ids(root, "node")) == sorted(["in0", "in1", "out0", "out1"] + [f"n{i}" for i in range(12)])
    assert sorted(_ids(root, "edge"), key=lambda e: int(e[1:])) == [f"e{i}" for i in range(20)]
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert "j : f64[]" in texts and "= 2" in texts and "mul" in texts  # j = mul f g = (-1)(2)... = 2
    assert "theta_dot : f64[3]" in texts
    assert f"test_viz.py:{seed_fn.__code__.co_firstlineno + 1}" in texts
    fills = {e.get("fill") for e in root.iter() if e.get("fill")}
    assert COLORS["primal"][0] in fills and COLORS["tangent"][0] in fills

    png = draw(jg, tmp_path / "j.png", values=(THETA, V))
    assert png.engine == "builtin" and png.path.read_bytes().startswith(b"\x89PNG")
    img = Image.open(png.path).convert("RGB")
    assert img.width > 300 and img.height > 300
    have = {c for _, c in img.getcolors(maxcolors=1 << 22)}
    assert len(have) > 20
    assert tuple(bytes.fromhex(COLORS["primal"][0][1:])) in have
    assert tuple(bytes.fromhex(COLORS["tangent"][0][1:])) in have

    page = jg.to_html(tmp_path / "j.html", values=(THETA, V))
    assert 'data-engine="builtin"' in page and "dot not found" in page
    assert page.count('class="node"') == 16 and 'id="viewport"' in page

    assert jg._repr_svg_().startswith("<svg")  # Jupyter draws it too
    assert "<svg" in jg._repr_html_() and "FLOPs" in jg._repr_html_()


def _cnn_jvp():
    from tracegrad.nn.models import cnn, loss_fn

    model = cnn(image_size=8, channels=(2, 2, 2, 2), hidden=4)
    params = {k: v.astype(np.float32) for k, v in model.init(0).items()}
    return tg.compile(loss_fn(model)).jvp_graph(params, np.zeros((2, 64), np.float32), np.zeros(2, np.int64))


def test_line_groups_follow_the_layers_of_a_cnn():
    from tracegrad.viz import describe

    view = describe(_cnn_jvp())
    labels = [g.label for g in view.line_groups]
    conv = [g for g in view.line_groups if g.function == "conv_relu"]
    # the helper conv_relu runs four times: four layers, its bias-reshape line folded into each
    assert [g.label.split(" in ")[1] for g in conv] == ["conv_relu", "conv_relu (call 2)", "conv_relu (call 3)",
                                                        "conv_relu (call 4)"]
    import inspect

    import tracegrad.nn.models as models_module

    lines, _ = inspect.getsourcelines(models_module)
    first = next(i for i, line in enumerate(lines, 1) if 'b = np.reshape(params[f"conv{i}_b"]' in line)
    span = f":{first}-{first + 1}"  # the bias reshape and the conv line of conv_relu
    assert all(g.source.endswith(span) and g.code.startswith("return np.maximum(F.conv2d") for g in conv)
    by_id = {n.id: n for n in view.nodes}
    for g in conv:  # each layer: one primal conv2d and two tangent ones (product rule)
        prims = [(by_id[m].primitive, by_id[m].role) for m in g.members if by_id[m].kind == "node"]
        assert sorted(r for p, r in prims if p == "conv2d") == ["primal", "tangent", "tangent"]
        assert ("maximum", "primal") in prims
    assert labels[-1].endswith("in loss") and len(view.line_groups) == 10
    # every node of the graph is in exactly one group; inputs join their first consumer
    members = [m for g in view.line_groups for m in g.members]
    assert sorted(members) == sorted(n.id for n in view.nodes)
    assert by_id["in0"].line_group == conv[0].id  # params_conv0_b, reshaped for layer 1


def test_builtin_layout_bands_edges_and_overlaps():
    from tracegrad.viz import describe
    from tracegrad.viz.builtin import scene

    view = describe(_cnn_jvp())
    sc = scene(view)
    lay = sc.layout
    band = {b.group: b for b in lay.bands}
    assert [b.group for b in lay.bands] == [g.id for g in view.line_groups]
    assert all(a.y1 < b.y0 for a, b in itertools.pairwise(lay.bands))  # stacked, top to bottom
    for n in view.nodes:  # each node inside its band
        box, b = lay.boxes[n.id], band[n.line_group]
        assert b.y0 <= box.y - box.h / 2 and box.y + box.h / 2 <= b.y1, n.id
    for e in view.edges:  # edges run downward, from the source's bottom to the target's top
        pts = lay.edges[e.id]
        src, dst = lay.boxes[e.src], lay.boxes[e.dst]
        assert pts[0] == (src.x, src.y + src.h / 2) and pts[-1] == (dst.x, dst.y - dst.h / 2)
        assert all(p[1] < q[1] for p, q in itertools.pairwise(pts))
    for row in lay.layers:  # no two boxes of a layer overlap
        boxes = sorted((lay.boxes[v] for v in row), key=lambda b: b.x)
        assert all(a.x + a.w / 2 < b.x - b.w / 2 for a, b in itertools.pairwise(boxes))
    assert 0 < sc.width < 4000 and sc.height > 1000


def test_isotonic_regression_is_the_least_squares_fit():
    from tracegrad.viz.layout import _isotonic

    assert _isotonic([1.0, 3.0, 2.0, 4.0]) == [1.0, 2.5, 2.5, 4.0]
    assert _isotonic([5.0, 1.0, 0.0]) == [2.0, 2.0, 2.0]
    assert _isotonic([0.0, 1.0]) == [0.0, 1.0]


def test_seed_graph_layout_has_no_crossings(seed_graphs):
    from tracegrad.viz import describe
    from tracegrad.viz.builtin import scene

    g, _ = seed_graphs
    view = describe(g)
    assert view.line_groups == []  # one source line: no bands
    lay = scene(view).layout
    assert lay.crossings == 0 and lay.bands == []
    # the two operands of add sit on either side of it
    add = lay.boxes["n2"]
    assert lay.boxes["n0"].x < add.x < lay.boxes["n1"].x


def test_stats_and_compiled_in_jupyter(seed_graphs):
    _g, jg = seed_graphs
    s = jg.stats()
    html_text = s._repr_html_()
    assert html_text.count("<tr>") == 1 + 12 and "<th>FLOPs</th>" in html_text
    assert "graph seed_fn_jvp: 12 nodes" in html_text

    class Printer:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def text(self, t: str) -> None:
            self.parts.append(t)

    p = Printer()
    s._repr_pretty_(p, False)
    assert p.parts == [str(s)] and "GraphStats(" not in p.parts[0]
    f = tg.compile(seed_fn)
    assert repr(f) == "<tracegrad.compile seed_fn(theta) backend='numpy', 0 compiled signatures>"
    f(THETA)
    assert repr(f).endswith("1 compiled signature>")


def test_notebook_cells_name_the_cell_not_the_kernel_file(monkeypatch):
    import sys
    import types

    cell_file = "/tmp/ipykernel_4242/2840193.py"  # how ipykernel names a cell's code
    code = compile("def cell_fn(x):\n    return x * 2.0 + 1.0\n", cell_file, "exec")
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - a stand-in for a notebook cell
    shell = types.SimpleNamespace(compile=types.SimpleNamespace(_filename_map={cell_file: 7}))
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", fake)
    g = tg.compile(ns["cell_fn"]).graph(np.ones(3))
    assert [n.source.short() for n in g.nodes] == ["In[7]:2", "In[7]:2"]
    assert "In[7]:2" in g.pretty(source=True) and "ipykernel" not in g.to_dot()
    monkeypatch.delitem(sys.modules, "IPython")
    assert g.nodes[0].source.short() == "2840193.py:2"  # outside a notebook: the file name


@needs_dot
def test_jupyter_representations(seed_graphs):
    g, _ = seed_graphs
    assert g._repr_svg_().startswith("<svg")
    assert "<svg" in g._repr_html_() and "FLOPs 2" in g._repr_html_()


def test_values_on_nodes_of_the_seed_jvp(seed_graphs):
    _, jg = seed_graphs
    dot = jg.to_dot(values=(THETA, V))
    assert "= [3, -1, 2]" in dot and "= [1, 0, 0]" in dot
    assert re.search(r"<b>out0</b> = i<br/><font[^>]*>= 4<", dot)  # f(θ) = (3 - 1) * 2
    assert re.search(r"<b>out1</b> = l<br/><font[^>]*>= 2<", dot)  # ∂f/∂θ₁ = θ₃ = 2
    text = listing(jg, (THETA, V))
    assert re.search(r"e:f64\[\] = add a c .*= 2$", text, re.MULTILINE)
    env = jg.values(THETA, V)
    assert listing(jg, env) == text  # a {Var: value} map works as well


# ---------------------------------------------------------------- HTML in a real browser
def _chromium(url: str, tmp_path: Path, name: str) -> tuple[str, Path]:
    shot = tmp_path / f"{name}.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / ('profile-' + name)}",
           f"--screenshot={shot}", "--window-size=1200,900", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout.decode(), shot


def _detail(dom: str) -> str:
    m = re.search(r'<aside id="detail"[^>]*>.*?</aside>', dom, re.DOTALL)
    assert m, "no detail panel in the DOM"
    return m.group(0)


def _field(panel: str, key: str) -> str:
    m = re.search(rf'<dd class="field-{key}">(.*?)</dd>', panel)
    return m.group(1) if m else ""


@needs_chromium
def test_html_view_in_headless_chromium(seed_graphs, tmp_path):
    from PIL import Image

    _, jg = seed_graphs
    page = tmp_path / "seed.html"
    html = jg.to_html(page, values=(THETA, V))
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html), "the page must work offline"

    # a click on the SVG node of j = mul f g (the tangent product θ̇-part times θ₃)
    dom, shot = _chromium(page.as_uri() + "#click=n9", tmp_path, "svg")
    panel = _detail(dom)
    assert 'data-selected="n9"' in panel
    assert _field(panel, "primitive") == "mul" and _field(panel, "shape") == "f64[]"
    assert _field(panel, "role") == "tangent" and _field(panel, "value") == "2"
    assert _field(panel, "operands") == "f, g"
    assert _field(panel, "source") == f"test_viz.py:{seed_fn.__code__.co_firstlineno + 1} in seed_fn"
    assert f'<pre class="source-line">{SEED_LINE}</pre>' in panel
    assert re.search(r'<g id="n9" class="node selected"', dom)

    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 900) and shot.stat().st_size > 20_000
    counts = {c: n for n, c in img.getcolors(maxcolors=1 << 22)}
    assert len(counts) > 100  # not one colour: text, shapes and edges were drawn
    primal = tuple(bytes.fromhex(COLORS["primal"][0][1:]))
    tangent = tuple(bytes.fromhex(COLORS["tangent"][0][1:]))
    assert counts.get(primal, 0) > 2000 and counts.get(tangent, 0) > 2000  # the diagram is visible

    # a click on a table row (the tangent input) fills the panel the same way
    dom, _ = _chromium(page.as_uri() + "#clickrow=in1", tmp_path, "row")
    panel = _detail(dom)
    assert _field(panel, "kind") == "input" and _field(panel, "role") == "tangent"
    assert _field(panel, "shape") == "f64[3]" and _field(panel, "value") == "[1, 0, 0]"
    assert re.search(r'<tr data-node="in1" class="tangent selected"', dom)


def _viewport(dom: str) -> dict[str, float]:
    m = re.search(r'<div id="viewport"([^>]*)>', dom)
    assert m, "no viewport in the DOM"
    return {k: float(v) for k, v in re.findall(r'data-([a-z-]+)="([-0-9.]+)"', m.group(1))}


@needs_chromium
def test_html_view_without_dot_in_chromium_zooms_and_groups_layers(tmp_path, monkeypatch, no_dot):
    jg = _cnn_jvp()
    page = tmp_path / "cnn.html"
    html_text = jg.to_html(page)
    assert 'data-engine="builtin"' in html_text
    monkeypatch.setenv("PATH", no_dot)  # chromium's launcher script needs the usual PATH

    # on load the whole graph fits; the "+" button and the wheel zoom about the centre; a
    # click on a node still selects it
    dom, shot = _chromium(page.as_uri() + "#zoom=in&wheel=-300&click=n9", tmp_path, "zoom")
    vp = _viewport(dom)
    fit = vp["fit-scale"]
    assert 0.05 < fit < 1.0  # ~150 nodes: shrunk to fit
    assert vp["scale"] == pytest.approx(fit * 1.25 * np.exp(300 * 0.0015), rel=1e-3)
    assert 'data-selected="n9"' in _detail(dom)
    assert re.search(r'<g id="n9" class="node selected"', dom)
    counts = {c: n for n, c in Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 22)}
    assert counts.get(tuple(bytes.fromhex(COLORS["tangent"][0][1:])), 0) > 2000  # zoomed-in boxes

    # the layer list: one entry per run of a source line; a click zooms to that band
    assert len(re.findall(r'<li data-group="grp\d+"', dom)) == 10
    # a drag moves the view by as much as the pointer, at any zoom
    dom, _ = _chromium(page.as_uri() + "#zoom=in&wheel=-300&drag=40,-25", tmp_path, "drag")
    moved = _viewport(dom)
    assert moved["scale"] == vp["scale"]
    assert (moved["tx"], moved["ty"]) == (pytest.approx(vp["tx"] + 40), pytest.approx(vp["ty"] - 25))

    dom, _ = _chromium(page.as_uri() + "#zoom=grp3", tmp_path, "layer")
    vp = _viewport(dom)
    assert vp["scale"] > 2 * fit
    assert re.search(r'<li data-group="grp3"[^>]*class="focus"', dom)
    assert re.search(r'<g id="grp3" class="cluster focus"', dom)



def test_import_tracegrad_does_not_import_the_viz_package():
    code = "import sys, tracegrad; print('tracegrad.viz' in sys.modules, 'networkx' in sys.modules)"
    out = subprocess.run([__import__("sys").executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=60, check=False)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_stats_report_text():
    s = tg.compile(lambda x, y: tnp.cross_entropy(x, y)).graph(np.zeros((4, 3)), np.zeros(4, np.int64)).stats()
    text = str(s)
    assert text.splitlines()[0].startswith(f"graph f: {len(s.nodes)} nodes (")  # lambdas trace as "f"
    assert "peak memory" in text and text.splitlines()[-1].startswith("total")
    buf = io.StringIO()
    print(s, file=buf)
    assert len(buf.getvalue().splitlines()) == len(s.nodes) + 4


def test_dot_clusters_follow_the_layers():
    dot = _cnn_jvp().to_dot()
    assert len(re.findall(r'subgraph "cluster_grp\d+"', dot)) == 10
    assert 'id="grp4"' in dot and "conv_relu (call 3)" in dot
    if shutil.which("dot"):  # Graphviz keeps the ids, so the HTML view can zoom to a layer
        svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, timeout=60,
                             check=True).stdout.decode()
        assert '<g id="grp4" class="cluster">' in svg
