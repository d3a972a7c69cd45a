"""Data-parallel forward-gradient training: N workers exchanging seeds and scalars.

Contract: a step of N workers on a global batch of B examples (B divisible by N) gives
every worker the same loss and the same update, bit for bit:

- worker r takes shard r of the batch (examples ``r·B/N .. (r+1)·B/N - 1``), draws its K
  directions from ``(seed, step, leaf, k, worker r)`` (``random.direction_key``; worker 0's
  keys are a single process's) and computes its loss and K directional derivatives in one
  JVP execution (``forward_grad(...).derivatives``);
- exchange ``"seeds"`` (the default): the workers allgather ``(loss, d_1..d_K, stop)`` —
  8·(K + 2) bytes from each — and every worker rebuilds the N·K directions from their keys
  (``regenerate``) and forms ``g = Σ_r Σ_k d_rk / (N·K) · v_rk`` in one fixed order
  (worker-major, then direction) with elementwise NumPy ufuncs only; rank-r weight
  tangents stay factored in a ``LowRankGrad(..., ordered=True)`` that SGD/momentum apply as
  rank-1 updates in place and Adam densifies, both term by term in the same order. No BLAS
  reduction, whose order can depend on the library, the CPU kernel and the thread count,
  touches the update, so the workers' parameters stay identical without ever being sent;
- exchange ``"dense"``: each worker forms its own share of ``g`` the same way and the
  shares are summed by an all-reduce (4 bytes per parameter, for dense tangents on one
  host, where regenerating N·K parameter-sized directions costs more than the bandwidth);
  an all-reduce need not give every rank the same rounding, so rank 0's parameters and
  optimizer state are broadcast every ``sync_every`` steps (and the hash check says when
  they were not identical).

The loss of the step is the mean of the workers' losses (summed in rank order); the
loss, the stop flags (a signal seen by any worker stops all of them after the same step)
and therefore every branch the trainer takes are the same on all workers.

Engines: ``"mpi"`` (mpi4py, SPMD: every process runs the same loop; ``tracegrad train
--workers N`` starts them under ``mpiexec``) and ``"local"``: one process plays the N
workers with the same arithmetic — the reference the tests compare the MPI run against.

A different N is a different computation (the shards and the worker keys change with N),
so a checkpoint resumes only with the N that wrote it. N = 1 is the single-process trainer
itself (no engine).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TrainError
from ..forward_grad import Factors, forward_grad
from ..structured import LowRankGrad
from ..tree import tree_flatten, tree_unflatten

__all__ = [
    "ENGINES",
    "EXCHANGES",
    "DataParallel",
    "DistributedError",
    "LocalWorld",
    "MPIWorld",
    "join_world",
    "launch",
    "launcher_size",
    "param_hash",
    "secondary_worker",
    "under_mpi_launcher",
]

ENGINES = ("local", "mpi")
EXCHANGES = ("seeds", "dense")
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
# Set by an MPI launcher in each process it starts: MPICH/Hydra, Intel MPI and Slurm's PMI
# (PMI_RANK), Open MPI (OMPI_COMM_WORLD_RANK), PMIx (PMIX_RANK).
_LAUNCHER_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
_PIDS_VAR = "TRACEGRAD_WORKER_PIDS"  # the launcher's file where each worker notes its rank and pid


class DistributedError(TrainError):
    """A data-parallel run cannot start or continue (wrong process count, workers whose
    parameters differ, a worker that failed)."""


def param_hash(params: Any) -> str:
    """A 16-hex-digit BLAKE2b digest of the parameters' bytes, leaf by leaf: equal on two
    workers exactly when their parameters are bit-identical."""
    h = hashlib.blake2b(digest_size=8)
    for leaf in tree_flatten(params)[0]:
        arr = np.ascontiguousarray(leaf)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


# -- worlds: who the workers are and how they talk ------------------------------------------
class LocalWorld:
    """N workers played by this one process: every collective is a no-op over data that is
    already here."""

    def __init__(self, size: int):
        self.rank, self.size = 0, int(size)


class MPIWorld:
    """``MPI.COMM_WORLD`` through mpi4py: allgather of a row of float64, in-place all-reduce
    (sum) and broadcast from rank 0."""

    def __init__(self, comm: Any):
        self.comm = comm
        self.rank, self.size = int(comm.Get_rank()), int(comm.Get_size())

    def allgather(self, row: np.ndarray) -> np.ndarray:
        table = np.empty((self.size, row.size), row.dtype)
        self.comm.Allgather(row, table)
        return table

    def allreduce_sum(self, buf: np.ndarray) -> None:
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def bcast(self, buf: np.ndarray) -> None:
        self.comm.Bcast(buf, root=0)

    def abort(self, status: int) -> None:
        self.comm.Abort(int(status))


def under_mpi_launcher() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, srun), from the
    variables launchers set; no MPI library is loaded to find out."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def launcher_size() -> int:
    """How many processes the MPI launcher that started this one started (1 when none)."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


