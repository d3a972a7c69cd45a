"""Every gradient estimator against backprop on real MNIST, at equal training time (issue 12).

Runs ``tracegrad.train.Trainer`` for each (estimator, seed), one after the other, on one
thread, and writes one JSON per run into ``--results`` (step, training seconds, test
accuracy at every evaluation); ``--report`` turns the JSON files into the table (mean ± std
over seeds of the final test accuracy and of the accuracy at the backprop run's training
times) and a plot of test accuracy against training time. ``--variance`` measures each
estimator's relative mean squared error ``E|ĝ - g|² / |g|²`` on one batch of the real network
against the exact gradient of the objective it targets (the global loss, or the local one).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/estimators_mnist.py \
        --data-dir ../shared/data/mnist --steps 3000 --seeds 0 1 2 --results runs/est12
    python benchmarks/estimators_mnist.py --report --results runs/est12 --plot docs/img/estimators_mnist.png
    OMP_NUM_THREADS=1 python benchmarks/estimators_mnist.py --variance --data-dir ../shared/data/mnist

Runs already in ``--results`` are skipped, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> TrainConfig fields (the settings: MLP 784-1024-1024-10, batch 64)
ESTIMATORS: dict[str, dict[str, Any]] = {
    "backprop": {"estimator": "backprop", "optimizer": "sgd", "lr": 0.05},
    "activity": {"estimator": "activity", "optimizer": "sgd", "lr": 0.05, "mask": True, "groups": 64},
    "activity-layerwise": {"estimator": "activity", "optimizer": "sgd", "lr": 0.05, "mask": True, "groups": 64,
                           "layerwise": True},
    "activity-layerwise-256": {"estimator": "activity", "optimizer": "sgd", "lr": 0.05, "mask": True,
                               "groups": 256, "layerwise": True},
    "local": {"estimator": "local", "optimizer": "sgd", "lr": 0.1, "mask": True, "groups": 256},
    "forward": {"estimator": "forward", "optimizer": "adam", "lr": 3e-4},
}
LABELS = {"backprop": "backprop (SGD 0.05)", "activity": "activity, global (masked, G=64, SGD 0.05)",
          "activity-layerwise": "activity, global, layerwise (masked, G=64, SGD 0.05)",
          "activity-layerwise-256": "activity, global, layerwise (masked, G=256, SGD 0.05)",
          "local": "local losses (masked, G=256, SGD 0.1)", "forward": "weight perturbation (Adam 3e-4)"}


def label(name: str, config: dict[str, Any]) -> str:
    """The legend of a run, from the settings it recorded (so a sweep with --groups/--lr says so)."""
    opt = f"{config['optimizer'].upper() if config['optimizer'] == 'sgd' else config['optimizer'].capitalize()} " \
          f"{config['lr']:g}" + (f" {config['schedule']}" if config.get("schedule", "constant") != "constant" else "")
    if name.startswith("activity") or name == "local":
        extra = ", heads on {0}x{0} cells".format(config["model_kwargs"]["head_cells"]) \
            if name == "local" and "head_cells" in config.get("model_kwargs", {}) else ""
        what = LABELS[name].split(" (")[0]
        return f"{what} ({'masked, ' if config.get('mask') else ''}G={config['groups']}{extra}, {opt})"
    return f"{LABELS[name].split(' (')[0]} ({opt})"


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from tracegrad.train import TrainConfig, Trainer

    fields = dict(ESTIMATORS[name])
    if args.groups is not None and "groups" in fields:
        fields["groups"] = args.groups
    if args.lr is not None:
        fields["lr"] = args.lr
    if args.schedule is not None:
        fields["schedule"] = args.schedule
    cfg = TrainConfig(model=args.model, data="mnist", data_dir=args.data_dir, steps=args.steps, batch_size=64,
                      seed=seed, eval_every=args.eval_every, log_every=args.eval_every, out=None, quiet=True,
                      plot=False, model_kwargs=json.loads(args.model_kwargs), **fields)
    trainer = Trainer(cfg)
    t0 = time.perf_counter()
    result = trainer.run()
    rows = [{"step": r["step"], "train_time": r["wall_time"], "test_accuracy": r["test_accuracy"],
             "train_loss": r["train_loss"]} for r in result.history.rows if r["test_accuracy"] is not None]
    return {"estimator": name, "seed": seed, "model": args.model, "steps": args.steps, "config": cfg.to_dict(),
            "rows": rows, "final_accuracy": result.test_accuracy, "train_time": result.train_time,
            "ms_per_step": 1000 * result.train_time / result.step, "wall": time.perf_counter() - t0}


def sweep(args: argparse.Namespace) -> None:
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name in args.estimators:
            path = out / f"{args.model}-{name}-s{seed}.json"
            if path.exists():
                continue
            rec = run_one(name, seed, args)
            path.write_text(json.dumps(rec, indent=1))
            print(f"{name} seed {seed}: {100 * rec['final_accuracy']:.2f}% after {rec['steps']} steps, "
                  f"{rec['ms_per_step']:.1f} ms/step", flush=True)


def report(args: argparse.Namespace) -> None:
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(args.results).glob(f"{args.model}-*.json")):
        rec = json.loads(path.read_text())
        runs.setdefault(rec["estimator"], []).append(rec)
    if not runs:
        raise SystemExit(f"no results in {args.results}")
    cost_file = Path(args.results) / f"costs-{args.model}.json"
    cost = json.loads(cost_file.read_text())["ms_per_step"] if cost_file.exists() else {}
    if cost:  # training time = steps x the CPU time per step measured side by side (--costs), not the
        # wall time of runs that went at different loads
        print(f"training time: steps x CPU ms per step from {cost_file}")
        missing = sorted(set(runs) - set(cost))
        if missing:
            raise SystemExit(f"{cost_file} has no cost for {', '.join(missing)}: rerun --costs with them")
        for name, recs in runs.items():
            for r in recs:
                if name in cost:
                    r["ms_per_step"] = cost[name]
                    r["train_time"] = r["steps"] * cost[name] / 1000
                    for row in r["rows"]:
                        row["train_time"] = row["step"] * cost[name] / 1000
    bp_ms = float(np.mean([r["train_time"] / r["steps"] for r in runs["backprop"]])) if "backprop" in runs else None
    steps = sorted({row["step"] for recs in runs.values() for r in recs for row in r["rows"]})
    marks = [s for s in args.marks if s in steps]
    times = [m for m in args.marks if bp_ms is not None and m in steps]  # equal-time marks: backprop's steps

    def mean_std(values: list[float]) -> str:
        return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if values else ""

    print("| estimator | seeds | ms/step (× backprop) | " + " | ".join(f"test acc. at {m} steps" for m in marks)
          + " | final test acc. (%) | " + " | ".join(f"at backprop's {m}-step time" for m in times) + " |")
    print("|---|---:|---:|" + "---:|" * (len(marks) + 1 + len(times)))
    for name in [n for n in ESTIMATORS if n in runs]:
        recs = runs[name]
        finals = [100 * r["final_accuracy"] for r in recs]
        ms = float(np.mean([r["ms_per_step"] for r in recs]))
        ratio = f" ({ms / np.mean([r['ms_per_step'] for r in runs['backprop']]):.2f})" if "backprop" in runs else ""
        cells = [mean_std([100 * row["test_accuracy"] for r in recs for row in r["rows"] if row["step"] == m]) or "–"
                 for m in marks]
        cells.append(f"**{mean_std(finals)}**")
        for m in times:  # the last evaluation within backprop's training time of m steps
            budget = m * bp_ms + 1e-9
            accs = [100 * before[-1]["test_accuracy"] for r in recs
                    if (before := [row for row in r["rows"] if row["train_time"] <= budget])]
            cells.append(mean_std(accs))
        print(f"| {label(name, recs[0]['config'])} | {len(recs)} | {ms:.1f}{ratio} | " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for ax, zoom in zip(axes, (False, True)):
            for name in [n for n in ESTIMATORS if n in runs]:
                for i, r in enumerate(runs[name]):
                    t = [row["train_time"] for row in r["rows"]]
                    a = [100 * row["test_accuracy"] for row in r["rows"]]
                    ax.plot(t, a, color=f"C{list(ESTIMATORS).index(name)}", alpha=0.8, marker="." if zoom else None,
                            label=label(name, r["config"]) if i == 0 else None)
            ax.set_xlabel("training time (s: steps x measured CPU time per step, one thread)" if cost
                          else "training time (s, one thread, evaluation excluded)")
            ax.set_ylabel("test accuracy (%)")
            ax.set_ylim((90, 99 if args.model == "cnn" else 98) if zoom else (0, 100))
            ax.grid(alpha=0.3)
        axes[0].set_title(f"MNIST {args.model}, batch 64, {len(next(iter(runs.values())))} seeds each")
        axes[1].set_title("the same, zoomed in")
        axes[0].legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


def _estimator_for(name: str, args: argparse.Namespace, ds: Any) -> tuple[Any, Any]:
    """``(estimator, model)`` for ``ESTIMATORS[name]`` on the data set, as the trainer builds them."""
    from tracegrad.nn.models import build_model
    from tracegrad.train.estimators import make_estimator
    from tracegrad.train.trainer import TrainConfig

    fields = {k: v for k, v in ESTIMATORS[name].items() if k not in ("optimizer", "lr", "schedule")}
    if args.groups is not None and "groups" in fields:  # as run_one: the sweep's --groups
        fields["groups"] = args.groups
    cfg = TrainConfig(model=args.model, data="mnist", data_dir=args.data_dir, seed=0, **fields)
    kwargs = json.loads(args.model_kwargs)
    model = build_model(args.model, ds.num_features, ds.num_classes, image_shape=ds.image_shape,
                        **({"local_heads": True} if name == "local" else {}), **kwargs)
    return make_estimator(cfg, model, keep_buffers=True), model


def costs(args: argparse.Namespace) -> None:
    """CPU time of one training step (the estimate and an in-place SGD update, the same for
    every estimator) per estimator, interleaved rounds, median; written to
    ``--results/costs-MODEL.json`` for ``--report``'s equal-time column and plot."""
    from tracegrad.data import BatchStream, load_dataset

    ds = load_dataset("mnist", args.data_dir)
    stream = BatchStream(ds.x_train, ds.y_train, 64, 0)
    cases = {}
    for name in args.estimators:
        est, model = _estimator_for(name, args, ds)
        cases[name] = (est, model.init(0))
    times: dict[str, list[float]] = {n: [] for n in cases}
    for r in range(args.rounds + 2):
        x, y = stream.next()
        for name, (est, params) in cases.items():
            t0 = time.process_time()
            _, grads = est(params, x, y, r)
            for k, g in grads.items():
                params[k] -= np.float32(1e-6) * g
            if r >= 2:  # the first rounds compile
                times[name].append(time.process_time() - t0)
    out = {n: 1000 * float(np.median(t)) for n, t in times.items()}
    base = out.get("backprop")
    for n, ms in out.items():
        print(f"  {LABELS[n]:60s} {ms:7.2f} ms" + (f"  {ms / base:.2f} x backprop" if base else ""))
    path = Path(args.results) / f"costs-{args.model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ms_per_step": out, "rounds": args.rounds, "command": " ".join(sys.argv)}, indent=1))
    print(f"wrote {path}")


