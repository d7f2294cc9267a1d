"""SSD300-MobileNetV2 memorises the 3 real photos of ../shared/data/coco_labelme (12 polygon
instances of 6 VOC classes): train on them, evaluate on the same photos.

    python bench/ssd_memorize.py [--key value ...]

Prints one JSON line with COCO mAP@[.5:.95] and mAP@0.5 (target mAP@0.5 >= 0.9).
"""
import os
import sys
import time

import common
import src  # noqa: F401
from src.engine.trainer import train
from src.model_utils.config import parse_cli

DATA = os.path.join(os.path.dirname(common.REPO_ROOT), "shared", "data", "coco_labelme")


def main() -> None:
    if not os.path.isdir(DATA):
        sys.exit(f"{DATA} not found: this benchmark needs ../shared/data beside the repository")
    cfg = parse_cli(["--config_path", f"{common.REPO_ROOT}/configs/ssd/ssd300_memorize.yaml",
                     "--mindrecord_dir", "./data_cache/mindrecord"] + sys.argv[1:])
    start = time.time()
    summary = train(cfg)
    epoch, metrics = summary["eval_history"][-1]
    common.emit({"benchmark": "ssd_memorize", "dataset": "coco_labelme (3 photos, 12 instances)",
                 "steps": epoch * summary["steps_per_epoch"], "batch_size": cfg.batch_size,
                 "mAP": round(metrics["mAP"], 4), "mAP50": round(metrics["mAP50"], 4),
                 "train_seconds": round(summary["train_seconds"], 1), "total_seconds": round(time.time() - start, 1),
                 "target_mAP50": 0.9})


if __name__ == "__main__":
    main()
