"""The custom CPU kernels (src/ops): same results and gradients as MindSpore's operators, and
a clean fallback whenever they cannot or must not be used."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from conftest import ROOT
from src.engine.inference import fold_batchnorm
from src.ops import aot
from src.ops.aot import standard_operators
from src.ops.batch_norm import BatchNorm2d
from src.ops.conv import ActivatedConv2d
from src.ops.depthwise import DepthwiseConv2d
from src.ops.lstm import LSTM
from src.ops.max_pool import MaxPool2d
from src.ops import winograd
from src.ops.winograd import WinogradConv2d


class _WithGrads(nn.Cell):
    """Output, input gradient and parameter gradients for a fixed output cotangent."""

    def __init__(self, net: nn.Cell):
        super().__init__()
        self.net = net
        self.params = ms.ParameterTuple(net.trainable_params())
        self.grad = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)

    def construct(self, x, sens):
        return self.net(x), self.grad(self.net, self.params)(x, sens)


def _run(net: nn.Cell, x: np.ndarray):
    out = net(ms.Tensor(x))
    sens = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    y, (inputs_grad, params_grad) = _WithGrads(net)(ms.Tensor(x), ms.Tensor(sens))
    return y.asnumpy(), inputs_grad[0].asnumpy(), [g.asnumpy() for g in params_grad]


def _reference(conv: nn.Conv2d) -> nn.Conv2d:
    ref = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.pad_mode,
                    conv.padding, conv.dilation, conv.group, has_bias=conv.has_bias)
    ref.weight.set_data(conv.weight.data.copy())
    if conv.has_bias:
        ref.bias.set_data(conv.bias.data.copy())
    return ref


@pytest.mark.parametrize("batch,channels,height,width,kernel,stride,bias,pad_mode", [
    (2, 8, 19, 19, 3, 1, False, "pad"),
    (2, 8, 19, 19, 3, 1, False, "same"),
    # 'same' at stride 2 pads an even side only below / right, an odd side on both.
    (2, 8, 20, 13, 3, 2, False, "same"),
    (2, 8, 13, 20, 3, 2, False, "same"),
    (2, 8, 20, 38, 3, 2, True, "same"),
    (1, 5, 9, 7, 3, 2, True, "same"),
    (3, 4, 11, 6, 5, 1, False, "pad"),     # 5x5 kernel, padding 2
    (2, 3, 12, 10, 5, 2, True, "same"),    # 5x5 kernel off the 3x3 path, even sides at stride 2
    (1, 16, 1, 1, 3, 1, False, "pad"),     # every tap but the centre falls in the padding
    (1, 16, 2, 2, 3, 2, False, "same"),    # SSD's last extra layer: 2x2 -> 1x1
    (2, 24, 40, 37, 3, 2, True, "same"),   # enough work to split over the worker threads
])
def test_depthwise_matches_grouped_conv(batch, channels, height, width, kernel, stride, bias, pad_mode):
    conv = DepthwiseConv2d(channels, channels, kernel, stride, pad_mode=pad_mode,
                           padding=kernel // 2 if pad_mode == "pad" else 0,
                           group=channels, has_bias=bias, weight_init="normal",
                           bias_init="normal" if bias else None)
    assert conv.use_cpu_kernel, "the CPU kernel should build here (g++ is on the CI machine)"
    x = np.random.default_rng(1).standard_normal((batch, channels, height, width)).astype(np.float32)
    got, want = _run(conv, x), _run(_reference(conv), x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
    for g, w in zip(got[2], want[2]):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.fixture
def graph_mode():
    """Graph mode for one test, as training compiles the network; PyNative again afterwards."""
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=mode)


def test_depthwise_in_graph_mode_matches_grouped_conv(graph_mode):
    """The Custom op and its bprop must work in a compiled graph too."""
    conv = DepthwiseConv2d(8, 8, 3, 2, pad_mode="same", group=8, weight_init="normal")
    x = np.random.default_rng(5).standard_normal((2, 8, 15, 12)).astype(np.float32)
    got, want = _run(conv, x), _run(_reference(conv), x)
    for g, w in zip((got[0], got[1], *got[2]), (want[0], want[1], *want[2])):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_unsupported_geometry_and_export_use_the_standard_operator():
    x = np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)
    dilated = DepthwiseConv2d(4, 4, 3, 1, pad_mode="pad", padding=2, dilation=2, group=4, weight_init="normal")
    # Padding 1 on every side at stride 2 is not 'same' on an even side: the kernel does only 'same'.
    symmetric_stride_2 = DepthwiseConv2d(4, 4, 3, 2, pad_mode="pad", padding=1, group=4, weight_init="normal")
    with standard_operators():
        exported = DepthwiseConv2d(4, 4, 3, 1, pad_mode="pad", padding=1, group=4, weight_init="normal")
    after = DepthwiseConv2d(4, 4, 3, 1, pad_mode="pad", padding=1, group=4)
    assert not dilated.use_cpu_kernel and not symmetric_stride_2.use_cpu_kernel and not exported.use_cpu_kernel
    assert after.use_cpu_kernel, "standard_operators() must restore the default when it exits"
    for conv in (dilated, symmetric_stride_2, exported):
        np.testing.assert_allclose(conv(ms.Tensor(x)).asnumpy(), _reference(conv)(ms.Tensor(x)).asnumpy(),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="in_channels == out_channels == group"):
        DepthwiseConv2d(4, 8, 3, group=4)


def test_batchnorm_folding_keeps_the_cpu_kernel():
    cell = nn.SequentialCell([DepthwiseConv2d(6, 6, 3, 2, pad_mode="same", group=6, weight_init="normal"),
                              nn.BatchNorm2d(6)])
    bn = cell[1]
    rng = np.random.default_rng(4)
    bn.moving_mean.set_data(ms.Tensor(rng.standard_normal(6).astype(np.float32)))
    bn.moving_variance.set_data(ms.Tensor(rng.uniform(0.5, 2, 6).astype(np.float32)))
    cell.set_train(False)
    x = ms.Tensor(rng.standard_normal((2, 6, 9, 9)).astype(np.float32))
    before = cell(x).asnumpy()
    assert fold_batchnorm(cell) == 1
    assert isinstance(cell[0], DepthwiseConv2d) and cell[0].use_cpu_kernel and cell[0].has_bias
    np.testing.assert_allclose(cell(x).asnumpy(), before, rtol=1e-4, atol=1e-4)


def _assert_close_to_reference(got, want, tolerance=1e-4):
    """Winograd reorders the sums: float32 rounding differs from Conv2D's by ~1e-6 of the scale."""
    for g, w in zip([got[0], got[1], *got[2]], [want[0], want[1], *want[2]]):
        np.testing.assert_allclose(g, w, rtol=tolerance, atol=tolerance * np.abs(w).max())


