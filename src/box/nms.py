"""Non-maximum suppression in numpy, vectorised across classes."""
from __future__ import annotations

import numpy as np

from src.box.iou import box_area


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int = -1) -> np.ndarray:
    """Greedy NMS; returns indices of kept boxes, highest score first."""
    order = np.argsort(-scores, kind="stable")
    areas = box_area(boxes)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if 0 < max_keep <= len(keep):
            break
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                max_keep: int = -1) -> np.ndarray:
    """NMS per class in one pass: boxes of different classes are shifted apart so they never overlap."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    offset = labels.astype(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold, max_keep)


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
                   max_per_image: int, pre_nms_top_k: int = 1000):
    """Per-class NMS for one image.

    boxes (N,4) shared by all classes; scores (N,C) for foreground classes only.
    Returns (boxes (K,4), scores (K,), labels (K,) with 0-based class index).
    """
    rows, cls = np.nonzero(scores > score_threshold)
    cand_scores = scores[rows, cls]
    if cand_scores.size > pre_nms_top_k:
        top = np.argpartition(-cand_scores, pre_nms_top_k)[:pre_nms_top_k]
        rows, cls, cand_scores = rows[top], cls[top], cand_scores[top]
    cand_boxes = boxes[rows]
    keep = batched_nms(cand_boxes, cand_scores, cls, iou_threshold, max_per_image)
    return cand_boxes[keep], cand_scores[keep], cls[keep]
