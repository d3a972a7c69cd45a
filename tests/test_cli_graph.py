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


def test_missing_graphviz_is_a_one_line_error(model, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    code, out, err = run(capsys, f"{model}:mlp", "--shapes", MLP_SHAPES, "-o", str(tmp_path / "g.svg"))
    assert code == 1 and out == "" and err.count("\n") == 1  # the environment's fault: a run-time failure
    assert "Graphviz's 'dot'" in err and "apt-get install graphviz" in err


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
