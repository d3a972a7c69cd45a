"""GPU benchmark: one forward-gradient training step (sample a normal tangent on the GPU,
one JVP giving loss and directional derivative, SGD update) in

  tracegrad-CuPy  (fused CUDA kernels + cuBLAS; tracegrad.forward_grad + optim.sgd)
  JAX             (jax.jit of jax.jvp, tangent sampling and update inside the jit)
  PyTorch         (torch.func.jvp; torch.randn on the device; in-place-free update)

for the MLP 784-1024-1024-10 and the MNIST CNN of tracegrad.nn.models (float32), at batch
64 and 1024, K=1 direction. All start from the same parameters and data, and the first
loss of each is printed as a cross-check. Kernel launches per step are counted with the
PyTorch profiler (CUPTI sees every kernel in the process, whichever library launched it)
when PyTorch is installed; tracegrad's static count (generated kernels + cuBLAS calls of
the JVP, from the compiled executable) is printed too. A framework that is not installed,
or has no GPU, is skipped with the reason.

Run:  python benchmarks/bench_gpu.py [--iters 50] [--repeats 5] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with CuPy and PyTorch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's tracegrad, installed or not

import numpy as np

LR = 1e-4
MODELS = ("mlp", "cnn")
BATCHES = (64, 1024)


class Skip(Exception):
    """A framework that cannot run here; the message says why."""


# ---------------------------------------------------------------- shared setup
def make_model(name: str) -> Any:
    from tracegrad.nn.models import cnn, mlp

    return mlp([784, 1024, 1024, 10]) if name == "mlp" else cnn()


def make_data(name: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (batch, 784) if name == "mlp" else (batch, 1, 28, 28)
    return rng.standard_normal(shape).astype(np.float32), rng.integers(0, 10, batch).astype(np.int64)


# ---------------------------------------------------------------- tracegrad (CuPy)
def tracegrad_step(name: str, params: dict, x: np.ndarray, y: np.ndarray) -> tuple[Callable, Callable, dict]:
    import tracegrad as tg
    from tracegrad.backends import to_device
    from tracegrad.backends.cupy_backend import import_cupy
    from tracegrad.errors import BackendUnavailableError
    from tracegrad.nn.models import loss_fn
    from tracegrad.optim import sgd

    try:
        cp = import_cupy()
    except BackendUnavailableError as err:
        raise Skip(err.message) from None
    model = make_model(name)
    est = tg.forward_grad(loss_fn(model), directions=1, distribution="normal", seed=0, backend="cupy")
    opt = sgd(LR)
    state = {"p": to_device(params), "x": cp.asarray(x), "y": cp.asarray(y)}
    state["o"] = opt.init(state["p"])

    def step() -> Any:
        value, grads = est(state["p"], state["x"], state["y"])
        state["p"], state["o"] = opt.update(grads, state["o"], state["p"])
        return value

    def sync() -> None:
        cp.cuda.Device().synchronize()

    t0 = time.perf_counter()
    first = float(step())
    sync()
    info = {"first_loss": first, "first_call_s": time.perf_counter() - t0}
    entry = next(e for k, e in est.compiled._cache.items() if k[-1][0] == "jvp")
    launches = entry.executable.launches
    info["static"] = (f"{launches['kernels']} kernels + {launches['cublas']} cuBLAS "
                      f"(+{launches['other']} other) in the JVP, +1 sampler")
    return step, sync, info


# ---------------------------------------------------------------- JAX
def jax_step(name: str, params: dict, x: np.ndarray, y: np.ndarray) -> tuple[Callable, Callable, dict]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as err:
        raise Skip(f"JAX is not installed ({err})") from None
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        raise Skip(f"JAX sees no GPU (devices: {jax.devices()})")
    dev = gpus[0]

    def dense(h: Any, p: dict, i: int, relu: bool) -> Any:
        h = h @ p[f"w{i}"] + p[f"b{i}"]
        return jnp.maximum(h, 0) if relu else h

    def conv_relu(h: Any, p: dict, i: int) -> Any:
        h = jax.lax.conv_general_dilated(h, p[f"conv{i}_w"], (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return jnp.maximum(h + p[f"conv{i}_b"][None, :, None, None], 0)

    def pool(h: Any) -> Any:
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def logits(p: dict, xb: Any) -> Any:
        if name == "mlp":
            return dense(dense(dense(xb, p, 0, True), p, 1, True), p, 2, False)
        h = pool(conv_relu(conv_relu(xb, p, 0), p, 1))
        h = pool(conv_relu(conv_relu(h, p, 2), p, 3))
        h = h.reshape(h.shape[0], -1)
        h = jnp.maximum(h @ p["fc0_w"] + p["fc0_b"], 0)
        return h @ p["fc1_w"] + p["fc1_b"]

    def loss(p: dict, xb: Any, yb: Any) -> Any:
        logp = jax.nn.log_softmax(logits(p, xb), axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    @jax.jit
    def fg_step(p: dict, key: Any, xb: Any, yb: Any) -> tuple[dict, Any, Any]:
        key, sub = jax.random.split(key)
        leaves, tree = jax.tree_util.tree_flatten(p)
        keys = jax.random.split(sub, len(leaves))
        v = jax.tree_util.tree_unflatten(tree, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])
        value, jv = jax.jvp(lambda q: loss(q, xb, yb), (p,), (v,))
        return jax.tree_util.tree_map(lambda a, t: a - LR * jv * t, p, v), key, value

    state = {"p": jax.device_put(params, dev), "k": jax.random.PRNGKey(0),
             "x": jax.device_put(x, dev), "y": jax.device_put(y.astype(np.int32), dev)}

    def step() -> Any:
        state["p"], state["k"], value = fg_step(state["p"], state["k"], state["x"], state["y"])
        return value

    def sync() -> None:
        jax.block_until_ready(state["p"])

    t0 = time.perf_counter()
    first = float(step())
    sync()
    return step, sync, {"first_loss": first, "first_call_s": time.perf_counter() - t0}


# ---------------------------------------------------------------- PyTorch
def torch_step(name: str, params: dict, x: np.ndarray, y: np.ndarray) -> tuple[Callable, Callable, dict]:
    try:
        import torch
        import torch.nn.functional as F
        from torch.func import jvp
    except ImportError as err:
        raise Skip(f"PyTorch (with torch.func) is not installed ({err})") from None
    if not torch.cuda.is_available():
        raise Skip("PyTorch sees no CUDA device")
    dev = torch.device("cuda")

    def logits(p: dict, xb: Any) -> Any:
        if name == "mlp":
            h = torch.relu(xb @ p["w0"] + p["b0"])
            h = torch.relu(h @ p["w1"] + p["b1"])
            return h @ p["w2"] + p["b2"]

        def conv_relu(h: Any, i: int) -> Any:
            return torch.relu(F.conv2d(h, p[f"conv{i}_w"], padding=1) + p[f"conv{i}_b"][None, :, None, None])

        h = F.max_pool2d(conv_relu(conv_relu(xb, 0), 1), 2)
        h = F.max_pool2d(conv_relu(conv_relu(h, 2), 3), 2)
        h = torch.relu(h.flatten(1) @ p["fc0_w"] + p["fc0_b"])
        return h @ p["fc1_w"] + p["fc1_b"]

    def loss(p: dict, xb: Any, yb: Any) -> Any:
        z = logits(p, xb)
        logp = z - torch.logsumexp(z, dim=1, keepdim=True)
        return -logp.gather(1, yb[:, None]).mean()

    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    state = {"p": {k: torch.as_tensor(v, device=dev) for k, v in params.items()},
             "x": torch.as_tensor(x, device=dev), "y": torch.as_tensor(y, device=dev)}

    def step() -> Any:
        p = state["p"]
        v = {k: torch.randn(a.shape, device=dev, dtype=a.dtype, generator=gen) for k, a in p.items()}
        value, jv = jvp(lambda q: loss(q, state["x"], state["y"]), (p,), (v,))
        with torch.no_grad():
            state["p"] = {k: a - LR * jv * v[k] for k, a in p.items()}
        return value

    def sync() -> None:
        torch.cuda.synchronize()

    t0 = time.perf_counter()
    first = float(step())
    sync()
    return step, sync, {"first_loss": first, "first_call_s": time.perf_counter() - t0}


FRAMEWORKS = {"tracegrad-cupy": tracegrad_step, "jax.jit(jax.jvp)": jax_step, "torch.func.jvp": torch_step}


# ---------------------------------------------------------------- measurement
def time_steps(step: Callable, sync: Callable, iters: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean step time (ms) of ``iters`` back-to-back steps."""
    for _ in range(3):
        step()
    sync()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        sync()
        runs.append((time.perf_counter() - t0) / iters * 1e3)
    return statistics.median(runs)