_WORLD: list[MPIWorld] = []  # joined once per process


def join_world(workers: int) -> MPIWorld:
    """This process's place among ``workers`` MPI processes (imports mpi4py, which
    initializes MPI). Raises ``DistributedError`` saying how to launch when mpi4py is
    missing or the job has a different number of processes."""
    if _WORLD and _WORLD[0].size == workers:
        return _WORLD[0]
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(
            f"engine 'mpi' with {workers} workers needs mpi4py: pip install 'tracegrad[mpi]' (mpi4py and "
            "the mpich wheel), or use --engine local (one process playing the workers)") from None
    world = MPIWorld(MPI.COMM_WORLD)
    if world.size != workers:
        how = ("this process was started alone" if world.size == 1
               else f"this job has {world.size} MPI processes")
        raise DistributedError(
            f"engine 'mpi' with {workers} workers needs {workers} MPI processes, but {how}; run "
            f"`tracegrad train --workers {workers} ...` (it starts mpiexec), or `mpiexec -n {workers} "
            f"python -m tracegrad train --workers {workers} ...`, or use --engine local")
    pids = os.environ.get(_PIDS_VAR)
    if pids:  # tell the launcher which pid is which rank, so it can name a worker that dies
        with open(pids, "a") as f:
            f.write(f"{world.rank} {os.getpid()} {MPI.Get_processor_name()}\n")
    _WORLD[:] = [world]
    return world


def secondary_worker() -> bool:
    """Whether this process is an MPI worker other than rank 0 (which alone reports)."""
    return bool(_WORLD) and _WORLD[0].rank != 0


