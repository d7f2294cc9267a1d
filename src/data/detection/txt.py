"""The "other" txt list (one image per line, x-first boxes with class ids) to DetRecords."""
from __future__ import annotations

import os

import numpy as np

from src.data.detection.records import (DetRecord, ReadStats, empty_box_arrays, foreground_names,
                                        image_size, require_dir, require_file)
from src.model_utils.config import Config


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
    require_file(txt_path, "annotation txt")
    require_dir(image_dir, "image directory")
    if class_names is None:
        raise ValueError(f"{txt_path}: read_txt needs class_names")
    names = foreground_names(class_names, txt_path, stats)
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
            rec = DetRecord(len(records), path, hw[0], hw[1], *empty_box_arrays())
        records.append(rec)
        stats.images += 1
    return records, names, list(range(1, len(names) + 1))


# ---------------------------------------------------------------------------------------------
# dataset kind "txt"; the list names no classes, so the config must (`class_names`)
# ---------------------------------------------------------------------------------------------

def describe(cfg: Config, split: str) -> dict:
    """`<split>_txt`, and `image_dir` that its paths are relative to."""
    return {"txt": cfg.path(f"{split}_txt"), "image_dir": cfg.path("image_dir")}


def read_split(cfg: Config, split: str, source: dict, class_names, stats):
    return read_txt(source["txt"], source["image_dir"], class_names, stats)
