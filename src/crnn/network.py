"""CRNN: the model zoo's VGG-style CNN, two bidirectional LSTM blocks and CTC loss."""
from __future__ import annotations

from collections import OrderedDict

import mindspore as ms
from mindspore import nn, ops

from src.ops.batch_norm import BatchNorm2d
from src.ops.lstm import LSTM
from src.ops.max_pool import MaxPool2d
from src.ops.winograd import WinogradConv2d


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, pad_mode: str = "same") -> nn.SequentialCell:
    """Conv (no bias: the BN shift replaces it) + BatchNorm with ReLU; a SequentialCell so that
    inference can fold the BN into the conv (src/engine/inference.fold_batchnorm)."""
    return nn.SequentialCell(OrderedDict([
        ("conv", WinogradConv2d(in_channels, out_channels, kernel_size, pad_mode=pad_mode, has_bias=False,
                                weight_init="he_normal")),
        ("bn", BatchNorm2d(out_channels, eps=1e-4, momentum=0.9, activation="relu")),
    ]))


class VGGFeatures(nn.Cell):
    """7 convs (64, 128, 256, 256, 512, 512, 512; the last 2x2 valid). The first two pools
    halve both sides, the next two only the height, so a 32x100 crop gives 512x1x24:
    24 time steps for CTC."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv1 = conv_bn_relu(in_channels, 64)
        self.conv2 = conv_bn_relu(64, 128)
        self.conv3 = conv_bn_relu(128, 256)
        self.conv4 = conv_bn_relu(256, 256)
        self.conv5 = conv_bn_relu(256, 512)
        self.conv6 = conv_bn_relu(512, 512)
        # The model zoo's network also defines a BatchNorm `bn1` but never calls it: conv7's
        # ReLU output goes to the LSTMs as it is (its checkpoints' vgg.bn1.* are ignored).
        self.conv7 = conv_bn_relu(512, 512, kernel_size=2, pad_mode="valid")
        self.pool = MaxPool2d((2, 2))
        self.pool_height = MaxPool2d((2, 1))

    def construct(self, x):
        x = self.pool(self.conv1(x))
        x = self.pool(self.conv2(x))
        x = self.pool_height(self.conv4(self.conv3(x)))
        x = self.pool_height(self.conv6(self.conv5(x)))
        return self.conv7(x)


class BidirectionalLSTM(nn.Cell):
    """Time-major BiLSTM followed by a linear layer on the concatenated directions."""

    def __init__(self, in_size: int, hidden: int, out_size: int):
        super().__init__()
        self.rnn = LSTM(in_size, hidden, num_layers=1, bidirectional=True)
        self.embedding = nn.Dense(2 * hidden, out_size)

    def construct(self, x):
        t, b, _ = x.shape
        y, _ = self.rnn(x)
        return self.embedding(y.reshape(t * b, -1)).reshape(t, b, -1)


class CRNN(nn.Cell):
    """(B, C, 32, 100) images -> (T=24, B, num_classes) logits, time-major as CTC wants them."""

    def __init__(self, num_classes: int, in_channels: int = 3, hidden: int = 256):
        super().__init__()
        self.vgg = VGGFeatures(in_channels)
        self.rnn = nn.SequentialCell([BidirectionalLSTM(512, hidden, hidden),
                                      BidirectionalLSTM(hidden, hidden, num_classes)])

    def construct(self, x):
        x = self.vgg(x)
        x = ops.squeeze(x, 2).transpose(2, 0, 1)
        return self.rnn(x)


class CRNNWithLoss(nn.Cell):
    """CTC loss summed over time steps and averaged over the batch (the model zoo's scale, so
    its learning rates carry over). The blank is the last class."""

    def __init__(self, network: CRNN, blank: int):
        super().__init__()
        self.network = network
        self.blank = blank

    def ctc(self, log_probs, label, label_length):
        t, b, _ = log_probs.shape
        input_length = ops.fill(ms.int32, (b,), t)
        loss, _ = ops.ctc_loss(log_probs, label, input_length, label_length, blank=self.blank,
                               reduction="none", zero_infinity=True)
        return loss.mean()

    def construct(self, image, label, label_length):
        return self.ctc(ops.log_softmax(self.network(image), -1), label, label_length)


class CRNNWithAlignedLoss(CRNNWithLoss):
    """CTC plus, fading out linearly over the first `fade_steps` training steps, a
    cross-entropy on per-time-step targets (src/data/text/dataset.ctc_step_targets; -1 =
    no target), on the same scale (summed over time steps, averaged over the batch).

    From scratch, CTC spends its first few hundred steps on the all-blank output before it
    finds where the characters are; targets that already say where they are skip that
    plateau. The fade hands the alignment back to CTC. The step counter is a parameter, so it
    is checkpointed and a resumed run continues the fade.
    """

    def __init__(self, network: CRNN, blank: int, fade_steps: int):
        super().__init__(network, blank)
        if fade_steps <= 0:
            raise ValueError(f"fade_steps must be positive, got {fade_steps}")
        self.fade_steps = float(fade_steps)
        self.align_step = ms.Parameter(ms.Tensor(0.0, ms.float32), name="align_step", requires_grad=False)

    def construct(self, image, label, label_length, step_target):
        log_probs = ops.log_softmax(self.network(image), -1)
        num_classes = log_probs.shape[-1]
        target = step_target.transpose(1, 0)  # time-major, as log_probs
        chosen = (ops.one_hot(ops.maximum(target, 0), num_classes, 1.0, 0.0) * log_probs).sum(-1)
        cross_entropy = -(chosen * (target >= 0).astype(ms.float32)).sum(0).mean()
        weight = ops.maximum(1.0 - self.align_step / self.fade_steps, 0.0)
        loss = self.ctc(log_probs, label, label_length) + weight * cross_entropy
        return ops.depend(loss, ops.assign_add(self.align_step, ops.ones_like(self.align_step)))


class CRNNInference(nn.Cell):
    """The exported graph: a 1-tuple of per-step class probabilities (B, T, C) (a tuple, as
    every model's graph returns one); decoding is post-processing."""

    def __init__(self, network: CRNN):
        super().__init__()
        self.network = network

    def construct(self, image):
        return (ops.softmax(self.network(image), -1).transpose(1, 0, 2),)