@pytest.fixture
def winograd_calls(monkeypatch):
    """Counts the calls of the Winograd path, which needs PyNative mode (a compiled graph runs
    no Python)."""
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    calls = []
    original = WinogradConv2d.winograd

    def counted(self, x):
        calls.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(WinogradConv2d, "winograd", counted)
    yield calls
    ms.set_context(mode=mode)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("batch,in_channels,out_channels,height,width,pad_mode,bias", [
    (2, 16, 8, 9, 13, "same", False),   # sizes that are not whole tiles: the output is cut
    (1, 16, 24, 8, 8, "pad", True),     # whole tiles, explicit padding 1, bias
    (3, 20, 4, 1, 1, "same", False),    # a single pixel: every tap but the centre is padding
    (1, 16, 8, 4, 25, "same", False),   # CRNN's deepest feature map
])
def test_winograd_matches_conv2d(tile, batch, in_channels, out_channels, height, width, pad_mode, bias,
                                 winograd_calls, monkeypatch):
    monkeypatch.setattr(winograd, "TILE", tile)
    monkeypatch.setattr(winograd, "MIN_TILES", 1)  # Winograd on every size, however small
    conv = WinogradConv2d(in_channels, out_channels, 3, pad_mode=pad_mode, padding=1 if pad_mode == "pad" else 0,
                          has_bias=bias, weight_init="normal", bias_init="normal" if bias else None)
    assert conv.use_cpu_kernel and conv.tile == tile
    x = np.random.default_rng(5).standard_normal((batch, in_channels, height, width)).astype(np.float32)
    got, want = _run(conv, x), _run(_reference(conv), x)
    assert winograd_calls, "the Winograd path was not taken"
    _assert_close_to_reference(got, want)


def test_winograd_in_graph_mode_matches_conv2d(graph_mode):
    conv = WinogradConv2d(32, 16, 3, weight_init="normal")
    x = np.random.default_rng(6).standard_normal((10, 32, 8, 25)).astype(np.float32)  # 140 tiles of 4x4
    got, want = _run(conv, x), _run(_reference(conv), x)
    # A compiled graph runs no Python to count calls; Winograd's rounding shows it ran instead.
    assert not np.array_equal(got[0], want[0]), "the Winograd path was not compiled into the graph"
    _assert_close_to_reference(got, want)


def test_winograd_falls_back_where_the_direct_convolution_is_right(winograd_calls):
    geometry = {"strided": WinogradConv2d(16, 8, 3, stride=2), "5x5": WinogradConv2d(16, 8, 5),
                "valid": WinogradConv2d(16, 8, 3, pad_mode="valid"), "grouped": WinogradConv2d(16, 16, 3, group=2),
                "thin input": WinogradConv2d(winograd.MIN_IN_CHANNELS - 1, 8, 3)}
    for name, conv in geometry.items():
        assert not conv.use_cpu_kernel, name
    with standard_operators():
        exported = WinogradConv2d(16, 8, 3)
    assert not exported.use_cpu_kernel
    small = WinogradConv2d(16, 8, 3, weight_init="normal")
    assert small.use_cpu_kernel
    x = np.random.default_rng(7).standard_normal((1, 16, 4, 8)).astype(np.float32)  # 2 tiles < MIN_TILES
    np.testing.assert_allclose(small(ms.Tensor(x)).asnumpy(), _reference(small)(ms.Tensor(x)).asnumpy(),
                               rtol=1e-5, atol=1e-5)
    assert not winograd_calls, "a batch with few tiles should use the direct convolution"


