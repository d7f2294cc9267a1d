"""COCO box (and mask) evaluation through pycocotools, fed batch by batch."""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Sequence

import numpy as np

STAT_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


class COCOEvaluator:
    """Collects ground truth and detections per image, then runs COCOeval.

    Ground truth comes from what the evaluation dataset yields (the converted MindRecord), so
    every source format (COCO json, VOC, txt, shapes) is scored the same way. Area ranges use
    the box area.
    """

    def __init__(self, class_names: Sequence[str], cat_ids: Sequence[int] | None = None, iou_type: str = "bbox"):
        self.class_names = list(class_names)
        self.cat_ids = list(cat_ids) if cat_ids is not None else list(range(1, len(class_names) + 1))
        self.iou_type = iou_type
        self.reset()

    def reset(self) -> None:
        self.images: list[dict] = []
        self.gt: list[dict] = []
        self.dets: list[dict] = []

    def update(self, detections: Sequence[dict], metas: Sequence[dict]) -> None:
        """detections[i]: boxes (K,4) x1,y1,x2,y2 in original-image pixels, scores (K,), labels (K,)
        1-based; metas[i]: image_id, height, width, gt_boxes, gt_labels, gt_iscrowd."""
        for det, meta in zip(detections, metas):
            image_id = int(meta["image_id"])
            self.images.append({"id": image_id, "height": int(meta["height"]), "width": int(meta["width"])})
            for box, label, crowd in zip(meta["gt_boxes"], meta["gt_labels"], meta["gt_iscrowd"]):
                w, h = float(box[2] - box[0]), float(box[3] - box[1])
                self.gt.append({"id": len(self.gt) + 1, "image_id": image_id, "iscrowd": int(crowd),
                                "category_id": self.cat_ids[int(label) - 1],
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h})
            for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
                self.dets.append({"image_id": image_id, "category_id": self.cat_ids[int(label) - 1],
                                  "bbox": [round(float(box[0]), 2), round(float(box[1]), 2),
                                           round(float(box[2] - box[0]), 2), round(float(box[3] - box[1]), 2)],
                                  "score": round(float(score), 5)})

    def write_results(self, out_dir: str) -> str:
        """Write the detections in the COCO results format to out_dir/detections.json."""
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "detections.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.dets, f)
        os.replace(tmp, path)
        return path

    def compute(self, verbose: bool = True) -> dict:
        """Run COCOeval; print its standard table when verbose; return the 12 stats by name."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        gt = COCO()
        gt.dataset = {"images": self.images, "annotations": self.gt,
                      "categories": [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.class_names)]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        if not self.dets:
            if verbose:
                print("no detections: every metric is 0")
            return {name: 0.0 for name in STAT_NAMES}
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(self.dets)
        coco_eval = COCOeval(gt, dt, self.iou_type)
        coco_eval.params.imgIds = sorted({img["id"] for img in self.images})
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet):
            coco_eval.evaluate()
            coco_eval.accumulate()
        if verbose:
            coco_eval.summarize()
        else:
            with contextlib.redirect_stdout(quiet):
                coco_eval.summarize()
        return {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats)}


def detection_evaluator(cfg) -> COCOEvaluator:
    """COCO box evaluator for the configured dataset's classes."""
    from src.data.detection.sources import class_info
    names, cat_ids = class_info(cfg)
    return COCOEvaluator(names, cat_ids)


def detection_metas(batch: dict) -> list[dict]:
    """Per-image metadata (id, original size, ground truth without padding) from an eval batch
    with columns image_id, height, width, gt_boxes, gt_labels, gt_iscrowd (label 0 = padding)."""
    metas = []
    for i in range(len(batch["image_id"])):
        valid = batch["gt_labels"][i] > 0
        metas.append({"image_id": int(np.asarray(batch["image_id"][i]).reshape(-1)[0]),
                      "height": int(np.asarray(batch["height"][i]).reshape(-1)[0]),
                      "width": int(np.asarray(batch["width"][i]).reshape(-1)[0]),
                      "gt_boxes": batch["gt_boxes"][i][valid], "gt_labels": batch["gt_labels"][i][valid],
                      "gt_iscrowd": batch["gt_iscrowd"][i][valid]})
    return metas