@contextlib.contextmanager
def abort_on_failure(world: MPIWorld, *, passes: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Any exception on this worker (other than ``passes``, which every worker raises
    together) prints one line naming the worker and aborts the whole MPI job with a
    non-zero status, instead of leaving the others waiting in a collective forever."""
    try:
        yield
    except passes:
        raise
    except BaseException as exc:  # every failure must end the job, not only Exceptions
        from ..errors import TracegradError

        usage = isinstance(exc, (ValueError, TracegradError)) and not isinstance(exc, TrainError)
        status = 130 if isinstance(exc, KeyboardInterrupt) else 2 if usage else 1
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        if not isinstance(exc, (TrainError, ValueError, TracegradError, KeyboardInterrupt)):
            import traceback

            traceback.print_exc()
        print(f"tracegrad: error: worker {world.rank} of {world.size} failed: {text}; stopping all "
              f"workers (exit status {status})", file=sys.stderr, flush=True)
        time.sleep(0.5)  # mpiexec forwards output asynchronously; an abort at once can drop the line
        world.abort(status)
        raise  # not reached: MPI_Abort ends the process


# -- the step --------------------------------------------------------------------------------
class DataParallel:
    """The step of ``workers`` data-parallel workers (this process is ``world.rank``; the
    local engine plays them all): ``step(params, opt_state, x, y, step)`` returns the loss
    of the global batch and the estimate every worker applies, as the trainer's estimator
    does. ``stop_signal`` is the signal any worker reported in the last step (or None)."""

    def __init__(self, loss_fn: Callable[..., Any], *, workers: int, exchange: str = "seeds",
                 directions: int = 1, distribution: str = "rademacher", seed: int = 0,
                 tangents: str = "dense", world: Any = None, sync_every: int = 100):
        if exchange not in EXCHANGES:
            raise ValueError(f"unknown exchange {exchange!r}; choose one of {', '.join(EXCHANGES)}")
        self.workers, self.exchange, self.k = int(workers), exchange, int(directions)
        self.world = world if world is not None else LocalWorld(self.workers)
        if self.world.size != self.workers:
            raise DistributedError(f"{self.workers} workers on a world of {self.world.size}")
        self.local = isinstance(self.world, LocalWorld)
        self.rank = self.world.rank
        self.sync_every = int(sync_every)
        self.estimate = forward_grad(loss_fn, argnums=0, directions=self.k, distribution=distribution,
                                     seed=seed, tangents=tangents)
        self.stop_signal: int | None = None
        self.bytes_sent = 0  # by this worker, all steps (payload of the collectives it entered)
        self.times = {"jvp": 0.0, "exchange": 0.0, "combine": 0.0}
        self._bufs: dict[tuple[int, str], np.ndarray] = {}

    # what one worker computes on its shard
    def _derive(self, params: Any, x: Any, y: Any, step: int, worker: int) -> tuple[float, np.ndarray, list[Any]]:
        b = len(x) // self.workers
        value, jv, parts = self.estimate.derivatives(params, x[worker * b:(worker + 1) * b],
                                                     y[worker * b:(worker + 1) * b], step=step, worker=worker)
        return float(value), np.asarray(jv, np.float64).reshape(self.k), parts

    def step(self, params: Any, opt_state: Any, x: Any, y: Any, step: int,
             stop: int | None = None) -> tuple[float, Any]:
        """``(loss, estimate)`` of the global batch ``(x, y)`` at ``step``; ``stop`` is a
        signal this worker received (sent along, so all workers stop after the same step)."""
        if len(x) % self.workers:
            raise DistributedError(f"a batch of {len(x)} examples does not split into {self.workers} equal "
                                   "shards; use a batch size divisible by the number of workers")
        if self.exchange == "dense" and not self.local and step and step % self.sync_every == 0:
            self._broadcast(params, opt_state)
        leaves, treedef = tree_flatten(params)
        t0 = time.perf_counter()
        if self.local:
            mine = [self._derive(params, x, y, step, w) for w in range(self.workers)]
            table = np.array([[loss, *jv, 0.0] for loss, jv, _ in mine])
            table[0, -1] = stop or 0
            t1 = t2 = time.perf_counter()
        else:
            loss, jv, parts = self._derive(params, x, y, step, self.rank)
            t1 = time.perf_counter()
            table = self.world.allgather(np.array([loss, *jv, float(stop or 0)]))
            t2 = time.perf_counter()
            self.bytes_sent += table.itemsize * table.shape[1]
        flags = table[:, -1]
        self.stop_signal = int(flags.max()) if flags.max() > 0 else None
        losses = table[:, 0].tolist()
        total = 0.0
        for value in losses:  # rank order: the same float on every worker
            total += value
        coeffs = table[:, 1:-1] / (self.workers * self.k)

        def parts_of(w: int) -> list[Any]:
            if self.local:
                return mine[w][2]
            return parts if w == self.rank else self.estimate.regenerate(
                [(leaf.shape, leaf.dtype) for leaf in leaves], step, w)

        if self.exchange == "seeds":
            grads = self._combine(leaves, coeffs, parts_of, range(self.workers))
            t3 = time.perf_counter()
        else:
            grads = self._dense_exchange(leaves, coeffs, parts_of)
            t3 = time.perf_counter()
        self.times["jvp"] += t1 - t0
        self.times["exchange"] += t2 - t1
        self.times["combine"] += t3 - t2
        return total / self.workers, tree_unflatten(treedef, grads)

    def _buffer(self, p: int, leaf: Any, slot: str) -> np.ndarray:
        """A kept array of ``leaf``'s shape and dtype (a steady-state step allocates none)."""
        key = (p, slot)
        buf = self._bufs.get(key)
        if buf is None or buf.shape != leaf.shape or buf.dtype != leaf.dtype:
            buf = self._bufs[key] = np.empty(leaf.shape, leaf.dtype)
        return buf

    def _combine(self, leaves: Sequence[Any], coeffs: np.ndarray, parts_of: Callable[[int], list[Any]],
                 workers: Sequence[int]) -> list[Any]:
        """``Σ_{w in workers} Σ_k coeffs[w, k] · v_wk`` per leaf, worker-major then direction,
        with elementwise ufuncs (dense leaves, into kept buffers) or as an ordered
        ``LowRankGrad`` whose columns are the terms in that order (factored leaves)."""
        out: list[Any] = [None] * len(leaves)
        factors: dict[int, tuple[list[Any], list[Any], tuple[int, ...]]] = {}
        first = True
        for w in workers:
            parts = parts_of(w)
            for p, (leaf, part) in enumerate(zip(leaves, parts)):
                dtype = np.dtype(leaf.dtype)
                if isinstance(part, Factors):
                    us, vs, _ = factors.setdefault(p, ([], [], part.shape))
                    for kk in range(self.k):
                        us.append(part.a[kk] * dtype.type(coeffs[w, kk]))
                        vs.append(part.b[kk])
                    continue
                g = self._buffer(p, leaf, "g")
                scratch = self._buffer(p, leaf, "scratch")
                for kk in range(self.k):
                    c = dtype.type(coeffs[w, kk])
                    if first and kk == 0:
                        np.multiply(part[kk], c, out=g)
                    else:
                        np.multiply(part[kk], c, out=scratch)
                        g += scratch
                out[p] = g
            first = False
        for p, (us, vs, shape) in factors.items():
            out[p] = LowRankGrad(np.concatenate(us, axis=1), np.concatenate(vs, axis=1), shape, ordered=True)
        return out

    def _dense_exchange(self, leaves: Sequence[Any], coeffs: np.ndarray,
                        parts_of: Callable[[int], list[Any]]) -> list[Any]:
        """This worker's share of the estimate, densified, summed over the workers by an
        all-reduce (the local engine sums the shares in rank order)."""
        if self.local:
            total = None
            for w in range(self.workers):
                share = [np.array(g) for g in self._combine(leaves, coeffs, parts_of, [w])]
                if total is None:
                    total = share
                else:
                    for t, s in zip(total, share):
                        t += s
            return total  # type: ignore[return-value]
        share = self._combine(leaves, coeffs, parts_of, [self.rank])
        out = []
        for p, (leaf, g) in enumerate(zip(leaves, share)):
            if isinstance(g, LowRankGrad):
                g = g.dense(out=self._buffer(p, leaf, "g"))
            self.world.allreduce_sum(g)
            self.bytes_sent += 2 * (self.workers - 1) * g.nbytes // self.workers  # ring all-reduce
            out.append(g)
        return out

    def _broadcast(self, params: Any, opt_state: Any) -> None:
        """Rank 0's parameters and optimizer state to every worker, in place."""
        for leaf in tree_flatten(params)[0] + tree_flatten(opt_state)[0]:
            if isinstance(leaf, np.ndarray) and leaf.size:
                self.world.bcast(leaf)
                self.bytes_sent += leaf.nbytes if self.rank == 0 else 0

    def verify(self, params: Any, step: int, opt_state: Any = None) -> str:
        """This worker's parameter hash, checked against every other worker's (one
        allgather of 8 bytes): raises ``DistributedError`` when they differ. With the dense
        exchange rank 0's parameters and optimizer state are broadcast first (its all-reduce
        may round differently per rank), so a checkpoint holds what every worker continues
        from."""
        if self.local:
            return param_hash(params)
        if self.exchange == "dense":
            self._broadcast(params, opt_state)
        digest = param_hash(params)
        table = self.world.allgather(np.array([int(digest, 16)], np.uint64))
        hashes = [f"{int(h):016x}" for h in table[:, 0]]
        if len(set(hashes)) != 1:
            raise DistributedError(
                f"the workers' parameters differ at step {step} (hashes by rank: {', '.join(hashes)}); "
                + ("the dense exchange's all-reduce rounded differently on some rank; lower sync_every"
                   if self.exchange == "dense" else
                   "the workers' NumPy builds or CPUs compute the update differently (use the same "
                   "NumPy and --distribution rademacher on every node)"))
        return digest


def make_engine(config: Any, loss_fn: Callable[..., Any]) -> DataParallel:
    """The engine a ``TrainConfig`` with ``workers > 1`` asks for (joining the MPI world
    for engine 'mpi')."""
    world = join_world(config.workers) if config.engine == "mpi" else None
    return DataParallel(loss_fn, workers=config.workers, exchange=config.exchange,
                        directions=config.directions, distribution=config.distribution, seed=config.seed,
                        tangents=config.tangents, world=world)


# -- the launcher ----------------------------------------------------------------------------
def find_mpiexec() -> str | None:
    """``mpiexec`` beside this Python (where the mpich wheel puts it), else on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")


def launch(argv: Sequence[str], workers: int, *, echo: Callable[[str], None] | None = None) -> int:
    """Run ``python -m tracegrad <argv>`` as ``workers`` MPI processes on this machine
    (``mpiexec -n workers``), one BLAS thread each, and return the job's exit status. When a
    worker dies, mpiexec stops the others; this names the rank of the one that died."""
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise DistributedError(f"--workers {workers} needs mpiexec: pip install 'tracegrad[mpi]' (mpi4py and "
                               "the mpich wheel, which brings mpiexec), or use --engine local")
    import importlib.util

    if importlib.util.find_spec("mpi4py") is None:
        raise DistributedError(f"--workers {workers} needs mpi4py: pip install 'tracegrad[mpi]', or use "
                               "--engine local")
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    env = dict(os.environ)
    for var in BLAS_THREAD_VARS:  # N workers on one host: N BLAS threads, not N x cores
        env[var] = "1"
    fd, pids_path = tempfile.mkstemp(prefix="tracegrad-workers-", suffix=".txt")
    os.close(fd)
    env[_PIDS_VAR] = pids_path
    cmd = [mpiexec, "-n", str(int(workers)), sys.executable, "-m", "tracegrad", *argv]
    # Its own session: a Ctrl-C in the terminal reaches this launcher only, which passes one
    # signal on to mpiexec (and mpiexec to every worker), instead of each process seeing it.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True, bufsize=1)
    banner: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if re.search(r"BAD TERMINATION|RUNNING AT|EXIT CODE|EXIT STRING|CLEANING UP|YOU CAN IGNORE|"
                         r"^=+$|This typically refers|Please see the FAQ", line.strip()):
                banner.append(line.rstrip())
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    previous = {}

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)
    try:
        status = proc.wait()
        reader.join(timeout=5)
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    try:
        ranks = {}
        for line in Path(pids_path).read_text().splitlines():
            rank, pid, host = line.split(maxsplit=2)
            ranks[int(pid)] = (int(rank), host)
    finally:
        Path(pids_path).unlink(missing_ok=True)
    if status == 0:
        return 0
    text = "\n".join(banner)
    dead = re.search(r"PID (\d+) RUNNING AT (\S+)\s*\n=\s*EXIT CODE: (\d+)", text)
    if dead and int(dead.group(1)) in ranks:
        rank, host = ranks[int(dead.group(1))]
        code = int(dead.group(3))
        how = (f"killed by signal {code} ({signal.Signals(code).name})" if 0 < code < 32 and
               re.search(r"signal \d+", text) else f"exit status {code}")
        echo(f"tracegrad: error: worker {rank} of {workers} (pid {dead.group(1)} on {dead.group(2)}) "
             f"stopped ({how}); mpiexec ended the other workers. Continue from the last checkpoint "
             "with the same command and --resume")
    elif banner:
        echo("\n".join(banner))
    return status if 0 < status < 256 else 1
