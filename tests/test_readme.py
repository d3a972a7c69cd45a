"""README.md is executable documentation: every Python block runs as written, and every
``tracegrad train`` command it shows runs (shortened with --steps) to a finite, improving
loss. The MNIST commands are skipped when the data is absent."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tracegrad.cli import main

ROOT = Path(__file__).resolve().parents[1]


def mnist_dir() -> Path:
    """As tests/conftest.py: ``../shared/data/mnist`` beside the project, or $TRACEGRAD_MNIST_DIR."""
    env = os.environ.get("TRACEGRAD_MNIST_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "mnist"
README = (ROOT / "README.md").read_text()


def _shortened(steps: int) -> int:
    """A few dozen steps instead of thousands, keeping their order (so a --resume command
    still asks for more steps than the run it continues)."""
    return 20 + steps // 1000


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def _train_commands() -> list[str]:
    """Every ``tracegrad train ...`` the README shows in its shell blocks, in order."""
    commands = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in (p.strip() for p in line.split("&&")):
                if part.startswith("tracegrad train"):
                    commands.append(part)
    return commands


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    blocks = _blocks("python")
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # the blocks write files (graph drawings, runs/...)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102 - the README is ours
        except Exception as exc:
            raise AssertionError(f"README.md python block {i + 1} fails: {type(exc).__name__}: {exc}\n"
                                 f"{block}") from exc
    assert namespace["f"](namespace["theta"]) == 4.0


def test_import_tracegrad_then_train_fit_works():
    code = "import tracegrad; print(tracegrad.train.fit.__name__, tracegrad.train.TrainConfig().model)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["fit", "logreg"]


def test_readme_test_command_prints_the_summary_line(tmp_path):
    # `python -m pytest -q` (the README's command) must end with "N passed": a second -q from
    # the project's addopts would hide it.
    (tmp_path / "test_one.py").write_text("import pytest\n\ndef test_a():\n    pass\n\n"
                                          "@pytest.mark.skip(reason='shown')\ndef test_b():\n    pass\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                        str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path)],
                       capture_output=True, text=True, check=False, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^1 passed, 1 skipped in ", r.stdout, flags=re.MULTILINE), r.stdout
    assert "python -m pytest -q " in README


def _losses(out_dir: Path) -> list[float]:
    with open(out_dir / "metrics.csv") as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


def _initial_test_loss(out_dir: Path) -> float:
    """The test loss of the run's initial parameters (its config.json, step 0): the whole
    test split, so far less noisy than the batch losses of a few dozen steps."""
    from tracegrad.train import TrainConfig, Trainer

    doc = json.loads((out_dir / "config.json").read_text())
    config = TrainConfig.from_dict({**doc["config"], "out": None, "resume": False, "quiet": True})
    return Trainer(config).evaluate()[0]


def test_readme_train_commands_train(tmp_path, monkeypatch, capsys):
    commands = _train_commands()
    assert commands[0] == "tracegrad train" and len(commands) >= 5
    have_mnist = mnist_dir().is_dir()
    monkeypatch.chdir(tmp_path)
    ran = skipped = 0
    for command in commands:
        argv = shlex.split(command)[1:]
        if "--data-dir" in argv:
            if not have_mnist:
                skipped += 1
                continue
            argv[argv.index("--data-dir") + 1] = str(mnist_dir())
        steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else 2000
        if "--steps" in argv:
            argv[argv.index("--steps") + 1] = str(_shortened(steps))
        else:
            argv += ["--steps", str(_shortened(steps))]
        code = main(argv + ["--eval-every", "1000", "--checkpoint-every", "20"])
        stdout, err = capsys.readouterr()
        assert code == 0, f"{command}: exit {code}: {err}"
        assert "data: " in stdout and "test accuracy" in stdout.splitlines()[-1], stdout
        out = Path(stdout.strip().splitlines()[-1].rsplit("outputs in ", 1)[1])
        losses = _losses(out)
        assert len(losses) >= 2 and all(math.isfinite(v) for v in losses), (command, losses)
        final = json.loads((out / "summary.json").read_text())["test_loss"]
        initial = _initial_test_loss(out)
        assert math.isfinite(final) and final < initial - 0.005, (
            f"{command}: the test loss did not improve: {initial:.4f} -> {final:.4f}; "
            f"batch losses {losses}")
        if "--resume" in argv:
            assert "resumed from" in stdout
        ran += 1
    assert ran + skipped == len(commands) and ran >= 3


def _graph_commands() -> list[str]:
    """Every ``tracegrad graph ...`` the README shows in its shell blocks."""
    return [line.split("#", 1)[0].strip() for block in _blocks("bash") for line in block.splitlines()
            if line.strip().startswith("tracegrad graph")]


def test_readme_graph_commands_work_as_written(tmp_path, monkeypatch, capsys):
    import shlex

    from tracegrad.cli import main

    commands = _graph_commands()
    assert len(commands) >= 2
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the README's paths are relative to the checkout
    for command in commands:
        argv = shlex.split(command)[1:]
        out_index = argv.index("-o") + 1
        target = tmp_path / Path(argv[out_index]).name
        argv[out_index] = str(target)
        assert main(argv) == 0, command
        assert target.stat().st_size > 1000, command
    assert "JVP graph: " in capsys.readouterr().out  # --stats printed
