"""Small models to draw with ``tracegrad graph`` (the README's commands use them).

``mlp(x, w1, b1, w2)`` takes its arrays as separate arguments; ``loss(params, x, y)`` is the
project's own MLP loss over a dict of parameters, described with pytree ``--shapes``::

    tracegrad graph examples/graph_models.py:mlp --shapes "x=64x784,w1=784x128,b1=128,w2=128x10" --jvp -o mlp.html --stats
    tracegrad graph examples/graph_models.py:loss --jvp --wrt params -o loss.svg \
        --shapes "params.w0=784x128,params.b0=128,params.w1=128x10,params.b1=10,x=64x784,y=64:int64"
"""

import numpy as np

from tracegrad.nn.models import loss_fn
from tracegrad.nn.models import mlp as mlp_model


def mlp(x, w1, b1, w2):
    """One hidden ReLU layer and a linear read-out: the logits."""
    return np.maximum(x @ w1 + b1, 0.0) @ w2


loss = loss_fn(mlp_model([784, 128, 10]))  # mean cross-entropy of the MLP 784-128-10
