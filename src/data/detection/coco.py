"""COCO instances json (COCO 2017, labelme exports, the embedded shapes) to DetRecords.

COCO is the one format whose category ids are its own (any integers, 0 included), so this
reader reports them as ``cat_ids`` for the evaluator to map predictions back.
"""
from __future__ import annotations

import json
import os

import numpy as np

from src.data.detection.records import (BACKGROUND_NAMES, DetRecord, ReadStats, empty_box_arrays,
                                        foreground_names, image_size, require_dir, require_file)
from src.model_utils.config import Config


def read_coco(json_path, image_dir, class_names=None, stats=None):
    """Read a COCO instances json.

    Args:
        json_path: the annotation json.
        image_dir: folder that ``images[].file_name`` is relative to.
        class_names: foreground classes to keep, in label order; ``None`` takes every category
            sorted by id except background names (:data:`BACKGROUND_NAMES`). Annotations of
            other categories are ignored.
        stats: optional :class:`ReadStats` to fill.

    Returns:
        ``(records, class_names, cat_ids)``. Category id 0 and image id 0 are ordinary ids.
        Images whose file is missing are skipped and counted; images without annotations are
        kept with zero boxes.
    """
    stats = stats if stats is not None else ReadStats()
    json_path = os.fspath(json_path)
    image_dir = os.fspath(image_dir)
    require_file(json_path, "COCO annotation json")
    require_dir(image_dir, "COCO image directory")
    with open(json_path, "r", encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{json_path}: not valid json ({e})") from None
    for key in ("images", "categories"):
        if key not in data:
            raise ValueError(f"{json_path}: no '{key}' list (not a COCO instances file?)")

    cats = sorted(data["categories"], key=lambda c: int(c["id"]))
    if class_names is None:
        chosen = [c for c in cats if str(c["name"]).lower() not in BACKGROUND_NAMES]
        names = [str(c["name"]) for c in chosen]
        cat_ids = [int(c["id"]) for c in chosen]
        cat_to_label = {cid: i + 1 for i, cid in enumerate(cat_ids)}
    else:
        names = foreground_names(class_names, json_path, stats)
        by_name: dict[str, list[int]] = {}
        for c in cats:
            by_name.setdefault(str(c["name"]), []).append(int(c["id"]))
        cat_ids, cat_to_label = [], {}
        for i, n in enumerate(names):
            if n not in by_name:
                raise ValueError(f"class name '{n}' is not a category of {json_path} "
                                 f"(categories: {sorted(by_name)})")
            ids = by_name[n]
            if len(ids) > 1:
                stats.note(f"{json_path}: category name '{n}' has ids {ids}; all map to "
                           f"label {i + 1}, evaluation uses id {ids[0]}")
            cat_ids.append(ids[0])
            for cid in ids:
                cat_to_label[cid] = i + 1

    anns_by_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations", []):
        anns_by_image.setdefault(int(ann["image_id"]), []).append(ann)
    known_ids = {int(im["id"]) for im in data["images"]}
    orphans = [i for i in anns_by_image if i not in known_ids]
    if orphans:
        stats.note(f"{json_path}: annotations refer to {len(orphans)} unknown image ids "
                   f"(e.g. {orphans[:5]}); ignored")

    records = []
    for im in data["images"]:
        image_id = int(im["id"])
        path = os.path.join(image_dir, im["file_name"])
        if not os.path.isfile(path):
            stats.skipped_images += 1
            stats.note(f"{json_path}: image id {image_id} file missing: {path}; skipped")
            continue
        height, width = int(im.get("height") or 0), int(im.get("width") or 0)
        if height <= 0 or width <= 0:
            size = image_size(path)
            if size is None:
                stats.skipped_images += 1
                stats.note(f"{json_path}: image id {image_id} has no size and cannot be "
                           f"decoded: {path}; skipped")
                continue
            height, width = size
        boxes, labels, crowd, segms = [], [], [], []
        for ann in anns_by_image.get(image_id, []):
            label = cat_to_label.get(int(ann["category_id"]))
            if label is None:
                continue
            bbox = ann.get("bbox")
            if bbox is None or len(bbox) != 4:
                stats.boxes_dropped += 1
                stats.note(f"{json_path}: annotation id {ann.get('id')} of image "
                           f"{image_id} has no valid bbox; dropped")
                continue
            x, y, w, h = (float(v) for v in bbox)
            boxes.append((x, y, x + w, y + h))
            labels.append(label)
            crowd.append(int(ann.get("iscrowd", 0) or 0))
            segms.append(ann.get("segmentation") or None)
        if boxes:
            rec_boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            rec_labels = np.asarray(labels, np.int32)
            rec_crowd = np.asarray(crowd, np.int32)
        else:
            rec_boxes, rec_labels, rec_crowd = empty_box_arrays()
        records.append(DetRecord(image_id, path, height, width, rec_boxes, rec_labels,
                                 rec_crowd, segms))
        stats.images += 1
    return records, names, cat_ids


# ---------------------------------------------------------------------------------------------
# dataset kinds "coco" (the COCO 2017 tree) and "coco_json" (any json + image folder)
# ---------------------------------------------------------------------------------------------

def describe_tree(cfg: Config, split: str) -> dict:
    """`coco_root`/annotations/instances_<data type>.json and `coco_root`/<data type>/, the
    data type being `train_data_type` or `val_data_type`."""
    root = cfg.path("coco_root")
    data_type = cfg.train_data_type if split == "train" else cfg.val_data_type
    return {"json": os.path.join(root, "annotations", f"instances_{data_type}.json"),
            "image_dir": os.path.join(root, data_type)}


def describe_files(cfg: Config, split: str) -> dict:
    """`<split>_json` and `<split>_image_dir`."""
    return {"json": cfg.path(f"{split}_json"), "image_dir": cfg.path(f"{split}_image_dir")}


def read_split(cfg: Config, split: str, source: dict, class_names, stats):
    """Both kinds: the described json and folder, checked first because the tree's paths are
    derived from `coco_root`, not resolved as config paths."""
    for key in ("json", "image_dir"):
        if not os.path.exists(source[key]):
            raise FileNotFoundError(f"{source['kind']} {split} {key} not found: {source[key]}")
    return read_coco(source["json"], source["image_dir"], class_names, stats)


def tree_categories(cfg: Config) -> tuple[list[str], list[int]]:
    """Every foreground category, from the val json: the smaller one, and the one evaluation
    needs anyway."""
    return json_categories(describe_tree(cfg, "val")["json"])


def files_categories(cfg: Config) -> tuple[list[str], list[int]]:
    """Every foreground category, from `val_json` (see :func:`tree_categories`)."""
    return json_categories(describe_files(cfg, "val")["json"])


def json_categories(json_path: str) -> tuple[list[str], list[int]]:
    """Names and ids of a COCO json's categories in id order, background names left out."""
    with open(json_path, encoding="utf-8") as f:
        cats = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    cats = [c for c in cats if c["name"] not in BACKGROUND_NAMES]
    return [c["name"] for c in cats], [c["id"] for c in cats]
