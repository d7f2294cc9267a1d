"""Convolution that can take the activation of a BatchNorm folded into it.

After `fold_batchnorm` a conv has a bias, and MindSpore would run BiasAdd and then the
activation as two ops, two passes over the output. `ActivatedConv2d` in CPU inference mode
does both in one pass with ``kernels/bias_activation.cc``; in training, on Ascend and GPU, in
exported graphs and without a compiler it is ``nn.Conv2d`` followed by the activation op.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from . import aot
from .activation import lookup

_LIBRARY = "bias_activation"


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

    def construct(self, x):
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
