"""Max pooling with a cheaper backward pass on CPU."""
from __future__ import annotations

from mindspore import nn, ops


class MaxPoolAfterReLU(nn.Cell):
    """Non-overlapping max pooling (kernel = stride, sizes divisible by the kernel) whose
    gradient is computed with three elementwise ops instead of MaxPoolGrad, which is several
    times slower on CPU (it was ~12% of a CRNN training step).

    The gradient goes to every input equal to its window's maximum. That is MaxPool's
    gradient whenever the maximum is unique; for a ReLU output, the only practical ties are
    zeros, whose gradient the ReLU's own backward discards. Use it only after a ReLU.
    """

    def __init__(self, kernel_size: tuple[int, int]):
        super().__init__()
        self.kh, self.kw = int(kernel_size[0]), int(kernel_size[1])
        self.pool = nn.MaxPool2d((self.kh, self.kw), (self.kh, self.kw), pad_mode="valid")

    def construct(self, x):
        return self.pool(x)

    def _spread(self, y, b, c, h, w):
        """Each pooled value copied back over its window."""
        y = y.reshape(b, c, h // self.kh, 1, w // self.kw, 1)
        return ops.broadcast_to(y, (b, c, h // self.kh, self.kh, w // self.kw, self.kw)).reshape(b, c, h, w)

    def bprop(self, x, out, dout):
        b, c, h, w = x.shape
        grad = self._spread(dout, b, c, h, w)
        return (ops.select(x == self._spread(out, b, c, h, w), grad, ops.zeros_like(grad)),)
