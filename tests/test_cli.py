"""The ``tracegrad`` command line: success paths, one-line errors with exit code 2 (usage)
or 1 (run time), and the guards that keep earlier work: a used --out is refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tracegrad.cli import main
from tracegrad.train import latest_checkpoint, load_checkpoint


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_quick_run_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(capsys, "train", "--steps", "200", "--lr", "0.01", "--eval-every", "100",
                             "--checkpoint-every", "100", "--out", str(out))
    assert code == 0, err
    assert "training logreg on digits" in stdout
    assert "step 100/200" in stdout
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy ") and "after 200 steps" in last
    acc = float(last.split()[2].rstrip("%"))
    assert 50 < acc <= 100
    for name in ("metrics.csv", "metrics.jsonl", "plot.png", "ckpt-00000200.npz"):
        assert (out / name).exists(), name


def test_resume_continues_the_run(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert _run(capsys, "train", "--model", "mlp", "--hidden", "16", "--steps", "100",
                "--checkpoint-every", "50", "--out", out, "--quiet")[0] == 0
    # Options not given again (model, hidden sizes) come from the checkpoint.
    code, stdout, err = _run(capsys, "train", "--resume", "--steps", "160", "--out", out)
    assert code == 0, err
    assert "resumed from" in stdout and "after 160 steps" in stdout
    ck = load_checkpoint(latest_checkpoint(out))
    assert ck.step == 160
    assert ck.config["model"] == "mlp" and ck.config["model_kwargs"] == {"hidden": [16]}
    assert (64, 16) in [p.shape for p in ck.param_leaves]


def test_cnn_options(tmp_path, capsys):
    code, _stdout, err = _run(capsys, "train", "--model", "cnn", "--channels", "2,2,4,4", "--hidden", "8",
                             "--steps", "5", "--out", str(tmp_path / "c"), "--quiet")
    assert code == 0, err
    ck = load_checkpoint(latest_checkpoint(tmp_path / "c"))
    assert ck.config["model_kwargs"] == {"channels": [2, 2, 4, 4], "hidden": 8}


def test_cnn_local_heads_cells(tmp_path, capsys):
    code, _stdout, err = _run(capsys, "train", "--model", "cnn", "--channels", "2,2,4,4", "--hidden", "8",
                             "--head-cells", "4", "--estimator", "local", "--mask", "--groups", "32",
                             "--steps", "3", "--out", str(tmp_path / "c"), "--quiet")
    assert code == 0, err
    ck = load_checkpoint(latest_checkpoint(tmp_path / "c"))
    assert ck.config["model_kwargs"] == {"channels": [2, 2, 4, 4], "hidden": 8, "head_cells": 4}


@pytest.mark.parametrize("argv,expected", [
    ([], "choose a command"),
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--lr", "-1"], "must be a positive number"),
    (["train", "--steps", "ten"], "expected a positive integer"),
    (["train", "--steps", "5", "--epochs", "1"], "not allowed with argument"),
    (["train", "--data", "mnist"], "--data mnist needs --data-dir"),
    (["train", "--resume", "--out", "/nonexistent/run"], "no checkpoint"),
    (["train", "--channels", "4,4,4,4"], "--channels applies to --model cnn"),
    (["train", "--head-cells", "7"], "--head-cells applies to --model cnn"),
    (["train", "--model", "cnn", "--channels", "4,4"], "four conv channel counts"),
    (["train", "--hidden", "0"], "positive integers"),
    (["train", "--weight-decay", "-0.1"], "non-negative"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--mode", "backprop", "--directions", "4"], "--directions 4 applies to forward gradients only"),
    (["train", "--resume", "--overwrite"], "not allowed with argument"),
])
def test_errors_are_one_line_with_exit_code_2(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith("tracegrad: error: ")
    assert not err.startswith("tracegrad: error: tracegrad")  # no doubled prefix
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err
    assert "Traceback" not in err + out


def test_runtime_failures_exit_1(capsys, tmp_path):
    code, out, err = _run(capsys, "train", "--data", "mnist", "--data-dir", "/nonexistent/mnist")
    assert code == 1 and err.startswith("tracegrad: error: ") and "/nonexistent/mnist" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


def test_used_out_is_refused_without_overwrite(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ("train", "--steps", "20", "--checkpoint-every", "10", "--out", out, "--quiet")
    assert _run(capsys, *args)[0] == 0
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert "ckpt-00000020.npz" in before and "config.json" in before
    code, _, err = _run(capsys, *args)
    assert code == 2 and "holds an earlier run" in err and "--overwrite" in err and "--resume" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # nothing deleted
    code, stdout, err = _run(capsys, "train", "--steps", "10", "--checkpoint-every", "10", "--out", out,
                             "--overwrite")
    assert code == 0, err
    assert "removed" in stdout
    assert [p.name for p in sorted((tmp_path / "run").glob("ckpt-*"))] == ["ckpt-00000010.npz"]


def test_resume_with_fewer_steps_than_the_checkpoint_says_so(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert _run(capsys, "train", "--steps", "30", "--checkpoint-every", "10", "--out", out, "--quiet")[0] == 0
    code, _, err = _run(capsys, "train", "--resume", "--steps", "10", "--out", out)
    assert code == 2 and "already at step 30" in err and "larger than 30" in err
    code, stdout, err = _run(capsys, "train", "--resume", "--steps", "30", "--out", out)
    assert code == 0 and "nothing to train" in stdout and "after 30 steps" in stdout


def test_header_names_the_data_set_and_the_defaults_in_use(tmp_path, capsys):
    code, stdout, err = _run(capsys, "train", "--model", "mlp", "--hidden", "8", "--steps", "10",
                             "--out", str(tmp_path / "r"), "--target-loss", "100")
    assert code == 0, err
    assert "data: the 8x8 digits shipped with tracegrad, not MNIST (1438 train / 359 test" in stdout
    assert "defaults in use for mlp on digits: --optimizer adam, --lr 0.001" in stdout
    assert "test loss <= 100 after" in stdout and "on the 8x8 digits after 10 steps" in stdout
    import json

    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["config"]["optimizer"] == "adam" and config["config"]["lr"] == 1e-3
    assert config["defaults_used"] == {"optimizer": "adam", "lr": 1e-3}
    assert config["dataset"] == {"name": "digits", "data_dir": None, "train_examples": 1438,
                                 "test_examples": 359}
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["steps_to_target"] == 10


def test_diverged_run_is_a_one_line_error(tmp_path, capsys):
    with np.errstate(all="ignore"):
        code, _, err = _run(capsys, "train", "--model", "mlp", "--hidden", "32,32", "--lr", "10",
                            "--steps", "300", "--checkpoint-every", "1", "--out", str(tmp_path / "d"), "--quiet")
    assert code == 1
    assert "training diverged at step" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1


def test_corrupt_mnist_file_is_a_one_line_error(tmp_path, capsys):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"\x00\x00\x08\x03garbage")
    code, _, err = _run(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "train-images-idx3-ubyte" in err


def test_python_dash_m_and_help():
    r = subprocess.run([sys.executable, "-m", "tracegrad", "train", "--help"], check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0
    for option in ("--model", "--data-dir", "--directions", "--distribution", "--resume", "--optimizer",
                   "--schedule", "--channels"):
        assert option in r.stdout
    r = subprocess.run([sys.executable, "-m", "tracegrad", "train", "--optimizer", "lbfgs"],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr
