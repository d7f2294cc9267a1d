"""Assign ground-truth boxes to priors."""
from __future__ import annotations

import numpy as np

from src.box.iou import box_iou


def match_priors(gt_boxes: np.ndarray, priors_xyxy: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Index of the matched ground truth for each prior, -1 for background.

    A prior takes the ground truth it overlaps most if that IoU reaches the threshold; besides,
    every ground truth claims its own best prior, so that no object goes unmatched.
    """
    n = priors_xyxy.shape[0]
    if gt_boxes.shape[0] == 0:
        return np.full(n, -1, np.int64)
    iou = box_iou(gt_boxes, priors_xyxy)                    # (G, N)
    best_gt = iou.argmax(axis=0)
    matched = np.where(iou[best_gt, np.arange(n)] >= iou_threshold, best_gt, -1)
    best_prior = iou.argmax(axis=1)                         # (G,)
    valid = iou[np.arange(len(best_prior)), best_prior] > 0
    matched[best_prior[valid]] = np.nonzero(valid)[0]
    return matched
