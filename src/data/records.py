"""Readers that turn detection annotation formats into one in-memory record type.

Every reader returns ``(records, class_names, cat_ids)``:

* ``records``: list of :class:`DetRecord`, boxes always ``x1, y1, x2, y2`` in pixels;
* ``class_names``: foreground class names in label order (label = index + 1, label 0 is the
  background and is never given to an object);
* ``cat_ids``: the source category id for each label (``cat_ids[label - 1]``), which the
  COCO evaluator needs to map predictions back.

Readers do not clip or drop boxes; :func:`sanitize_boxes` does that (the MindRecord converter
calls it after decoding each image, when the true image size is known).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from src.data.message_log import MessageLog
from src.data.transforms import decode_image


BACKGROUND_NAMES = {"_background_", "background", "__background__"}

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

@dataclass
class DetRecord:
    """One image and its objects, in the common in-memory form."""

    image_id: int
    file_name: str            # resolved path to the image file
    height: int
    width: int
    boxes: np.ndarray         # (N, 4) float32, x1, y1, x2, y2 in pixels
    labels: np.ndarray        # (N,) int32, 1..num_classes-1
    iscrowd: np.ndarray       # (N,) int32
    segmentations: list | None = None   # per object: polygons / RLE dict / None

    @property
    def num_objects(self) -> int:
        """Number of objects (rows of ``boxes``)."""
        return int(self.boxes.shape[0])


@dataclass
class ReadStats(MessageLog):
    """Counters filled by the readers and the converter, plus the messages naming bad entries."""

    images: int = 0
    skipped_images: int = 0
    boxes_clipped: int = 0
    boxes_dropped: int = 0
    images_without_annotations: int = 0
    images_written: int = 0

    def summary(self) -> str:
        """One-line summary of the counters."""
        text = (f"images={self.images} written={self.images_written} "
                f"skipped_images={self.skipped_images} boxes_clipped={self.boxes_clipped} "
                f"boxes_dropped={self.boxes_dropped} "
                f"images_without_annotations={self.images_without_annotations} "
                f"messages={self.message_count}")
        return text


def _empty_record_arrays():
    return (np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), np.zeros((0,), np.int32))


def _strip_background(class_names, source: str, stats: ReadStats) -> list[str]:
    # Configs often list "background" first; labels here are index+1 of the FOREGROUND list,
    # so keeping it would shift every label by one.
    names = [str(n) for n in class_names]
    fg = [n for n in names if n.lower() not in BACKGROUND_NAMES]
    if len(fg) != len(names):
        stats.note(f"{source}: background entry removed from class_names "
                   f"(labels are 1..{len(fg)} for the foreground classes)")
    if len(set(fg)) != len(fg):
        dup = sorted({n for n in fg if fg.count(n) > 1})
        raise ValueError(f"{source}: duplicate class names {dup}")
    if not fg:
        raise ValueError(f"{source}: class_names has no foreground class")
    return fg


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")


def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path}")


# ---------------------------------------------------------------------------------------------
# image size without a full decode
# ---------------------------------------------------------------------------------------------

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:          # fill byte before a marker
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return (h, w) if h > 0 and w > 0 else None
        if marker == 0xDA:          # start of scan without a frame header: broken
            return None
        i += 2 + seg_len
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    w, h = struct.unpack(">II", data[16:24])
    return (h, w) if h > 0 and w > 0 else None


def image_size(path: str) -> tuple[int, int] | None:
    """(height, width) of an image file, or None when the file cannot be understood.

    JPEG and PNG sizes come from the header (fast, for formats like txt lists that carry no
    size); anything else is decoded in full. Note that OpenCV applies EXIF orientation when
    decoding, so for rotated JPEGs the converter's decoded size wins over this one.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        size = _png_size(head) or _jpeg_size(head)
        if size is None and head[:2] == b"\xff\xd8":
            # Large EXIF/ICC blocks can push the frame header past the first 64 KiB.
            size = _jpeg_size(head + f.read())
    if size is not None:
        return size
    with open(path, "rb") as f:
        img = decode_image(f.read())
    return None if img is None else (int(img.shape[0]), int(img.shape[1]))


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------

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
    _require_file(json_path, "COCO annotation json")
    _require_dir(image_dir, "COCO image directory")
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
        names = _strip_background(class_names, json_path, stats)
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
            rec_boxes, rec_labels, rec_crowd = _empty_record_arrays()
        records.append(DetRecord(image_id, path, height, width, rec_boxes, rec_labels,
                                 rec_crowd, segms))
        stats.images += 1
    return records, names, cat_ids


