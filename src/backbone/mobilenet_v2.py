"""MobileNetV2 building blocks and backbone (shared by SSD variants and classification heads)."""
from __future__ import annotations

from mindspore import nn

from src.ops.batch_norm import BatchNorm2d
from src.ops.depthwise import DepthwiseConv2d
from src.ops.conv import ActivatedConv2d

BN_MOMENTUM = 0.97
BN_EPS = 1e-3


class ConvBNReLU6(nn.Cell):
    """Conv (no bias) + BatchNorm + ReLU6; groups=in_channels makes it depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1):
        super().__init__()
        # 'same' as the model zoo's network: at stride 2 on an even side (300 -> 150, 38 -> 19)
        # the padding is only below / right; padding 1 on every side would shift the map by a
        # pixel and official checkpoints would give other outputs.
        # Both conv classes can take the ReLU6 when inference folds the BatchNorm into them.
        conv = DepthwiseConv2d if groups == in_channels == out_channels and groups > 1 else ActivatedConv2d
        self.features = nn.SequentialCell([
            conv(in_channels, out_channels, kernel_size, stride, pad_mode="same", group=groups, has_bias=False),
            BatchNorm2d(out_channels, momentum=BN_MOMENTUM, eps=BN_EPS, activation="relu6"),
        ])

    def construct(self, x):
        return self.features(x)


class InvertedResidual(nn.Cell):
    """1x1 expand (skipped when expand_ratio == 1) -> 3x3 depthwise -> 1x1 linear projection,
    plus the input when the shapes allow, then a ReLU6 if `last_relu` (SSD's extra layers)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float,
                 last_relu: bool = False):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expands = expand_ratio != 1
        # Without a residual the last ReLU6 directly follows the BatchNorm, which then applies it
        # (and hands it to the conv when inference folds it); after a residual it is its own op.
        self.relu_after_residual = nn.ReLU6() if last_relu and self.use_residual else None
        layers = []
        if self.expands:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            ActivatedConv2d(hidden, out_channels, 1, has_bias=False),
            BatchNorm2d(out_channels, momentum=BN_MOMENTUM, eps=BN_EPS,
                        activation="relu6" if last_relu and not self.use_residual else None),
        ]
        self.conv = nn.SequentialCell(layers)

    def fuse_for_inference(self) -> None:
        """Called by fold_batchnorm once the BatchNorms are folded: the depthwise kernel applies
        the expansion's bias and ReLU6 as it reads the expanded map (which feeds nothing else),
        saving a pass over the block's largest feature map, when the kernels allow it."""
        if self.expands:
            self.conv[1].features[0].take_input_bias_and_activation(self.conv[0].features[0])

    def construct(self, x):
        if self.relu_after_residual is not None:
            return self.relu_after_residual(x + self.conv(x))
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


# (expand ratio t, output channels c, repeats n, first stride s) of MobileNetV2 at width 1.0.
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2_layers(in_channels: int = 3) -> list[nn.Cell]:
    """The 19 feature layers of MobileNetV2 (stem, 17 inverted residuals, 1x1 to 1280)."""
    layers: list[nn.Cell] = [ConvBNReLU6(in_channels, 32, stride=2)]
    channels = 32
    for t, c, n, s in MOBILENET_V2_SETTINGS:
        for i in range(n):
            layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
            channels = c
    layers.append(ConvBNReLU6(channels, 1280, kernel_size=1))
    return layers


class MobileNetV2SSDBackbone(nn.Cell):
    """MobileNetV2 split for SSD: returns the 576-channel expansion of block 14 at stride 16
    (a separate 1x1 conv, as in the model zoo) and the 1280-channel map at stride 32."""

    def __init__(self):
        super().__init__()
        layers = mobilenet_v2_layers()
        self.features_1 = nn.SequentialCell(layers[:14])
        self.expand_layer_conv_13 = ConvBNReLU6(96, 576, kernel_size=1)
        self.features_2 = nn.SequentialCell(layers[14:])

    def construct(self, x):
        x = self.features_1(x)
        return self.expand_layer_conv_13(x), self.features_2(x)
