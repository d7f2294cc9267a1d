"""One training step: loss scaling, gradient clipping and data-parallel gradient reduction.

Fixed loss scale works everywhere, including `Model` on CPU. The dynamic scale is kept in
Parameters and updated in the graph with `ms.amp.all_finite`, which also works on CPU, where
MindSpore's own overflow-status ops do not.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops
from mindspore.context import ParallelMode
from mindspore.parallel._utils import _get_device_num, _get_gradients_mean, _get_parallel_mode


def clip_by_global_norm(grads: tuple, clip_norm: float, flat_dot: bool = False) -> tuple:
    """`ops.clip_by_global_norm`; with flat_dot, each square sum is taken as a dot product of
    the flattened gradient with itself.

    On CPU, MindSpore's ReduceSum over all axes of a 4-D tensor is slow (16 ms for a 512x512x3x3
    convolution's gradient, against 3 ms for the dot product; squares and sums were 48 ms of a
    profiled 0.78 s CRNN step). Elsewhere the dot product would run in reduced precision on the
    matrix units, so flat_dot is for CPU only.
    """
    if not flat_dot:
        return ops.clip_by_global_norm(grads, clip_norm)
    squares = []
    for g in grads:
        v = g.astype(ms.float32).reshape(1, -1)
        squares.append(ops.matmul(v, v.T).reshape(()))
    norm = ops.sqrt(ops.addn(squares))
    factor = clip_norm / ops.maximum(norm, clip_norm)
    return tuple(g * factor.astype(g.dtype) for g in grads)


_scale_grad = ops.MultitypeFuncGraph("scale_grad")


@_scale_grad.register("Tensor", "Tensor")
def _scale_one(scale, grad):
    return grad * ops.cast(scale, grad.dtype)


class TrainStep(nn.Cell):
    """Wraps a network that returns its loss; one call = forward, backward, update.

    loss_scale: initial (dynamic) or constant (fixed) scale; 1 disables scaling.
    dynamic: halve the scale and skip the update on overflow; double it after scale_window
    finite steps. clip_norm > 0 clips gradients by global norm.
    """

    def __init__(self, network: nn.Cell, optimizer: nn.Optimizer, loss_scale: float = 1.0,
                 dynamic: bool = False, clip_norm: float = 0.0, scale_window: int = 1000):
        super().__init__(auto_prefix=False)
        self.network = network
        self.network.set_grad()
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.hyper_map = ops.HyperMap()
        self.dynamic = dynamic
        # Unscaling is one Mul per parameter: at batch 2 on CPU op launches cost as much as
        # the arithmetic, so an unscaled step (fixed scale 1) skips it.
        self.scaled = dynamic or float(loss_scale) != 1.0
        self.clip_norm = float(clip_norm)
        self.flat_dot = ms.get_context("device_target") == "CPU"
        self.scale_window = scale_window
        self.loss_scale = ms.Parameter(ms.Tensor(float(loss_scale), ms.float32), name="loss_scale",
                                       requires_grad=False)
        self.good_steps = ms.Parameter(ms.Tensor(0, ms.int32), name="loss_scale_good_steps", requires_grad=False)
        self.reducer_flag = _get_parallel_mode() in (ParallelMode.DATA_PARALLEL, ParallelMode.HYBRID_PARALLEL)
        self.grad_reducer = ops.identity
        if self.reducer_flag:
            self.grad_reducer = nn.DistributedGradReducer(self.weights, _get_gradients_mean(), _get_device_num())

    def construct(self, *inputs):
        loss = self.network(*inputs)
        scale = self.loss_scale * 1.0
        sens = ops.fill(loss.dtype, loss.shape, 1.0)
        if self.scaled:
            sens = sens * ops.cast(scale, loss.dtype)
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.grad_reducer(grads)
        if self.scaled:
            grads = self.hyper_map(ops.partial(_scale_grad, 1.0 / scale), grads)
        if self.clip_norm > 0:
            grads = clip_by_global_norm(grads, self.clip_norm, self.flat_dot)
        if self.dynamic:
            finite = ms.amp.all_finite(grads)
            if finite:
                loss = ops.depend(loss, self.optimizer(grads))
                grow = self.good_steps + 1 >= self.scale_window
                loss = ops.depend(loss, ops.assign(self.good_steps, ops.select(grow, 0, self.good_steps + 1)))
                loss = ops.depend(loss, ops.assign(self.loss_scale, ops.select(grow, scale * 2.0, scale)))
            else:
                loss = ops.depend(loss, ops.assign(self.good_steps, ops.zeros((), ms.int32)))
                loss = ops.depend(loss, ops.assign(self.loss_scale, ops.maximum(scale / 2.0, 1.0)))
        else:
            loss = ops.depend(loss, self.optimizer(grads))
        return loss
