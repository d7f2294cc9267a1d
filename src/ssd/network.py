"""SSD300 with a MobileNetV2 backbone: network, loss and the exported inference graph."""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.backbone.mobilenet_v2 import BN_EPS, BN_MOMENTUM, InvertedResidual, MobileNetV2SSDBackbone
from src.ops.batch_norm import BatchNorm2d
from src.ops.conv import ActivatedConv2d
from src.ops.depthwise import DepthwiseConv2d

# The head regresses each box as (dcy, dcx, dh, dw), y first, as the model zoo's SSD does: what
# its checkpoints' box-offset weights mean (src/box/coder.py encodes the targets in this order).
DELTA_ORDER = "yx"


def _head_branch(in_channels: int, out_channels: int, bias_init: float = 0.0) -> nn.SequentialCell:
    """Depthwise 3x3 + BN + ReLU6, then a 1x1 prediction conv."""
    pred = ActivatedConv2d(in_channels, out_channels, 1, has_bias=True,
                           bias_init=ms.common.initializer.Constant(bias_init))
    return nn.SequentialCell([
        DepthwiseConv2d(in_channels, in_channels, 3, pad_mode="same", group=in_channels, has_bias=False),
        BatchNorm2d(in_channels, momentum=BN_MOMENTUM, eps=BN_EPS, activation="relu6"),
        nn.Identity(),  # where the ReLU6 was before it was fused: keeps pred's parameter names
        pred,
    ])


class MultiBoxHead(nn.Cell):
    """Per-map box-offset and class-logit branches, flattened to (B, num_priors, ...)."""

    def __init__(self, in_channels, boxes_per_location, num_classes: int, prior_prob: float = 0.01):
        super().__init__()
        self.num_classes = num_classes
        # Start every logit at the focal-loss prior so that training from scratch is stable.
        cls_bias = -math.log((1 - prior_prob) / prior_prob)
        self.multi_loc_layers = nn.CellList([_head_branch(c, a * 4) for c, a in zip(in_channels, boxes_per_location)])
        self.multi_cls_layers = nn.CellList([_head_branch(c, a * num_classes, cls_bias)
                                             for c, a in zip(in_channels, boxes_per_location)])

    def construct(self, features):
        locs = ()
        logits = ()
        for i in range(len(features)):
            b = features[i].shape[0]
            loc = self.multi_loc_layers[i](features[i])
            cls = self.multi_cls_layers[i](features[i])
            locs += (ops.reshape(ops.transpose(loc, (0, 2, 3, 1)), (b, -1, 4)),)
            logits += (ops.reshape(ops.transpose(cls, (0, 2, 3, 1)), (b, -1, self.num_classes)),)
        return ops.concat(locs, 1), ops.concat(logits, 1)


class SSDMobileNetV2(nn.Cell):
    """SSD300-MobileNetV2: raw box offsets (B,N,4) and class logits (B,N,num_classes)."""

    # (output channels, expand ratio) of the four extra stride-2 inverted-residual layers.
    EXTRA_LAYERS = ((512, 0.2), (256, 0.25), (256, 0.5), (128, 0.25))

    def __init__(self, num_classes: int, boxes_per_location):
        super().__init__()
        self.backbone = MobileNetV2SSDBackbone()
        extras, channels = [], 1280
        for out_channels, ratio in self.EXTRA_LAYERS:
            extras.append(InvertedResidual(channels, out_channels, stride=2, expand_ratio=ratio, last_relu=True))
            channels = out_channels
        self.multi_residual = nn.CellList(extras)
        feature_channels = [576, 1280] + [c for c, _ in self.EXTRA_LAYERS]
        self.multi_box = MultiBoxHead(feature_channels, boxes_per_location, num_classes)

    def construct(self, x):
        f1, x = self.backbone(x)
        features = (f1, x)
        for layer in self.multi_residual:
            x = layer(x)
            features += (x,)
        return self.multi_box(features)


