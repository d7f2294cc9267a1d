"""Loading a trained network for inference, and the helpers eval.py / infer.py / postprocess.py share."""
from __future__ import annotations

import contextlib
import os

import cv2
import numpy as np
import mindspore as ms
from mindspore import nn

from src.engine.checkpoint import load_weights
from src.errors import ConfigError, DataError, MissingFileError
from src.ops.aot import standard_operators
from src.ops.conv import ActivatedConv2d


def load_inference_network(cfg, api, ckpt_path: str, fold: bool = True):
    """Build the model's inference graph and load a checkpoint into it (all weights required;
    model-zoo checkpoints are mapped by the model's rename table). With `fold`, BatchNorms are
    folded into their convs (what eval.py and infer.py run); export.py keeps them, so the
    exported graph is the official network layer for layer (deployment compilers fold them)."""
    if not ckpt_path:
        raise ConfigError("no checkpoint given: pass --checkpoint_path (eval.py) or --ckpt_file (export.py, infer.py)")
    net = api.build_inference_network(cfg)
    load_weights(net, os.path.abspath(ckpt_path), strict=True, official=api.OFFICIAL_CHECKPOINT)
    if fold:
        fold_batchnorm(net)
    net.set_train(False)
    return net


def frozen_forward(net: nn.Cell):
    """A function that runs `net` as it is now, weights and train/eval mode included, as one
    compiled graph: what eval.py and infer.py call for each batch instead of `net(images)`.

    Calling a Cell in graph mode redoes Python work on every call: it sets the compile phase
    on each of its sub-cells (329 in SSD300, 0.9 ms per call) and looks its graph up again.
    A `mindspore.jit` function over the cell is compiled once per input shape and then only
    runs: at batch 1, 0.4-2.0 ms of SSD300's ~16 ms and 0.3-0.5 ms of CRNN's ~7.5 ms in the
    benches (README). MindSpore compiles the cell's weights into that graph: later changes to
    them (training, loading a checkpoint) are not seen, so this is for a network that will not
    change again, never for evaluation while training.
    """
    def forward(images):
        return net(images)

    return ms.jit(forward)


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d, activation: str | None) -> nn.Conv2d:
    """A conv with bias computing conv followed by bn (in inference mode) and `activation`, of
    the same class and on the same operators (a conv on a CPU kernel keeps it; one built with
    MindSpore's own operators, e.g. for export, does not gain it)."""
    scale = bn.gamma.asnumpy() / np.sqrt(bn.moving_variance.asnumpy() + bn.eps)
    weight = conv.weight.asnumpy() * scale.reshape(-1, 1, 1, 1)
    bias = bn.beta.asnumpy() - bn.moving_mean.asnumpy() * scale
    if conv.has_bias:
        bias = bias + conv.bias.asnumpy() * scale
    same_operators = contextlib.nullcontext() if getattr(conv, "built_with_kernels", False) else standard_operators()
    extra = {"activation": activation} if activation is not None else {}
    with same_operators:
        return type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.pad_mode,
                          conv.padding, conv.dilation, conv.group, has_bias=True,
                          weight_init=ms.Tensor(weight.astype(np.float32)),
                          bias_init=ms.Tensor(bias.astype(np.float32)), **extra)


def fold_batchnorm(net: nn.Cell) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d in a SequentialCell into the conv.

    A BatchNorm's fused activation moves into the conv when the conv is an `ActivatedConv2d`
    (on CPU its kernels apply it before the output leaves cache), else it
    stays as a cell of its own. Then every cell with a `fuse_for_inference()` method (a block
    that knows which of its outputs feed only one conv) fuses further. Exact in inference mode
    and removes one or two passes over every feature map; only for networks that will not be
    trained again. Returns the number of folded pairs.
    """
    folded = 0
    for _, cell in net.cells_and_names():
        if not isinstance(cell, nn.SequentialCell):
            continue
        for i in range(len(cell) - 1):
            # A conv that already applies an activation cannot take the BatchNorm after it.
            if (isinstance(cell[i], nn.Conv2d) and isinstance(cell[i + 1], nn.BatchNorm2d)
                    and getattr(cell[i], "activation", None) is None):
                conv, bn = cell[i], cell[i + 1]
                activation = getattr(bn, "activation", None)
                if activation is not None and isinstance(conv, ActivatedConv2d):
                    cell[i], cell[i + 1] = _folded_conv(conv, bn, activation), nn.Identity()
                else:
                    cell[i] = _folded_conv(conv, bn, None)
                    cell[i + 1] = bn.activation_cell() if activation is not None else nn.Identity()
                folded += 1
    for _, cell in net.cells_and_names():
        if hasattr(cell, "fuse_for_inference"):
            cell.fuse_for_inference()
    return folded


def read_image(path: str) -> np.ndarray:
    """RGB uint8 image from a file; errors name the file."""
    if not os.path.isfile(path):
        raise MissingFileError(f"image not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode image {path} (corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def draw_detections(img_rgb: np.ndarray, det: dict, class_names, score_threshold: float = 0.3) -> np.ndarray:
    """BGR picture with each detection's box, class name and score."""
    out = cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(7)
    colours = rng.integers(64, 256, (len(class_names) + 1, 3)).tolist()
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
        if score < score_threshold:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        colour = colours[int(label)]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        text = f"{class_names[int(label) - 1]} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y_text = max(y1, th + 4)
        cv2.rectangle(out, (x1, y_text - th - 4), (x1 + tw + 2, y_text), colour, -1)
        cv2.putText(out, text, (x1 + 1, y_text - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out
