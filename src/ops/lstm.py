"""LSTM with a fast CPU path for the recurrence.

MindSpore's CPU LSTM and LSTMGrad took three quarters of CRNN's inference time at batch 1 and
a quarter of its training step. `LSTM` computes every step's input projection as one matrix
product (MindSpore's MatMul) and runs the sequential part, the small per-step product with
W_hh and the gates, in ``kernels/lstm.cc``, both directions at once on separate threads. The
backward pass is the kernel's back-propagation through time for the gate gradients, then
matrix products for the weight gradients. For inference, `fuse_for_inference` packs the input
weights once, and the kernel computes the input projections too.

It is ``nn.LSTM`` (same arguments, parameters and checkpoints) wherever the kernel does not
apply: Ascend and GPU, exported graphs, several layers, batch-first input, given initial states
or sequence lengths, no bias, float16.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from . import aot

_LIBRARY = "lstm"
_PANEL = 16  # output columns per packed weight strip (kPanel in kernels/lstm.cc)


_MATMUL_TA = ops.MatMul(transpose_a=True)


def _weight_gradient(d_gates, h, direction: int):
    """dW_hh of one direction: its gate gradients (T,B,4H) times the state each step started
    from, which is the previous step's output in the direction of travel (zero at the start)."""
    t, b, four_h = d_gates.shape
    hidden = four_h // 4
    h_d = h[:, :, direction * hidden:(direction + 1) * hidden]
    zeros = ops.zeros((1, b, hidden), h.dtype)
    h_prev = ops.concat((zeros, h_d[:-1]), 0) if direction == 0 else ops.concat((h_d[1:], zeros), 0)
    return _MATMUL_TA(d_gates.reshape(t * b, four_h), h_prev.reshape(t * b, hidden))


def _custom_ops(library: str, directions: int) -> ops.Custom:
    """Forward Custom op (gates_in (T,B,4H), W_hh (4H,H)) per direction -> (h, c, activated
    gates), with its bprop."""
    backward = ops.Custom(f"{library}:LstmBackward",
                          out_shape=lambda dh, dc, c, act, *w: tuple([dh[0], dh[1], wd[0]] for wd in w),
                          out_dtype=lambda dh, dc, c, act, *w: (dh,) * len(w), func_type="aot")

    if directions == 1:
        def bprop(gates_in, w, out, dout):
            h, c, act = out
            (d_gates,) = backward(dout[0], dout[1], c, act, w)
            return d_gates, _weight_gradient(d_gates, h, 0)
    else:
        def bprop(gates_in, w, gates_in_reverse, w_reverse, out, dout):
            h, c, act = out
            d_gates, d_gates_reverse = backward(dout[0], dout[1], c, act, w, w_reverse)
            return (d_gates, _weight_gradient(d_gates, h, 0),
                    d_gates_reverse, _weight_gradient(d_gates_reverse, h, 1))

    def out_shape(gates, w, *reverse):
        t, b, four_h = gates
        return [t, b, directions * w[1]], [t, b, directions * w[1]], [t, b, directions * four_h]

    return ops.Custom(f"{library}:LstmForward", out_shape=out_shape,
                      out_dtype=lambda gates, *rest: (gates, gates, gates), func_type="aot", bprop=bprop)


class LSTM(nn.LSTM):
    """``nn.LSTM`` whose single-layer, time-major form runs on the CPU kernel."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, has_bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__(input_size, hidden_size, num_layers, has_bias, batch_first, dropout, bidirectional)
        library = aot.library_for_cell(_LIBRARY) if num_layers == 1 and has_bias and not batch_first else None
        self.use_cpu_kernel = library is not None
        self.directions = 2 if bidirectional else 1
        self.library = library
        if self.use_cpu_kernel:
            self.recurrence = _custom_ops(library, self.directions)
            self.project = ops.MatMul(transpose_b=True)
        # Set by fuse_for_inference.
        self.input_panels = None

    def fuse_for_inference(self) -> None:
        """Pack the directions' input weights side by side for the inference kernel, which then
        computes the input projections itself (called by fold_batchnorm once the weights are
        final: later changes to them are not seen in inference)."""
        gates = self.directions * 4 * self.hidden_size
        if not self.use_cpu_kernel or self.w_ih_list[0].dtype != ms.float32 or gates % _PANEL:
            return
        w_ih = np.concatenate([w.asnumpy() for w in self.w_ih_list])  # (D*4H, K)
        panels = w_ih.reshape(gates // _PANEL, _PANEL, -1).transpose(0, 2, 1)  # strips of W_ih^T
        self.input_panels = ms.Parameter(ms.Tensor(np.ascontiguousarray(panels)),
                                         name=f"{self.w_ih_list[0].name}.panels", requires_grad=False)
        self.input_bias = ms.Parameter(
            ms.Tensor(np.concatenate([bi.asnumpy() + bh.asnumpy() for bi, bh in zip(self.b_ih_list, self.b_hh_list)])),
            name=f"{self.b_ih_list[0].name}.joined", requires_grad=False)
        self.projected_recurrence = ops.Custom(
            f"{self.library}:LstmForwardProjected", func_type="aot",
            out_shape=lambda x, p, b, *w: ([x[0], x[1], b[0] // 4], [x[0], x[1], b[0] // 4], [x[0], x[1], b[0]]),
            out_dtype=lambda x, *rest: (x, x, x))

    def construct(self, x, hx=None, seq_length=None):
        if not self.use_cpu_kernel or hx is not None or seq_length is not None or x.dtype != ms.float32:
            return super().construct(x, hx, seq_length)
        t, b, _ = x.shape
        hidden = self.hidden_size
        if self.input_panels is not None and not self.training:
            h, c, _ = self.projected_recurrence(x, self.input_panels, self.input_bias, *self.w_hh_list)
        else:
            x2d = x.reshape(t * b, -1)
            inputs = ()
            for d in range(self.directions):
                gates_in = self.project(x2d, self.w_ih_list[d]) + (self.b_ih_list[d] + self.b_hh_list[d])
                inputs += (gates_in.reshape(t, b, -1), self.w_hh_list[d])
            h, c, _ = self.recurrence(*inputs)
        # Final states as nn.LSTM returns them: (directions, B, H), the reverse direction's
        # last step being t = 0.
        last = (t - 1, 0)
        h_n = ops.stack([h[last[d], :, d * hidden:(d + 1) * hidden] for d in range(self.directions)])
        c_n = ops.stack([c[last[d], :, d * hidden:(d + 1) * hidden] for d in range(self.directions)])
        return h, (h_n, c_n)
