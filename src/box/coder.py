"""Box coders: offsets of boxes relative to priors, in numpy (targets) and for inference."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from src.box.priors import cxcywh_to_xyxy, xyxy_to_cxcywh


# Column order of the deltas: x first (dcx, dcy, dw, dh) or y first (dcy, dcx, dh, dw), as the
# model zoo's SSD heads regress them.
DELTA_ORDERS = {"xy": [0, 1, 2, 3], "yx": [1, 0, 3, 2]}


class CenterSizeCoder:
    """SSD-style coder: (dcx/w/v0, dcy/h/v0, log(w/pw)/v1, log(h/ph)/v1) against cx,cy,w,h priors,
    in `delta_order` ("xy", or "yx" for y-first deltas). Boxes are x1,y1,x2,y2 either way."""

    def __init__(self, priors_cxcywh: np.ndarray, variances: Sequence[float] = (0.1, 0.2), delta_order: str = "xy"):
        if delta_order not in DELTA_ORDERS:
            raise ValueError(f"delta_order must be one of {', '.join(DELTA_ORDERS)}, got '{delta_order}'")
        self.priors = priors_cxcywh.astype(np.float32)
        self.variances = tuple(float(v) for v in variances)
        self.columns = DELTA_ORDERS[delta_order]  # its own inverse: a swap within each pair

    def encode(self, boxes_xyxy: np.ndarray, prior_mask: np.ndarray | None = None) -> np.ndarray:
        """(N,4) boxes, one per prior (or per prior selected by prior_mask) -> (N,4) targets."""
        b = xyxy_to_cxcywh(boxes_xyxy)
        p = self.priors if prior_mask is None else self.priors[prior_mask]
        wh = np.maximum(b[:, 2:], 1e-6)
        d_xy = (b[:, :2] - p[:, :2]) / p[:, 2:] / self.variances[0]
        d_wh = np.log(wh / p[:, 2:]) / self.variances[1]
        return np.concatenate([d_xy, d_wh], axis=1)[:, self.columns].astype(np.float32)

    def decode(self, deltas: np.ndarray) -> np.ndarray:
        """(..., N, 4) regression outputs -> (..., N, 4) x1,y1,x2,y2 boxes (prior units)."""
        p = self.priors
        deltas = deltas[..., self.columns]
        xy = deltas[..., :2] * self.variances[0] * p[:, 2:] + p[:, :2]
        wh = np.exp(deltas[..., 2:] * self.variances[1]) * p[:, 2:]
        return np.concatenate([xy - wh / 2, xy + wh / 2], axis=-1)

    @property
    def priors_xyxy(self) -> np.ndarray:
        return cxcywh_to_xyxy(self.priors)
