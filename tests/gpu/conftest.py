"""GPU tests: they run only where CuPy and a CUDA device are present, else skip with the reason."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: op_cases, cupy_helpers


@pytest.fixture(scope="session")
def cp():
    """The real ``cupy`` module, or a skip saying what is missing."""
    from tracegrad.backends.cupy_backend import import_cupy
    from tracegrad.errors import BackendUnavailableError

    try:
        return import_cupy()
    except BackendUnavailableError as err:
        pytest.skip(f"needs CuPy and a CUDA device: {err.message}")
