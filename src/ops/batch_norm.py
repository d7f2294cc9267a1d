"""BatchNorm2d with a fast CPU training path.

MindSpore's CPU BatchNorm and BatchNormGrad use oneDNN's plain-layout batch normalisation
(``ncsp_bnorm``); in SSD300-MobileNetV2 they took about a third of a training step at batch 8.
`BatchNorm2d` normalises with ``kernels/batch_norm.cc`` in training mode on CPU and keeps
MindSpore's BatchNorm for inference, on Ascend and GPU, and in exported graphs.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from . import aot

_LIBRARY = "batch_norm"


def _custom_ops(library: str) -> ops.Custom:
    """Forward Custom op (x, gamma, beta, eps) -> (y, batch mean, 1/sqrt(batch var + eps)),
    with its bprop."""
    backward = ops.Custom(f"{library}:BatchNormTrainBackward",
                          out_shape=lambda dy, x, gamma, mean, invstd: (x, gamma, gamma),
                          out_dtype=lambda dy, x, gamma, mean, invstd: (x, x, x), func_type="aot")

    def bprop(x, gamma, beta, eps, out, dout):
        # dout[1:] (mean, invstd) only feed the moving statistics, which are not differentiated.
        dx, dgamma, dbeta = backward(dout[0], x, gamma, out[1], out[2])
        return dx, dgamma, dbeta, ops.zeros_like(eps)

    return ops.Custom(f"{library}:BatchNormTrainForward",
                      out_shape=lambda x, gamma, beta, eps: (x, gamma, gamma),
                      out_dtype=lambda x, gamma, beta, eps: (x, x, x), func_type="aot", bprop=bprop)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same arguments, parameters, checkpoints and moving-statistics rule:
    the biased batch variance normalises, the unbiased one updates the moving variance, as
    MindSpore's CPU BatchNorm does) whose training-mode forward and backward run through the
    custom CPU kernel."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.9, affine: bool = True,
                 gamma_init="ones", beta_init="zeros", moving_mean_init="zeros", moving_var_init="ones"):
        super().__init__(num_features, eps, momentum, affine, gamma_init, beta_init, moving_mean_init,
                         moving_var_init)
        library = aot.library_for_cell(_LIBRARY)
        self.use_cpu_kernel = library is not None
        if self.use_cpu_kernel:
            self.train_forward = _custom_ops(library)
            self.eps_tensor = ms.Tensor(np.array([eps], np.float32))

    def construct(self, x):
        if not self.training:
            return self.bn_infer(x, self.gamma, self.beta, self.moving_mean, self.moving_variance)[0]
        # The kernel is float32 only (mixed precision may hand BatchNorm float16).
        if not self.use_cpu_kernel or x.dtype != ms.float32 or self.gamma.dtype != ms.float32:
            return self.bn_train(x, self.gamma, self.beta, self.moving_mean, self.moving_variance)[0]
        y, mean, invstd = self.train_forward(x, self.gamma, self.beta, self.eps_tensor)
        count = x.shape[0] * x.shape[2] * x.shape[3]
        variance = (1.0 / (invstd * invstd) - self.eps) * (count / max(count - 1, 1))
        # self.momentum is the weight of the new batch (1 - the constructor's momentum).
        self.assign_sub_mean(self.moving_mean, (self.moving_mean - ops.stop_gradient(mean)) * self.momentum)
        self.assign_sub_var(self.moving_variance,
                            (self.moving_variance - ops.stop_gradient(variance)) * self.momentum)
        return y