def count_kernels(step: Callable, sync: Callable) -> str:
    """GPU kernels (and memcpy/memset) in one step, from the PyTorch profiler (CUPTI)."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return "n/a (needs PyTorch)"
    try:
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            sync()
        names = [e.name for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        copies = sum(1 for n in names if n.startswith(("Memcpy", "Memset")))
        return f"{len(names) - copies}" + (f" (+{copies} copies)" if copies else "")
    except Exception as err:  # noqa: BLE001 - a profiler problem must not stop the timing table
        return f"n/a ({type(err).__name__})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset of: "
                    + ", ".join(FRAMEWORKS))
    ap.add_argument("--markdown", default=None, help="append the results table to this file")
    args = ap.parse_args()

    rows, notes = [], []
    for name in args.models.split(","):
        params = make_model(name).init(0)
        n_params = sum(v.size for v in params.values())
        for batch in (int(b) for b in args.batches.split(",")):
            x, y = make_data(name, batch)
            for fw in args.frameworks.split(","):
                label = f"{name} b={batch} {fw}"
                try:
                    step, sync, info = FRAMEWORKS[fw](name, params, x, y)
                    ms = time_steps(step, sync, args.iters, args.repeats)
                    kernels = count_kernels(step, sync)
                except Skip as why:
                    notes.append(f"- {label}: skipped: {why}")
                    continue
                except Exception as err:  # noqa: BLE001 - report and go on with the other peers
                    notes.append(f"- {label}: FAILED: {type(err).__name__}: {err}")
                    traceback.print_exc()
                    continue
                rows.append(f"| {name} ({n_params:,} params) | {batch} | {fw} | {ms:.3f} | {kernels} | "
                            f"{info['first_loss']:.5f} | {info['first_call_s']:.2f} | {info.get('static', '')} |")
                print(rows[-1], flush=True)
    device = "unknown GPU"
    try:
        import cupy

        device = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception:  # noqa: BLE001 - the name is cosmetic; the table is still valid without it
        device = "unknown GPU"
    text = "\n".join([
        (f"Forward-gradient step (normal tangent, K=1, SGD update), float32, on {device}; "
        f"median of {args.repeats} x {args.iters} steps; python {platform.python_version()}"),
        "",
        "| model | batch | framework | step ms | GPU kernels / step | first loss | first call s | tracegrad launches |",
        "|---|---:|---|---:|---:|---:|---:|---|",
        *rows, "", *notes,
    ])
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