@pytest.mark.parametrize("batch,in_channels,out_channels,height,width,pad_mode,bias,activation", [
    (1, 16, 16, 4, 25, "same", True, "relu"),     # CRNN's deepest map: 26 tiles, a part-filled last block
    (2, 24, 32, 9, 13, "pad", False, None),       # sizes that are not whole tiles; two panels, two chunks
    (3, 16, 16, 1, 1, "same", True, "relu6"),     # a single pixel: every tap but the centre is padding
])
def test_winograd_inference_kernel_matches_conv2d(batch, in_channels, out_channels, height, width, pad_mode, bias,
                                                  activation, graph_mode):
    """After fuse_for_inference, the one-op kernel (transformed filters, bias and activation in
    one pass) gives Conv2D's result below MIN_TILES, where training takes the direct convolution."""
    rng = np.random.default_rng(10)
    conv = WinogradConv2d(in_channels, out_channels, 3, pad_mode=pad_mode, padding=1 if pad_mode == "pad" else 0,
                          has_bias=bias, activation=activation,
                          weight_init=ms.Tensor(rng.normal(0, 1, (out_channels, in_channels, 3, 3)).astype(np.float32)),
                          bias_init=ms.Tensor(rng.uniform(-1, 3, out_channels).astype(np.float32)) if bias else None)
    x = ms.Tensor(rng.standard_normal((batch, in_channels, height, width)).astype(np.float32))
    assert batch * -(-height // conv.tile) * -(-width // conv.tile) < winograd.MIN_TILES
    reference = nn.SequentialCell([_reference(conv), _ACTIVATIONS[activation]()])
    reference.set_train(False)
    want = reference(x).asnumpy()
    assert conv.fuse_for_inference()
    fused = nn.SequentialCell([conv])  # a fresh graph, compiled after the fusion
    fused.set_train(False)
    got = fused(x).asnumpy()
    if activation == "relu6":
        assert (want == 0).any() and (want == 6).any(), "the test data should reach both ends of ReLU6"
    # Winograd's rounding differs from Conv2D's: equal bits would mean the kernel did not run.
    assert not np.array_equal(got, want), "the inference kernel was not compiled into the graph"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_winograd_inference_kernel_is_declined_where_it_does_not_apply():
    """fuse_for_inference keeps the usual path for output channels that are not whole panels of
    16, convs built for export, and convs whose bias and activation moved to the next layer."""
    assert not WinogradConv2d(16, 24, 3).fuse_for_inference()
    with standard_operators():
        assert not WinogradConv2d(16, 16, 3).fuse_for_inference()
    moved = WinogradConv2d(16, 16, 3, has_bias=True, activation="relu")
    moved.bias_and_activation_moved = True
    assert not moved.fuse_for_inference()
    assert moved.inference_weight is None


def test_folded_crnn_runs_the_inference_kernel_and_matches(graph_mode):
    """fold_batchnorm hands CRNN's 3x3 convolutions (all but the first, whose 3 input channels are
    too few for Winograd) to the inference kernel, and the folded network's outputs match."""
    from src.crnn.network import CRNN, CRNNInference
    rng = np.random.default_rng(11)

    def build():
        ms.set_seed(3)
        net = CRNNInference(CRNN(37))
        net.set_train(False)
        return net

    unfolded, folded = build(), build()
    for net in (unfolded, folded):  # BatchNorm statistics that make folding change the weights
        for p in net.get_parameters():
            if "moving_variance" in p.name:
                p.set_data(ms.Tensor(np.random.default_rng(12).uniform(0.5, 2, p.shape).astype(np.float32)))
            elif "moving_mean" in p.name:
                p.set_data(ms.Tensor(np.random.default_rng(13).uniform(-0.2, 0.2, p.shape).astype(np.float32)))
    fold_batchnorm(folded)
    folded.set_train(False)
    fused = [name for name, cell in folded.cells_and_names()
             if isinstance(cell, WinogradConv2d) and cell.inference_weight is not None]
    assert fused == [f"network.vgg.conv{i}.conv" for i in range(2, 7)]
    x = ms.Tensor(rng.uniform(-1, 1, (2, 3, 32, 100)).astype(np.float32))
    np.testing.assert_allclose(folded.network.vgg(x).asnumpy(), unfolded.network.vgg(x).asnumpy(),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(folded(x)[0].asnumpy(), unfolded(x)[0].asnumpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("built_for_export", [False, True])
def test_batchnorm_folding_keeps_the_operators_of_the_conv(built_for_export):
    """Folding must neither drop a kernel nor add one to a network built for export."""
    operators = standard_operators() if built_for_export else contextlib.nullcontext()
    with operators:
        cell = nn.SequentialCell([WinogradConv2d(16, 8, 3, weight_init="normal"), nn.BatchNorm2d(8)])
    cell.set_train(False)
    x = ms.Tensor(np.random.default_rng(8).standard_normal((2, 16, 6, 6)).astype(np.float32))
    before = cell(x).asnumpy()
    assert fold_batchnorm(cell) == 1
    assert isinstance(cell[0], WinogradConv2d) and cell[0].use_cpu_kernel is not built_for_export
    np.testing.assert_allclose(cell(x).asnumpy(), before, rtol=1e-4, atol=1e-4)


_ACTIVATIONS = {None: nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6}


@pytest.mark.parametrize("shape,offset,activation", [((4, 6, 9, 7), 0.0, None), ((3, 5, 1, 1), 0.0, None),
                                                     ((2, 4, 6, 6), 1000.0, None), ((4, 6, 9, 7), 0.0, "relu6"),
                                                     ((3, 5, 4, 3), 0.0, "relu")])
def test_batchnorm_training_matches_mindspore(shape, offset, activation, graph_mode):
    """Output, gradients and moving statistics after two steps, in graph mode as in training,
    against MindSpore's BatchNorm followed by the activation cell; the large offset checks the
    variance does not cancel catastrophically."""
    inputs = [(np.random.default_rng(k).standard_normal(shape) * 2 + offset).astype(np.float32) for k in (7, 8)]
    ours = BatchNorm2d(shape[1], eps=1e-3, momentum=0.97, activation=activation)
    bn = nn.BatchNorm2d(shape[1], eps=1e-3, momentum=0.97)
    ref = nn.SequentialCell([bn, _ACTIVATIONS[activation]()])
    # Scales and shifts large enough that ReLU6 clips at both ends.
    rng = np.random.default_rng(6)
    gamma, beta = rng.uniform(0.5, 5, shape[1]).astype(np.float32), rng.uniform(-1, 4, shape[1]).astype(np.float32)
    for net in (ours, bn):
        net.gamma.set_data(ms.Tensor(gamma))
        net.beta.set_data(ms.Tensor(beta))
    assert ours.use_cpu_kernel
    results = []
    for net, stats in ((ours, ours), (ref, bn)):
        net.set_train(True)
        steps = [_run(net, x) for x in inputs]
        results.append((steps, stats.moving_mean.asnumpy(), stats.moving_variance.asnumpy()))
    (got_steps, got_mean, got_var), (want_steps, want_mean, want_var) = results
    if activation == "relu6":
        y = got_steps[0][0]
        assert (y == 0).any() and (y == 6).any(), "the test data should reach both ends of ReLU6"
    tol = 1e-4 if offset == 0 else 1e-2  # float32 inputs near 1000 carry ~1e-4 absolute error already
    for got, want in zip(got_steps, want_steps):
        np.testing.assert_allclose(got[0], want[0], rtol=tol, atol=tol)
        np.testing.assert_allclose(got[1], want[1], rtol=tol, atol=tol)
        for g, w in zip(got[2], want[2]):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_var, want_var, rtol=1e-4, atol=1e-5)


def test_batchnorm_activation_survives_folding():
    cell = nn.SequentialCell([nn.Conv2d(3, 4, 3, weight_init="normal"),
                              BatchNorm2d(4, gamma_init=ms.Tensor(np.full(4, 50.0, np.float32)), activation="relu6")])
    cell.set_train(False)
    x = ms.Tensor(np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32))
    before = cell(x).asnumpy()
    assert before.min() == 0 and before.max() == 6
    assert fold_batchnorm(cell) == 1
    assert isinstance(cell[1], nn.ReLU6)
    np.testing.assert_allclose(cell(x).asnumpy(), before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="activation"):
        BatchNorm2d(4, activation="gelu")


_FUSING_CONVS = {
    "conv 1x1": lambda: ActivatedConv2d(6, 5, 1, weight_init="normal"),
    "conv 3x3 stride 2": lambda: ActivatedConv2d(6, 5, 3, 2, pad_mode="same", weight_init="normal"),
    "depthwise stride 1": lambda: DepthwiseConv2d(6, 6, 3, 1, pad_mode="pad", padding=1, group=6, weight_init="normal"),
    "depthwise stride 2": lambda: DepthwiseConv2d(6, 6, 3, 2, pad_mode="same", group=6, weight_init="normal"),
    "winograd": lambda: WinogradConv2d(16, 6, 3, weight_init="normal"),
}


@pytest.mark.parametrize("conv_kind", list(_FUSING_CONVS))
@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("built_for_export", [False, True])
def test_folding_moves_the_activation_into_the_conv(conv_kind, activation, built_for_export, graph_mode):
    """The BatchNorm's activation ends up in the folded conv (one kernel pass for bias and
    activation on CPU, the activation op in an exported graph), with the same outputs."""
    operators = standard_operators() if built_for_export else contextlib.nullcontext()
    with operators:
        conv = _FUSING_CONVS[conv_kind]()
        cell = nn.SequentialCell([conv, BatchNorm2d(conv.out_channels, activation=activation)])
    rng = np.random.default_rng(9)
    conv.weight.set_data(ms.Tensor(rng.normal(0, 0.5, conv.weight.shape).astype(np.float32)))
    bn = cell[1]
    # Shifts and scales that push outputs past both ends of ReLU6.
    bn.gamma.set_data(ms.Tensor(rng.uniform(0.5, 4, conv.out_channels).astype(np.float32)))
    bn.beta.set_data(ms.Tensor(rng.uniform(-2, 5, conv.out_channels).astype(np.float32)))
    bn.moving_mean.set_data(ms.Tensor(rng.standard_normal(conv.out_channels).astype(np.float32)))
    bn.moving_variance.set_data(ms.Tensor(rng.uniform(0.5, 2, conv.out_channels).astype(np.float32)))
    x = ms.Tensor(rng.standard_normal((2, conv.in_channels, 16, 16)).astype(np.float32))
    cell.set_train(False)
    before = cell(x).asnumpy()
    assert (before == 0).any() and (before > 6).any() == (activation == "relu")
    assert fold_batchnorm(cell) == 1
    folded = cell[0]
    assert type(folded) is type(conv) and folded.activation == activation and isinstance(cell[1], nn.Identity)
    assert folded.built_with_kernels is not built_for_export
    fused = folded.depthwise_fuses_bias_activation if "depthwise" in conv_kind else folded.fuses_bias_activation
    assert fused is not built_for_export
    # Fresh containers: a compiled graph would not see the folded cells.
    after = nn.SequentialCell(list(cell))
    after.set_train(False)
    np.testing.assert_allclose(after(x).asnumpy(), before, rtol=1e-4, atol=1e-4)
    # In training mode (which a folded network should not be in) the conv still computes the
    # same thing, through the unfused ops.
    training = nn.SequentialCell(list(cell))
    training.set_train(True)
    np.testing.assert_allclose(training(x).asnumpy(), before, rtol=1e-4, atol=1e-4)


# in -> out channels on h x w: out not a multiple of the 6-row panels, maps with a partial
# 16-pixel block, exactly one block, a single pixel; no bias (the kernel without one).
@pytest.mark.parametrize("batch,in_channels,out_channels,height,width,activation,bias", [
    (2, 5, 13, 7, 9, "relu6", True),
    (1, 70, 6, 4, 4, None, True),
    (1, 8, 20, 1, 1, "relu", True),
    (3, 24, 50, 19, 19, None, False),
])
def test_pointwise_kernel_matches_conv2d(batch, in_channels, out_channels, height, width, activation, bias,
                                         graph_mode):
    """A 1x1 conv after fuse_for_inference computes the conv, bias and activation in one op of the
    1x1 kernel, as Conv2D and the separate ops did (training mode keeps Conv2D)."""
    conv = ActivatedConv2d(in_channels, out_channels, 1, has_bias=bias, weight_init="normal",
                           bias_init="normal" if bias else None, activation=activation)
    x = ms.Tensor(np.random.default_rng(4).normal(0, 2, (batch, in_channels, height, width)).astype(np.float32))
    conv.set_train(False)
    before = nn.SequentialCell([conv])(x).asnumpy()
    if activation is not None:
        assert (before == 0).any()
    assert conv.fuse_for_inference() is aot.vector_kernels()
    for training in (False, True):
        fresh = nn.SequentialCell([conv])  # a compiled graph would not see the packed weights
        fresh.set_train(training)
        np.testing.assert_allclose(fresh(x).asnumpy(), before, rtol=1e-5, atol=1e-4)


_NOT_POINTWISE = {
    "3x3": lambda: ActivatedConv2d(4, 4, 3, has_bias=True),
    "stride 2": lambda: ActivatedConv2d(4, 4, 1, 2, has_bias=True),
    "padded": lambda: ActivatedConv2d(4, 4, 1, pad_mode="pad", padding=1, has_bias=True),
    "grouped": lambda: ActivatedConv2d(4, 4, 1, group=2, has_bias=True),
    "activation without bias": lambda: ActivatedConv2d(4, 4, 1, activation="relu"),
}


@pytest.mark.parametrize("kind", list(_NOT_POINTWISE))
def test_pointwise_kernel_declines_other_convs(kind):
    conv = _NOT_POINTWISE[kind]()
    assert not conv.fuse_for_inference() and conv.inference_weight is None


def test_pointwise_kernel_needs_avx2_and_kernels(monkeypatch):
    with standard_operators():
        exported = ActivatedConv2d(4, 4, 1, has_bias=True)
    assert not exported.fuse_for_inference()
    monkeypatch.setattr(aot, "_cpu_flags", lambda: frozenset())
    assert not ActivatedConv2d(4, 4, 1, has_bias=True).fuse_for_inference()


# Sizes: 12 (rows shorter than two vectors), 21 and 37 (whole vectors and a masked rest; at
# stride 2, 37 also takes the vector path that splits rows into even and odd columns).
@pytest.mark.parametrize("stride,built_for_export,size", [(1, False, 12), (2, False, 12), (1, True, 12),
                                                          (1, False, 21), (2, False, 37)])
def test_inverted_residual_hands_the_expansion_activation_to_the_depthwise_kernel(stride, built_for_export, size,
                                                                                  graph_mode):
    """After folding, the depthwise kernel applies the expansion's bias and ReLU6 as it reads
    its input; outputs stay those of the unfolded block (in inference and training mode)."""
    from src.backbone.mobilenet_v2 import InvertedResidual
    operators = standard_operators() if built_for_export else contextlib.nullcontext()
    with operators:
        block = InvertedResidual(8, 8, stride, 6)
    rng = np.random.default_rng(10)
    for p in block.get_parameters():
        if p.name.endswith("moving_variance") or p.name.endswith("gamma"):
            p.set_data(ms.Tensor(rng.uniform(0.5, 2, p.shape).astype(np.float32)))
        elif p.name.endswith("weight"):
            p.set_data(ms.Tensor(rng.normal(0, 0.5, p.shape).astype(np.float32)))
        else:  # beta and moving mean: shifts that make ReLU6 clip at both ends
            p.set_data(ms.Tensor(rng.normal(0, 2, p.shape).astype(np.float32)))
    x = ms.Tensor(rng.standard_normal((2, 8, size, size)).astype(np.float32))
    block.set_train(False)
    before = block(x).asnumpy()
    assert fold_batchnorm(block) == 3
    expand, depthwise = block.conv[0].features[0], block.conv[1].features[0]
    assert depthwise.takes_input_bias_activation is not built_for_export
    assert expand.bias_and_activation_moved is not built_for_export
    # The expansion and the projection run on the 1x1 kernel, the expansion without its bias.
    uses_pointwise = aot.vector_kernels() and not built_for_export
    assert (expand.inference_weight is not None) is uses_pointwise
    assert (block.conv[2].inference_weight is not None) is uses_pointwise
    for training in (False, True):
        fresh = nn.SequentialCell([block])  # a compiled graph would not see the fused cells
        fresh.set_train(training)
        np.testing.assert_allclose(fresh(x).asnumpy(), before, rtol=1e-4, atol=1e-4)
    # Off the kernel (as with float16 input) the depthwise conv still applies the expansion's
    # bias and activation itself.
    depthwise.use_cpu_kernel = False
    fresh = nn.SequentialCell([block])
    fresh.set_train(False)
    np.testing.assert_allclose(fresh(x).asnumpy(), before, rtol=1e-4, atol=1e-4)


def test_depthwise_leaves_the_bias_to_a_producer_already_on_its_inference_kernel(graph_mode):
    """Folded in the other order (the expansion packed for the 1x1 kernel, with its bias and
    ReLU6, before the block moves them), the depthwise kernel declines them: applied twice
    they would change the output."""
    from src.backbone.mobilenet_v2 import InvertedResidual
    block = InvertedResidual(8, 8, 1, 6)
    rng = np.random.default_rng(11)
    for p in block.get_parameters():
        p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    x = ms.Tensor(rng.standard_normal((1, 8, 12, 12)).astype(np.float32))
    block.set_train(False)
    before = block(x).asnumpy()
    fold_batchnorm(block.conv)  # the convs only: the block's own fuse_for_inference is not called
    expand, depthwise = block.conv[0].features[0], block.conv[1].features[0]
    assert (expand.inference_weight is not None) is aot.vector_kernels()
    block.fuse_for_inference()
    assert depthwise.takes_input_bias_activation is not aot.vector_kernels()
    fresh = nn.SequentialCell([block])
    fresh.set_train(False)
    np.testing.assert_allclose(fresh(x).asnumpy(), before, rtol=1e-4, atol=1e-4)


def test_a_conv_with_its_own_activation_does_not_take_a_batchnorm():
    cell = nn.SequentialCell([ActivatedConv2d(3, 4, 1, activation="relu"), nn.BatchNorm2d(4)])
    assert fold_batchnorm(cell) == 0
    with pytest.raises(ValueError, match="activation"):
        ActivatedConv2d(3, 4, 1, activation="gelu")


def test_batchnorm_inference_and_export_use_the_moving_statistics():
    with standard_operators():
        exported = BatchNorm2d(3)
    assert not exported.use_cpu_kernel
    ours = BatchNorm2d(3)
    ref = nn.BatchNorm2d(3)
    rng = np.random.default_rng(9)
    for net in (ours, ref, exported):
        net.moving_mean.set_data(ms.Tensor(np.array([1.0, -2.0, 0.5], np.float32)))
        net.moving_variance.set_data(ms.Tensor(np.array([4.0, 0.25, 1.0], np.float32)))
        net.set_train(False)
    x = ms.Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    want = ref(x).asnumpy()
    np.testing.assert_allclose(ours(x).asnumpy(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(exported(x).asnumpy(), want, rtol=1e-6, atol=1e-6)


class _LSTMLoss(nn.Cell):
    """A loss touching the outputs and both final states, so every gradient path is checked."""

    def __init__(self, lstm: nn.Cell):
        super().__init__()
        self.lstm = lstm

    def construct(self, x):
        y, (h_n, c_n) = self.lstm(x)
        return (y * y).sum() + 1.5 * c_n.sum() + 0.3 * h_n.sum()


def _lstm_results(lstm: nn.Cell, x: ms.Tensor):
    y, (h_n, c_n) = lstm(x)
    grads = ms.grad(_LSTMLoss(lstm), grad_position=0, weights=lstm.trainable_params())(x)
    return [y.asnumpy(), h_n.asnumpy(), c_n.asnumpy(), grads[0].asnumpy(), *[g.asnumpy() for g in grads[1]]]


@pytest.mark.parametrize("steps,batch,in_size,hidden,bidirectional", [
    (7, 5, 12, 8, True),      # one vector of 8 hidden units; 4 + 1 batch rows
    (6, 6, 10, 12, True),     # a scalar tail after the vector; the backward product without panels
    (5, 9, 16, 16, False),    # one direction; register-blocked products both ways
    (3, 1, 4, 20, True),      # one batch row: matrix-vector products
    (24, 8, 32, 32, True),    # CRNN's sequence length
])
def test_lstm_matches_mindspore(steps, batch, in_size, hidden, bidirectional, graph_mode):
    ours = LSTM(in_size, hidden, bidirectional=bidirectional)
    ref = nn.LSTM(in_size, hidden, bidirectional=bidirectional)
    assert ours.use_cpu_kernel
    assert [p.name for p in ours.get_parameters()] == [p.name for p in ref.get_parameters()]
    for p, q in zip(ours.get_parameters(), ref.get_parameters()):
        q.set_data(p.data.copy())
    # Inputs large enough to saturate some gates.
    x = ms.Tensor(np.random.default_rng(3).standard_normal((steps, batch, in_size)).astype(np.float32) * 3)
    got, want = _lstm_results(ours, x), _lstm_results(ref, x)
    # The kernel's own exp rounds differently from oneDNN's: proof that it ran in the graph.
    assert not np.array_equal(got[0], want[0]), "the LSTM kernel was not compiled into the graph"
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(w).max()))


@pytest.mark.parametrize("steps,batch,in_size,hidden,bidirectional", [
    (7, 5, 12, 8, True),      # 35 rows: blocks of 4 and a tail of 3; two panels per direction
    (3, 1, 20, 4, False),     # one direction, one panel
    (24, 1, 64, 32, True),    # CRNN at batch 1
])
def test_lstm_inference_kernel_with_input_projections_matches_mindspore(steps, batch, in_size, hidden, bidirectional):
    ours = LSTM(in_size, hidden, bidirectional=bidirectional)
    ref = nn.LSTM(in_size, hidden, bidirectional=bidirectional)
    for p, q in zip(ours.get_parameters(), ref.get_parameters()):
        q.set_data(p.data.copy())
    ours.fuse_for_inference()
    assert ours.input_panels is not None
    ours.set_train(False)
    ref.set_train(False)
    x = ms.Tensor(np.random.default_rng(5).standard_normal((steps, batch, in_size)).astype(np.float32) * 3)
    (y, (h_n, c_n)), (y_ref, (h_ref, c_ref)) = ours(x), ref(x)
    for g, w in ((y, y_ref), (h_n, h_ref), (c_n, c_ref)):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-5, atol=1e-5 * max(1.0, np.abs(w.asnumpy()).max()))
    # Training keeps the per-direction path (with its gradients); the packed weights are not parameters to train.
    assert not [p for p in ours.trainable_params() if "panels" in p.name or "joined" in p.name]


