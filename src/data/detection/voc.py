"""Pascal VOC trees (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/``) to DetRecords."""
from __future__ import annotations

import glob
import os
import xml.etree.ElementTree as ET

import numpy as np

from src.data.detection.records import (DetRecord, ReadStats, empty_box_arrays, foreground_names,
                                        image_size, require_dir, require_file)
from src.model_utils.config import Config

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _xml_text(node, tag, default=None):
    child = node.find(tag)
    if child is None or child.text is None:
        return default
    return child.text.strip()


def read_voc(root, split="trainval", class_names=None, stats=None):
    """Read a Pascal VOC tree (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``).

    Args:
        root: the VOC folder (e.g. ``VOCdevkit/VOC2007``).
        split: name of ``ImageSets/Main/<split>.txt``; when that file is missing every xml in
            ``Annotations`` is used (sorted).
        class_names: foreground classes; ``None`` = the 20 VOC classes. An object whose name
            is not in the list raises ValueError naming it and the xml.
        stats: optional :class:`ReadStats`.

    Returns:
        ``(records, class_names, cat_ids)`` with ``cat_ids = 1..K`` and ``image_id`` a running
        index. ``difficult=1`` becomes ``iscrowd=1``. VOC pixel coordinates are 1-based and
        inclusive, so ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` gives the usual
        0-based continuous box whose width is ``xmax - xmin + 1``.
    """
    stats = stats if stats is not None else ReadStats()
    root = os.fspath(root)
    ann_dir = os.path.join(root, "Annotations")
    img_dir = os.path.join(root, "JPEGImages")
    require_dir(root, "VOC root")
    require_dir(ann_dir, "VOC annotation directory")
    require_dir(img_dir, "VOC image directory")
    if class_names is None:
        names = list(VOC_CLASSES)
    else:
        names = foreground_names(class_names, root, stats)
    name_to_label = {n: i + 1 for i, n in enumerate(names)}

    set_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if os.path.isfile(set_file):
        with open(set_file, "r", encoding="utf-8") as f:
            ids = [ln.split()[0] for ln in f if ln.strip()]
    else:
        stats.note(f"VOC set file missing: {set_file}; using every xml in {ann_dir}")
        ids = sorted(os.path.splitext(os.path.basename(p))[0]
                     for p in glob.glob(os.path.join(ann_dir, "*.xml")))

    records = []
    for idx_name in ids:
        xml_path = os.path.join(ann_dir, f"{idx_name}.xml")
        require_file(xml_path, "VOC annotation xml")
        try:
            tree = ET.parse(xml_path).getroot()
        except ET.ParseError as e:
            raise ValueError(f"{xml_path}: malformed xml ({e})") from None
        path = None
        fname = _xml_text(tree, "filename")
        candidates = ([os.path.join(img_dir, fname)] if fname else []) + \
            [os.path.join(img_dir, idx_name + ext) for ext in (".jpg", ".jpeg", ".png", ".JPG")]
        for cand in candidates:
            if os.path.isfile(cand):
                path = cand
                break
        if path is None:
            stats.skipped_images += 1
            stats.note(f"{xml_path}: image file missing (tried {candidates[0]}); skipped")
            continue
        size = tree.find("size")
        height = int(float(_xml_text(size, "height", 0))) if size is not None else 0
        width = int(float(_xml_text(size, "width", 0))) if size is not None else 0
        if height <= 0 or width <= 0:
            hw = image_size(path)
            if hw is None:
                stats.skipped_images += 1
                stats.note(f"{xml_path}: no size and image cannot be decoded: {path}; skipped")
                continue
            height, width = hw
        boxes, labels, crowd = [], [], []
        for obj in tree.findall("object"):
            name = _xml_text(obj, "name", "")
            if name not in name_to_label:
                raise ValueError(f"unknown class name '{name}' in {xml_path} "
                                 f"(known: {names})")
            bnd = obj.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(_xml_text(bnd, k)) for k in
                                          ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError, AttributeError):
                raise ValueError(f"{xml_path}: object '{name}' has a missing or "
                                 f"non-numeric bndbox") from None
            boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
            labels.append(name_to_label[name])
            crowd.append(1 if _xml_text(obj, "difficult", "0") in ("1", "1.0") else 0)
        if boxes:
            rec = DetRecord(len(records), path, height, width,
                            np.asarray(boxes, np.float32).reshape(-1, 4),
                            np.asarray(labels, np.int32), np.asarray(crowd, np.int32))
        else:
            rec = DetRecord(len(records), path, height, width, *empty_box_arrays())
        records.append(rec)
        stats.images += 1
    return records, names, list(range(1, len(names) + 1))


# ---------------------------------------------------------------------------------------------
# dataset kind "voc"
# ---------------------------------------------------------------------------------------------

def describe(cfg: Config, split: str) -> dict:
    """`voc_root` and the ImageSets/Main list named by `voc_train_split` / `voc_val_split`."""
    return {"root": cfg.path("voc_root"), "split": cfg[f"voc_{split}_split"]}


def read_split(cfg: Config, split: str, source: dict, class_names, stats):
    return read_voc(source["root"], source["split"], class_names, stats)


def categories(cfg: Config) -> tuple[list[str], list[int]]:
    """The 20 VOC classes, known without a VOC tree on disk."""
    return list(VOC_CLASSES), list(range(1, len(VOC_CLASSES) + 1))
