"""Without CuPy (or without a CUDA device) ``backend="cupy"`` fails early with a clear
``BackendUnavailableError``; ``import tracegrad`` never imports CuPy; the rest works."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import backends
from tracegrad.cli import main
from tracegrad.errors import BackendUnavailableError

HAVE_CUPY = importlib.util.find_spec("cupy") is not None


def test_import_tracegrad_never_imports_cupy():
    code = ("import sys, numpy as np, tracegrad as tg\n"
            "tg.compile(lambda x: np.exp(x))(np.ones(2))\n"
            "from tracegrad.backends import cupy_codegen, cuda_random\n"
            "assert 'cupy' not in sys.modules, 'cupy was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


@pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed here; the missing-CuPy message cannot be seen")
def test_missing_cupy_is_a_clear_error(monkeypatch):
    monkeypatch.delitem(backends._instances, "cupy", raising=False)
    with pytest.raises(BackendUnavailableError) as info:
        tg.compile(lambda x: x * 2, backend="cupy")
    msg = str(info.value)
    assert "needs CuPy, which is not installed" in msg and "backend='numpy'" in msg
    # installed from this checkout: the extra comes from the checkout, not from PyPI
    assert 'pip install -e ".[cuda]"' in msg and "tracegrad[cuda]" not in msg
    assert info.value.source is None  # the environment's fault, not a line of the user's code
    assert np.allclose(tg.compile(lambda x: x * 2)(np.ones(2)), 2)  # everything else keeps working


def test_cupy_without_a_device_is_a_clear_error(monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.delitem(backends._instances, "cupy", raising=False)
    with pytest.raises(BackendUnavailableError, match="CuPy is installed but no CUDA device is usable"):
        tg.compile(lambda x: x, backend="cupy")
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        tg.forward_grad(lambda p: np.sum(p * p), backend="cupy")


@pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed here")
def test_cli_backend_cupy_fails_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.delitem(backends._instances, "cupy", raising=False)
    code = main(["train", "--backend", "cupy", "--steps", "1", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "needs CuPy" in err[0]  # a run-time failure
    assert "trainer.py" not in err[0] and " at " not in err[0]
