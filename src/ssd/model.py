"""SSD's model interface: what the entry points call (see src/registry.py)."""
from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import mindspore as ms
import mindspore.dataset as ds

from src.box.coder import CenterSizeCoder
from src.box.matcher import match_priors
from src.box.nms import multiclass_nms
from src.box.priors import num_boxes_per_location, ssd_default_boxes
from src.data import transforms as T
from src.data.detection.mindrecord_io import open_detection_mindrecord
from src.data.detection.sources import class_names, detection_eval_items, ensure_split_mindrecord
from src.engine.inference import draw_detections
from src.engine.read_log import ReadLog, read_log_for
from src.metric.coco_eval import detection_evaluator, detection_metas
from src.model_utils.config import Config
from src.ssd.official import LAYOUT as OFFICIAL_CHECKPOINT  # noqa: F401  (model interface)
from src.ssd.network import DELTA_ORDER, SSDInference, SSDMobileNetV2, SSDWithLoss

# Parameters a backbone-only checkpoint holds; `freeze_layer: backbone` freezes them.
BACKBONE_PREFIX = "network.backbone."
METRIC = "mAP"


def num_classes(cfg: Config) -> int:
    """Foreground classes + background."""
    return len(class_names(cfg)) + 1


def priors(cfg: Config) -> np.ndarray:
    return ssd_default_boxes(cfg.img_shape[0], cfg.feature_size, cfg.steps, cfg.min_scale, cfg.max_scale,
                             cfg.aspect_ratios)


def box_coder(cfg: Config) -> CenterSizeCoder:
    """The coder of the training targets: the head's deltas, y first as the model zoo's."""
    return CenterSizeCoder(priors(cfg), cfg.prior_scaling, DELTA_ORDER)


def build_network(cfg: Config) -> SSDMobileNetV2:
    return SSDMobileNetV2(num_classes(cfg), num_boxes_per_location(cfg.aspect_ratios))


def build_train_network(cfg: Config) -> SSDWithLoss:
    return SSDWithLoss(build_network(cfg), num_classes(cfg), cfg.gamma, cfg.alpha)


def build_inference_network(cfg: Config, train_network: SSDWithLoss | None = None) -> SSDInference:
    """The exported graph; shares weights with train_network when given."""
    network = train_network.network if train_network is not None else build_network(cfg)
    return SSDInference(network, priors(cfg), cfg.prior_scaling)


def example_inputs(cfg: Config, batch_size: int = 1) -> tuple:
    h, w = cfg.img_shape
    return (ms.Tensor(np.zeros((batch_size, 3, h, w), np.float32)),)


# ------------------------------------------------------------------------ data pipeline

class _TrainTransform:
    """Augment one image, then match its boxes to the priors and encode the targets, in numpy:
    cheaper here than in the graph and done once per image."""

    def __init__(self, cfg: Config, seed: int, read_log: ReadLog | None = None):
        self.size = tuple(cfg.img_shape)
        self.coder = box_coder(cfg)
        self.priors_xyxy = self.coder.priors_xyxy
        self.threshold = cfg.match_threshold
        self.augment = cfg.augment
        self.random_crop = cfg.random_crop
        self.expand = cfg.expand_ratio
        self.seed = seed
        self.read_log = read_log
        self.local = threading.local()
        self.counter = 0
        self.lock = threading.Lock()

    def _rng(self) -> np.random.Generator:
        rng = getattr(self.local, "rng", None)
        if rng is None:
            with self.lock:
                self.counter += 1
                rng = self.local.rng = np.random.default_rng([self.seed, self.counter])
        return rng

    def __call__(self, image, boxes, labels, iscrowd, image_id):
        if self.read_log is not None:
            self.read_log.record(image_id)
        rng = self._rng()
        img = T.decode_image(image.tobytes())
        keep = iscrowd.reshape(-1) == 0
        boxes, labels = boxes.reshape(-1, 4)[keep].astype(np.float32), labels.reshape(-1)[keep].astype(np.int32)
        if self.augment:
            img = T.photometric_distort(img, rng)
            img, boxes = T.random_expand(img, boxes, rng, self.expand)
            if self.random_crop:
                img, boxes, labels = T.ssd_random_crop(img, boxes, labels, rng)
            img, boxes = T.random_hflip(img, boxes, rng)
        h, w = img.shape[:2]
        img = T.resize(img, self.size)
        norm_boxes = boxes / np.asarray([w, h, w, h], np.float32)
        matched = match_priors(norm_boxes, self.priors_xyxy, self.threshold)
        positive = matched >= 0
        gt_loc = np.zeros((len(matched), 4), np.float32)
        gt_label = np.zeros(len(matched), np.int32)
        if positive.any():
            gt_loc[positive] = self.coder.encode(norm_boxes[matched[positive]], positive)
            gt_label[positive] = labels[matched[positive]]
        return T.normalize_chw(img), gt_loc, gt_label, np.asarray(positive.sum(), np.int32)


