"""Tangent directions drawn on the GPU, never through the host.

The device side of ``tracegrad/random.py``'s counter-based generator: a draw is a list of
segments, each one direction with its own 64-bit key (``random.direction_key(seed, step,
param, direction)``), and element ``j`` of a segment depends only on ``(key, j)``:
block ``b`` is ``mix64(key + b * golden)`` (SplitMix64's output function), and

- ``rademacher``: bit ``j % 64`` of block ``j // 64`` gives ±1;
- ``normal``: Box-Muller on the two 24-bit halves of block ``j // 2`` gives ``r·cos t``
  (even ``j``) or ``r·sin t`` (odd ``j``) (tails are cut at 5.8σ, probability 2e-8).

One kernel launch fills all of a step's tangents (float32, one buffer split by views); each
thread finds its segment by binary search over the segment starts. ``reference`` computes
one segment with plain NumPy (the tests compare it with the kernel, Rademacher bit for bit,
normal to float32 rounding of logf/cosf, and with the host's fast path in ``random.py``).
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
// ---- tracegrad tangent sampler: counter-based, segment s element j depends only on (keys[s], j)
__device__ __forceinline__ uint64 tg_mix64(uint64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// the segment holding element i: the last s with starts[s] <= i (starts[0] = 0, nseg >= 1)
__device__ __forceinline__ int64 tg_segment(const int64* __restrict__ starts, const int64 nseg, const int64 i) {
    int64 lo = 0, hi = nseg - 1;
    while (lo < hi) {
        const int64 mid = (lo + hi + 1) >> 1;
        if (starts[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// +-1, each with probability 1/2: bit j % 64 of block j / 64 of the element's segment
extern "C" __global__ void tg_rademacher_f32(float32* __restrict__ out, const uint64* __restrict__ keys,
                                             const int64* __restrict__ starts, const int64 nseg, const int64 n) {
    for (int64 i = (int64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64)blockDim.x * gridDim.x) {
        const int64 s = tg_segment(starts, nseg, i);
        const int64 j = i - starts[s];
        const uint64 h = tg_mix64(keys[s] + (uint64)(j >> 6) * 0x9e3779b97f4a7c15ULL);
        out[i] = ((h >> (j & 63)) & 1ULL) ? 1.0f : -1.0f;
    }
}

// standard normal by Box-Muller: block j / 2 gives the pair (r cos t, r sin t)
extern "C" __global__ void tg_normal_f32(float32* __restrict__ out, const uint64* __restrict__ keys,
                                        const int64* __restrict__ starts, const int64 nseg, const int64 n) {
    for (int64 i = (int64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64)blockDim.x * gridDim.x) {
        const int64 s = tg_segment(starts, nseg, i);
        const int64 j = i - starts[s];
        const uint64 h = tg_mix64(keys[s] + (uint64)(j >> 1) * 0x9e3779b97f4a7c15ULL);
        const float32 u1 = ((float32)(h >> 40) + 1.0f) * 5.9604644775390625e-08f;  // (0, 1]
        const float32 u2 = (float32)(h & 0xffffffULL) * 5.9604644775390625e-08f;     // [0, 1)
        const float32 r = sqrtf(-2.0f * logf(u1));
        const float32 t = 6.2831853071795865f * u2;
        out[i] = (j & 1) ? r * sinf(t) : r * cosf(t);
    }
}
"""


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def reference(distribution: str, key: int, n: int) -> np.ndarray:
    """The ``n`` numbers of one segment of key ``key``, computed with plain NumPy (float32)."""
    with np.errstate(over="ignore"):
        if distribution == "rademacher":
            i = np.arange(n, dtype=np.uint64)
            h = _mix64(np.uint64(key) + (i >> np.uint64(6)) * np.uint64(_GOLDEN))
            bits = (h >> (i & np.uint64(63))) & np.uint64(1)
            return np.where(bits == 1, np.float32(1), np.float32(-1))
        m = np.arange((n + 1) // 2, dtype=np.uint64)
        h = _mix64(np.uint64(key) + m * np.uint64(_GOLDEN))
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

    def __init__(self, cp: Any):
        self.cp = cp
        self._kernels: dict[str, Any] = {}

    def _kernel(self, distribution: str) -> Any:
        if not self._kernels:
            module = self.cp.RawModule(code=SOURCE)
            self._kernels = {d: module.get_function(name) for d, name in KERNEL_NAMES.items()}
        return self._kernels[distribution]

    def draw(self, distribution: str, keys: list[list[int]], shapes: list[tuple[int, ...]],
             dtypes: list[Any]) -> list[Any]:
        """One array per shape, all from ONE launch filling one buffer (split by views).

        ``keys[p]`` holds one key per row of ``shapes[p]`` (its leading axis: one direction
        each) or a single key when the whole array is one direction."""
        cp = self.cp
        seg_keys: list[int] = []
        starts: list[int] = []
        sizes, pos = [], 0
        for shape, ks in zip(shapes, keys):
            size = math.prod(shape)
            rows = len(ks)
            if rows == 0 or size % rows:
                raise ValueError(f"{rows} keys do not split an array of shape {shape} into rows")
            for r, key in enumerate(ks):
                seg_keys.append(int(key) % 2**64)
                starts.append(pos + r * (size // rows))
            sizes.append(size)
            pos += size
        total = pos
        buf = cp.empty((max(total, 1),), cp.float32)
        if total:
            d_keys = cp.asarray(np.array(seg_keys, np.uint64))
            d_starts = cp.asarray(np.array(starts, np.int64))
            block = 256
            grid = min(max(1, -(-total // block)), 65535)
            self._kernel(distribution)((grid,), (block,), (buf, d_keys, d_starts, np.int64(len(seg_keys)),
                                                            np.int64(total)))
        out, start = [], 0
        for shape, size, dtype in zip(shapes, sizes, dtypes):
            v = buf[start:start + size].reshape(shape)
            out.append(v if np.dtype(dtype) == np.float32 else v.astype(dtype))
            start += size
        return out
