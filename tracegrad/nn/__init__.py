"""Neural networks for forward-gradient training: functional ops, initializers, models.

``functional`` holds conv2d, max_pool2d, avg_pool2d, flatten and relu (NCHW); ``init``
the seeded initializers; ``models`` the builders returning ``Model(name, init, apply)``.
"""

from . import functional, init
from .functional import avg_pool2d, conv2d, flatten, max_pool2d, relu
from .models import (
    MODELS,
    Model,
    accuracy,
    build_model,
    cnn,
    count_params,
    logistic_regression,
    loss_fn,
    mlp,
)

__all__ = [
    "MODELS",
    "Model",
    "accuracy",
    "avg_pool2d",
    "build_model",
    "cnn",
    "conv2d",
    "count_params",
    "flatten",
    "functional",
    "init",
    "logistic_regression",
    "loss_fn",
    "max_pool2d",
    "mlp",
    "relu",
]
