"""Counter-based random tangents: every direction is a pure function of its coordinates.

A direction is named by ``(seed, step, param, direction)`` — the run's seed, the training
step, the index of the parameter leaf (depth-first over the differentiated arguments) and
the index among the ``directions`` tangents of one step. ``direction_key`` hashes those four
integers into a 64-bit key, and the numbers of the direction are those of the GPU sampler
(``backends/cuda_random.py``) at that key and counter 0:

- block ``b`` of the direction is ``mix64(key + b * golden)`` (SplitMix64's output function);
- ``rademacher``: element ``j`` is bit ``j % 64`` of block ``j // 64`` mapped to ±1;
- ``normal``: Box-Muller on the two 24-bit halves of block ``m`` gives elements ``2m`` and
  ``2m + 1`` (float32; tails are cut at 5.8σ, probability 2e-8).

So nothing about a run's random state has to be saved (a checkpoint needs the seed only),
any process can rebuild any other's direction, draws do not depend on how many directions
or parameters were drawn before, and a CuPy run draws the same numbers on the device
(Rademacher bit for bit, normal up to float32 rounding of the device's ``logf``/``cosf``).

Speed: the host fills in cache-sized chunks with in-place ufuncs; Rademacher costs one hash
per 64 numbers (1 ms for 1.86M on one loaded core here, docs/benchmarks.md), normal one hash,
a log, a cos and a sin per pair (8-10 ms: half of NumPy's ziggurat ``standard_normal`` in the
same run; NumPy's float32 log/cos/sin and the uint64 hash dominate). Large draws are split
over two threads (the ufuncs release the GIL); the split changes nothing in the numbers.
Many small directions (a step of a small model) go through one ``Batch``: one hash pass
over all of them, the same numbers, a dozen NumPy calls in all instead of per leaf.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["DISTRIBUTIONS", "Batch", "direction_key", "fill", "leaf_key", "mix64", "sample", "seed_key", "step_key",
           "step_key_of"]

DISTRIBUTIONS = ("normal", "rademacher")
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
_WORKER_SALT = 0x3C6EF372FE94F82B  # marks the worker link of a direction key
_U24 = 5.9604644775390625e-08  # 2**-24
_TWO_PI = 6.2831853071795865
_CHUNK = 1 << 15  # pairs (normal) or blocks of 64 (rademacher) per chunk: stays in L2
_THREAD_THRESHOLD = 1 << 18  # numbers; below this a second thread costs more than it saves

_U64_27, _U64_30, _U64_31 = np.uint64(27), np.uint64(30), np.uint64(31)
_U64_MIX1, _U64_MIX2 = np.uint64(MIX1), np.uint64(MIX2)
_U8_1, _U8_2 = np.uint8(1), np.uint8(2)
_U64_1, _U64_40, _U64_LOW24 = np.uint64(1), np.uint64(40), np.uint64(0xFFFFFF)
_F32_U24, _F32_TWO_PI, _F32_M2 = np.float32(_U24), np.float32(_TWO_PI), np.float32(-2)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def mix64(z: int) -> int:
    """SplitMix64's output function on a Python int (the same as the device's ``tg_mix64``)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def direction_key(seed: int, step: int, param: int, direction: int, worker: int = 0) -> int:
    """The 64-bit key of one direction: a hash chain over the coordinates, so keys of
    different coordinates are unrelated (no two directions share a stream or overlap).

    ``worker`` is the data-parallel worker that draws the direction (``train/distributed.py``).
    Worker 0 adds no link to the chain, so its keys are those of a single process and a
    one-worker run keeps today's directions; worker ``r > 0`` adds one more link (salted,
    so it cannot coincide with a longer coordinate chain)."""
    coords = [int(step), int(param), int(direction), int(worker)]
    if min(coords) < 0:
        raise ValueError(f"direction coordinates must be >= 0, got {min(coords)}")
    key = leaf_key(step_key(seed, coords[0]), coords[1], coords[2])
    if coords[3]:
        key = mix64(((key ^ _WORKER_SALT) + GOLDEN * (coords[3] + 1)) & MASK64)
    return key


def step_key(seed: int, step: int) -> int:
    """The first links of ``direction_key``'s chain, (seed, step): shared by every leaf and
    direction of a step, so a step hashes them once (``leaf_key`` finishes the chain)."""
    if step < 0:
        raise ValueError(f"direction coordinates must be >= 0, got {step}")
    return step_key_of(seed_key(seed), int(step))


def seed_key(seed: int) -> int:
    """The first link of the chain, (seed). A caller that keeps it hashes one link per step
    (``step_key_of``; the steady-state executor)."""
    return mix64((int(seed) & MASK64) ^ 0x5EED5EED5EED5EED)


def step_key_of(seed_key_: int, step: int) -> int:
    """``step_key(seed, step)`` from ``seed_key(seed)`` (``step`` an int >= 0, unchecked)."""
    return mix64((seed_key_ + GOLDEN * (step + 1)) & MASK64)