def variance(args: argparse.Namespace) -> None:
    """Relative MSE of each estimator on one batch, at the initial parameters and after
    ``--warm`` backprop steps, against the exact gradient of the objective it targets."""
    import tracegrad as tg
    from tracegrad.data import BatchStream, load_dataset
    from tracegrad.nn.models import build_model
    from tracegrad.train.estimators import make_estimator
    from tracegrad.train.trainer import TrainConfig

    ds = load_dataset("mnist", args.data_dir)
    xs, ys = BatchStream(ds.x_train, ds.y_train, 64, 0).next()
    what = " (all parameters / conv layers)" if args.model == "cnn" else ""
    print(f"| estimator | objective | relative MSE E|ĝ-g|²/|g|²{what} at init | after {args.warm} exact SGD steps |")
    print("|---|---|---:|---:|")
    for name in args.estimators:
        fields = {k: v for k, v in ESTIMATORS[name].items() if k not in ("optimizer", "lr")}
        if args.groups is not None and "groups" in fields:
            fields["groups"] = args.groups
        cfg = TrainConfig(model=args.model, data="mnist", data_dir=args.data_dir, seed=0, **fields)
        kwargs = json.loads(args.model_kwargs)
        model = build_model(args.model, ds.num_features, ds.num_classes, image_shape=ds.image_shape,
                            **kwargs, **({"local_heads": True} if name == "local" else {}))
        est = make_estimator(cfg, model)
        exact = tg.value_and_grad(est.objective, argnums=0)
        params = model.init(0)
        cols = []
        for phase in range(2):
            if phase == 1:  # a few exact steps on the estimator's own objective: a trained-ish network
                stream = BatchStream(ds.x_train, ds.y_train, 64, 1)
                for _ in range(args.warm):
                    x, y = stream.next()
                    _, g = exact(params, x, y)
                    params = {k: params[k] - np.float32(0.05) * g[k] for k in params}
            _, g = exact(params, xs, ys)
            # every parameter, and (the CNN) the conv layers' only: the heads' exact gradients
            # would hide the perturbed layers' noise in the total
            groups_of_keys = [sorted(g)] + ([[k for k in sorted(g) if k.startswith("conv")]]
                                            if args.model == "cnn" else [])
            errs = [[] for _ in groups_of_keys]
            for s in range(args.draws):
                _, e = est(params, xs, ys, s)
                for i, keys in enumerate(groups_of_keys):
                    errs[i].append(sum(float(np.sum((e[k].astype(np.float64) - g[k]) ** 2)) for k in keys))
            cols.append(" / ".join(f"{np.mean(err) / sum(float(np.sum(g[k].astype(np.float64) ** 2)) for k in keys):.4g}"
                                   for err, keys in zip(errs, groups_of_keys)))
        objective = "local" if name == "local" else "global"
        if name == "local":  # how far the local objective's gradient is from the global one
            # the plain model (no stop-gradients) with the shared parameters: the global loss
            plain = build_model(args.model, ds.num_features, ds.num_classes, image_shape=ds.image_shape, **kwargs)
            shared = {k: params[k] for k in plain.init(0)}
            glob = tg.grad(lambda p, x, y, apply=plain.apply: tg.numpy.cross_entropy(apply(p, x), y))(
                shared, xs, ys)
            keys = ("w0", "w1") if args.model == "mlp" else ("conv0_w", "conv1_w", "conv3_w", "fc0_w")
            cos = [f"{k} {float(np.sum(g[k] * glob[k]) / np.sqrt(np.sum(g[k] ** 2) * np.sum(glob[k] ** 2))):.2f}"
                   for k in keys]
            objective += f" (cosine to the global gradient: {', '.join(cos)})"
        label = LABELS[name] if "groups" not in fields else f"{name} (G={fields['groups']}, mask={fields.get('mask')})"
        print(f"| {label} | {objective} | {cols[0]} | {cols[1]} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    p.add_argument("--model-kwargs", default="{}", help='JSON, e.g. \'{"channels": [8, 8, 16, 16], "hidden": 128}\'')
    p.add_argument("--groups", type=int, help="G for the activity and local estimators (default: 64 and 256)")
    p.add_argument("--lr", type=float, help="the learning rate of every estimator run (default: each one's)")
    p.add_argument("--schedule", choices=("constant", "exp", "cosine"), help="the learning-rate schedule of every run")
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--results", default="runs/estimators_mnist")
    p.add_argument("--report", action="store_true", help="print the table (and --plot) from --results")
    p.add_argument("--plot", help="with --report: write the accuracy-against-time plot here")
    p.add_argument("--marks", nargs="+", type=int, default=[1000, 2000, 3000],
                   help="with --report: the steps of the accuracy columns and of the equal-time columns")
    p.add_argument("--variance", action="store_true", help="measure each estimator's variance on one batch")
    p.add_argument("--costs", action="store_true",
                   help="measure each estimator's CPU time per step (interleaved rounds) into --results")
    p.add_argument("--rounds", type=int, default=20, help="with --costs: interleaved rounds")
    p.add_argument("--draws", type=int, default=20, help="with --variance: estimates per estimator")
    p.add_argument("--warm", type=int, default=200, help="with --variance: exact steps before the second column")
    args = p.parse_args()
    if args.report:
        report(args)
    elif args.variance:
        variance(args)
    elif args.costs:
        costs(args)
    else:
        sweep(args)


if __name__ == "__main__":
    main()
