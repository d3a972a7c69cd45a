"""Shared driver of the MNIST examples (mnist_logreg.py, mnist_mlp.py, mnist_cnn.py).

Each example only states its model and the settings that worked; this module parses the
command line, loads real MNIST from ``--data-dir`` (default ``../shared/data/mnist`` beside
the project; scikit-learn's bundled digits when it is missing), trains with
``tracegrad.train.Trainer`` and prints the numbers ``docs/experiments.md`` records:
test accuracy, time per step, and time (and steps) to first reach a test loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def run(model: str, doc: str, *, argv: list[str] | None = None, **defaults) -> dict:
    """Parse options (defaults from the example), train, print and return a summary."""
    from tracegrad.train import TrainConfig, Trainer

    base = TrainConfig()
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data-dir", default=str(DEFAULT_MNIST), help="folder with the MNIST IDX files")
    p.add_argument("--steps", type=int, default=defaults.get("steps", 2000))
    p.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 64))
    p.add_argument("--optimizer", default=defaults.get("optimizer", "sgd"))
    p.add_argument("--lr", type=float, default=defaults.get("lr", base.lr))
    p.add_argument("--schedule", default=defaults.get("schedule", "constant"))
    p.add_argument("--directions", type=int, default=defaults.get("directions", 1))
    p.add_argument("--distribution", default=defaults.get("distribution", base.distribution))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=defaults.get("eval_every", 1000))
    p.add_argument("--target-loss", type=float, default=defaults.get("target_loss", 0.5),
                   help="report the training time until the test loss first drops to this")
    p.add_argument("--out", default=f"runs/mnist-{model}", help="metrics, plot, checkpoints")
    p.add_argument("--resume", action="store_true")
    if model == "cnn":
        p.add_argument("--channels", default=defaults.get("channels", "64,64,64,64"))
        p.add_argument("--hidden", type=int, default=defaults.get("hidden", 1024))
    args = p.parse_args(argv)

    data, data_dir = "mnist", args.data_dir
    if not Path(data_dir).is_dir():
        print(f"note: no MNIST at {data_dir}; using scikit-learn's bundled 8x8 digits instead", file=sys.stderr)
        data, data_dir = "digits", None
    kwargs = {}
    if model == "cnn":
        kwargs = {"channels": [int(c) for c in args.channels.split(",")], "hidden": args.hidden}
    elif model == "mlp":
        kwargs = {"hidden": defaults.get("hidden", [1024, 1024])}
    cfg = TrainConfig(model=model, data=data, data_dir=data_dir, steps=args.steps, batch_size=args.batch_size,
                      optimizer=args.optimizer, lr=args.lr, schedule=args.schedule, directions=args.directions,
                      distribution=args.distribution, seed=args.seed, eval_every=args.eval_every,
                      checkpoint_every=max(args.eval_every, 1000), out=args.out, resume=args.resume,
                      model_kwargs=kwargs)
    trainer = Trainer(cfg)
    print(f"{model} on {data}: {cfg.optimizer} lr={cfg.lr:g} ({cfg.schedule}), batch {cfg.batch_size}, "
          f"K={cfg.directions} {cfg.distribution}, {cfg.steps} steps -> {cfg.out}", flush=True)
    r = trainer.run()
    hit = r.history.first_reaching("test_loss", args.target_loss)
    summary = {
        "model": model, "data": data, "model_kwargs": kwargs, "steps": r.step, "batch_size": cfg.batch_size,
        "optimizer": cfg.optimizer, "lr": cfg.lr, "schedule": cfg.schedule, "directions": cfg.directions,
        "distribution": cfg.distribution, "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
        "train_time_s": r.train_time, "ms_per_step": 1e3 * r.train_time / max(r.step, 1),
        "target_loss": args.target_loss,
        "time_to_target_s": None if hit is None else hit["wall_time"],
        "steps_to_target": None if hit is None else hit["step"],
    }
    reached = ("not reached" if hit is None
               else f"{hit['wall_time']:.1f} s of training (step {hit['step']})")
    print(f"test accuracy {100 * r.test_accuracy:.2f}%, test loss {r.test_loss:.4f}; "
          f"{summary['ms_per_step']:.2f} ms/step over {r.step} steps ({r.train_time:.1f} s of training); "
          f"test loss <= {args.target_loss:g}: {reached}")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
