"""Draw the seed article's example f(θ) = (θ₁ + θ₂) θ₃ at θ = (3, −1, 2): the images of
docs/graphs.md: Graphviz's ``dot`` draws them when installed (else the built-in layout
does), and ``seed_jvp_builtin.svg`` is always the built-in layout, for comparison.

    python examples/seed_graphs.py                # writes docs/img/seed_{primal,jvp}.{svg,png}
    python examples/seed_graphs.py --out /tmp/g   # somewhere else; also writes seed_jvp.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import tracegrad as tg
from tracegrad.viz import compare_stats, listing


@tg.compile
def f(theta):
    return (theta[0] + theta[1]) * theta[2]


THETA = np.array([3.0, -1.0, 2.0])
V = np.array([0.5, -1.0, 2.0])  # one tangent direction (in training: drawn at random)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    primal, jvp = f.graph(THETA), f.jvp_graph(THETA)
    for name, graph, values in (("seed_primal", primal, (THETA,)), ("seed_jvp", jvp, (THETA, V))):
        for suffix in (".svg", ".png"):
            print("wrote", graph.render(out / f"{name}{suffix}", values=values))
    print("wrote", jvp.render(out / "seed_jvp_builtin.svg", values=(THETA, V), engine="builtin"))
    if out.resolve() != Path(__file__).resolve().parents[1] / "docs" / "img":
        print("wrote", jvp.render(out / "seed_jvp.html", values=(THETA, V)))

    print("\nprimal graph with values:\n" + listing(primal, (THETA,)))
    print("\nJVP graph with values and tangents:\n" + listing(jvp, (THETA, V)))
    value, tangent = f.jvp((THETA,), (V,))
    print(f"\nf(θ) = {value:g}, ∇f·v = {tangent:g}, forward gradient (∇f·v) v = {tangent * V}")
    print(compare_stats(primal, jvp))


if __name__ == "__main__":
    main()
