"""A CPU stand-in for CuPy, so the CuPy backend runs end to end on machines without a GPU.

Arrays are NumPy arrays (CuPy mirrors NumPy's API, which is all the generated glue uses);
``RawModule`` compiles the generated CUDA translation unit as host C++ with g++ and a
shim for the CUDA keywords, and runs each kernel with ONE thread in ONE block (the
generated kernels use grid-stride loops and ``blockDim``, so that covers every index).
This checks the generated indexing, templates and glue numerically; ``nvcc --ptx``
(tests/test_cuda_source.py) checks that the same source is valid CUDA, and tests/gpu/
runs it on a real device.

Modules are compiled lazily and in batches: every module created before the first
kernel call goes into one g++ invocation (each in its own C++ namespace), and results
are cached on disk by content, so a test that builds many graphs compiles once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import types

import numpy as np

SHIM = r"""
#include <math.h>
#include <string.h>
struct tg_dim3 { unsigned int x, y, z; };
static tg_dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() ((void)0)
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, sizeof d); return d; }
"""

_CACHE = os.path.join(tempfile.gettempdir(), f"tracegrad-fake-cupy-{os.getuid()}")
_KERNEL = re.compile(r'extern "C" __global__ void (\w+)\(')


def have_compiler() -> bool:
    return shutil.which("g++") is not None


class _Batch:
    """Modules waiting for one g++ run."""

    def __init__(self) -> None:
        self.pending: list[RawModule] = []

    def build(self) -> None:
        mods, self.pending = self.pending, []
        parts = [SHIM]
        for k, m in enumerate(mods):
            code = _KERNEL.sub(lambda mt, k=k: f'extern "C" __global__ void {mt.group(1)}__m{k}(', m.code)
            parts.append(f"namespace tgm{k} {{\n{code}\n}}\n")
        src = "\n".join(parts)
        key = hashlib.sha256(src.encode()).hexdigest()[:24]
        os.makedirs(_CACHE, exist_ok=True)
        lib_path = os.path.join(_CACHE, f"{key}.so")
        if not os.path.exists(lib_path):
            cpp = os.path.join(_CACHE, f"{key}.cpp")
            with open(cpp, "w") as fh:
                fh.write(src)
            tmp = lib_path + f".{os.getpid()}.tmp"
            proc = subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-w", "-o", tmp, cpp],
                                  check=False, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"host compile of generated CUDA failed:\n{proc.stderr[:4000]}")
            os.replace(tmp, lib_path)
        lib = ctypes.CDLL(lib_path)
        for k, m in enumerate(mods):
            m._lib, m._suffix = lib, f"__m{k}"


_batch = _Batch()


class RawModule:
    def __init__(self, code: str, options: tuple = (), **kwargs: object) -> None:
        self.code = code
        self._lib = None
        self._suffix = ""
        _batch.pending.append(self)

    def get_function(self, name: str) -> _Function:
        if name not in _KERNEL.findall(self.code):
            raise AttributeError(f"no kernel {name!r} in module")
        return _Function(self, name)


_CTYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
           np.dtype(np.uint32): ctypes.c_uint32, np.dtype(np.uint64): ctypes.c_uint64,
           np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


class _Function:
    def __init__(self, module: RawModule, name: str) -> None:
        self.module, self.name = module, name
        self.calls = 0

    def __call__(self, grid: tuple, block: tuple, args: tuple, **kwargs: object) -> None:
        assert block[0] >= 1 and grid[0] >= 1 and (block[0] & (block[0] - 1)) == 0
        if self.module._lib is None:
            _batch.build()
        fn = getattr(self.module._lib, self.name + self.module._suffix)
        fn.restype = None
        cargs = []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, "kernels take contiguous base buffers"
                cargs.append(ctypes.c_void_p(a.ctypes.data))
            else:
                cargs.append(_CTYPES[np.asarray(a).dtype](a))
        self.calls += 1
        fn(*cargs)


def make_fake_cupy() -> types.ModuleType:
    """A module object that answers like ``cupy`` (NumPy underneath)."""
    mod = types.ModuleType("cupy")
    mod.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    mod.RawModule = RawModule
    mod.ndarray = np.ndarray
    mod.asnumpy = np.asarray
    mod.get_array_module = lambda *a: np
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    device = types.SimpleNamespace(synchronize=lambda: None)
    mod.cuda = types.SimpleNamespace(runtime=runtime, Stream=None, Device=lambda *a: device)
    mod.__fake__ = True
    return mod