def leaf_key(step_key_: int, param: int, direction: int) -> int:
    """``direction_key(seed, step, param, direction)`` from ``step_key(seed, step)``."""
    key = mix64((step_key_ + GOLDEN * (param + 1)) & MASK64)
    return mix64((key + GOLDEN * (direction + 1)) & MASK64)


def _hash_blocks(key: int, first: int, h: np.ndarray, t: np.ndarray, base: np.ndarray) -> None:
    """``h[i] = mix64(key + (first + i) * golden)``; ``t`` is scratch, ``base = arange * golden``."""
    np.add(base[:len(h)], np.uint64((key + first * GOLDEN) & MASK64), out=h)
    _mix_inplace(h, t)


def _mix_inplace(h: np.ndarray, t: np.ndarray) -> None:
    """``h = mix64(h)`` elementwise on uint64 (wrapping arithmetic); ``t`` is scratch."""
    np.right_shift(h, _U64_30, out=t)  # NumPy scalars made once: a per-call np.uint64(...)
    h ^= t                              # costs as much as the ufunc on a small array
    h *= _U64_MIX1
    np.right_shift(h, _U64_27, out=t)
    h ^= t
    h *= _U64_MIX2
    np.right_shift(h, _U64_31, out=t)
    h ^= t


def _fill_normal(key: int, out: np.ndarray, first_pair: int) -> None:
    """Pairs ``first_pair ..`` of the direction into float32 ``out`` (even length)."""
    pairs = out.size // 2
    chunk = min(_CHUNK, pairs)
    base = _base(chunk)
    h, t = np.empty(chunk, np.uint64), np.empty(chunk, np.uint64)
    r, a = np.empty(chunk, np.float32), np.empty(chunk, np.float32)
    o2 = out.reshape(pairs, 2)
    for s in range(0, pairs, chunk):
        m = min(chunk, pairs - s)
        _hash_blocks(key, first_pair + s, h[:m], t[:m], base)
        _box_muller(h[:m], t[:m], r[:m], a[:m], o2[s:s + m])


def _box_muller(hh: np.ndarray, tt: np.ndarray, rr: np.ndarray, aa: np.ndarray, oo: np.ndarray) -> None:
    """The normal pairs ``oo`` (float32, shape ``(m, 2)``) of the hashed blocks ``hh``;
    ``tt``, ``rr``, ``aa`` are scratch of length m."""
    np.right_shift(hh, _U64_40, out=tt)
    tt += _U64_1
    ti = tt.view(np.int64)  # the same 24-bit integers; NumPy converts int64 faster than uint64
    rr[...] = ti  # exact: 24-bit integers
    rr *= _F32_U24  # u1 in (0, 1]
    np.bitwise_and(hh, _U64_LOW24, out=tt)
    aa[...] = ti
    aa *= _F32_U24  # u2 in [0, 1)
    aa *= _F32_TWO_PI  # the device rounds 2π·u2 the same way: (float)(2π) * u2
    np.log(rr, out=rr)
    rr *= _F32_M2
    np.sqrt(rr, out=rr)
    # cos and sin into contiguous scratch, then one multiply each into the interleaved output:
    # the same float32 values and the same one rounding of the product as writing them into
    # ``oo`` and scaling it by ``rr[:, None]``, whose length-2 inner loop cost as much as the
    # rest of the draw (tested bit for bit against the plain reference)
    cc = tt.view(np.float32)[:len(aa)]  # tt's bytes are free by now
    np.cos(aa, out=cc)
    np.multiply(cc, rr, out=oo[:, 0])
    np.sin(aa, out=aa)
    np.multiply(aa, rr, out=oo[:, 1])


_BASES: dict[int, np.ndarray] = {}  # chunk length -> arange(chunk) * golden (read-only, shared)


def _base(chunk: int) -> np.ndarray:
    """``arange(chunk) * golden``, kept: a training step asks for the same few lengths every
    time, and building it is a noticeable part of filling a small leaf."""
    base = _BASES.get(chunk)
    if base is None:
        base = np.arange(chunk, dtype=np.uint64) * np.uint64(GOLDEN)
        base.flags.writeable = False
        if len(_BASES) < 256:
            _BASES[chunk] = base
    return base


