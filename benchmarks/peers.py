"""tracegrad against its peers: forward, JVP, forward-gradient step and backprop step.

Implementations (each when installed; ``pip install -e ".[bench]"`` adds PyTorch and JAX):
  tracegrad  compiled loss / ``Compiled.jvp`` / ``forward_grad`` + in-place SGD /
             ``value_and_grad`` + in-place SGD
  numpy      hand-written forward, JVP and backward passes (logistic regression and MLP)
  torch      eager forward under ``no_grad``; ``torch.func.jvp`` (forward-mode AD);
             ``loss.backward()``; in-place SGD
  jax        ``jit`` of the loss, of ``jax.jvp``, of the whole forward-gradient step (tangents
             drawn by ``jax.random`` inside) and of ``value_and_grad`` + SGD, parameters donated

Modes per step: ``forward`` (loss only), ``jvp`` (loss and its JVP along tangents drawn
beforehand), ``fg-rad`` / ``fg-normal`` (draw the tangents, JVP, ``p -= lr·(∇f·v)·v``),
``backprop`` (gradient by reverse mode, ``p -= lr·g``). ``--tangents rank1`` adds the rows
``jvp-r1``, ``fg-rad-r1``, ``fg-normal-r1``, interleaved with the dense ones: every weight
matrix / conv kernel gets a rank-1 tangent ``a bᵀ`` (vectors stay dense) — tracegrad's
``forward_grad(..., tangents="rank1")`` with its in-place rank-1 SGD update, and a hand-written
NumPy step (``x @ Ẇ = (x @ a) bᵀ``, ``W -= lr·d·a bᵀ`` as one BLAS ``ger`` in place). PyTorch
and JAX have no rank-1 tangent kind; their dense and backprop rows stand for them.

Workloads (float32, mean softmax cross-entropy, random MNIST-shaped data):
  logreg  784 -> 10
  mlp     784-1024-1024-10, ReLU
  cnn     conv3x3(1->32, pad 1)-ReLU-maxpool2, conv3x3(32->64, pad 1)-ReLU-maxpool2, linear 3136->10

Method: every workload runs in its own subprocess whose thread settings are fixed in the
environment BEFORE NumPy, PyTorch or JAX are imported. ``pinned``: ``taskset -c 0``,
OMP/OpenBLAS/MKL threads 1, ``torch.set_num_threads(1)``, XLA flags
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``; ``default``: the
libraries' own defaults. All (implementation, mode) variants of a workload run interleaved,
one step each per round, so noise on a shared machine hits them alike, in a new (seeded)
order every round: JAX's runtime threads keep the pinned core busy for a while after a JAX
call, and with a fixed order that time was charged to whichever variant came next (the
first tracegrad mode: 0.154 ms for a logistic-regression forward that takes 0.036 alone).
The table reports the median CPU time (``process_time``) and wall time per step. Peak memory: one subprocess per
(workload, implementation, mode), pinned; after three warm-up steps the kernel's peak-RSS
counter is reset (``/proc/self/clear_refs``) and the peak above the warm RSS over three more
steps is reported (Linux only; glibc's mmap threshold is fixed at 128 KiB so that freed large
buffers leave the RSS instead of staying cached in the heap).

Run (the docs/benchmarks.md table; not under ``taskset`` yourself — the pinned workers pin
themselves, and a pinned parent would pin the default-threads workers too):
    python benchmarks/peers.py --tangents rank1 --markdown /tmp/peers.md
Quick look:
    python benchmarks/peers.py --workloads mlp:64 --rounds 5 --threads pinned --no-memory
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLS = ("tracegrad", "numpy", "torch", "jax")
MODES = ("forward", "jvp", "fg-rad", "fg-normal", "backprop")
RANK1_MODES = ("jvp-r1", "fg-rad-r1", "fg-normal-r1")  # added by --tangents rank1
WORKLOADS = ("logreg:64", "mlp:64", "cnn:64", "mlp:1024")
LR = 1e-4  # the cost of a step does not depend on it
PINNED_ENV = {
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "TG_PEERS_THREADS": "1",
}


# ============================================================================ workers
# Everything below the line runs inside a worker subprocess (numpy & co. imported late).

def _depth(kind: str) -> int:
    """Hidden layers of an MLP workload: ``mlp`` has 2 (784-1024-1024-10), ``mlpN`` has N."""
    return int(kind[3:] or 2)


def _data(kind: str, batch: int, seed: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (batch, 1, 28, 28) if kind == "cnn" else (batch, 784)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)

    def he(shape: tuple[int, ...], fan_in: int) -> Any:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def z(n: int) -> Any:
        return np.zeros(n, np.float32)

    if kind == "logreg":
        params = {"w": he((784, 10), 784) * 0.25, "b": z(10)}
    elif kind.startswith("mlp"):
        depth, params = _depth(kind), {"w0": he((784, 1024), 784), "b0": z(1024)}
        for i in range(1, depth):
            params[f"w{i}"], params[f"b{i}"] = he((1024, 1024), 1024), z(1024)
        params[f"w{depth}"], params[f"b{depth}"] = he((1024, 10), 1024) * 0.25, z(10)
    else:
        params = {"c0_w": he((32, 1, 3, 3), 9), "c0_b": z(32), "c1_w": he((64, 32, 3, 3), 288), "c1_b": z(64),
                  "fc_w": he((3136, 10), 3136) * 0.25, "fc_b": z(10)}
    return x, y, params


def _tangent_kinds(tangents: str) -> None:
    """The tangent kinds: ``dense``, and ``rank1`` (adds the ``*-r1`` modes)."""
    if tangents not in ("dense", "rank1"):
        raise SystemExit(f"--tangents {tangents}: choose dense or rank1")


# ---------------------------------------------------------------------------- tracegrad
def _tracegrad(kind: str, x: Any, y: Any, params: dict[str, Any], tangents: str) -> dict[str, Callable[[], Any]]:
    import numpy as np

    sys.path.insert(0, ROOT)
    import tracegrad as tg
    from tracegrad import numpy as tnp
    from tracegrad.nn import functional as F
    from tracegrad.optim import sgd

    _tangent_kinds(tangents)

    def loss(p: dict[str, Any], x: Any, y: Any) -> Any:
        if kind == "logreg":
            z = x @ p["w"] + p["b"]
        elif kind.startswith("mlp"):
            h = x
            for i in range(_depth(kind)):
                h = np.maximum(h @ p[f"w{i}"] + p[f"b{i}"], 0)
            z = h @ p[f"w{_depth(kind)}"] + p[f"b{_depth(kind)}"]
        else:
            h = F.conv2d(x, p["c0_w"], padding=1) + np.reshape(p["c0_b"], (1, -1, 1, 1))
            h = F.max_pool2d(np.maximum(h, 0), 2)
            h = F.conv2d(h, p["c1_w"], padding=1) + np.reshape(p["c1_b"], (1, -1, 1, 1))
            h = F.max_pool2d(np.maximum(h, 0), 2)
            z = F.flatten(h) @ p["fc_w"] + p["fc_b"]
        return tnp.cross_entropy(z, y)

    f = tg.compile(loss)
    opt = sgd(LR)
    update = opt.update_inplace
    state = {"p": {k: v.copy() for k, v in params.items()}, "s": opt.init(params), "t": 0}
    rng = np.random.default_rng(1)
    v = {k: rng.choice(np.array([-1.0, 1.0], np.float32), size=(1,) + a.shape) for k, a in params.items()}
    vg = tg.value_and_grad(f)
    est = {d: tg.forward_grad(f, distribution=d, seed=0) for d in ("rademacher", "normal")}
    est_r1 = {d: tg.forward_grad(f, distribution=d, seed=0, tangents="rank1") for d in ("rademacher", "normal")}
    # rank-1 JVP inputs: leaves in pytree order (sorted keys), then x and y without tangents
    names = sorted(params)
    mask = (True,) * len(names) + (False, False)
    r1_inputs = []
    for k in names:
        a = params[k]
        if a.ndim >= 2:
            r1_inputs += [np.ones((1, a.shape[0], 1), np.float32),
                          rng.choice(np.array([-1.0, 1.0], np.float32), size=(1, a.size // a.shape[0], 1))]
        else:
            r1_inputs.append(v[k])

    def step(estimate: Callable[..., Any], with_step: bool) -> Callable[[], Any]:
        def run() -> Any:
            if with_step:
                loss_v, g = estimate(state["p"], x, y, step=state["t"])
            else:
                loss_v, g = estimate(state["p"], x, y)
            state["p"], state["s"] = update(g, state["s"], state["p"])
            state["t"] += 1
            return loss_v

        return run

    return {
        "forward": lambda: f(state["p"], x, y),
        "jvp": lambda: f.jvp((state["p"], x, y), (v, None, None), batched=True),
        "fg-rad": step(est["rademacher"], True),
        "fg-normal": step(est["normal"], True),
        "backprop": step(vg, False),
        "jvp-r1": lambda: f.jvp_leaves((state["p"], x, y), mask, (1,), 1, r1_inputs),
        "fg-rad-r1": step(est_r1["rademacher"], True),
        "fg-normal-r1": step(est_r1["normal"], True),
    }


# ---------------------------------------------------------------------------- numpy
def _numpy(kind: str, x: Any, y: Any, params: dict[str, Any], tangents: str) -> dict[str, Callable[[], Any]]:
    import numpy as np

    _tangent_kinds(tangents)
    if kind == "cnn":
        return {}  # no hand-written convolution: the peers' numbers stand for it
    p = {k: a.copy() for k, a in params.items()}
    layers = [("w", "b")] if kind == "logreg" else [(f"w{i}", f"b{i}") for i in range(_depth(kind) + 1)]
    n = len(y)
    rows = np.arange(n)
    rng = np.random.default_rng(0)

    def softmax_ce(z: Any) -> tuple[float, Any]:
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, y]))
        return loss, e / s

    def forward(keep: bool = False) -> Any:
        h, acts = x, []
        for i, (w, b) in enumerate(layers):
            z = h @ p[w] + p[b]
            acts.append((h, z))
            h = np.maximum(z, 0) if i < len(layers) - 1 else z
        loss, prob = softmax_ce(h)
        return (loss, prob, acts) if keep else loss

    def jvp_with(t: dict[str, Any], weight_side: Any) -> tuple[float, float]:
        """Loss and JVP; ``weight_side(h, t_w)`` is ``h @ Ẇ`` for the tangent kind at hand."""
        h, dh = x, None
        for i, (w, b) in enumerate(layers):
            z = h @ p[w] + p[b]
            dz = weight_side(h, t[w])
            dz += t[b]
            if dh is not None:
                dz += dh @ p[w]
            if i < len(layers) - 1:
                mask = z > 0
                h, dh = z * mask, dz * mask
            else:
                h, dh = z, dz
        loss, prob = softmax_ce(h)
        return loss, float((np.sum(prob * dh) - dh[rows, y].sum()) / n)

    def jvp(t: dict[str, Any]) -> tuple[float, float]:
        return jvp_with(t, lambda h, tw: h @ tw)

    def draw(dist: str) -> dict[str, Any]:
        out = {}
        for k, a in p.items():
            if dist == "normal":
                out[k] = rng.standard_normal(a.shape, dtype=np.float32)
            else:
                bits = np.unpackbits(np.frombuffer(rng.bytes((a.size + 7) // 8), np.uint8), count=a.size)
                v = np.empty(a.shape, np.float32)
                np.multiply(bits.reshape(a.shape), 2, out=v, casting="unsafe")
                v -= 1
                out[k] = v
        return out

    fixed = draw("rademacher")
    from scipy.linalg.blas import sger

    def jvp_r1(t: dict[str, Any]) -> tuple[float, float]:
        """Weights' tangents a bᵀ: x @ (a bᵀ) = (x @ a) bᵀ, two thin products."""
        return jvp_with(t, lambda h, tw: np.multiply.outer(h @ tw[0], tw[1]))

    def draw_r1(dist: str) -> dict[str, Any]:
        flat = {}
        for w, b in layers:
            m, k = p[w].shape
            d = draw_vec(dist, m + k)
            flat[w] = (d[:m], d[m:])
            flat[b] = draw_vec(dist, p[b].size)
        return flat

    def draw_vec(dist: str, size: int) -> Any:
        if dist == "normal":
            return rng.standard_normal(size, dtype=np.float32)
        bits = np.unpackbits(np.frombuffer(rng.bytes((size + 7) // 8), np.uint8), count=size)
        out = np.empty(size, np.float32)
        np.multiply(bits, 2, out=out, casting="unsafe")
        out -= 1
        return out

    fixed_r1 = draw_r1("rademacher")

    def fg_r1(dist: str) -> Callable[[], Any]:
        def run() -> Any:
            t = draw_r1(dist)
            loss, d = jvp_r1(t)
            for w, b in layers:
                ta, tb = t[w]
                sger(-LR * d, tb, ta, a=p[w].T, overwrite_a=1)  # W -= lr·d·a bᵀ, in place
                tv = t[b]
                tv *= LR * d
                p[b] -= tv
            return loss

        return run

    def fg(dist: str) -> Callable[[], Any]:
        def run() -> Any:
            t = draw(dist)
            loss, d = jvp(t)
            for k, v in t.items():
                v *= LR * d
                p[k] -= v
            return loss

        return run

    def backprop() -> Any:
        loss, prob, acts = forward(keep=True)
        g = prob
        g[rows, y] -= 1
        g /= n
        for i in range(len(layers) - 1, -1, -1):
            (w, b), (h, _) = layers[i], acts[i]
            gw, gb = h.T @ g, g.sum(axis=0)
            if i:
                g = g @ p[w].T
                g *= acts[i - 1][1] > 0
            gw *= LR
            gb *= LR
            p[w] -= gw
            p[b] -= gb
        return loss

    return {"forward": forward, "jvp": lambda: jvp(fixed), "fg-rad": fg("rademacher"), "fg-normal": fg("normal"),
            "backprop": backprop, "jvp-r1": lambda: jvp_r1(fixed_r1), "fg-rad-r1": fg_r1("rademacher"),
            "fg-normal-r1": fg_r1("normal")}


# ---------------------------------------------------------------------------- torch
def _torch(kind: str, x: Any, y: Any, params: dict[str, Any], tangents: str) -> dict[str, Callable[[], Any]]:
    import torch
    import torch.nn.functional as tF

    _tangent_kinds(tangents)
    if os.environ.get("TG_PEERS_THREADS") == "1":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    names = list(params)
    p = [torch.tensor(params[k]) for k in names]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def loss(*ps: Any) -> Any:
        q = dict(zip(names, ps))
        if kind == "logreg":
            z = xt @ q["w"] + q["b"]
        elif kind.startswith("mlp"):
            h = xt
            for i in range(_depth(kind)):
                h = torch.relu(h @ q[f"w{i}"] + q[f"b{i}"])
            z = h @ q[f"w{_depth(kind)}"] + q[f"b{_depth(kind)}"]
        else:
            h = tF.max_pool2d(torch.relu(tF.conv2d(xt, q["c0_w"], q["c0_b"], padding=1)), 2)
            h = tF.max_pool2d(torch.relu(tF.conv2d(h, q["c1_w"], q["c1_b"], padding=1)), 2)
            z = h.flatten(1) @ q["fc_w"] + q["fc_b"]
        return tF.cross_entropy(z, yt)

    def draw(dist: str) -> list[Any]:
        if dist == "normal":
            return [torch.randn_like(a) for a in p]
        return [torch.empty_like(a).bernoulli_(0.5).mul_(2).sub_(1) for a in p]

    fixed = draw("rademacher")

    def forward() -> Any:
        with torch.no_grad():
            return loss(*p)

    def fg(dist: str) -> Callable[[], Any]:
        def run() -> Any:
            t = draw(dist)
            value, d = torch.func.jvp(loss, tuple(p), tuple(t))
            with torch.no_grad():
                for a, v in zip(p, t):
                    a.sub_(v.mul_(LR * d))
            return value

        return run

    leaves = [a.clone().requires_grad_(True) for a in p]

    def backprop() -> Any:
        value = loss(*leaves)
        grads = torch.autograd.grad(value, leaves)
        with torch.no_grad():
            for a, g in zip(leaves, grads):
                a.sub_(g, alpha=LR)
        return value

    return {"forward": forward, "jvp": lambda: torch.func.jvp(loss, tuple(p), tuple(fixed)),
            "fg-rad": fg("rademacher"), "fg-normal": fg("normal"), "backprop": backprop}


# ---------------------------------------------------------------------------- jax
def _jax(kind: str, x: Any, y: Any, params: dict[str, Any], tangents: str) -> dict[str, Callable[[], Any]]:
    import jax
    import jax.numpy as jnp

    _tangent_kinds(tangents)
    jax.config.update("jax_platforms", "cpu")
    xj, yj = jnp.asarray(x), jnp.asarray(y.astype("int32"))

    def loss(q: dict[str, Any], xj: Any, yj: Any) -> Any:
        if kind == "logreg":
            z = xj @ q["w"] + q["b"]
        elif kind.startswith("mlp"):
            h = xj
            for i in range(_depth(kind)):
                h = jax.nn.relu(h @ q[f"w{i}"] + q[f"b{i}"])
            z = h @ q[f"w{_depth(kind)}"] + q[f"b{_depth(kind)}"]
        else:
            def conv(h: Any, w: Any, b: Any) -> Any:
                out = jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
                h = jax.nn.relu(out + b[None, :, None, None])
                return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

            h = conv(conv(xj, q["c0_w"], q["c0_b"]), q["c1_w"], q["c1_b"])
            z = h.reshape(h.shape[0], -1) @ q["fc_w"] + q["fc_b"]
        logz = jax.nn.log_softmax(z)
        return -jnp.mean(jnp.take_along_axis(logz, yj[:, None], axis=1))

    def draw(key: Any, q: dict[str, Any], dist: str) -> dict[str, Any]:
        keys = jax.random.split(key, len(q))
        if dist == "normal":
            return {k: jax.random.normal(kk, a.shape, a.dtype) for kk, (k, a) in zip(keys, sorted(q.items()))}
        return {k: jax.random.rademacher(kk, a.shape, a.dtype) for kk, (k, a) in zip(keys, sorted(q.items()))}

    state = {"p": {k: jnp.asarray(a) for k, a in params.items()}, "t": 0}
    base = jax.random.key(0)
    fixed = draw(base, state["p"], "rademacher")
    f = jax.jit(loss)
    jvp = jax.jit(lambda q, t, xj, yj: jax.jvp(lambda q: loss(q, xj, yj), (q,), (t,)))

    def make_fg(dist: str) -> Any:
        def fg_step(q: Any, t: Any, xj: Any, yj: Any) -> Any:
            v = draw(jax.random.fold_in(base, t), q, dist)
            value, d = jax.jvp(lambda q: loss(q, xj, yj), (q,), (v,))
            return jax.tree_util.tree_map(lambda a, b: a - LR * d * b, q, v), value

        return jax.jit(fg_step, donate_argnums=0)

    def bp_step(q: Any, xj: Any, yj: Any) -> Any:
        value, g = jax.value_and_grad(loss)(q, xj, yj)
        return jax.tree_util.tree_map(lambda a, b: a - LR * b, q, g), value

    bp = jax.jit(bp_step, donate_argnums=0)
    fgs = {d: make_fg(d) for d in ("rademacher", "normal")}

    def fg(dist: str) -> Callable[[], Any]:
        def run() -> Any:
            state["p"], value = fgs[dist](state["p"], state["t"], xj, yj)
            state["t"] += 1
            return value.block_until_ready()

        return run

    def backprop() -> Any:
        state["p"], value = bp(state["p"], xj, yj)
        return value.block_until_ready()

    return {"forward": lambda: f(state["p"], xj, yj).block_until_ready(),
            "jvp": lambda: jax.block_until_ready(jvp(state["p"], fixed, xj, yj)),
            "fg-rad": fg("rademacher"), "fg-normal": fg("normal"), "backprop": backprop}


BUILDERS = {"tracegrad": _tracegrad, "numpy": _numpy, "torch": _torch, "jax": _jax}


def _variants(workload: str, impls: list[str], modes: list[str], tangents: str) -> dict[tuple[str, str], Any]:
    kind, batch = workload.split(":")
    x, y, params = _data(kind, int(batch))
    out = {}
    for impl in impls:
        try:
            fns = BUILDERS[impl](kind, x, y, params, tangents)
        except (ImportError, OSError):
            continue  # not installed, or installed without its shared libraries
        for mode in modes:
            if mode in fns:
                out[(impl, mode)] = fns[mode]
    return out


def _worker_time(args: argparse.Namespace) -> dict[str, Any]:
    variants = _variants(args.workload, args.impls, args.modes, args.tangents)
    for fn in variants.values():  # warm-up: compile, allocate, page in
        for _ in range(args.warmup):
            fn()
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
    wall: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
    start = time.perf_counter()
    order = list(variants.items())
    shuffle = random.Random(0).shuffle  # a new order every round, the same in every run
    for r in range(args.rounds):
        shuffle(order)
        for key, fn in order:
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            c1, w1 = time.process_time(), time.perf_counter()
            cpu[key].append(c1 - c0)
            wall[key].append(w1 - w0)
        if r + 1 >= args.min_rounds and time.perf_counter() - start > args.budget:
            break
    return {f"{i}|{m}": {"cpu_ms": 1e3 * statistics.median(cpu[(i, m)]),
                         "wall_ms": 1e3 * statistics.median(wall[(i, m)]), "rounds": len(cpu[(i, m)])}
            for (i, m) in variants}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _worker_memory(args: argparse.Namespace) -> dict[str, Any]:
    import gc

    variants = _variants(args.workload, args.impls, args.modes, args.tangents)
    if not variants:
        return {}
    ((key, fn),) = variants.items()
    for _ in range(3):
        fn()
    gc.collect()
    warm = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    for _ in range(3):
        fn()
    peak = _status_kb("VmHWM")
    return {f"{key[0]}|{key[1]}": {"peak_mib": (peak - warm) / 1024, "warm_mib": warm / 1024}}


def _worker_sampler(args: argparse.Namespace) -> dict[str, Any]:
    """Time one draw of ``args.sampler`` float32 tangent numbers per generator, interleaved."""
    import numpy as np

    sys.path.insert(0, ROOT)
    from tracegrad import random as tgr

    n = int(args.sampler)
    out = np.empty(n, np.float32)
    pinned = os.environ.get("TG_PEERS_THREADS") == "1"
    fns: dict[str, Callable[[], Any]] = {
        "tracegrad normal": lambda: tgr.fill("normal", 12345, out, threads=not pinned),
        "tracegrad rademacher": lambda: tgr.fill("rademacher", 12345, out, threads=not pinned),
        "numpy PCG64 normal (ziggurat)": lambda: np.random.default_rng(1).standard_normal(out=out, dtype=np.float32),
        "numpy SFC64 normal (ziggurat)":
            lambda: np.random.Generator(np.random.SFC64(1)).standard_normal(out=out, dtype=np.float32),
    }
    try:
        import torch

        if pinned:
            torch.set_num_threads(1)
        t = torch.empty(n)
        fns["torch normal_"] = lambda: t.normal_()
        fns["torch bernoulli_ ±1"] = lambda: t.bernoulli_(0.5).mul_(2).sub_(1)
    except (ImportError, OSError):
        pass
    try:
        import jax

        normal = jax.jit(lambda k: jax.random.normal(k, (n,), "float32"))
        rad = jax.jit(lambda k: jax.random.rademacher(k, (n,), "float32"))
        key = jax.random.key(0)
        fns["jax random.normal"] = lambda: normal(key).block_until_ready()
        fns["jax random.rademacher"] = lambda: rad(key).block_until_ready()
    except (ImportError, OSError):
        pass
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(args.rounds):
        for k, fn in fns.items():
            c0 = time.process_time()
            fn()
            times[k].append(time.process_time() - c0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


# ============================================================================ driver
def _run_worker(what: str, workload: str, impls: list[str], modes: list[str], threads: str,
                args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", what, "--workload", workload,
           "--impls", ",".join(impls), "--modes", ",".join(modes), "--tangents", args.tangents,
           "--rounds", str(args.rounds), "--min-rounds", str(args.min_rounds), "--budget", str(args.budget),
           "--warmup", str(args.warmup)] + (["--sampler", str(args.sampler)] if args.sampler else [])
    if what == "memory":  # a fixed mmap threshold: freed large buffers leave the RSS at once
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"  # (glibc's dynamic threshold would keep them resident)
    if threads == "pinned":
        env.update(PINNED_ENV)
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", str(args.core)] + cmd
    else:
        env.pop("TG_PEERS_THREADS", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"worker {what} {workload} {impls} {modes} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _importable(name: str) -> bool:
    """Whether peer ``name`` imports. A half-installed package (e.g. a torch wheel whose
    shared libraries are missing raises ``OSError`` on import) counts as absent, with a note."""
    import importlib
    import importlib.util

    if importlib.util.find_spec(name) is None:
        return False
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any failure to import means: skip this peer
        print(f"[peers] skipping {name}: import failed ({type(exc).__name__}: {str(exc)[:120]})",
              file=sys.stderr, flush=True)
        return False
    return True


def _available(impls: list[str]) -> list[str]:
    return [i for i in impls if i in ("tracegrad", "numpy") or _importable(i)]


def _versions(impls: list[str]) -> str:
    import numpy

    out = [f"NumPy {numpy.__version__}"]
    for name in ("torch", "jax"):
        if name in impls:
            mod = __import__(name)
            out.append(f"{'PyTorch' if name == 'torch' else 'JAX'} {mod.__version__}")
    return ", ".join(out)


def _table(results: dict[str, dict[str, Any]], impls: list[str], modes: list[str], field: str,
           fmt: str) -> list[str]:
    lines = ["| workload | mode | " + " | ".join(impls) + " |", "|---|---|" + "---:|" * len(impls)]
    for workload, res in results.items():
        for mode in modes:
            cells = []
            for impl in impls:
                r = res.get(f"{impl}|{mode}")
                cells.append(fmt.format(r[field]) if r else "–")
            if any(c != "–" for c in cells):
                lines.append(f"| {workload} | {mode} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="kind:batch, comma-separated")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--tangents", default="dense", help="tangent kind of the JVP and forward-gradient modes")
    ap.add_argument("--threads", choices=("pinned", "default", "both"), default="both")
    ap.add_argument("--core", type=int, default=0, help="the core a pinned run uses")
    ap.add_argument("--rounds", type=int, default=30, help="at most this many interleaved rounds")
    ap.add_argument("--min-rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per workload after the minimum rounds")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--markdown", help="write the tables to this file")
    ap.add_argument("--sampler", type=int, metavar="N",
                    help="only time drawing N float32 tangent numbers per generator (pinned), then exit")
    ap.add_argument("--worker", choices=("time", "memory", "sampler"), help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    args = ap.parse_args()
    impls = [s for s in args.impls.split(",") if s]
    modes = [s for s in args.modes.split(",") if s]
    if args.tangents == "rank1" and not args.worker and args.modes == ",".join(MODES):
        modes += list(RANK1_MODES)
    bad = [i for i in impls if i not in IMPLS] + [m for m in modes if m not in MODES + RANK1_MODES]
    if bad and not args.sampler:
        ap.error(f"unknown implementation or mode: {', '.join(bad)}")
    args.impls, args.modes = impls, modes
    if args.worker:
        worker = {"time": _worker_time, "memory": _worker_memory, "sampler": _worker_sampler}[args.worker]
        print(json.dumps(worker(args)))
        return
    if args.sampler:
        res = _run_worker("sampler", "", [], [], "pinned", args)
        text = "\n".join([f"CPU ms to draw {args.sampler:,} float32 numbers (median, one pinned core):", "",
                          "| generator | ms |", "|---|---:|"] + [f"| {k} | {v:.2f} |" for k, v in res.items()])
        print(text)
        if args.markdown:
            with open(args.markdown, "w") as fh:
                fh.write(text + "\n")
        return

    impls = _available(impls)
    workloads = [w for w in args.workloads.split(",") if w]
    threads = ["pinned", "default"] if args.threads == "both" else [args.threads]
    head = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
            f"Python {platform.python_version()}; {_versions(impls)}; tangents: {args.tangents}.")
    lines = [head, ""]
    for th in [] if args.no_timing else threads:
        results = {}
        for w in workloads:
            print(f"[{th}] timing {w} ...", file=sys.stderr, flush=True)
            results[w] = _run_worker("time", w, impls, modes, th, args)
        lines += [f"CPU time per step, ms (median; {th} threads):", ""]
        lines += _table(results, impls, modes, "cpu_ms", "{:.3g}") + [""]
        lines += [f"Wall time per step, ms (median; {th} threads):", ""]
        lines += _table(results, impls, modes, "wall_ms", "{:.3g}") + [""]
    if not args.no_memory and os.path.exists("/proc/self/clear_refs"):
        mem: dict[str, dict[str, Any]] = {}
        for w in workloads:
            mem[w] = {}
            for impl in impls:
                for mode in modes:
                    print(f"[memory] {w} {impl} {mode} ...", file=sys.stderr, flush=True)
                    mem[w].update(_run_worker("memory", w, [impl], [mode], "pinned", args))
        lines += ["Peak memory of a step above the warm state, MiB (RSS high-water mark, pinned):", ""]
        lines += _table(mem, impls, modes, "peak_mib", "{:.1f}") + [""]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