class SigmoidFocalLoss(nn.Cell):
    """Sum over priors and classes of the sigmoid focal loss against one-hot labels."""

    def __init__(self, num_classes: int, gamma: float = 2.0, alpha: float = 0.75):
        super().__init__()
        self.num_classes = num_classes
        self.gamma = gamma
        self.alpha = alpha

    def construct(self, logits, labels):
        target = ops.one_hot(labels, self.num_classes, ops.ones((), logits.dtype), ops.zeros((), logits.dtype))
        prob = ops.sigmoid(logits)
        # log(sigmoid) and log(1 - sigmoid) written stably through softplus.
        ce = target * ops.softplus(-logits) + (1 - target) * ops.softplus(logits)
        p_t = target * prob + (1 - target) * (1 - prob)
        alpha_t = target * self.alpha + (1 - target) * (1 - self.alpha)
        return alpha_t * ops.pow(1 - p_t, self.gamma) * ce


class SSDWithLoss(nn.Cell):
    """Training graph: focal classification loss + smooth-L1 on matched priors, per positive."""

    def __init__(self, network: SSDMobileNetV2, num_classes: int, gamma: float, alpha: float):
        super().__init__()
        self.network = network
        self.class_loss = SigmoidFocalLoss(num_classes, gamma, alpha)

    def construct(self, images, gt_loc, gt_label, num_matched):
        pred_loc, logits = self.network(images)
        positive = ops.cast(gt_label > 0, ms.float32)
        num_pos = ops.maximum(ops.reduce_sum(ops.cast(num_matched, ms.float32)), 1.0)
        loc_loss = ops.reduce_sum(ops.smooth_l1_loss(pred_loc, gt_loc, beta=1.0, reduction="none"), -1)
        loc_loss = ops.reduce_sum(loc_loss * positive)
        cls_loss = ops.reduce_sum(self.class_loss(logits, gt_label))
        return (loc_loss + cls_loss) / num_pos


class SSDInference(nn.Cell):
    """Exported graph: decoded x1,y1,x2,y2 boxes clipped to [0,1] (B,N,4) and sigmoid scores (B,N,C).

    The decode is written with elementwise ops (not BoundingBoxDecode) so that it exports to ONNX.
    The boxes are clipped here, before NMS, as the model zoo's graph does: NMS on unclipped boxes
    keeps other boxes. The official graph returns y1,x1,y2,x2; these are the same numbers with
    the columns in x-first order (official = ours[..., [1, 0, 3, 2]]).
    """

    def __init__(self, network: SSDMobileNetV2, priors_cxcywh: np.ndarray, variances=(0.1, 0.2)):
        super().__init__()
        self.network = network
        # The deltas come y first (DELTA_ORDER): the priors are stored in the same order, so
        # that the decode is elementwise, and the result is put back x first at the end.
        priors_yx = priors_cxcywh[None, :, [1, 0, 3, 2]]
        self.prior_yx = ms.Tensor(priors_yx[..., :2], ms.float32)
        self.prior_hw = ms.Tensor(priors_yx[..., 2:], ms.float32)
        self.var_yx = float(variances[0])
        self.var_hw = float(variances[1])

    def construct(self, x):
        loc, logits = self.network(x)
        # Split, not two slices: MindSpore's CPU StridedSlice took 0.5-4 ms on this (1, 1917, 4)
        # tensor, Split ~0.03 ms.
        loc_yx, loc_hw = ops.split(loc, 2, -1)
        yx = loc_yx * self.var_yx * self.prior_hw + self.prior_yx
        half_hw = ops.exp(loc_hw * self.var_hw) * self.prior_hw / 2
        y1, x1 = ops.split(yx - half_hw, 1, -1)
        y2, x2 = ops.split(yx + half_hw, 1, -1)
        boxes = ops.concat((x1, y1, x2, y2), -1)
        # maximum/minimum rather than clip_by_value: plain elementwise ops in an exported graph.
        return ops.minimum(ops.maximum(boxes, 0.0), 1.0), ops.sigmoid(logits)
