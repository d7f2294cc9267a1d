"""The in-memory record every detection reader produces, and what the readers share.

Each reader module (coco.py, voc.py, txt.py) turns one annotation format into
``(records, class_names, cat_ids)``, so that the MindRecord converter, the evaluation and the
tests never see a format:

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
import os
import struct
from dataclasses import dataclass

import numpy as np

from src.data.message_log import MessageLog
from src.data.transforms import decode_image


BACKGROUND_NAMES = {"_background_", "background", "__background__"}


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


def empty_box_arrays():
    """Boxes, labels and iscrowd of an image without objects, with the dtypes and shapes the
    converter expects of any record."""
    return (np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), np.zeros((0,), np.int32))


def foreground_names(class_names, source: str, stats: ReadStats) -> list[str]:
    """The configured class names without a background entry, checked for duplicates.

    Configs often list "background" first; labels are index + 1 of the FOREGROUND list, so
    keeping it would shift every label by one. `source` names the file in messages.
    """
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


def require_file(path: str, what: str) -> None:
    """Fail before reading, naming what the file is (a bare open() error does not say)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")


def require_dir(path: str, what: str) -> None:
    """Fail before reading, naming what the folder is."""
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
