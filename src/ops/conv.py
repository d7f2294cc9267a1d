"""Convolution that can take the activation of a BatchNorm folded into it.

After `fold_batchnorm` a conv has a bias, and MindSpore would run BiasAdd and then the
activation as two ops, two passes over the output. `ActivatedConv2d` in CPU inference mode
does both in one pass with ``kernels/bias_activation.cc``; a 1x1 conv runs, bias and activation
included, as one op of ``kernels/pointwise_conv.cc`` once `fuse_for_inference` has packed its
weights. In training, on Ascend and GPU, in exported graphs and without a compiler it is
``nn.Conv2d`` followed by the activation op.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from . import aot
from .activation import lookup

_LIBRARY = "bias_activation"
_POINTWISE_LIBRARY = "pointwise_conv"
# Output channels per register block of the 1x1 kernel, the row count of its weight panels.
POINTWISE_PANEL_ROWS = 6


class ActivatedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same arguments, parameters and checkpoints) followed by `activation`
    (None, "relu" or "relu6"). Subclasses that compute the convolution their own way finish
    with `add_bias_and_activate`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, pad_mode: str = "same",
                 padding=0, dilation=1, group: int = 1, has_bias: bool = False, weight_init=None, bias_init=None,
                 activation: str | None = None):
        fused = lookup(activation, "ActivatedConv2d")
        super().__init__(in_channels, out_channels, kernel_size, stride, pad_mode, padding, dilation, group,
                         has_bias, weight_init, bias_init)
        self.activation = activation
        self.act = fused.op
        # Read by fold_batchnorm, which rebuilds the conv on the same kind of operators.
        self.built_with_kernels = aot.kernels_allowed()
        # Set when the conv reading this one's output applies the bias and activation (inference).
        self.bias_and_activation_moved = False
        library = aot.library_for_cell(_LIBRARY) if has_bias and activation is not None else None
        self.fuses_bias_activation = library is not None
        if self.fuses_bias_activation:
            self.bias_activation = ops.Custom(f"{library}:Bias{fused.kernel_suffix}", out_shape=lambda x, b: x,
                                              out_dtype=lambda x, b: x, func_type="aot")
        # Set by fuse_for_inference (use_inference_kernel).
        self.inference_weight = None

    def use_inference_kernel(self, library: str, function: str, packed: np.ndarray, tag: str) -> None:
        """Run this conv in inference as the one op `function` of `library`, called with x, the
        weights `packed` for it (a Parameter named after the weight and `tag`) and the bias (the
        conv's own, or zeros: its length gives the kernel the output channels)."""
        self.inference_weight = ms.Parameter(ms.Tensor(np.ascontiguousarray(packed)),
                                             name=f"{self.weight.name}.{tag}", requires_grad=False)
        self.inference_bias = self.bias if self.has_bias else ms.Parameter(
            ms.Tensor(np.zeros(self.out_channels, np.float32)), name=f"{self.weight.name}.{tag}_bias",
            requires_grad=False)
        self.inference_conv = ops.Custom(f"{library}:{function}", out_shape=lambda x, w, b: [x[0], b[0], x[2], x[3]],
                                         out_dtype=lambda x, w, b: x, func_type="aot")

    def fuse_for_inference(self) -> bool:
        """Pack the weights of a 1x1, stride-1, unpadded, ungrouped float32 conv for the CPU 1x1
        kernel, which then computes the conv and its bias and activation (or neither, when they
        moved to the next layer) as one op in inference. Call once the weights are final
        (`fold_batchnorm` does, after the blocks that move biases): later changes to them are
        not seen in inference. Returns whether the kernel will be used."""
        pads = (self.padding,) * 4 if isinstance(self.padding, int) else tuple(self.padding)
        if not (self.built_with_kernels and aot.vector_kernels() and self.kernel_size == (1, 1)
                and self.stride == (1, 1) and self.dilation == (1, 1) and self.group == 1 and not any(pads)
                and self.weight.dtype == ms.float32 and (self.has_bias or self.activation is None)):
            return False
        library = aot.load_library(_POINTWISE_LIBRARY)
        if library is None:
            return False
        out_channels, in_channels = self.out_channels, self.in_channels
        panels = -(-out_channels // POINTWISE_PANEL_ROWS)
        rows = np.zeros((panels * POINTWISE_PANEL_ROWS, in_channels), np.float32)
        rows[:out_channels] = self.weight.asnumpy().reshape(out_channels, in_channels)
        packed = rows.reshape(panels, POINTWISE_PANEL_ROWS, in_channels).transpose(0, 2, 1)
        if self.bias_and_activation_moved or not self.has_bias:
            function = "PointwiseConv"
        else:
            function = f"PointwiseConvBias{lookup(self.activation, 'ActivatedConv2d').kernel_suffix}"
        self.use_inference_kernel(library, function, packed, "pointwise")
        return True

    def construct(self, x):
        if self.inference_weight is not None and not self.training and x.dtype == ms.float32:
            return self.inference_conv(x, self.inference_weight, self.inference_bias)
        return self.add_bias_and_activate(self.conv2d(x, self.weight))

    def add_bias_and_activate(self, output):
        """The bias (if any) and the activation (if any) applied to the convolution's output."""
        if self.bias_and_activation_moved and not self.training:
            return output
        if self.fuses_bias_activation and not self.training and output.dtype == ms.float32:
            return self.bias_activation(output, self.bias)
        if self.has_bias:
            output = self.bias_add(output, self.bias)
        if self.activation is not None:
            output = self.act(output)
        return output