# ---------------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------------

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
    _require_dir(root, "VOC root")
    _require_dir(ann_dir, "VOC annotation directory")
    _require_dir(img_dir, "VOC image directory")
    if class_names is None:
        names = list(VOC_CLASSES)
    else:
        names = _strip_background(class_names, root, stats)
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
        _require_file(xml_path, "VOC annotation xml")
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
            rec = DetRecord(len(records), path, height, width, *_empty_record_arrays())
        records.append(rec)
        stats.images += 1
    return records, names, list(range(1, len(names) + 1))


# ---------------------------------------------------------------------------------------------
# txt list ("other" format)
# ---------------------------------------------------------------------------------------------

def _is_box_token(tok: str) -> bool:
    # Any comma starts the box list, so a box with a missing field is reported as malformed
    # instead of being swallowed into a path with spaces.
    return "," in tok


def read_txt(txt_path, image_dir, class_names, stats=None):
    """Read a one-image-per-line list: ``relpath x1,y1,x2,y2,cls x1,y1,x2,y2,cls ...``.

    Coordinates are x first (``x1,y1,x2,y2``). ``cls`` is a 0-based index into
    ``class_names`` (the foreground list) or a class name. A line with only a path is an
    image without objects; blank lines and lines starting with ``#`` are ignored. A path may
    contain spaces (everything before the first token with a comma) if that file exists.

    Returns:
        ``(records, class_names, cat_ids)``, ``cat_ids = 1..K``, ``image_id`` a running index.
        Images are sized from their header; a missing or undecodable image is skipped and
        counted.
    """
    stats = stats if stats is not None else ReadStats()
    txt_path = os.fspath(txt_path)
    image_dir = os.fspath(image_dir)
    _require_file(txt_path, "annotation txt")
    _require_dir(image_dir, "image directory")
    if class_names is None:
        raise ValueError(f"{txt_path}: read_txt needs class_names")
    names = _strip_background(class_names, txt_path, stats)
    name_to_label = {n: i + 1 for i, n in enumerate(names)}

    records = []
    with open(txt_path, "r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        toks = line.split()
        first_box = next((i for i, t in enumerate(toks) if _is_box_token(t)), len(toks))
        if first_box == 0:
            raise ValueError(f"{txt_path}:{lineno}: line starts with a box, expected an "
                             f"image path first: {raw!r}")
        rel = " ".join(toks[:first_box])
        if first_box > 1 and not os.path.isfile(os.path.join(image_dir, rel)):
            # Only accept a path with spaces when that file exists; otherwise the extra
            # tokens are far more likely a broken box (e.g. space-separated numbers).
            raise ValueError(f"{txt_path}:{lineno}: malformed box '{toks[1]}', expected "
                             f"x1,y1,x2,y2,cls")
        boxes, labels = [], []
        for tok in toks[first_box:]:
            parts = tok.split(",")
            if len(parts) != 5:
                raise ValueError(f"{txt_path}:{lineno}: malformed box '{tok}', expected "
                                 f"x1,y1,x2,y2,cls")
            try:
                coords = [float(p) for p in parts[:4]]
            except ValueError:
                raise ValueError(f"{txt_path}:{lineno}: non-numeric coordinate in "
                                 f"'{tok}'") from None
            if not all(np.isfinite(coords)):
                raise ValueError(f"{txt_path}:{lineno}: non-finite coordinate in '{tok}'")
            cls = parts[4].strip()
            if cls.lstrip("-").isdigit():
                k = int(cls)
                if not 0 <= k < len(names):
                    raise ValueError(f"{txt_path}:{lineno}: class index {k} out of range "
                                     f"0..{len(names) - 1}")
                label = k + 1
            elif cls in name_to_label:
                label = name_to_label[cls]
            else:
                raise ValueError(f"unknown class name '{cls}' in {txt_path} line {lineno} "
                                 f"(known: {names})")
            boxes.append(coords)
            labels.append(label)
        path = os.path.join(image_dir, rel)
        if not os.path.isfile(path):
            stats.skipped_images += 1
            stats.note(f"{txt_path}:{lineno}: image file missing: {path}; skipped")
            continue
        hw = image_size(path)
        if hw is None:
            stats.skipped_images += 1
            stats.note(f"{txt_path}:{lineno}: image cannot be decoded: {path}; skipped")
            continue
        if boxes:
            rec = DetRecord(len(records), path, hw[0], hw[1],
                            np.asarray(boxes, np.float32).reshape(-1, 4),
                            np.asarray(labels, np.int32), np.zeros((len(labels),), np.int32))
        else:
            rec = DetRecord(len(records), path, hw[0], hw[1], *_empty_record_arrays())
        records.append(rec)
        stats.images += 1
    return records, names, list(range(1, len(names) + 1))


# ---------------------------------------------------------------------------------------------
# box hygiene
# ---------------------------------------------------------------------------------------------

def sanitize_boxes(record: DetRecord, stats: ReadStats | None = None,
                   min_size: float = 1.0) -> DetRecord:
    """Clip boxes to the image and drop degenerate ones; returns a new record.

    A box counts as clipped when any coordinate had to move into ``[0, width] x [0, height]``;
    it is dropped when it is not finite or, after clipping, narrower or shorter than
    ``min_size`` pixels. Labels, iscrowd and segmentations are filtered alongside. Both
    counts go to ``stats`` with a message naming the file.
    """
    stats = stats if stats is not None else ReadStats()
    boxes = np.asarray(record.boxes, np.float32).reshape(-1, 4)
    n = boxes.shape[0]
    if n == 0:
        return dataclasses.replace(record, boxes=boxes)
    finite = np.isfinite(boxes).all(axis=1)
    safe = np.where(finite[:, None], boxes, 0.0).astype(np.float32)
    clipped = safe.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0.0, float(record.width))
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0.0, float(record.height))
    moved = finite & np.any(clipped != safe, axis=1)
    keep = finite & ((clipped[:, 2] - clipped[:, 0]) >= min_size) & \
        ((clipped[:, 3] - clipped[:, 1]) >= min_size)
    n_clipped = int(np.count_nonzero(moved & keep))
    n_dropped = int(n - np.count_nonzero(keep))
    if n_clipped:
        stats.boxes_clipped += n_clipped
        stats.note(f"{record.file_name}: {n_clipped} box(es) clipped to "
                   f"{record.width}x{record.height}")
    if n_dropped:
        stats.boxes_dropped += n_dropped
        bad = boxes[~keep][:3].round(1).tolist()
        stats.note(f"{record.file_name}: {n_dropped} degenerate box(es) dropped, e.g. {bad}")
    segms = record.segmentations
    if segms is not None:
        segms = [s for s, k in zip(segms, keep) if k]
    return dataclasses.replace(
        record, boxes=np.ascontiguousarray(clipped[keep], np.float32),
        labels=np.asarray(record.labels, np.int32)[keep],
        iscrowd=np.asarray(record.iscrowd, np.int32)[keep], segmentations=segms)
