"""Prior (default / anchor) box generation."""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np


def ssd_default_boxes(image_size: int, feature_sizes: Sequence[int], steps: Sequence[int],
                      min_scale: float, max_scale: float,
                      aspect_ratios: Sequence[Sequence[float]]) -> np.ndarray:
    """SSD default boxes as (N,4) float32 cx,cy,w,h, normalised to [0,1].

    Scales grow linearly from min_scale to max_scale over the feature maps. A layer with
    aspect ratios gets: the square of its scale, a pair (w/h = r and 1/r) per ratio, and the
    square of the geometric mean of its scale and the next one. A layer with no ratios
    (SSD-MobileNet's first map) gets one small 0.1 square and the 2:1 / 1:2 pair of its scale.
    Boxes are ordered by map, then row, then column, then box, as the heads' outputs are.
    They are not clipped to [0, 1] (boxes of the border cells reach past the image), as in the
    model zoo: the official checkpoints' offsets are relative to these unclipped boxes.
    """
    n = len(feature_sizes)
    scales = [min_scale + (max_scale - min_scale) * i / (n - 1) for i in range(n)] + [1.0]
    boxes = []
    for idx, fsize in enumerate(feature_sizes):
        s, s_next = scales[idx], scales[idx + 1]
        if aspect_ratios[idx]:
            sizes = [(s, s)]
            for r in aspect_ratios[idx]:
                sizes += [(s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r))]
            sizes.append((math.sqrt(s * s_next),) * 2)
        else:
            sizes = [(0.1, 0.1), (s * math.sqrt(2.0), s / math.sqrt(2.0)),
                     (s / math.sqrt(2.0), s * math.sqrt(2.0))]
        cells = image_size / steps[idx]
        for row, col in itertools.product(range(fsize), repeat=2):
            cy, cx = (row + 0.5) / cells, (col + 0.5) / cells
            for w, h in sizes:
                boxes.append((cx, cy, w, h))
    return np.asarray(boxes, np.float32)


def num_boxes_per_location(aspect_ratios: Sequence[Sequence[float]]) -> list[int]:
    """How many default boxes each feature-map cell holds, per map."""
    return [2 + 2 * len(r) if r else 3 for r in aspect_ratios]


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + wh / 2, wh], axis=1)
