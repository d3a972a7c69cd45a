"""Model builders: ``Model(name, init, apply)`` with dict-of-float32 parameters.

``init(seed) -> params`` draws every parameter from one ``numpy.random.Generator`` in a
fixed order, so a seed reproduces the model exactly. ``apply(params, x) -> logits`` is
plain NumPy-style code (``@``, ``np.maximum``, ``tracegrad.nn.functional``): it runs
eagerly on arrays and traces under ``tracegrad.compile`` / ``forward_grad``.

Hidden layers (followed by a ReLU) use He-normal weights; the output layer uses
Glorot-uniform weights scaled by ``OUTPUT_SCALE``, so initial logits are small and the
initial loss is close to log(num_classes) on standardized inputs; biases start at zero.
The CNN is the MNIST network of Baydin et al. 2022 as orobix/fwdgrad builds it.

Local losses (Ren, Kornblith, Liao and Hinton 2023): ``mlp(..., local_heads=True)`` and
``cnn(..., local_heads=True)`` add a linear classifier head per hidden block (params
``head{i}_w``, ``head{i}_b``, drawn after the others, so the shared parameters equal the
plain model's for a seed) and a stop-gradient between blocks. ``apply`` still returns the
output layer's logits; ``local_loss(params, x, y)`` is the local objective: the mean over
examples of the sum of every head's cross-entropy and the output layer's. Its gradient
trains each block from its own head only — a different objective than the global loss.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import numpy as tnp
from . import functional as F
from .init import glorot_uniform, he_normal, zeros

__all__ = [
    "MODELS",
    "OUTPUT_SCALE",
    "Model",
    "accuracy",
    "build_model",
    "cnn",
    "count_params",
    "logistic_regression",
    "loss_fn",
    "mlp",
]

MODELS = ("logreg", "mlp", "cnn")
OUTPUT_SCALE = 0.25  # output-layer weights ~ PyTorch's default scale: initial loss ~ log(num_classes)

Params = dict[str, np.ndarray]


class Model(NamedTuple):
    """``init(seed) -> params`` and ``apply(params, x) -> logits`` (N, num_classes);
    ``local_loss(params, x, y)`` for a model with local heads (else None)."""

    name: str
    init: Callable[[int], Params]
    apply: Callable[[Params, Any], Any]
    local_loss: Callable[[Params, Any, Any], Any] | None = None


def _per_example_log_likelihood(logits: Any, y: Any) -> Any:
    """``log softmax(logits)[b, y_b]`` as a (B, 1) column (a per-example loss term)."""
    return tnp.take_along_axis(tnp.log_softmax(logits, axis=-1), tnp.expand_dims(y, -1), axis=-1)


def _local_objective(logits: Sequence[Any], y: Any) -> Any:
    """Mean over examples of the sum of the cross-entropies of every head's ``logits``: a sum
    of per-example terms, so activity perturbation uses each term for its own block."""
    total = _per_example_log_likelihood(logits[0], y)
    for z in logits[1:]:
        total = total + _per_example_log_likelihood(z, y)
    return -tnp.mean(total)


def count_params(params: Params) -> int:
    return int(sum(np.size(v) for v in params.values()))


def _output_layer(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    w = glorot_uniform(rng, (fan_in, fan_out), fan_in, fan_out, np.float64) * OUTPUT_SCALE
    return w.astype(np.float32)


def _as_matrix(x: Any) -> Any:
    """(N, ...) -> (N, features): image batches are flattened for dense models."""
    return x if tnp.ndim(x) == 2 else F.flatten(x)


def _positive(name: str, value: int) -> int:
    if int(value) < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- logistic regression
def logistic_regression(num_features: int, num_classes: int) -> Model:
    """``x @ w + b`` (softmax regression); params ``w`` (F, K) and ``b`` (K,)."""
    num_features, num_classes = _positive("num_features", num_features), _positive("num_classes", num_classes)

    def init(seed: int) -> Params:
        rng = np.random.default_rng(seed)
        return {"w": _output_layer(rng, num_features, num_classes), "b": zeros((num_classes,))}

    def apply(params: Params, x: Any) -> Any:
        return _as_matrix(x) @ params["w"] + params["b"]

    return Model("logreg", init, apply)


# ---------------------------------------------------------------- multilayer perceptron
def mlp(sizes: Sequence[int], local_heads: bool = False) -> Model:
    """Dense layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with ReLU between them;
    params ``w0, b0, w1, b1, ...`` with ``w{i}`` of shape (sizes[i], sizes[i+1]).
    ``local_heads``: a head ``head{i}_w`` (sizes[i+1], sizes[-1]), ``head{i}_b`` on each hidden
    layer's activation, a stop-gradient after it, and ``local_loss`` (module docstring)."""
    sizes = [_positive("mlp layer size", s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {sizes}")
    last = len(sizes) - 2

    def init(seed: int) -> Params:
        rng = np.random.default_rng(seed)
        params: Params = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            params[f"w{i}"] = (_output_layer(rng, fan_in, fan_out) if i == last
                               else he_normal(rng, (fan_in, fan_out), fan_in))
            params[f"b{i}"] = zeros((fan_out,))
        if local_heads:
            for i in range(last):
                params[f"head{i}_w"] = _output_layer(rng, sizes[i + 1], sizes[-1])
                params[f"head{i}_b"] = zeros((sizes[-1],))
        return params

    def forward(params: Params, x: Any) -> list[Any]:
        """The heads' logits (with local heads), then the output layer's."""
        h, outs = _as_matrix(x), []
        for i in range(last + 1):
            h = h @ params[f"w{i}"] + params[f"b{i}"]
            if i < last:
                h = np.maximum(h, 0)
                if local_heads:
                    outs.append(h @ params[f"head{i}_w"] + params[f"head{i}_b"])
                    h = tnp.stop_gradient(h)  # the next block learns from its own head only
        return [*outs, h]

    def apply(params: Params, x: Any) -> Any:
        return forward(params, x)[-1]

    def local_loss(params: Params, x: Any, y: Any) -> Any:
        return _local_objective(forward(params, x), y)

    return Model("mlp", init, apply, local_loss if local_heads else None)


# ---------------------------------------------------------------- convolutional network
def cnn(in_channels: int = 1, image_size: int | tuple[int, int] = 28,
        channels: Sequence[int] = (64, 64, 64, 64), hidden: int = 1024, num_classes: int = 10,
        local_heads: bool = False, head_cells: int = 2) -> Model:
    """conv3x3-relu, conv3x3-relu, maxpool2, conv3x3-relu, conv3x3-relu, maxpool2, flatten,
    linear(hidden)-relu, linear(num_classes). All convs use padding 1 (same size).

    Params: ``conv{i}_w`` (c_i, c_{i-1}, 3, 3), ``conv{i}_b`` (c_i,), ``fc0_w``
    (c_3 * H/4 * W/4, hidden), ``fc0_b``, ``fc1_w`` (hidden, num_classes), ``fc1_b``.
    ``image_size`` is H (= W) or (H, W); 28 gives 3136 = 64*7*7 features, 8 (sklearn
    digits) gives 2x2 maps after the two pools. Inputs may be (N, C, H, W) or flattened.

    ``local_heads``: five heads (``head0..3`` on the conv blocks' ReLU outputs, average-pooled
    to about ``head_cells`` x ``head_cells`` and flattened; ``head4`` on the hidden linear
    layer), a stop-gradient after each block, and ``local_loss`` (module docstring). More cells
    give each conv block's head more features (a less lossy local objective)."""
    in_channels = _positive("in_channels", in_channels)
    h, w = (image_size, image_size) if isinstance(image_size, int | np.integer) else tuple(image_size)
    h, w = _positive("image height", h), _positive("image width", w)
    channels = [_positive("cnn channels", c) for c in channels]
    if len(channels) != 4:
        raise ValueError(f"cnn takes 4 conv channel counts, got {channels}")
    hidden, num_classes = _positive("hidden", hidden), _positive("num_classes", num_classes)
    h4, w4 = h // 2 // 2, w // 2 // 2
    if h4 < 1 or w4 < 1:
        raise ValueError(f"cnn: images of {h}x{w} are too small for two 2x2 max-pools (need at least 4x4)")
    flat = channels[-1] * h4 * w4
    # local heads on the conv blocks: each map average-pooled to about head_cells x head_cells, then flattened
    sides = [(h, w), (h, w), (h // 2, w // 2), (h // 2, w // 2)]
    head_cells = _positive("head_cells", head_cells)
    pool_windows = [(max(1, sh // head_cells), max(1, sw // head_cells)) for sh, sw in sides]

    def init(seed: int) -> Params:
        rng = np.random.default_rng(seed)
        params: Params = {}
        c_in = in_channels
        for i, c in enumerate(channels):
            params[f"conv{i}_w"] = he_normal(rng, (c, c_in, 3, 3), c_in * 9)
            params[f"conv{i}_b"] = zeros((c,))
            c_in = c
        params["fc0_w"] = he_normal(rng, (flat, hidden), flat)
        params["fc0_b"] = zeros((hidden,))
        params["fc1_w"] = _output_layer(rng, hidden, num_classes)
        params["fc1_b"] = zeros((num_classes,))
        if local_heads:
            for i, c in enumerate(channels):
                (sh, sw), (wh, ww) = sides[i], pool_windows[i]
                fan_in = c * (sh // wh) * (sw // ww)
                params[f"head{i}_w"] = _output_layer(rng, fan_in, num_classes)
                params[f"head{i}_b"] = zeros((num_classes,))
            params["head4_w"] = _output_layer(rng, hidden, num_classes)
            params["head4_b"] = zeros((num_classes,))
        return params


    def conv_relu(params: Params, x: Any, i: int) -> Any:
        b = np.reshape(params[f"conv{i}_b"], (1, -1, 1, 1))
        return np.maximum(F.conv2d(x, params[f"conv{i}_w"], padding=1) + b, 0)

    def forward(params: Params, x: Any) -> list[Any]:
        """The heads' logits (with local heads), then the output layer's."""
        if tnp.ndim(x) == 2:
            x = np.reshape(x, (tnp.shape(x)[0], in_channels, h, w))
        outs: list[Any] = []

        def block_end(x: Any, i: int) -> Any:  # with local heads: a head, then a stop-gradient
            if not local_heads:
                return x
            if tnp.ndim(x) == 4:
                pooled = F.flatten(F.avg_pool2d(x, pool_windows[i]))
            else:
                pooled = x
            outs.append(pooled @ params[f"head{i}_w"] + params[f"head{i}_b"])
            return tnp.stop_gradient(x)

        x = block_end(conv_relu(params, x, 0), 0)
        x = F.max_pool2d(block_end(conv_relu(params, x, 1), 1), 2)
        x = block_end(conv_relu(params, x, 2), 2)
        x = F.max_pool2d(block_end(conv_relu(params, x, 3), 3), 2)
        x = block_end(np.maximum(F.flatten(x) @ params["fc0_w"] + params["fc0_b"], 0), 4)
        return [*outs, x @ params["fc1_w"] + params["fc1_b"]]

    def apply(params: Params, x: Any) -> Any:
        return forward(params, x)[-1]

    def local_loss(params: Params, x: Any, y: Any) -> Any:
        return _local_objective(forward(params, x), y)

    return Model("cnn", init, apply, local_loss if local_heads else None)


# ---------------------------------------------------------------- training helpers
def loss_fn(model: Model) -> Callable[[Params, Any, Any], Any]:
    """``loss(params, x, y)``: mean softmax cross-entropy of the logits against int labels."""

    def loss(params: Params, x: Any, y: Any) -> Any:
        return tnp.cross_entropy(model.apply(params, x), y)

    loss.__name__ = f"{model.name}_loss"
    return loss


def accuracy(model: Model, params: Params, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Fraction of correct arg-max predictions, computed eagerly in batches (bounded memory)."""
    n = len(x)
    if n == 0:
        return float("nan")
    correct = 0
    for start in range(0, n, batch_size):
        logits = np.asarray(model.apply(params, x[start:start + batch_size]))
        correct += int(np.sum(np.argmax(logits, axis=1) == y[start:start + batch_size]))
    return correct / n


def build_model(name: str, num_features: int, num_classes: int,
                image_shape: tuple[int, int, int] | None = None, **kw: Any) -> Model:
    """Build ``"logreg"``, ``"mlp"`` (``hidden=[1024, 1024]``) or ``"cnn"`` (``image_shape``
    (C, H, W); inferred as a square single-channel image when omitted; other keywords go to
    ``cnn``: ``channels``, ``hidden``)."""
    key = name.lower()
    if key == "logreg":
        return logistic_regression(num_features, num_classes, **kw)
    if key == "mlp":
        hidden = list(kw.pop("hidden", (1024, 1024)))
        local_heads = bool(kw.pop("local_heads", False))
        if kw:
            raise TypeError(f"mlp: unexpected options {sorted(kw)}; it takes hidden=[sizes] and local_heads")
        return mlp([num_features, *hidden, num_classes], local_heads=local_heads)
    if key == "cnn":
        if image_shape is None:
            side = math.isqrt(int(num_features))
            if side * side != num_features:
                raise ValueError(f"cnn: cannot infer a square image from {num_features} features; "
                                 "pass image_shape=(C, H, W)")
            image_shape = (1, side, side)
        c, h, w = (int(d) for d in image_shape)
        if c * h * w != num_features:
            raise ValueError(f"cnn: image_shape {tuple(image_shape)} has {c * h * w} values but "
                             f"num_features is {num_features}")
        return cnn(in_channels=c, image_size=(h, w), num_classes=num_classes, **kw)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