def test_lstm_inference_kernel_is_declined_where_it_does_not_apply():
    odd = LSTM(4, 3)  # 12 gate columns: not whole 16-column strips
    odd.fuse_for_inference()
    assert odd.input_panels is None
    with standard_operators():
        exported = LSTM(4, 8)
    exported.fuse_for_inference()
    assert exported.input_panels is None


def test_lstm_falls_back_where_the_kernel_does_not_apply():
    with standard_operators():
        assert not LSTM(4, 8).use_cpu_kernel
    assert not LSTM(4, 8, num_layers=2).use_cpu_kernel
    assert not LSTM(4, 8, batch_first=True).use_cpu_kernel
    ours, ref = LSTM(4, 8, bidirectional=True), nn.LSTM(4, 8, bidirectional=True)
    for p, q in zip(ours.get_parameters(), ref.get_parameters()):
        q.set_data(p.data.copy())
    rng = np.random.default_rng(4)
    x = ms.Tensor(rng.standard_normal((5, 3, 4)).astype(np.float32))
    states = (ms.Tensor(rng.standard_normal((2, 3, 8)).astype(np.float32)),
              ms.Tensor(rng.standard_normal((2, 3, 8)).astype(np.float32)))
    # Given initial states take MindSpore's path, with the same results.
    np.testing.assert_allclose(ours(x, states)[0].asnumpy(), ref(x, states)[0].asnumpy(), rtol=1e-6, atol=1e-6)


