"""3x3 convolution through Winograd's minimal filtering algorithm, for the CPU.

MindSpore's CPU Conv2D runs a dense 3x3 convolution as a GEMM on the plain NCHW layout
(~100 GFLOP/s on this machine), and CRNN's six 3x3 layers were ~80% of its training step.
Winograd F(m x m, 3 x 3) computes each m x m output tile from an (m+2) x (m+2) input tile as
(m+2)^2 independent products over the channels, 4x (m = 4) or 2.25x (m = 2) fewer
multiply-adds than the direct convolution:

    U = G w G^T  (per filter),  V = B^T d B  (per input tile),  y = A^T (sum_c U * V) A.

`WinogradConv2d` computes U, V and y with the linear kernels in ``kernels/winograd.cc``
(their gradients are the adjoint kernels) and the (m+2)^2 channel sums as one BatchMatMul,
whose gradients MindSpore derives itself. On Ascend, GPU, in exported graphs and when the
kernel cannot be built it is plain ``nn.Conv2d``.

For CPU inference below MIN_TILES, where the filter transform would cost more than it saves,
`fuse_for_inference` (called by fold_batchnorm once the weights are final) transforms the
filters once; the whole convolution, bias and activation included, then runs as one kernel
(CRNN's VGG part at batch 1: 7.7 ms with Conv2D, 5.3-6.0 ms with the kernel).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import ops

from . import aot
from .activation import ACTIVATIONS
from .conv import ActivatedConv2d

_LIBRARY = "winograd"
# Output tile side m (2 or 4). F(4, 3) does 4x fewer multiply-adds than the direct
# convolution, F(2, 3) 2.25x; CRNN's layers took 0.79 s against 1.00 s (forward and backward,
# batch 64). Both differ from Conv2D by 1e-6 to 3e-6 of the output's scale in float32.
TILE = 4
# Below these sizes training uses the direct convolution, which is faster there: the channel
# sums are GEMMs with in_channels as their inner dimension (3 -> 64 channels took 0.073 s
# against Conv2D's 0.035 s forward and backward at batch 64), and transforming the filters
# costs as much as the products saved when there are few tiles (512 -> 512 channels on 4x25 at
# batch 1: 0.024 s against 0.008 s). Inference uses the one-op kernel there instead.
MIN_IN_CHANNELS = 16
MIN_TILES = 128
# The inference kernel's products take output channels 16 at a time.
INFERENCE_PANEL = 16
# The inference kernel's tile side. At batch 1 the transformed filters are read from memory on
# every call: F(2, 3)'s are 16/9 the size of the filters, F(4, 3)'s 36/9. CRNN's convolutions
# took the same time with either (the VGG part 5.9 ms at batch 1), and F(2, 3) holds 32 MB of
# transformed filters for CRNN instead of 72 MB, with 20x smaller rounding differences.
INFERENCE_TILE = 2


def _tiles(size: int, tile: int) -> int:
    return (size + tile - 1) // tile


def _custom_ops(library: str, tile: int) -> tuple[ops.Custom, ops.Custom, ops.Custom]:
    """Filter transform w -> U, input transform x -> V and output transform M -> y, each with
    its adjoint as bprop."""
    points = (tile + 2) ** 2
    suffix = f"F{tile}"
    filter_adjoint = ops.Custom(f"{library}:WinogradFilterAdjoint{suffix}", out_shape=lambda du, w: w,
                                out_dtype=lambda du, w: du, func_type="aot")

    def filter_bprop(w, out, dout):
        return (filter_adjoint(dout, w),)

    filter_transform = ops.Custom(f"{library}:WinogradFilter{suffix}", out_shape=lambda w: [points, w[0], w[1]],
                                  out_dtype=lambda w: w, func_type="aot", bprop=filter_bprop)
    input_adjoint = ops.Custom(f"{library}:WinogradInputAdjoint{suffix}", out_shape=lambda dv, x: x,
                               out_dtype=lambda dv, x: dv, func_type="aot")

    def input_bprop(x, out, dout):
        return (input_adjoint(dout, x),)

    input_transform = ops.Custom(
        f"{library}:WinogradInput{suffix}",
        out_shape=lambda x: [points, x[1], x[0] * _tiles(x[2], tile) * _tiles(x[3], tile)],
        out_dtype=lambda x: x, func_type="aot", bprop=input_bprop)

    output_adjoint = ops.Custom(
        f"{library}:WinogradOutputAdjoint{suffix}",
        out_shape=lambda dy: [points, dy[1], dy[0], dy[2] // tile, dy[3] // tile],
        out_dtype=lambda dy: dy, func_type="aot")

    def output_bprop(m, out, dout):
        return (output_adjoint(dout),)

    output_transform = ops.Custom(
        f"{library}:WinogradOutput{suffix}", out_shape=lambda m: [m[2], m[1], m[3] * tile, m[4] * tile],
        out_dtype=lambda m: m, func_type="aot", bprop=output_bprop)
    return filter_transform, input_transform, output_transform


class WinogradConv2d(ActivatedConv2d):
    """``nn.Conv2d`` (same arguments, parameters and checkpoints) that runs a 3x3, stride-1,
    padding-1 ('same' or 'pad' with padding 1), ungrouped, undilated float32 convolution
    through Winograd F(TILE x TILE, 3x3) on CPU when it is faster (at least MIN_IN_CHANNELS inputs and
    MIN_TILES output tiles in the batch); any other geometry, size, device or dtype uses Conv2D.
    `activation` (None, "relu" or "relu6") follows the conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, pad_mode: str = "same",
                 padding=0, dilation=1, group: int = 1, has_bias: bool = False, weight_init=None, bias_init=None,
                 activation: str | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, pad_mode, padding, dilation, group,
                         has_bias, weight_init, bias_init, activation)
        pads = (self.padding,) * 4 if isinstance(self.padding, int) else tuple(self.padding)
        same_size = self.pad_mode == "same" or (self.pad_mode == "pad" and pads == (1, 1, 1, 1))
        geometry_ok = (self.kernel_size == (3, 3) and self.stride == (1, 1) and self.dilation == (1, 1)
                       and self.group == 1 and same_size and in_channels >= MIN_IN_CHANNELS)
        library = aot.library_for_cell(_LIBRARY) if geometry_ok else None
        self.use_cpu_kernel = library is not None
        self.library = library
        self.tile = TILE
        if self.use_cpu_kernel:
            self.filter_transform, self.input_transform, self.output_transform = _custom_ops(library, TILE)
            self.batch_matmul = ops.BatchMatMul()

    def fuse_for_inference(self) -> bool:
        """Transform and pack the filters for the one-op inference kernel (CPU, float32, output
        channels a multiple of 16, bias and activation not moved to the next layer). Call once
        the weights are final: later changes to them are not seen in inference. Returns whether
        the kernel will be used."""
        if (not self.use_cpu_kernel or self.out_channels % INFERENCE_PANEL
                or self.bias_and_activation_moved or self.weight.dtype != ms.float32):
            return False
        filter_transform = _custom_ops(self.library, INFERENCE_TILE)[0]
        u = filter_transform(self.weight).asnumpy()  # (points, K, C)
        points, k, c = u.shape
        packed = u.reshape(points, k // INFERENCE_PANEL, INFERENCE_PANEL, c).transpose(1, 0, 3, 2)
        suffix = ACTIVATIONS[self.activation].kernel_suffix
        self.use_inference_kernel(self.library, f"WinogradConvF{INFERENCE_TILE}{suffix}", packed, "winograd")
        return True

    def construct(self, x):
        n, _, h, w = x.shape
        on_kernel = self.use_cpu_kernel and x.dtype == ms.float32 and self.weight.dtype == ms.float32
        many_tiles = n * _tiles(h, self.tile) * _tiles(w, self.tile) >= MIN_TILES
        if on_kernel and many_tiles:
            return self.add_bias_and_activate(self.winograd(x))
        if on_kernel and self.inference_weight is not None and not self.training:
            return self.inference_conv(x, self.inference_weight, self.inference_bias)
        return self.add_bias_and_activate(self.conv2d(x, self.weight))

    def winograd(self, x):
        """The convolution of x with self.weight, computed as described in the module docstring."""
        n, _, h, w = x.shape
        points = (self.tile + 2) ** 2
        rows, cols = _tiles(h, self.tile), _tiles(w, self.tile)
        m = self.batch_matmul(self.filter_transform(self.weight), self.input_transform(x))
        y = self.output_transform(m.reshape(points, self.out_channels, n, rows, cols))
        if rows * self.tile != h or cols * self.tile != w:
            y = y[:, :, :h, :w]
        return y
