"""The package import graph is layered: no module imports a layer above its own.

Every ``import`` in tracegrad's source is parsed with ``ast`` — lazy imports inside
functions and ``TYPE_CHECKING`` blocks included — and resolved to the layer it names.
The allowed dependencies are the architecture (docs/architecture.md):

    backends -> transforms -> ir;  ops -> ad -> tracing -> ir;  viz reads ir and transforms;
    the core API never imports the training layer (optim, nn, data, train, cli).

A new upward import fails here with the line that makes it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "tracegrad"

BOTTOM = {"errors", "_namespace", "random", "structured"}
CORE = BOTTOM | {"tree", "ir", "tracing", "ad", "ops", "numpy", "transforms", "backends", "viz", "modes",
                 "api", "forward_grad", "activity", "jacobians", "testing", "custom"}
# layer -> the layers it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_namespace": set(),
    "random": set(),
    "structured": set(),
    "tree": {"errors"},
    "ir": {"errors"},
    "tracing": {"ir", "tree"} | BOTTOM,
    "ad": {"tracing", "ir"} | BOTTOM,
    "ops": {"ad", "tracing", "ir"} | BOTTOM,
    "numpy": {"ops", "ad", "tracing", "ir"} | BOTTOM,
    "transforms": {"ir"} | BOTTOM,
    "backends": {"transforms", "ir", "tree"} | BOTTOM,
    "viz": {"transforms", "ir"} | BOTTOM,
    "modes": {"ad", "transforms", "ir"} | BOTTOM,
    "api": {"modes", "ad", "transforms", "backends", "tracing", "ir", "tree"} | BOTTOM,
    "forward_grad": {"api", "backends", "tree"} | BOTTOM,
    "custom": {"ad", "tracing", "ir", "tree"} | BOTTOM,
    "activity": {"api", "modes", "forward_grad", "tree"} | BOTTOM,
    "jacobians": {"api", "ir", "tree"} | BOTTOM,
    "testing": {"api", "backends", "tree", "numpy", "ir", "tracing"} | BOTTOM,
    # the layers built on the public API
    "optim": {"tree"} | BOTTOM,
    "nn": CORE - {"testing"},
    "data": BOTTOM,
    "train": CORE | {"optim", "nn", "data"},
    "cli": CORE | {"optim", "nn", "data", "train", "__init__"},
    "__main__": {"cli"},
    "__init__": CORE | {"optim", "nn", "data", "train", "cli"},
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    if len(rel.parts) > 1:
        return rel.parts[0]
    return {"cli.py": "cli"}.get(rel.name, rel.stem)


def _imported_layers(path: Path) -> list[tuple[int, str]]:
    """(line, layer) for every tracegrad module ``path`` imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["tracegrad", *path.relative_to(PKG).parent.parts]  # what ``from . import`` means here
    out = []
    for node in ast.walk(tree):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
            else:
                base = []
            names = (node.module or "").split(".") if node.module else []
            full = base + names
            if node.module:
                targets = [full]
            else:  # ``from . import x``: x is a module of that package, or one of its attributes
                pkg_dir = PKG.joinpath(*full[1:])
                targets = [full + [a.name] if (pkg_dir / a.name).is_dir() or (pkg_dir / f"{a.name}.py").exists()
                           else full for a in node.names]
        for t in targets:
            if t and t[0] == "tracegrad":
                if len(t) == 1:
                    out.append((node.lineno, "__init__"))
                else:
                    out.append((node.lineno, {"cli": "cli"}.get(t[1], t[1])))
    return out


def test_every_layer_is_known():
    layers = {layer_of(p) for p in PKG.rglob("*.py")}
    assert layers <= set(ALLOWED), f"add these layers to ALLOWED: {sorted(layers - set(ALLOWED))}"


def test_imports_point_down_only():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        own = layer_of(path)
        for line, target in _imported_layers(path):
            if target != own and target not in ALLOWED[own]:
                bad.append(f"{path.relative_to(PKG.parent)}:{line}: {own} imports {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The parser must resolve relative and function-level imports (else the test above
    could pass vacuously)."""
    ad = PKG / "ad" / "vjp.py"
    found = {t for _, t in _imported_layers(ad)}
    assert {"ir", "tracing", "errors"} <= found
    fake = PKG / "ir" / "_layering_probe.py"
    fake.write_text("def f():\n    from ..backends import get_backend\n    return get_backend\n")
    try:
        assert (2, "backends") in _imported_layers(fake)
    finally:
        fake.unlink()


def test_importing_the_ops_loads_no_backend_and_no_training_layer():
    code = ("import sys, tracegrad.ops\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('tracegrad.backends', 'tracegrad.viz',"
            " 'tracegrad.optim', 'tracegrad.train', 'tracegrad.nn', 'tracegrad.data', 'cupy')))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(PKG.parent))