class _Sum(nn.Cell):
    """Weighted sum of a cell's output, to take the input gradient of any cell."""

    def __init__(self, net: nn.Cell):
        super().__init__()
        self.net = net

    def construct(self, x, w):
        return (self.net(x) * w).sum()


@pytest.mark.parametrize("shape,kernel,ties", [((2, 3, 8, 10), (2, 2), False), ((2, 3, 8, 10), (2, 1), False),
                                               ((1, 2, 7, 5), (2, 2), False),   # odd sizes drop a row/column
                                               ((2, 4, 6, 6), (2, 2), True)])   # ReLU-like zeros and equal values
def test_max_pool_matches_mindspore_including_ties(shape, kernel, ties):
    rng = np.random.default_rng(10)
    x = rng.standard_normal(shape).astype(np.float32)
    if ties:
        x = np.maximum(np.round(x), 0)
    pooled = (shape[0], shape[1], shape[2] // kernel[0], shape[3] // kernel[1])
    w = ms.Tensor(rng.standard_normal(pooled).astype(np.float32))
    ours, ref = MaxPool2d(kernel), nn.MaxPool2d(kernel, kernel, pad_mode="valid")
    assert ours.use_cpu_kernel
    np.testing.assert_array_equal(ours(ms.Tensor(x)).asnumpy(), ref(ms.Tensor(x)).asnumpy())
    expected = ms.grad(_Sum(ref), 0)(ms.Tensor(x), w).asnumpy()
    np.testing.assert_array_equal(ms.grad(_Sum(ours), 0)(ms.Tensor(x), w).asnumpy(), expected)
    assert np.count_nonzero(expected) == np.prod(pooled)  # one input per window gets the gradient
    with standard_operators():
        assert not MaxPool2d(kernel).use_cpu_kernel


@pytest.fixture
def fresh_kernel_cache(tmp_path, monkeypatch):
    """An empty kernel cache for one test; later tests find the shared one again."""
    monkeypatch.setenv("MS_ZOO_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.delenv("MS_CUSTOM_AOT_WHITE_LIST", raising=False)
    aot.load_library.cache_clear()
    yield tmp_path / "kernels"
    aot.load_library.cache_clear()


def test_kernel_library_is_built_once_and_allow_listed(fresh_kernel_cache):
    path = aot.load_library("depthwise_conv")
    assert path is not None and os.path.dirname(path) == str(fresh_kernel_cache)
    assert os.listdir(fresh_kernel_cache) == [os.path.basename(path)], "no temp files may remain"
    assert os.environ["MS_CUSTOM_AOT_WHITE_LIST"] == str(fresh_kernel_cache)
    mtime = os.path.getmtime(path)
    aot.load_library.cache_clear()
    assert aot.load_library("depthwise_conv") == path and os.path.getmtime(path) == mtime


def test_failed_build_warns_falls_back_and_leaves_nothing(fresh_kernel_cache, monkeypatch):
    monkeypatch.setattr(aot, "compile_command", lambda source, output: ["g++", "-x", "c++", "/nonexistent.cc",
                                                                        "-o", output])
    with pytest.warns(RuntimeWarning, match="could not build the CPU kernel"):
        assert aot.load_library("depthwise_conv") is None
    assert not fresh_kernel_cache.exists() or os.listdir(fresh_kernel_cache) == []
    conv = DepthwiseConv2d(4, 4, 3, 1, pad_mode="pad", padding=1, group=4)
    assert not conv.use_cpu_kernel


def test_a_foreign_aot_allow_list_falls_back_with_a_warning(fresh_kernel_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("MS_CUSTOM_AOT_WHITE_LIST", str(tmp_path / "elsewhere"))
    with pytest.warns(RuntimeWarning, match="does not contain the kernel cache"):
        assert aot.load_library("depthwise_conv") is None


def test_depthwise_kernel_built_without_avx2_matches_grouped_conv(fresh_kernel_cache, monkeypatch):
    """The portable loops, which a CPU without AVX2 and FMA gets, compute the same as the vector
    ones (this machine builds the vector ones unless told otherwise)."""
    monkeypatch.setattr(aot, "_cpu_flags", lambda: frozenset())
    assert "-mavx2" not in aot.compile_command("kernel.cc", "kernel.so")
    for stride, height, width in ((1, 19, 21), (2, 20, 37), (2, 21, 38)):
        conv = DepthwiseConv2d(6, 6, 3, stride, pad_mode="same", group=6, has_bias=True,
                               weight_init="normal", bias_init="normal")
        assert conv.use_cpu_kernel and conv.depthwise.func.startswith(str(fresh_kernel_cache))
        x = np.random.default_rng(3).standard_normal((2, 6, height, width)).astype(np.float32)
        got, want = _run(conv, x), _run(_reference(conv), x)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


_POOL_AFTER_UNLOAD = """
import gc
import numpy as np, mindspore as ms
from mindspore import nn
from src.ops.conv import ActivatedConv2d
from src.ops.depthwise import DepthwiseConv2d
ms.set_context(mode=ms.GRAPH_MODE)
x = np.random.default_rng(0).standard_normal((1, 64, 40, 40)).astype(np.float32)
# The depthwise library loads first, with a call too small to start the worker pool.
nn.SequentialCell([DepthwiseConv2d(2, 2, 3, pad_mode="pad", padding=1, group=2)])(ms.Tensor(x[:, :2, :4, :4]))
# The 1x1 kernel starts the pool; then its graph, and with it its library, are freed.
conv = ActivatedConv2d(64, 64, 1, has_bias=True)
conv.set_train(False)
assert conv.fuse_for_inference()
nn.SequentialCell([conv])(ms.Tensor(x)).asnumpy()
del conv
gc.collect()
# The depthwise kernel wakes the pool's workers.
big = nn.SequentialCell([DepthwiseConv2d(64, 64, 3, pad_mode="pad", padding=1, group=64)])
for _ in range(3):
    big(ms.Tensor(x)).asnumpy()
print("survived")
"""


def test_kernel_threads_survive_a_library_being_unloaded():
    """MindSpore unloads a kernel library with the last graph that uses it; the worker threads
    it started are shared by all libraries and must not be left running unmapped code (this
    crashed with a segmentation fault before the libraries were linked with -z nodelete)."""
    proc = subprocess.run([sys.executable, "-c", _POOL_AFTER_UNLOAD], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr[-2000:]


def test_environment_switch_disables_the_kernels(fresh_kernel_cache, monkeypatch):
    monkeypatch.setenv(aot.ENV_SWITCH, "0")
    assert aot.load_library("depthwise_conv") is None
    assert not DepthwiseConv2d(4, 4, 3, 1, pad_mode="pad", padding=1, group=4).use_cpu_kernel
