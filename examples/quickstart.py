"""Quickstart: trace plain NumPy code, look at the graphs, get a JVP and a forward gradient.

    python examples/quickstart.py
"""

import numpy as np

import tracegrad as tg


@tg.compile
def f(theta):
    """The seed article's example: f(θ) = (θ₁ + θ₂) θ₃."""
    return (theta[0] + theta[1]) * theta[2]


theta = np.array([3.0, -1.0, 2.0])
print("f(3, -1, 2) =", f(theta))
print("\nprimal graph:\n", f.graph(theta), sep="")
print("\nfused primal+tangent graph:\n", f.jvp_graph(theta), sep="")
print("\ngenerated NumPy source:\n", f.source(theta, jvp=True), sep="")

# One JVP per basis direction gives the gradient (2, 2, 2); all three run in ONE execution.
value, grad = f.jvp((theta,), (np.eye(3),), batched=True)
print("value", value, "gradient from 3 basis tangents:", grad)

# Forward gradient (Baydin et al. 2022): (∇f·v) v with v ~ N(0, I), averaged over K directions.
g = tg.forward_grad(lambda t: t[0] ** 2 + t[1] ** 2, directions=100_000, seed=0)
value, estimate = g(np.array([2.0, 1.0]))
print("forward-gradient mean over 1e5 directions:", estimate, "(true gradient: [4, 2])")
