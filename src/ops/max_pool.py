"""Non-overlapping max pooling with a fast CPU path.

MindSpore's CPU MaxPoolGrad was ~12% of a CRNN training step. On CPU, `MaxPool2d` pools and
routes gradients with ``kernels/max_pool.cc``; elsewhere and in exported graphs it is
``nn.MaxPool2d``. Forward values and gradients are MaxPool's: each window's gradient goes to
its first maximum.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from . import aot

_LIBRARY = "max_pool"


def _custom_ops(library: str, kh: int, kw: int) -> ops.Custom:
    """Forward Custom op (x, kernel) -> pooled x, with its bprop."""
    backward = ops.Custom(f"{library}:MaxPoolBackward", out_shape=lambda x, dy, kernel: x,
                          out_dtype=lambda x, dy, kernel: x, func_type="aot")

    def bprop(x, kernel, out, dout):
        return backward(x, dout, kernel), ops.zeros_like(kernel)

    forward = ops.Custom(f"{library}:MaxPoolForward",
                         out_shape=lambda x, kernel: [x[0], x[1], x[2] // kh, x[3] // kw],
                         out_dtype=lambda x, kernel: x, func_type="aot", bprop=bprop)
    # PyNative caches a Custom op's inferred shape by its attributes: without the kernel among
    # them, a (2, 1) pool would reuse a (2, 2) pool's output shape.
    forward.add_prim_attr("pool_kernel", (kh, kw))
    return forward


class MaxPool2d(nn.Cell):
    """Max pooling with stride equal to the kernel and no padding ('valid': rows and columns
    that do not fill a window are dropped)."""

    def __init__(self, kernel_size: tuple[int, int]):
        super().__init__()
        self.kh, self.kw = int(kernel_size[0]), int(kernel_size[1])
        self.pool = nn.MaxPool2d((self.kh, self.kw), (self.kh, self.kw), pad_mode="valid")
        library = aot.library_for_cell(_LIBRARY)
        self.use_cpu_kernel = library is not None
        if self.use_cpu_kernel:
            self.cpu_pool = _custom_ops(library, self.kh, self.kw)
            self.kernel = ms.Tensor(np.array([self.kh, self.kw], np.int32))

    def construct(self, x):
        if self.use_cpu_kernel and x.dtype == ms.float32:  # the kernel is float32 only
            return self.cpu_pool(x, self.kernel)
        return self.pool(x)