def _fill_rademacher(key: int, out: np.ndarray, first_block: int) -> None:
    """Elements ``64 * first_block ..`` of the direction into ``out`` (length a multiple of 64
    except possibly the last piece)."""
    blocks = -(-out.size // 64)
    chunk = min(_CHUNK, blocks)
    base = _base(chunk)
    h, t = np.empty(chunk, np.uint64), np.empty(chunk, np.uint64)
    for s in range(0, blocks, chunk):
        m = min(chunk, blocks - s)
        _hash_blocks(key, first_block + s, h[:m], t[:m], base)
        _signs(h[:m], out[64 * s:64 * (s + m)])


def _signs(h: np.ndarray, piece: np.ndarray) -> None:
    """±1 from the bits of the hashed blocks ``h`` into float32 ``piece`` (bit ``j % 64`` of
    block ``j // 64`` is element ``j``; ``piece`` may end inside the last block)."""
    bits = np.unpackbits(h.view(np.uint8), bitorder="little", count=piece.size)
    np.multiply(bits, _U8_2, out=bits)  # 0/1 -> 0/2 -> 255/1 in uint8, i.e. -1/+1 as int8:
    np.subtract(bits, _U8_1, out=bits)  # cheaper than the same arithmetic in float32
    piece[...] = bits.view(np.int8)


class Batch:
    """Many small directions drawn in one pass: the steady-state draw of a training step.

    Filling leaf after leaf costs a dozen NumPy calls per leaf whatever its size, which is
    most of a small model's draw (logistic regression: 20 µs a leaf for 10 and 7,840
    numbers). A ``Batch`` lays the directions of ``sizes`` out back to back in one float32
    buffer — each padded to whole blocks (64 numbers for Rademacher, pairs for normal) —
    and hashes, maps and writes all of them with one set of calls. The numbers are
    ``fill``'s exactly: segment ``i`` of ``fill_keys(keys, buf)`` is
    ``fill(distribution, keys[i], ...)``, bit for bit (``tests/test_random.py``).

    Meant for a few thousand to a few tens of thousands of numbers: above that, per-leaf
    ``fill`` (chunked to stay in cache, split over two threads) is the faster choice."""

    __slots__ = ("distribution", "offsets", "segment", "size", "sizes", "starts")

    def __init__(self, distribution: str, sizes: Sequence[int]):
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
        self.distribution = distribution
        self.sizes = [int(n) for n in sizes]
        unit = 2 if distribution == "normal" else 64
        blocks = [-(-n // unit) for n in self.sizes]
        self.starts = [unit * b for b in np.cumsum([0] + blocks[:-1]).tolist()]
        total = sum(blocks)
        self.size = unit * total  # float32 numbers in a buffer
        # block j of segment i hashes keys[i] + j * golden: the offsets j * golden, and i per block
        self.offsets = np.concatenate([_base(b) for b in blocks]) if total else np.empty(0, np.uint64)
        self.segment = np.repeat(np.arange(len(blocks), dtype=np.intp), blocks)

    def buffer(self) -> np.ndarray:
        """A new float32 buffer for ``fill_keys`` (its contents undefined until filled)."""
        return np.empty(self.size, np.float32)

    def views(self, buf: np.ndarray) -> list[np.ndarray]:
        """The direction of segment ``i`` in ``buf``: a contiguous 1-D view of ``sizes[i]``."""
        return [buf[s:s + n] for s, n in zip(self.starts, self.sizes)]

    def fill_keys(self, keys: Sequence[int], buf: np.ndarray) -> np.ndarray:
        """Write the direction of ``keys[i]`` into segment ``i`` of ``buf`` (from ``buffer``).
        The scratch is allocated per call (block-sized, cheap), so one ``Batch`` may serve
        several threads."""
        blocks = len(self.segment)
        h, t = np.take(np.array(keys, np.uint64), self.segment), np.empty(blocks, np.uint64)
        h += self.offsets  # uint64: wraps modulo 2**64 like the per-leaf hash
        _mix_inplace(h, t)
        if self.distribution == "normal":
            _box_muller(h, t, np.empty(blocks, np.float32), np.empty(blocks, np.float32), buf.reshape(-1, 2))
        else:
            _signs(h, buf)
        return buf


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tracegrad-sampler")
    return _pool


def fill(distribution: str, key: int, out: np.ndarray, *, threads: bool = True) -> np.ndarray:
    """Write the direction of ``key`` into ``out`` (any float dtype, any shape, contiguous),
    element ``j`` of ``out.ravel()`` being element ``j`` of the direction; returns ``out``."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if not out.flags.c_contiguous:
        raise ValueError("fill needs a C-contiguous output array")
    flat = out.reshape(-1)
    n = flat.size
    if n == 0:
        return out
    direct = flat.dtype == np.float32
    if distribution == "normal":
        # even length so pairs never split; float32 always (the device's numbers)
        work = flat if direct and n % 2 == 0 else np.empty(n + n % 2, np.float32)
        unit, fill_part = 2, _fill_normal
    else:
        work = flat if direct else np.empty(n, np.float32)
        unit, fill_part = 64, _fill_rademacher
    units = -(-work.size // unit)
    if threads and n >= _THREAD_THRESHOLD:
        half = units // 2
        parts = [(work[:half * unit], 0), (work[half * unit:], half)]
        list(_executor().map(lambda p: fill_part(key, p[0], p[1]), parts))
    else:
        fill_part(key, work, 0)
    if work is not flat:
        flat[...] = work[:n]
    return out


def sample(distribution: str, seed: int, step: int, param: int, direction: int,
           shape: Sequence[int], dtype: Any = np.float32, *, worker: int = 0) -> np.ndarray:
    """The tangent of ``(seed, step, param, direction, worker)`` as a fresh array of ``shape``."""
    out = np.empty(tuple(int(s) for s in shape), np.dtype(dtype))
    if math.prod(out.shape) and np.dtype(dtype).kind != "f":
        raise ValueError(f"tangents are floating point, got dtype {np.dtype(dtype)}")
    return fill(distribution, direction_key(seed, step, param, direction, worker), out)
