"""BatchNorm2d with a fast CPU training path and an optional fused activation.

MindSpore's CPU BatchNorm and BatchNormGrad use oneDNN's plain-layout batch normalisation
(``ncsp_bnorm``); in SSD300-MobileNetV2 they took about a third of a training step at batch 8.
`BatchNorm2d` normalises with ``kernels/batch_norm.cc`` in training mode on CPU and keeps
MindSpore's BatchNorm for inference, on Ascend and GPU, and in exported graphs.

``activation="relu"`` or ``"relu6"`` applies that activation after the normalisation. On the
CPU kernel it costs nothing extra: the clamp and its gradient run inside the normalisation's
own loops, where a separate ReLU6 and ReLU6Grad were two more passes over every feature map.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from . import aot
from .activation import ACTIVATIONS, lookup

_LIBRARY = "batch_norm"


def _custom_ops(library: str) -> ops.Custom:
    """Forward Custom op (x, gamma, beta, moving mean, moving var, hyper) -> (y, batch mean,
    1/sqrt(batch var + eps), new moving mean, new moving var), with its bprop."""
    backward = ops.Custom(f"{library}:BatchNormTrainBackward",
                          out_shape=lambda dy, x, gamma, beta, mean, invstd, hyper: (x, gamma, gamma),
                          out_dtype=lambda dy, x, gamma, beta, mean, invstd, hyper: (x, x, x), func_type="aot")

    def bprop(x, gamma, beta, moving_mean, moving_var, hyper, out, dout):
        # dout[1:] (batch and moving statistics) are not differentiated.
        dx, dgamma, dbeta = backward(dout[0], x, gamma, beta, out[1], out[2], hyper)
        return dx, dgamma, dbeta, ops.zeros_like(moving_mean), ops.zeros_like(moving_var), ops.zeros_like(hyper)

    return ops.Custom(f"{library}:BatchNormTrainForward",
                      out_shape=lambda x, gamma, beta, mm, mv, hyper: (x, gamma, gamma, gamma, gamma),
                      out_dtype=lambda x, gamma, beta, mm, mv, hyper: (x, x, x, x, x), func_type="aot", bprop=bprop)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same arguments, parameters, checkpoints and moving-statistics rule:
    the biased batch variance normalises, the unbiased one updates the moving variance, as
    MindSpore's CPU BatchNorm does) whose training-mode forward and backward run through the
    custom CPU kernel, followed by `activation` (None, "relu" or "relu6")."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.9, affine: bool = True,
                 gamma_init="ones", beta_init="zeros", moving_mean_init="zeros", moving_var_init="ones",
                 activation: str | None = None):
        super().__init__(num_features, eps, momentum, affine, gamma_init, beta_init, moving_mean_init,
                         moving_var_init)
        fused = lookup(activation, "BatchNorm2d")
        self.activation = activation
        clamp, self.act = fused.clamp, fused.op
        library = aot.library_for_cell(_LIBRARY)
        self.use_cpu_kernel = library is not None
        if self.use_cpu_kernel:
            self.train_forward = _custom_ops(library)
            # self.momentum is the weight of the new batch (1 - the constructor's momentum).
            self.hyper = ms.Tensor(np.array([eps, self.momentum, *clamp], np.float32))

    def activation_cell(self) -> nn.Cell:
        """The activation alone, for when the normalisation is folded into a conv."""
        return ACTIVATIONS[self.activation].cell()

    def construct(self, x):
        if not self.training:
            return self.act(self.bn_infer(x, self.gamma, self.beta, self.moving_mean, self.moving_variance)[0])
        # The kernel is float32 only (mixed precision may hand BatchNorm float16).
        if not self.use_cpu_kernel or x.dtype != ms.float32 or self.gamma.dtype != ms.float32:
            return self.act(self.bn_train(x, self.gamma, self.beta, self.moving_mean, self.moving_variance)[0])
        y, _, _, moving_mean, moving_var = self.train_forward(x, self.gamma, self.beta, self.moving_mean,
                                                              self.moving_variance, self.hyper)
        ops.assign(self.moving_mean, moving_mean)
        ops.assign(self.moving_variance, moving_var)
        return y
