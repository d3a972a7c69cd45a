import os
import sys

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def emulated_cupy(monkeypatch):
    """``backend="cupy"`` served by the CPU stand-in for the duration of a test."""
    from fake_cupy import make_fake_cupy

    import tracegrad.backends as backends
    from tracegrad.backends.cupy_backend import CupyBackend

    fake = make_fake_cupy()
    monkeypatch.setitem(backends._instances, "cupy", CupyBackend(fake))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake
