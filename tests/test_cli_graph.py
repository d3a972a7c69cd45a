"""``tracegrad graph MODULE:FUNCTION --shapes ...``: success paths and one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tracegrad.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = textwrap.dedent("""
    import numpy as np
    import tracegrad.numpy as tnp


    def mlp(x, w1, b1, w2):
        h = np.maximum(x @ w1 + b1, 0.0)
        return h @ w2


    def loss(x, y, w, scale=1.0):
        return tnp.cross_entropy(x @ w, y) * scale


    def broken(x):
        raise RuntimeError("model bug")
""")
MLP_SHAPES = "x=8x4,w1=4x5,b1=5,w2=5x3"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "tg_cli_model.py"
    path.write_text(MODEL)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["graph", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_listing_to_stdout_from_a_file(model, capsys):
    code, out, err = run(capsys, f"{model}:mlp", "--shapes", MLP_SHAPES)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "{ lambda x:f32[8,4] w1:f32[4,5] b1:f32[5] w2:f32[5,3] ."  # --dtype float32 default
    assert lines[1].startswith("    a:f32[8,5] = matmul x w1") and lines[1].endswith("# tg_cli_model.py:7")
    assert len(lines) == 4 + 2


def test_dotted_module_name_from_the_current_folder(model, capsys, monkeypatch):
    monkeypatch.chdir(model.parent)
    monkeypatch.delitem(sys.modules, "tg_cli_model", raising=False)
    path_before = list(sys.path)
    code, out, _ = run(capsys, "tg_cli_model:loss", "--shapes", "x=16x6,y=16:int64,w=6x3", "--dtype", "float64")
    sys.modules.pop("tg_cli_model", None)
    assert code == 0 and "x:f64[16,6] y:i64[16] w:f64[6,3] ." in out
    assert sys.path == path_before  # the CLI puts sys.path back


def test_jvp_stats_compare_with_the_primal_graph(model, capsys):
    code, out, _ = run(capsys, f"{model}:mlp", "--shapes", MLP_SHAPES, "--jvp", "--wrt", "w1,b1,w2", "--stats")
    assert code == 0
    lines = out.splitlines()
    # hand count in tests/test_viz.py::test_jvp_stats_and_comparison: 1584 vs 640 FLOPs
    assert lines[0] == "graph mlp_jvp: 11 nodes (matmul 5, add 3, maximum 1, gt 1, where 1)"
    assert lines[1].startswith("FLOPs 1.58 k, primal 680, tangent 904;")
    assert lines[-1].startswith("JVP graph: 2.5x primal FLOPs, ")


def test_jvp_defaults_to_every_float_parameter_and_directions(model, capsys):
    code, out, _ = run(capsys, f"{model}:loss", "--shapes", "x=4x6,y=4:int64,w=6x3", "--jvp",
                       "--directions", "3")
    assert code == 0
    head = out.splitlines()[0]
    assert "x_dot:f32[3,4,6]ᵗ" in head and "w_dot:f32[3,6,3]ᵗ" in head and "y_dot" not in head


def test_grad_graph_with_stats(model, capsys):
    code, out, err = run(capsys, f"{model}:loss", "--shapes", "x=4x6,y=4:int64,w=6x3", "--grad", "--wrt", "w",
                         "--stats")
    assert code == 0, err
    assert out.startswith(("graph loss_vjp: ", "graph loss_grad: ")), out.splitlines()[0]
    assert "matmul 2" in out.splitlines()[0]  # x @ w forward, x.T @ ct backward; no gradient for x
    assert out.splitlines()[-1].startswith("gradient graph: ")


def test_primal_stats(model, capsys):
    code, out, _ = run(capsys, f"{model}:mlp", "--shapes", MLP_SHAPES, "--stats")
    assert code == 0 and out.startswith("graph mlp: 4 nodes (matmul 2, add 1, maximum 1)\nFLOPs 640;")
    assert "JVP graph" not in out


@pytest.mark.parametrize("suffix", [".dot", ".txt"])
def test_text_outputs(model, capsys, tmp_path, suffix):
    out_file = tmp_path / f"g{suffix}"
    code, out, _ = run(capsys, f"{model}:mlp", "--shapes", MLP_SHAPES, "-o", str(out_file))
    assert code == 0 and out == f"wrote {out_file} (mlp: 4 nodes)\n"
    text = out_file.read_text()
    assert ('digraph "mlp"' in text) if suffix == ".dot" else ("c:f32[8,5] = maximum b 0.0" in text)


@needs_dot
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".png", b"\x89PNG"), (".html", b"<!DOCTYPE html>")])
def test_image_outputs(model, capsys, tmp_path, suffix, magic):
    out_file = tmp_path / f"g{suffix}"
    code, _, _ = run(capsys, f"{model}:mlp", "--shapes", MLP_SHAPES, "--jvp", "-o", str(out_file))
    assert code == 0 and out_file.read_bytes().startswith(magic) and out_file.stat().st_size > 5000


@pytest.fixture
def no_dot(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("dot") is None


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<svg"), (".png", b"\x89PNG"), (".html", b"<!DOCTYPE html>")])
def test_without_graphviz_the_builtin_layout_draws(model, capsys, tmp_path, no_dot, suffix, magic):
    out_file = tmp_path / f"g{suffix}"
    code, out, err = run(capsys, f"{model}:mlp", "--shapes", MLP_SHAPES, "--jvp", "-o", str(out_file), "--stats")
    assert code == 0 and err == ""
    assert out_file.read_bytes().startswith(magic) and out_file.stat().st_size > 3000
    first = out.splitlines()[0]
    assert first.startswith(f"wrote {out_file} (mlp_jvp: ") and "layout: tracegrad's built-in layered layout" in first
    assert "Graphviz's dot not found" in first
    assert "JVP graph: " in out  # and the numbers


def test_forcing_dot_without_graphviz_is_one_line_and_still_prints_stats(model, capsys, tmp_path, no_dot):
    code, out, err = run(capsys, f"{model}:mlp", "--shapes", MLP_SHAPES, "-o", str(tmp_path / "g.html"),
                         "--layout", "dot", "--stats")
    assert code != 0 and err.count("\n") == 1
    assert "Graphviz's 'dot'" in err and "apt-get install graphviz" in err and "--layout builtin" in err
    assert "FLOPs 640;" in out  # --stats printed although the drawing failed
    assert not (tmp_path / "g.html").exists()


@needs_dot
def test_dot_is_used_when_installed(model, capsys, tmp_path):
    code, out, _ = run(capsys, f"{model}:mlp", "--shapes", MLP_SHAPES, "-o", str(tmp_path / "g.svg"))
    assert code == 0 and "layout: Graphviz dot)" in out


PYTREE_MODEL = textwrap.dedent("""
    import numpy as np
    from tracegrad.nn.models import loss_fn, mlp

    loss = loss_fn(mlp([6, 5, 3]))  # the project's own loss(params, x, y)


    def tree(params, x):
        h = np.maximum(x @ params["layers"][0]["w"] + params["b"], 0.0)
        return np.sum(h * params["layers"][1])
""")


@pytest.fixture
def pytree_model(tmp_path: Path) -> Path:
    path = tmp_path / "tg_cli_pytree.py"
    path.write_text(PYTREE_MODEL)
    return path


def test_pytree_shapes_describe_nested_parameters(pytree_model, capsys):
    code, out, err = run(capsys, f"{pytree_model}:tree", "--shapes",
                         "params.layers.0.w=4x5,params.layers.1=8x5,params.b=5,x=8x4", "--stats")
    assert code == 0, err
    # matmul 2*8*4*5 = 320, add 40, maximum 40, mul 40, sum 40
    assert "FLOPs 480;" in out


def test_the_projects_loss_params_x_y_from_the_command_line(pytree_model, capsys, tmp_path):
    shapes = "params.w0=6x5,params.b0=5,params.w1=5x3,params.b1=3,x=4x6,y=4:int64"
    code, out, err = run(capsys, f"{pytree_model}:loss", "--shapes", shapes, "--jvp", "--wrt", "params",
                         "-o", str(tmp_path / "loss.txt"), "--stats")
    assert code == 0, err
    listing = (tmp_path / "loss.txt").read_text()
    for name in ("params_w0", "params_b0", "params_w1", "params_b1", "params_w0_dot", "params_b1_dot"):
        assert f" {name}:f32" in listing.splitlines()[0], name
    assert " x_dot" not in listing.splitlines()[0]  # --wrt params: data inputs get no tangent
    assert "graph mlp_loss_jvp:" in out and "JVP graph: " in out


@pytest.mark.parametrize("shapes, extra, message", [
    ("params.w0=6x5,params.w0.x=2,x=4x6,y=4:int64", [], "params.w0 is given as one array and also as a pytree"),
    ("p.1=3,x=4x6", [], "p is a list, but item 0 is missing"),
    ("params..w=3", [], "--shapes: bad entry 'params..w=3'"),
    ("params.w0=6x5,params.b0=5,params.w1=5x3,params.b1=3,x=4x6,y=4:int64", ["--jvp", "--wrt", "params.w0"],
     "--wrt takes whole parameters (params), not parts of one (params.w0)"),
    ("params.w0=6x5,params.b0=5:int64,params.w1=5x3,params.b1=3,x=4x6,y=4:int64", ["--jvp", "--wrt", "params"],
     "--wrt: params.b0 has dtype int64"),
])
def test_bad_pytree_shapes(pytree_model, capsys, shapes, extra, message):
    code, out, err = run(capsys, f"{pytree_model}:loss", "--shapes", shapes, *extra)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert message in err, err


@pytest.mark.parametrize("argv, message", [
    (["no_such_module_xyz:f", "--shapes", "x=3"], "cannot import module 'no_such_module_xyz'"),
    (["{model}:nope", "--shapes", "x=3"], "has no attribute 'nope'"),
    (["{model}", "--shapes", "x=3"], "expected MODULE:FUNCTION"),
    (["{model}:mlp", "--shapes", "x=8y4"], "bad dimensions '8y4' for x"),
    (["{model}:mlp", "--shapes", "x"], "--shapes: bad entry 'x'"),
    (["{model}:mlp", "--shapes", "x=8x4,w1=4x5,b1=5,w2=5x3,z=2"], "unknown parameter 'z'"),
    (["{model}:mlp", "--shapes", "x=8x4"], "missing parameter(s) w1, b1, w2"),
    (["{model}:mlp", "--shapes", MLP_SHAPES, "--dtype", "float99"], "non-numeric dtype 'float99'"),
    (["{model}:mlp", "--shapes", MLP_SHAPES, "-o", "g.pdf"], "unknown suffix"),
    (["{model}:mlp", "--shapes", MLP_SHAPES, "--grad"], "gradients need a function returning a scalar float"),
    (["{model}:mlp", "--shapes", MLP_SHAPES, "--wrt", "w1"], "--wrt needs --jvp"),
    (["{model}:mlp", "--shapes", MLP_SHAPES, "--jvp", "--wrt", "q"], "--wrt names 'q'"),
    (["{model}:loss", "--shapes", "x=2x3,y=2:int64,w=3x4", "--jvp", "--wrt", "y"], "y has dtype int64"),
    (["{model}:mlp", "--shapes", "x=8x4,w1=4x6,b1=5,w2=5x3"], "cannot be broadcast together"),
    (["{model}:broken", "--shapes", "x=3"], "tracing {model}:broken failed: RuntimeError: model bug"),
    (["missing_file.py:f", "--shapes", "x=3"], "no such file: missing_file.py"),
    (["{model}:mlp"], "the following arguments are required: --shapes"),
])
def test_bad_specs_give_one_line_and_exit_2(model, capsys, argv, message):
    argv = [a.replace("{model}", str(model)) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("tracegrad: error: ") and err.count("\n") == 1, err
    assert message.replace("{model}", str(model)) in err


def test_python_dash_m_from_the_worktree(model):
    proc = subprocess.run([sys.executable, "-m", "tracegrad", "graph", f"{model}:mlp", "--shapes", MLP_SHAPES,
                           "--stats"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "FLOPs 640;" in proc.stdout
