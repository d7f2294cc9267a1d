"""Depthwise convolution with a fast CPU path.

MindSpore's CPU backend runs a depthwise Conv2D through oneDNN as one small GEMM per channel
(``x64:gemm:jit``): in SSD300-MobileNetV2 the depthwise layers were 44% of a training step at
batch 8 while holding under 1% of its multiply-adds. `DepthwiseConv2d` computes the same thing
(forward, input and weight gradients) with the loops in ``kernels/depthwise_conv.cc`` when
running on CPU, and is plain ``nn.Conv2d`` on Ascend and GPU, for exported graphs and when
the kernel cannot be built. With a bias and an `activation` (what folding a BatchNorm with a
fused activation into it gives, src/engine/inference.fold_batchnorm), inference adds the bias and
applies the activation to each plane in the same kernel call.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import ops

from . import aot
from .activation import ACTIVATIONS
from .conv import ActivatedConv2d

_LIBRARY = "depthwise_conv"
_SUPPORTED_STRIDES = (1, 2)


def _output_shape(x, w, stride: int) -> list:
    """'same' padding: ceil(side / stride)."""
    return [x[0], x[1], -(-x[2] // stride), -(-x[3] // stride)]


def _inference_op(library: str, name: str, stride: int) -> ops.Custom:
    """An inference-only forward (x, weight, bias inputs...) -> y of the kernel library."""
    return ops.Custom(f"{library}:{name}S{stride}", out_shape=lambda x, w, *biases: _output_shape(x, w, stride),
                      out_dtype=lambda x, *rest: x, func_type="aot")


def _custom_ops(library: str, stride: int) -> ops.Custom:
    """Forward Custom op (with its bprop) for one stride."""
    suffix = f"S{stride}"

    grad_input = ops.Custom(f"{library}:DepthwiseBackwardInput{suffix}", out_shape=lambda dy, w, x: x,
                            out_dtype=lambda dy, w, x: dy, func_type="aot")
    grad_weight = ops.Custom(f"{library}:DepthwiseBackwardWeight{suffix}", out_shape=lambda dy, x, w: w,
                             out_dtype=lambda dy, x, w: dy, func_type="aot")

    def bprop(x, w, out, dout):
        return grad_input(dout, w, x), grad_weight(dout, x, w)

    return ops.Custom(f"{library}:DepthwiseForward{suffix}", out_shape=lambda x, w: _output_shape(x, w, stride),
                      out_dtype=lambda x, w: x, func_type="aot", bprop=bprop)


class DepthwiseConv2d(ActivatedConv2d):
    """``nn.Conv2d`` with ``group == in_channels == out_channels`` (same arguments, parameters
    and checkpoints) that runs on CPU through the custom kernel when its geometry allows:
    float32 input and weight, square odd kernel, stride 1 or 2 in both directions, no dilation,
    and pad_mode 'same' (at stride 2 on an even side it pads only below / right, as the model
    zoo's networks do) or, at stride 1 where it is the same thing, 'pad' with kernel_size // 2 on
    every side. `activation` (None, "relu" or "relu6") follows the conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, pad_mode: str = "pad",
                 padding=0, dilation=1, group: int = 1, has_bias: bool = False, weight_init=None, bias_init=None,
                 activation: str | None = None):
        if not in_channels == out_channels == group:
            raise ValueError(f"DepthwiseConv2d needs in_channels == out_channels == group, "
                             f"got {in_channels}, {out_channels}, {group}")
        super().__init__(in_channels, out_channels, kernel_size, stride, pad_mode, padding, dilation, group,
                         has_bias, weight_init, bias_init, activation)
        k = self.kernel_size[0]
        pads = (self.padding,) * 4 if isinstance(self.padding, int) else tuple(self.padding)
        same_padding = self.pad_mode == "same" or (self.pad_mode == "pad" and pads == (k // 2,) * 4
                                                    and self.stride == (1, 1))
        geometry_ok = (self.kernel_size == (k, k) and k % 2 == 1 and same_padding and self.dilation == (1, 1)
                       and self.stride[0] == self.stride[1] and self.stride[0] in _SUPPORTED_STRIDES)
        library = aot.library_for_cell(_LIBRARY) if geometry_ok else None
        self.use_cpu_kernel = library is not None
        self.library = library
        self.depthwise_fuses_bias_activation = self.use_cpu_kernel and has_bias and activation is not None
        self.takes_input_bias_activation = False
        if self.use_cpu_kernel:
            self.depthwise = _custom_ops(library, self.stride[0])
        if self.depthwise_fuses_bias_activation:
            self.depthwise_bias_act = _inference_op(
                library, f"DepthwiseBias{ACTIVATIONS[activation].kernel_suffix}", self.stride[0])

    def take_input_bias_and_activation(self, producer: ActivatedConv2d) -> bool:
        """Apply the bias and activation of `producer`, the conv whose output is this conv's
        only input, in this conv's kernel as it reads that input (CPU inference after BatchNorm
        folding, 3x3 kernels): one pass fewer over a large feature map. Returns whether it did
        (not once the producer runs on an inference kernel that applies them itself)."""
        if not (self.depthwise_fuses_bias_activation and self.kernel_size == (3, 3)
                and producer.fuses_bias_activation and producer.out_channels == self.in_channels
                and producer.inference_weight is None):
            return False
        name = (f"DepthwiseIn{ACTIVATIONS[producer.activation].kernel_suffix}"
                f"Bias{ACTIVATIONS[self.activation].kernel_suffix}")
        self.depthwise_in_bias_act = _inference_op(self.library, name, self.stride[0])
        self.input_bias = producer.bias  # the same Parameter: the producer no longer reads it
        self.input_act = ACTIVATIONS[producer.activation].op
        self.takes_input_bias_activation = True
        producer.bias_and_activation_moved = True
        return True

    def construct(self, x):
        # The kernel is float32 only (mixed precision casts to float16).
        on_kernel = self.use_cpu_kernel and x.dtype == ms.float32 and self.weight.dtype == ms.float32
        if self.takes_input_bias_activation and not self.training:
            if on_kernel:
                return self.depthwise_in_bias_act(x, self.weight, self.input_bias, self.bias)
            # Off the kernel (e.g. float16 input) the producer's bias and activation still apply.
            x = self.input_act(self.bias_add(x, self.input_bias))
        if on_kernel and self.depthwise_fuses_bias_activation and not self.training:
            return self.depthwise_bias_act(x, self.weight, self.bias)
        return self.add_bias_and_activate(self.depthwise(x, self.weight) if on_kernel else self.conv2d(x, self.weight))
