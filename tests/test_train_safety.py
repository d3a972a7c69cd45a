"""Never losing work: divergence caught early with a checkpoint from before it, interrupts
that save, damaged or half-written checkpoints, named checkpoint leaves; and fault drills
that signal a real ``python -m tracegrad train`` process."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tracegrad.data import load_dataset
from tracegrad.errors import OutputExistsError, TrainingDivergedError
from tracegrad.train import (
    MetricsHistory,
    TrainConfig,
    Trainer,
    fit,
    list_checkpoints,
    load_checkpoint,
)
from tracegrad.train.divergence import DivergenceMonitor
from tracegrad.train.trainer import TrainingInterrupted
from tracegrad.tree import tree_leaves

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _cfg(out, **kw):
    base = {"model": "logreg", "data": "digits", "steps": 40, "optimizer": "sgd", "lr": 0.01, "quiet": True,
            "plot": False, "eval_every": 1000, "checkpoint_every": 10, "out": None if out is None else str(out)}
    base.update(kw)
    return TrainConfig(**base)


# -- the divergence monitor -------------------------------------------------------------
def test_monitor_lets_a_noisy_healthy_run_through():
    rng = np.random.default_rng(0)
    m = DivergenceMonitor()
    for step in range(3000):  # decaying loss with heavy batch noise and occasional spikes
        loss = 2.3 * math.exp(-step / 400) + 0.05
        loss *= float(rng.lognormal(0.0, 0.4)) * (4.0 if rng.random() < 0.01 else 1.0)
        assert m.update(loss) is None, step


def test_monitor_catches_a_slow_blow_up_early_and_leaves_the_band_first():
    m = DivergenceMonitor()
    losses = [2.3] * 50 + [2.3 * 1.02**k for k in range(1, 2000)]  # 2% per step: 1e8 by step ~900
    first_out_of_band = reason = None
    for step, loss in enumerate(losses, 1):
        reason = m.update(loss)
        if first_out_of_band is None and not m.in_band():
            first_out_of_band = step
        if reason is not None:
            break
    assert reason is not None and "3 x its initial level" in reason
    assert m.level() < 3 * 2.3 + 1.5  # stopped at ~8, not at 1e8
    assert first_out_of_band is not None and first_out_of_band < step


def test_monitor_catches_a_jump_and_nan_and_round_trips():
    m = DivergenceMonitor()
    for loss in [2.3] * 10 + [0.1] * 300:
        assert m.update(loss) is None
    for _ in range(5):
        assert m.update(3.0) is None  # the median of 10 ignores a few bad batches
    reason = m.update(3.0)  # the 6th: the median is 3, below 3 x 2.3 + 1 but 30 x recent
    assert reason is not None and "jumped to 3 from 0.1" in reason
    assert "nan" in DivergenceMonitor().update(float("nan"))
    other = DivergenceMonitor()
    other.load_state_dict(m.state_dict())
    assert other.state_dict() == m.state_dict() and other.initial == pytest.approx(2.3)


class _Wrapped:
    """An estimator (train/estimators.py protocol) whose call is ``fn``; state from ``real``."""

    def __init__(self, real, fn):
        self.name, self.objective, self._fn, self._real = real.name, real.objective, fn, real

    def __call__(self, params, x, y, step):
        return self._fn(params, x, y, step)

    def state(self):
        return self._real.state()

    def set_state(self, state):
        self._real.set_state(state)


def test_slow_blow_up_stops_early_and_keeps_a_checkpoint_from_before_the_climb(tmp_path, digits):
    trainer = Trainer(_cfg(tmp_path / "run", steps=2000, checkpoint_every=25), dataset=digits)
    real = trainer.estimator

    def climbing(params, x, y, step):  # the real gradient, but a loss that starts to climb at step 200
        _, grads = real(params, x, y, step)
        return (2.0 if trainer.step < 200 else 2.0 * 1.03 ** (trainer.step - 200)), grads

    trainer.estimator = _Wrapped(real, climbing)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.run()
    err = info.value
    assert err.loss < 10  # long before any overflow
    kept = load_checkpoint(err.checkpoint)
    assert kept.step <= 200  # from before the climb, not merely the last finite one
    assert str(err.checkpoint) in str(err) and "--resume --lr 0.001" in str(err)
    assert all(step <= 200 for step, _ in list_checkpoints(tmp_path / "run"))
    assert (tmp_path / "run" / "metrics.csv").exists()


def test_diverged_plot_has_no_empty_panels():
    h = MetricsHistory()
    for step in (10, 20):
        h.append(step=step, epoch=step / 20, wall_time=step / 100, train_loss=2.0 + step)
    h.append(step=25, epoch=1.25, wall_time=0.25, train_loss=float("nan"))
    fig = h.figure("diverged")
    loss_ax, acc_ax = fig.axes[0], fig.axes[1]
    assert loss_ax.axison and len(loss_ax.lines) == 2  # the finite losses, and a marker at the NaN
    assert not acc_ax.axison  # no meaningless axes
    assert "no test evaluation before the run stopped (step 25)" in acc_ax.texts[0].get_text()
    import matplotlib.pyplot as plt

    plt.close(fig)


# -- interrupts ---------------------------------------------------------------------------
def test_interrupt_saves_a_checkpoint_and_the_plot_then_resume_continues(tmp_path, digits):
    out = tmp_path / "run"
    trainer = Trainer(_cfg(out, steps=40, plot=True, checkpoint_every=1000), dataset=digits)
    real = trainer.estimator

    def interrupted_at_15(params, x, y, step):
        if trainer.step == 14:
            trainer._stop_signal = signal.SIGTERM  # what the handler does
        return real(params, x, y, step)

    trainer.estimator = _Wrapped(real, interrupted_at_15)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.run()
    assert info.value.step == 15 and info.value.exit_status == 143
    assert info.value.checkpoint == out / "ckpt-00000015.npz" and info.value.checkpoint.exists()
    assert "saved" in info.value.message and "--resume" in info.value.message
    assert (out / "plot.png").exists() and (out / "metrics.csv").exists()
    resumed = fit(_cfg(out, steps=40, checkpoint_every=1000, resume=True), dataset=digits)
    straight = fit(_cfg(None, steps=40), dataset=digits)
    assert all(np.array_equal(a, b) for a, b in zip(tree_leaves(resumed.params), tree_leaves(straight.params)))


def test_interrupt_before_any_step_says_nothing_was_saved(tmp_path, digits):
    trainer = Trainer(_cfg(tmp_path / "run"), dataset=digits)
    trainer._stop_signal = signal.SIGINT
    with pytest.raises(TrainingInterrupted) as info:
        trainer.run()
    assert info.value.checkpoint is None and info.value.exit_status == 130
    assert "nothing was saved (no training step had finished yet)" in info.value.message
    assert "--resume" not in info.value.message
    assert not list_checkpoints(tmp_path / "run")


# -- damaged checkpoints, stale temporaries, names ------------------------------------------
def test_truncated_newest_checkpoint_falls_back_and_says_so(tmp_path, digits):
    out = tmp_path / "run"
    fit(_cfg(out, steps=30), dataset=digits)
    newest = out / "ckpt-00000030.npz"
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn write
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = out / f".ckpt-00000040.npz.{dead}.0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    lines: list[str] = []
    r = fit(_cfg(out, steps=40, resume=True, quiet=False), dataset=digits, log=lines.append)
    text = "\n".join(lines)
    assert "skipped an unreadable checkpoint" in text and "ckpt-00000030.npz" in text
    assert "resumed from" in text and "ckpt-00000020.npz (the newest checkpoint that loads) at step 20" in text
    assert "removed 1 stale temporary file" in text and not stale.exists()
    straight = fit(_cfg(None, steps=40), dataset=digits)
    assert all(np.array_equal(a, b) for a, b in zip(tree_leaves(r.params), tree_leaves(straight.params)))


def test_checkpoint_leaves_are_named_by_pytree_path(tmp_path, digits):
    fit(_cfg(tmp_path / "run", steps=10, optimizer="adam", lr=1e-3), dataset=digits)
    with np.load(tmp_path / "run" / "ckpt-00000010.npz") as z:
        names = set(z.files)
        assert z["params/w"].shape == (64, 10) and z["params/b"].shape == (10,)
    assert {"params/w", "params/b", "opt_state/step", "opt_state/mu/w", "opt_state/nu/b", "meta"} <= names


def test_python_api_refuses_a_used_out_too(tmp_path, digits):
    fit(_cfg(tmp_path / "run", steps=10), dataset=digits)
    with pytest.raises(OutputExistsError, match="overwrite"):
        Trainer(_cfg(tmp_path / "run", steps=10), dataset=digits)
    fit(_cfg(tmp_path / "run", steps=10, overwrite=True), dataset=digits)


# -- fault drills on a real process ------------------------------------------------------------
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_a_training_process_saves_and_resume_continues(tmp_path, signum, status):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tracegrad", "train", "--steps", "1000000", "--eval-every", "20",
           "--checkpoint-every", "100000", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # wait until training is under way
            if line.startswith("step 20/") or time.monotonic() > deadline:
                break
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    assert "saved" in err and "continue with --resume" in err and "Traceback" not in err
    saved = list_checkpoints(out)
    assert len(saved) == 1 and saved[0][0] >= 20
    assert (out / "plot.png").exists() and (out / "config.json").exists()
    step = saved[0][0]
    r = subprocess.run([sys.executable, "-m", "tracegrad", "train", "--resume", "--steps", str(step + 10),
                        "--out", str(out)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"at step {step}" in r.stdout and f"after {step + 10} steps" in r.stdout


def test_kill_during_checkpoint_write_leaves_good_state(tmp_path, digits):
    # What SIGKILL in the middle of a checkpoint write leaves: the earlier checkpoints and a
    # temporary file; the next run removes the temporary and resumes from the newest good one.
    out = tmp_path / "run"
    fit(_cfg(out, steps=20), dataset=digits)
    (out / f".ckpt-00000030.npz.{os.getpid() + 10**6}.89abcdef.tmp").write_bytes(b"\x50\x4b")
    r = fit(_cfg(out, steps=30, resume=True), dataset=digits)
    assert r.step == 30 and not list(out.glob(".*.tmp"))


# -- defaults that train ----------------------------------------------------------------------
def test_resolve_defaults_fills_only_what_is_missing():
    from tracegrad.train.trainer import DEFAULTS, resolve_defaults

    assert set(DEFAULTS) == {(m, d) for m in ("logreg", "mlp", "cnn") for d in ("digits", "mnist")}
    cfg, filled = resolve_defaults(TrainConfig(model="mlp", data="mnist"))
    assert (cfg.optimizer, cfg.lr) == ("adam", 3e-4) and filled == {"optimizer": "adam", "lr": 3e-4}
    cfg, filled = resolve_defaults(TrainConfig(model="mlp", lr=0.5))
    assert (cfg.optimizer, cfg.lr) == ("adam", 0.5) and filled == {"optimizer": "adam"}
    cfg, filled = resolve_defaults(TrainConfig(model="mlp", optimizer="sgd"))
    assert (cfg.optimizer, cfg.lr) == ("sgd", 0.01) and filled == {"lr": 0.01}
    assert resolve_defaults(TrainConfig(optimizer="sgd", lr=0.1)) == (TrainConfig(optimizer="sgd", lr=0.1), {})


@pytest.mark.parametrize("model,data", [("logreg", "mnist"), ("mlp", "digits"), ("mlp", "mnist"),
                                        ("cnn", "digits"), ("cnn", "mnist")])
def test_default_optimizer_and_lr_train_each_model_on_each_data_set(model, data, request):
    # (logreg on digits is test_train.py's and the README's `tracegrad train`.) Narrow
    # layers keep this fast; the defaults are the same for every width.
    kwargs = {"mlp": {"hidden": [64]}, "cnn": {"channels": [4, 4, 8, 8], "hidden": 32}}.get(model, {})
    steps = 60
    if (model, data) == ("cnn", "digits"):  # Adam 3e-4 (stable over 2000 steps) is slower to start
        kwargs, steps = {"channels": [16, 16, 16, 16], "hidden": 128}, 100
    data_dir = request.getfixturevalue("real_mnist_dir") if data == "mnist" else None  # skips without it
    cfg = TrainConfig(model=model, data=data, data_dir=data_dir,
                      steps=steps, eval_every=1000, quiet=True, plot=False, model_kwargs=kwargs)
    trainer = Trainer(cfg)
    initial = trainer.evaluate()[0]
    result = trainer.run()
    assert trainer.defaults_used and math.isfinite(result.test_loss)
    assert result.test_loss < initial - 0.01, (initial, result.test_loss)


def test_throughput_is_smoothed_over_100_steps_and_skips_the_compiling_step(monkeypatch, digits):
    import tracegrad.train.trainer as trainer_module

    class Clock:  # training steps "take" 1 ms or 9 ms in blocks of 10; the first one 5 s
        now, calls = 0.0, 0

        @classmethod
        def perf_counter(cls):
            cls.calls += 1
            if cls.calls % 2 == 0:  # the end of a step: advance
                step = cls.calls // 2
                cls.now += 5.0 if step == 1 else (0.009 if (step // 10) % 2 else 0.001)
            return cls.now

    trainer = Trainer(_cfg(None, steps=200, eval_every=1000), dataset=digits)
    monkeypatch.setattr(trainer_module, "time", Clock)
    Clock.calls = -1  # run() reads the clock once before the first step
    rows = trainer.run().history.rows
    rates = {r["step"]: r["examples_per_sec"] for r in rows}
    assert rates[10] == pytest.approx(64 * 9 / (8 * 0.001 + 0.009))  # step 1 (compiling) left out
    for step in range(110, 201, 10):  # any 100 steps: 50 fast and 50 slow; a 10-step window
        assert rates[step] == pytest.approx(64 * 100 / (50 * 0.001 + 50 * 0.009))  # would swing 9x


def test_divergence_median_is_numpys_bit_for_bit():
    """The monitor's per-step median (plain Python, divergence._median) gives np.median's
    number exactly, odd and even lengths, ties included."""
    import numpy as np

    from tracegrad.train.divergence import _median

    rng = np.random.default_rng(0)
    for n in range(1, 111):
        values = [float(v) for v in rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)]
        if n > 3:
            values[1] = values[2]
        assert _median(values) == float(np.median(values))
