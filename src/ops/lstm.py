"""LSTM with a fast CPU path for the recurrence.

MindSpore's CPU LSTM and LSTMGrad took three quarters of CRNN's inference time at batch 1 and
a quarter of its training step. `LSTM` computes every step's input projection as one matrix
product (MindSpore's MatMul) and runs the sequential part, the small per-step product with
W_hh and the gates, in ``kernels/lstm.cc``, both directions at once on separate threads. The
backward pass is the kernel's back-propagation through time for the gate gradients, then
matrix products for the weight gradients.

It is ``nn.LSTM`` (same arguments, parameters and checkpoints) wherever the kernel does not
apply: Ascend and GPU, exported graphs, several layers, batch-first input, given initial states
or sequence lengths, no bias, float16.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from . import aot

_LIBRARY = "lstm"


def _custom_ops(library: str) -> ops.Custom:
    """Forward Custom op (gates_in (T,B,D*4H), W_hh (D,4H,H)) -> (h, c, activated gates), with
    its bprop."""
    backward = ops.Custom(f"{library}:LstmBackward", out_shape=lambda dh, dc, c, act, w: act,
                          out_dtype=lambda dh, dc, c, act, w: dh, func_type="aot")
    matmul_ta = ops.MatMul(transpose_a=True)

    def bprop(gates_in, w, out, dout):
        h, c, act = out
        d_gates = backward(dout[0], dout[1], c, act, w)
        t, b, _ = h.shape
        directions, four_h, hidden = w.shape
        zeros = ops.zeros((1, b, hidden), h.dtype)
        grads_w = []
        for d in range(directions):
            h_d = h[:, :, d * hidden:(d + 1) * hidden]
            # The state each step started from: the previous step's in the direction of travel.
            h_prev = ops.concat((zeros, h_d[:-1]), 0) if d == 0 else ops.concat((h_d[1:], zeros), 0)
            d_gates_d = d_gates[:, :, d * four_h:(d + 1) * four_h].reshape(t * b, four_h)
            grads_w.append(matmul_ta(d_gates_d, h_prev.reshape(t * b, hidden)))
        return d_gates, ops.stack(grads_w)

    return ops.Custom(f"{library}:LstmForward",
                      out_shape=lambda g, w: ([g[0], g[1], w[0] * w[2]], [g[0], g[1], w[0] * w[2]], g),
                      out_dtype=lambda g, w: (g, g, g), func_type="aot", bprop=bprop)


class LSTM(nn.LSTM):
    """``nn.LSTM`` whose single-layer, time-major form runs on the CPU kernel."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, has_bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__(input_size, hidden_size, num_layers, has_bias, batch_first, dropout, bidirectional)
        library = aot.library_for_cell(_LIBRARY) if num_layers == 1 and has_bias and not batch_first else None
        self.use_cpu_kernel = library is not None
        self.directions = 2 if bidirectional else 1
        if self.use_cpu_kernel:
            self.recurrence = _custom_ops(library)

    def construct(self, x, hx=None, seq_length=None):
        if not self.use_cpu_kernel or hx is not None or seq_length is not None or x.dtype != ms.float32:
            return super().construct(x, hx, seq_length)
        t, b, _ = x.shape
        hidden = self.hidden_size
        w_ih = ops.concat([self.w_ih_list[d] for d in range(self.directions)], 0)
        bias = ops.concat([self.b_ih_list[d] + self.b_hh_list[d] for d in range(self.directions)], 0)
        gates_in = (ops.matmul(x.reshape(t * b, -1), w_ih.T) + bias).reshape(t, b, -1)
        w_hh = ops.stack([self.w_hh_list[d] for d in range(self.directions)])
        h, c, _ = self.recurrence(gates_in, w_hh)
        # Final states as nn.LSTM returns them: (directions, B, H), the reverse direction's
        # last step being t = 0.
        last = (t - 1, 0)
        h_n = ops.stack([h[last[d], :, d * hidden:(d + 1) * hidden] for d in range(self.directions)])
        c_n = ops.stack([c[last[d], :, d * hidden:(d + 1) * hidden] for d in range(self.directions)])
        return h, (h_n, c_n)
