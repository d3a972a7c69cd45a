import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def mnist_dir() -> Path:
    """Real MNIST (IDX files) beside the project: ``../shared/data/mnist``, or $TRACEGRAD_MNIST_DIR."""
    env = os.environ.get("TRACEGRAD_MNIST_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def real_mnist_dir() -> str:
    root = mnist_dir()
    if not root.is_dir():
        pytest.skip(f"real MNIST not found at {root} (set TRACEGRAD_MNIST_DIR to its directory)")
    return str(root)


@pytest.fixture
def emulated_cupy(monkeypatch):
    """``backend="cupy"`` served by the CPU stand-in for the duration of a test."""
    from fake_cupy import make_fake_cupy

    from tracegrad import backends
    from tracegrad.backends.cupy_backend import CupyBackend

    fake = make_fake_cupy()
    monkeypatch.setitem(backends._instances, "cupy", CupyBackend(fake))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake
