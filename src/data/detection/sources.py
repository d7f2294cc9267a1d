"""From a config to a detection MindRecord: pick the reader for `dataset`, build on first use.

dataset: shapes     embedded synthetic shapes (generated into `shapes_dir` on first use)
         coco       COCO 2017 layout under `coco_root` (train2017/, val2017/, annotations/)
         coco_json  any COCO json + image folder: `train_json`, `train_image_dir`, `val_json`, `val_image_dir`
         voc        VOC layout under `voc_root` (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt)
         txt        "other" format: `train_txt` / `val_txt` lines `relpath x1,y1,x2,y2,cls ...`, images under `image_dir`
"""
from __future__ import annotations

import hashlib
import json
import logging
import os

from src.data.detection.coco import read_coco
from src.data.detection.records import BACKGROUND_NAMES, ReadStats, sanitize_boxes
from src.data.detection.txt import read_txt
from src.data.detection.voc import VOC_CLASSES, read_voc
from src.data.detection.mindrecord_io import ensure_mindrecord, open_detection_mindrecord, write_detection_mindrecord
from src.model_utils.config import Config, ConfigError

logger = logging.getLogger("src.data")

DATASETS = ("shapes", "coco", "coco_json", "voc", "txt")


def _split_key(split: str) -> str:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got '{split}'")
    return split


def shapes_paths(cfg: Config, progress: bool = True) -> dict:
    """Generate (first use) or reuse the embedded shapes dataset; returns its paths."""
    from src.data.synthetic.shapes import generate_shapes_dataset
    return generate_shapes_dataset(cfg.path("shapes_dir", must_exist=False), num_train=cfg.shapes_num_train,
                                   num_val=cfg.shapes_num_val, seed=cfg.shapes_seed, progress=progress)


def source_description(cfg: Config, split: str) -> dict:
    """The inputs that define one split's data: used to name its MindRecord and to read it."""
    split = _split_key(split)
    kind = cfg.dataset
    if kind == "shapes":
        return {"kind": kind, "dir": cfg.path("shapes_dir", must_exist=False), "split": split,
                "n": cfg.shapes_num_train if split == "train" else cfg.shapes_num_val, "seed": cfg.shapes_seed}
    if kind == "coco":
        root = cfg.path("coco_root")
        data_type = cfg.train_data_type if split == "train" else cfg.val_data_type
        return {"kind": kind, "json": os.path.join(root, "annotations", f"instances_{data_type}.json"),
                "image_dir": os.path.join(root, data_type)}
    if kind == "coco_json":
        return {"kind": kind, "json": cfg.path(f"{split}_json"), "image_dir": cfg.path(f"{split}_image_dir")}
    if kind == "voc":
        return {"kind": kind, "root": cfg.path("voc_root"), "split": cfg[f"voc_{split}_split"]}
    if kind == "txt":
        return {"kind": kind, "txt": cfg.path(f"{split}_txt"), "image_dir": cfg.path("image_dir")}
    raise ConfigError(f"config key 'dataset' is '{kind}'; expected one of {', '.join(DATASETS)}")


def read_records(cfg: Config, split: str, stats=None):
    """Read one split into DetRecords. Returns (records, class_names, cat_ids)."""
    src = source_description(cfg, split)
    class_names = list(cfg.class_names) if cfg.get("class_names") else None
    kind = src["kind"]
    if kind == "shapes":
        paths = shapes_paths(cfg)
        return read_coco(paths[f"{split}_json"], paths[f"{split}_image_dir"], class_names, stats)
    if kind in ("coco", "coco_json"):
        for key in ("json", "image_dir"):
            if not os.path.exists(src[key]):
                raise FileNotFoundError(f"{kind} {split} {key} not found: {src[key]}")
        return read_coco(src["json"], src["image_dir"], class_names, stats)
    if kind == "voc":
        return read_voc(src["root"], src["split"], class_names, stats)
    if class_names is None:
        raise ConfigError("dataset 'txt' needs config key 'class_names' (the foreground classes, in label order)")
    return read_txt(src["txt"], src["image_dir"], class_names, stats)


def mindrecord_path(cfg: Config, split: str) -> str:
    """`<mindrecord_dir>/<dataset>_<split>_<hash of the source>.mindrecord`: a new source never
    reuses a stale file."""
    src = source_description(cfg, split)
    src["class_names"] = list(cfg.class_names) if cfg.get("class_names") else None
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
    if cfg.get("class_names"):
        return list(cfg.class_names)
    return class_info_from_source(cfg)[0]


def class_info(cfg: Config) -> tuple[list[str], list[int]]:
    """Foreground class names (label = index + 1) and their source category ids (COCO sources
    are read to map the configured names to their ids)."""
    if cfg.get("class_names"):
        names = list(cfg.class_names)
        if cfg.dataset in ("txt", "voc"):
            return names, list(range(1, len(names) + 1))
        all_names, all_ids = class_info_from_source(cfg)
        by_name = dict(zip(all_names, all_ids))
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"class_names {unknown} are not categories of the '{cfg.dataset}' dataset")
        return names, [by_name[n] for n in names]
    return class_info_from_source(cfg)


def class_info_from_source(cfg: Config) -> tuple[list[str], list[int]]:
    """All foreground categories the source defines, in id order."""
    if cfg.dataset == "shapes":
        from src.data.synthetic.shapes import SHAPE_CLASSES
        return list(SHAPE_CLASSES), list(range(1, len(SHAPE_CLASSES) + 1))
    if cfg.dataset == "voc":
        return list(VOC_CLASSES), list(range(1, len(VOC_CLASSES) + 1))
    if cfg.dataset == "txt":
        raise ConfigError("dataset 'txt' needs config key 'class_names' (the foreground classes, in label order)")
    src = source_description(cfg, "val")
    with open(src["json"], encoding="utf-8") as f:
        cats = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    cats = [c for c in cats if c["name"] not in BACKGROUND_NAMES]
    return [c["name"] for c in cats], [c["id"] for c in cats]


def shard_image_ids(cfg: Config, split: str, rank: int, group_size: int) -> list[int]:
    """Image ids a data-parallel rank reads (MindSpore pads uneven shards by repeating images)."""
    data = open_detection_mindrecord(mindrecord_path(cfg, split), columns=["image_id"], num_shards=group_size,
                                     shard_id=rank, shuffle=False)
    return [int(row["image_id"]) for row in data.create_dict_iterator(num_epochs=1, output_numpy=True)]


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
