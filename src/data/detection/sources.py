"""From a config to a detection MindRecord: the config key `dataset` names a kind of
src/data/registry.py, whose functions describe and read each split; the MindRecord is built
from that on first use and named after it.
"""
from __future__ import annotations

import hashlib
import json
import os

from src.data.detection.mindrecord_io import ensure_mindrecord, write_detection_mindrecord
from src.data.detection.records import ReadStats, sanitize_boxes
from src.data.registry import DETECTION, DatasetKind, kind_of
from src.errors import ConfigError
from src.model_utils.config import Config


def _split_key(split: str) -> str:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got '{split}'")
    return split


def _configured_class_names(cfg: Config) -> list[str] | None:
    """The config's class_names, or None when it leaves them to the dataset (an empty list)."""
    return list(cfg.class_names) or None


def _needs_class_names(kind: DatasetKind) -> ConfigError:
    return ConfigError(f"dataset '{kind.name}' needs config key 'class_names' (the foreground classes, in label order)")


def source_description(cfg: Config, split: str) -> dict:
    """The inputs that define one split's data: used to name its MindRecord and to read it."""
    split = _split_key(split)
    kind = kind_of(cfg, DETECTION)
    return {"kind": kind.name, **kind.describe(cfg, split)}


def read_records(cfg: Config, split: str, stats=None):
    """Read one split into DetRecords. Returns (records, class_names, cat_ids)."""
    src = source_description(cfg, split)
    kind = kind_of(cfg, DETECTION)
    names = _configured_class_names(cfg)
    if names is None and kind.categories is None:
        raise _needs_class_names(kind)
    return kind.read(cfg, split, src, names, stats)


def mindrecord_path(cfg: Config, split: str) -> str:
    """`<mindrecord_dir>/<dataset>_<split>_<hash of the source>.mindrecord`: a new source never
    reuses a stale file."""
    src = source_description(cfg, split)
    src["class_names"] = _configured_class_names(cfg)
    digest = hashlib.sha1(json.dumps(src, sort_keys=True).encode()).hexdigest()[:10]
    out_dir = cfg.path("mindrecord_dir", must_exist=False)
    return os.path.join(out_dir, f"{cfg.dataset}_{split}_{digest}.mindrecord")


def ensure_split_mindrecord(cfg: Config, split: str, rank: int = 0) -> str:
    """Path of the split's MindRecord, converting the source first if it is missing.
    Rank 0 converts; other ranks wait for it."""
    out = mindrecord_path(cfg, split)

    def build(out_file: str) -> None:
        os.makedirs(os.path.dirname(out_file), exist_ok=True)
        stats = ReadStats()
        records, _, _ = read_records(cfg, split, stats)
        print(f"converting {len(records)} {split} images of '{cfg.dataset}' to {out_file}", flush=True)
        write_detection_mindrecord(records, out_file, stats=stats, progress=True)
        print(f"{split}: {stats.summary()}", flush=True)

    return ensure_mindrecord(out, build, rank=rank)


def class_names(cfg: Config) -> list[str]:
    """Foreground class names (label = index + 1). Read from the config when it lists them, so
    that a network can be built, exported and run with no dataset on disk; otherwise from the
    source's categories."""
    return _configured_class_names(cfg) or class_info_from_source(cfg)[0]


def class_info(cfg: Config) -> tuple[list[str], list[int]]:
    """Foreground class names (label = index + 1) and their source category ids (sources with
    ids of their own, COCO, are read to map the configured names to their ids)."""
    kind = kind_of(cfg, DETECTION)
    names = _configured_class_names(cfg)
    if names is None:
        return class_info_from_source(cfg)
    if not kind.source_category_ids:
        return names, list(range(1, len(names) + 1))
    all_names, all_ids = class_info_from_source(cfg)
    by_name = dict(zip(all_names, all_ids))
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"class_names {unknown} are not categories of the '{cfg.dataset}' dataset")
    return names, [by_name[n] for n in names]


def class_info_from_source(cfg: Config) -> tuple[list[str], list[int]]:
    """All foreground categories the source defines, in id order."""
    kind = kind_of(cfg, DETECTION)
    if kind.categories is None:
        raise _needs_class_names(kind)
    return kind.categories(cfg)


def detection_eval_items(cfg: Config):
    """(image file stem, meta with ground truth) for every val image, read from the source
    (postprocess.py matches them to the 310 program's `<stem>_<i>.bin` outputs)."""
    stats = ReadStats()
    records, _, _ = read_records(cfg, "val", stats)
    for rec in records:
        rec = sanitize_boxes(rec, stats)
        stem = os.path.splitext(os.path.basename(rec.file_name))[0]
        yield stem, {"image_id": rec.image_id, "height": rec.height, "width": rec.width, "gt_boxes": rec.boxes,
                     "gt_labels": rec.labels, "gt_iscrowd": rec.iscrowd}