class _EvalTransform:
    """Resize + normalise; ground truth padded to a fixed length so images can be batched."""

    def __init__(self, cfg: Config):
        self.size = tuple(cfg.img_shape)
        self.max_gt = cfg.max_gt_per_image

    def __call__(self, image, boxes, labels, iscrowd):
        img = T.decode_image(image.tobytes())
        return (T.preprocess_for_inference(img, self.size)[0],) + T.pad_ground_truth(boxes, labels, iscrowd,
                                                                                      self.max_gt)


def create_dataset(cfg: Config, split: str, rank: int = 0, group_size: int = 1,
                   training: bool | None = None) -> ds.Dataset:
    """Batched dataset of a split (the MindRecord is built on first use). Training batches hold
    (image, gt_loc, gt_label, num_matched); evaluation batches hold the image, its id and size,
    and the padded ground truth."""
    training = split == "train" if training is None else training
    path = ensure_split_mindrecord(cfg, split, rank)
    columns = ["image", "boxes", "labels", "iscrowd", "image_id"] + ([] if training else ["height", "width"])
    data = open_detection_mindrecord(path, columns=columns, num_shards=group_size if group_size > 1 else None,
                                     shard_id=rank if group_size > 1 else None, shuffle=training,
                                     num_parallel_workers=1)
    workers = cfg.num_workers
    if training:
        data = data.map(operations=_TrainTransform(cfg, cfg.seed + 1000 * rank, read_log_for(cfg, rank)),
                        input_columns=["image", "boxes", "labels", "iscrowd", "image_id"],
                        output_columns=["image", "gt_loc", "gt_label", "num_matched"],
                        num_parallel_workers=workers, python_multiprocessing=False)
        data = data.project(["image", "gt_loc", "gt_label", "num_matched"])
        return data.batch(cfg.batch_size, drop_remainder=True)
    data = data.map(operations=_EvalTransform(cfg), input_columns=["image", "boxes", "labels", "iscrowd"],
                    output_columns=["image", "gt_boxes", "gt_labels", "gt_iscrowd"],
                    num_parallel_workers=workers, python_multiprocessing=False)
    data = data.project(["image", "image_id", "height", "width", "gt_boxes", "gt_labels", "gt_iscrowd"])
    return data.batch(cfg.eval_batch_size, drop_remainder=False)


# ------------------------------------------------------------------- evaluation & output

create_evaluator = detection_evaluator
metas_from_batch = detection_metas
eval_items = detection_eval_items


def postprocess(cfg: Config, outputs, metas) -> list[dict]:
    """Network outputs (boxes (B,N,4) in [0,1], scores (B,N,C)) -> per-image detections in
    original-image pixels with 1-based labels. Shared by eval.py, infer.py and postprocess.py."""
    boxes, scores = (np.asarray(o) for o in outputs[:2])
    results = []
    for i, meta in enumerate(metas):
        b, s, cls = multiclass_nms(boxes[i], scores[i][:, 1:], cfg.min_score, cfg.nms_threshold,
                                   cfg.max_boxes, cfg.pre_nms_top_k)
        scale = np.asarray([meta["width"], meta["height"]] * 2, np.float32)
        b = np.clip(b * scale, 0, scale)
        results.append({"boxes": b, "scores": s, "labels": cls + 1})
    return results


def preprocess_image(cfg: Config, img_rgb: np.ndarray) -> np.ndarray:
    """One RGB image -> the network's (1,3,H,W) input (the 310 program does the same in C++)."""
    return T.preprocess_for_inference(img_rgb, tuple(cfg.img_shape))


def show_result(cfg: Config, img_rgb: np.ndarray, det: dict, output: str | None) -> None:
    """infer.py: print the detections and draw them into `output` (default IMG_det.png)."""
    names = class_names(cfg)
    for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
        print(f"{names[int(label) - 1]:>12s} {score:.3f} [{', '.join(f'{v:.1f}' for v in box)}]")
    output = output or os.path.splitext(cfg.image)[0] + "_det.png"
    if not cv2.imwrite(output, draw_detections(img_rgb, det, names)):
        raise OSError(f"cannot write {output}")
    print(f"{len(det['scores'])} detections; picture written to {output}", flush=True)


def output_shapes(cfg: Config, batch_size: int = 1) -> list[tuple]:
    """Shapes of the exported graph's outputs: boxes (B,N,4) and scores (B,N,C)."""
    n = len(priors(cfg))
    return [(batch_size, n, 4), (batch_size, n, num_classes(cfg))]
