"""The forward-gradient trainer: accuracy, determinism, resume, divergence, files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tracegrad.data import load_dataset
from tracegrad.errors import CheckpointError, TrainingDivergedError
from tracegrad.train import (
    COLUMNS,
    TrainConfig,
    Trainer,
    fit,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from tracegrad.tree import tree_leaves


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _cfg(**kw):
    base = {"model": "logreg", "data": "digits", "steps": 300, "optimizer": "sgd", "lr": 0.01,
            "quiet": True, "plot": False,
                "eval_every": 100, "checkpoint_every": 100}
    base.update(kw)
    return TrainConfig(**base)


def _same_params(a, b):
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_logreg_on_digits_learns(digits):
    r = fit(_cfg(steps=1500, out=None), dataset=digits)
    assert r.step == 1500
    assert r.test_accuracy > 0.85  # chance is 10%
    first = r.history.rows[0]["train_loss"]
    assert first > 1.5 and r.test_loss < 0.6  # from ~log(10) = 2.3 down


def test_mlp_with_k_directions_learns(digits):
    r = fit(_cfg(model="mlp", model_kwargs={"hidden": [32]}, steps=600, optimizer="adam", lr=3e-3,
                 directions=4, distribution="normal", out=None), dataset=digits)
    assert r.test_accuracy > 0.6


def test_same_seed_same_numbers_other_seed_differs(digits):
    # (momentum at lr 0.01, an effective 0.1, drives the loss to 3.5x its initial level:
    # the divergence monitor rightly stops that)
    a = fit(_cfg(out=None, optimizer="momentum", lr=0.003), dataset=digits)
    b = fit(_cfg(out=None, optimizer="momentum", lr=0.003), dataset=digits)
    c = fit(_cfg(out=None, optimizer="momentum", lr=0.003, seed=1), dataset=digits)
    assert _same_params(a.params, b.params)
    assert [r["train_loss"] for r in a.history.rows] == [r["train_loss"] for r in b.history.rows]
    assert not _same_params(a.params, c.params)


@pytest.mark.parametrize("opt,dist,k", [("sgd", "rademacher", 1), ("adam", "normal", 3), ("momentum", "normal", 1)])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, digits, opt, dist, k):
    kw = {"optimizer": opt, "distribution": dist, "directions": k, "lr": 0.003, "schedule": "cosine"}
    full = fit(_cfg(out=str(tmp_path / "full"), **kw), dataset=digits)

    part = tmp_path / "part"
    first = Trainer(_cfg(out=str(part), **kw), dataset=digits)
    first.run(stop_after=150)  # "interrupted" after step 150, with its checkpoint written
    assert latest_checkpoint(part).name == "ckpt-00000150.npz"
    del first
    resumed = Trainer(_cfg(out=str(part), resume=True, **kw), dataset=digits)
    assert resumed.step == 150
    r = resumed.run()
    assert r.step == 300
    assert _same_params(r.params, full.params)  # bit for bit
    assert r.test_loss == full.test_loss
    steps = [row["step"] for row in r.history.rows]
    assert steps == sorted(set(steps))  # no duplicated rows after resuming


def test_resume_refuses_a_different_run(tmp_path, digits):
    out = str(tmp_path / "run")
    Trainer(_cfg(out=out), dataset=digits).run(stop_after=100)
    with pytest.raises(CheckpointError, match="optimizer"):
        Trainer(_cfg(out=out, optimizer="adam", resume=True), dataset=digits)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(_cfg(out=str(tmp_path / "empty"), resume=True), dataset=digits)


def test_divergence_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, digits):
    out = tmp_path / "run"
    # Softmax regression cannot blow up (its gradient is bounded); a ReLU MLP with lr=10 does.
    cfg = _cfg(out=str(out), model="mlp", model_kwargs={"hidden": [32, 32]}, lr=10.0, steps=300,
               checkpoint_every=1, eval_every=1000)
    with pytest.raises(TrainingDivergedError) as err, np.errstate(all="ignore"):
        fit(cfg, dataset=digits)
    e = err.value
    msg = str(e)
    assert f"step {e.step}" in msg and "smaller learning rate" in msg and "--lr 1" in msg
    assert e.step > 1
    assert e.checkpoint is not None and e.checkpoint.exists()
    ck = load_checkpoint(e.checkpoint)
    assert ck.step < e.step
    assert all(np.isfinite(leaf).all() for leaf in ck.param_leaves)
    # The metrics written so far are kept too.
    assert (out / "metrics.csv").exists()


def test_metrics_files_and_plot(tmp_path, digits):
    out = tmp_path / "run"
    r = fit(_cfg(out=str(out), plot=True, log_every=50), dataset=digits)
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    assert [int(row["step"]) for row in rows] == list(range(50, 301, 50))
    evals = [row for row in rows if row["test_accuracy"]]
    assert [int(row["step"]) for row in evals] == [100, 200, 300]
    assert float(evals[-1]["test_accuracy"]) == pytest.approx(r.test_accuracy)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(rows)
    last = json.loads(lines[-1])
    assert last["step"] == 300 and last["epoch"] == pytest.approx(300 / r.history.rows[-1]["step"] * r.history.rows[-1]["epoch"])
    assert all(last[k] is not None for k in ("wall_time", "train_loss", "examples_per_sec"))
    png = (out / "plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # Checkpoints: only the newest `keep_checkpoints` remain, no temp files are left behind.
    assert [s for s, _ in list_checkpoints(out)] == [100, 200, 300]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_keep_checkpoints_prunes_old_ones(tmp_path, digits):
    out = tmp_path / "run"
    fit(_cfg(out=str(out), checkpoint_every=50, keep_checkpoints=2), dataset=digits)
    assert [s for s, _ in list_checkpoints(out)] == [250, 300]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, digits):
    out = tmp_path / "run"
    Trainer(_cfg(out=str(out)), dataset=digits).run(stop_after=100)
    path = latest_checkpoint(out)
    path.write_bytes(path.read_bytes()[:200])  # truncated, as by a crash without atomic writes
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        Trainer(_cfg(out=str(out), resume=True), dataset=digits)


def test_epochs_set_the_number_of_steps(digits):
    t = Trainer(_cfg(steps=None, epochs=2, out=None), dataset=digits)
    assert t.total_steps == 2 * (len(digits.y_train) // 64)  # full batches only (drop_last)


@pytest.mark.parametrize("bad,match", [
    ({"model": "resnet"}, "unknown model"),
    ({"lr": -1.0}, "lr must be"),
    ({"steps": 10, "epochs": 1.0}, "not both"),
    ({"directions": 0}, "directions"),
    ({"resume": True, "out": None}, "resume needs"),
])
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**bad).validate()


def test_cnn_trains_on_digits_images(digits):
    ds = load_dataset("digits", flatten=False)
    r = fit(_cfg(model="cnn", model_kwargs={"channels": [4, 4, 8, 8], "hidden": 32}, steps=400,
                 optimizer="adam", lr=3e-3, out=None), dataset=ds)
    assert r.test_accuracy > 0.3  # chance is 10%; forward gradients on a CNN are slow learners


def test_real_mnist_logreg_short_run(real_mnist_dir):
    """A few seconds on the real MNIST files: well above chance."""
    r = fit(_cfg(data="mnist", data_dir=real_mnist_dir, steps=4000, lr=1e-4, eval_every=4000, out=None))
    assert r.test_accuracy > 0.75


def test_first_reaching_a_target():
    from tracegrad.train import MetricsHistory

    h = MetricsHistory()
    for step, loss, acc in [(10, 2.0, None), (20, 1.0, 0.5), (30, 0.4, 0.9), (40, 0.6, 0.8)]:
        h.append(step=step, epoch=step / 10, wall_time=step / 100, train_loss=loss, test_loss=loss if acc else None,
                 test_accuracy=acc, examples_per_sec=1.0)
    assert h.first_reaching("test_loss", 0.5)["step"] == 30
    assert h.first_reaching("test_accuracy", 0.85, below=False)["wall_time"] == 0.3
    assert h.first_reaching("train_loss", 0.1) is None
