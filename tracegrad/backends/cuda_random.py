"""Tangent directions drawn on the GPU, never through the host.

A counter-based generator: element block ``b`` of a draw at position ``counter`` is
``mix64(key + (counter + b) * golden)`` (SplitMix64's output function), so a draw depends
only on ``(key, counter)`` — regenerable from the seed, checkpointed as one integer, and
independent of launch shape. One kernel launch fills all of a step's tangents (float32):

- ``rademacher``: bit ``i % 64`` of block ``i // 64`` gives ±1;
- ``normal``: Box-Muller on the two 24-bit halves of block ``m`` gives elements 2m and
  2m+1 (tails are cut at 5.8σ, probability 2e-8).

``reference`` computes the same numbers with NumPy (the tests compare them; Rademacher
bit for bit, normal to float32 rounding of logf/cosf).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .cuda_c import PREAMBLE

__all__ = ["KERNEL_NAMES", "SOURCE", "DeviceSampler", "reference"]

KERNEL_NAMES = {"rademacher": "tg_rademacher_f32", "normal": "tg_normal_f32"}
_GOLDEN = 0x9E3779B97F4A7C15

SOURCE = PREAMBLE + r"""
// ---- tracegrad tangent sampler: counter-based, out[i] depends only on (key, counter, i)
__device__ __forceinline__ uint64 tg_mix64(uint64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// +-1, each with probability 1/2: bit i % 64 of block i / 64
extern "C" __global__ void tg_rademacher_f32(float32* __restrict__ out, const uint64 key, const uint64 counter,
                                             const int64 n) {
    for (int64 i = (int64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64)blockDim.x * gridDim.x) {
        const uint64 h = tg_mix64(key + (counter + (uint64)(i >> 6)) * 0x9e3779b97f4a7c15ULL);
        out[i] = ((h >> (i & 63)) & 1ULL) ? 1.0f : -1.0f;
    }
}

// standard normal by Box-Muller: block m gives out[2m] and out[2m + 1]
extern "C" __global__ void tg_normal_f32(float32* __restrict__ out, const uint64 key, const uint64 counter,
                                        const int64 n) {
    const int64 pairs = (n + 1) / 2;
    for (int64 m = (int64)blockIdx.x * blockDim.x + threadIdx.x; m < pairs; m += (int64)blockDim.x * gridDim.x) {
        const uint64 h = tg_mix64(key + (counter + (uint64)m) * 0x9e3779b97f4a7c15ULL);
        const float32 u1 = ((float32)(h >> 40) + 1.0f) * 5.9604644775390625e-08f;  // (0, 1]
        const float32 u2 = (float32)(h & 0xffffffULL) * 5.9604644775390625e-08f;     // [0, 1)
        const float32 r = sqrtf(-2.0f * logf(u1));
        const float32 t = 6.2831853071795865f * u2;
        out[2 * m] = r * cosf(t);
        if (2 * m + 1 < n) out[2 * m + 1] = r * sinf(t);
    }
}
"""


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def reference(distribution: str, key: int, counter: int, n: int) -> np.ndarray:
    """The numbers the kernel writes, computed with NumPy (float32)."""
    with np.errstate(over="ignore"):
        if distribution == "rademacher":
            i = np.arange(n, dtype=np.uint64)
            h = _mix64(np.uint64(key) + (np.uint64(counter) + (i >> np.uint64(6))) * np.uint64(_GOLDEN))
            bits = (h >> (i & np.uint64(63))) & np.uint64(1)
            return np.where(bits == 1, np.float32(1), np.float32(-1))
        m = np.arange((n + 1) // 2, dtype=np.uint64)
        h = _mix64(np.uint64(key) + (np.uint64(counter) + m) * np.uint64(_GOLDEN))
    scale = np.float32(5.9604644775390625e-08)
    u1 = ((h >> np.uint64(40)).astype(np.float32) + np.float32(1)) * scale
    u2 = (h & np.uint64(0xFFFFFF)).astype(np.float32) * scale
    r = np.sqrt(np.float32(-2) * np.log(u1))
    t = np.float32(6.2831853071795865) * u2
    out = np.empty(2 * len(m), np.float32)
    out[0::2], out[1::2] = r * np.cos(t), r * np.sin(t)
    return out[:n]


class DeviceSampler:
    """Draws float32 tangents on the device with ``cupy`` (lazy: one small RawModule)."""

    def __init__(self, cp: Any, key: int, counter: int = 0):
        self.cp = cp
        self.key = int(key) % 2**64
        self.counter = int(counter)
        self._kernels: dict[str, Any] = {}

    def _kernel(self, distribution: str) -> Any:
        if not self._kernels:
            module = self.cp.RawModule(code=SOURCE)
            self._kernels = {d: module.get_function(name) for d, name in KERNEL_NAMES.items()}
        return self._kernels[distribution]

    def draw(self, distribution: str, shapes: list[tuple[int, ...]], dtypes: list[Any]) -> list[Any]:
        """One array per shape, all from ONE launch filling one buffer (split by views)."""
        cp = self.cp
        sizes = [math.prod(s) for s in shapes]
        total = sum(sizes)
        buf = cp.empty((max(total, 1),), cp.float32)
        if total:
            work = (total + 1) // 2 if distribution == "normal" else total
            block = 256
            grid = min(max(1, -(-work // block)), 65535)
            self._kernel(distribution)((grid,), (block,), (buf, np.uint64(self.key), np.uint64(self.counter),
                                                            np.int64(total)))
        self.counter += total
        out, start = [], 0
        for shape, size, dtype in zip(shapes, sizes, dtypes):
            v = buf[start:start + size].reshape(shape)
            out.append(v if np.dtype(dtype) == np.float32 else v.astype(dtype))
            start += size
        return out
