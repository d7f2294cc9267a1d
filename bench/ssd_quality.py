"""SSD300-MobileNetV2 from scratch on the embedded shapes dataset, within a wall-clock budget.

    python bench/ssd_quality.py [--key value ...]      # any config override, e.g. --epoch_size 8

Trains with configs/ssd/ssd300_shapes.yaml (evaluating at the last epoch only), then prints
one JSON line: COCO mAP@[.5:.95] and mAP@0.5 on the val split, training time, images seen.
"""
import sys

import common
import src  # noqa: F401


def main() -> None:
    cfg, summary, total, (epoch, metrics) = common.train_and_evaluate_last_epoch(
        ["--config_path", f"{common.REPO_ROOT}/configs/ssd/ssd300_shapes.yaml",
         "--output_dir", "./outputs/bench_ssd_quality"] + sys.argv[1:])
    common.emit({"benchmark": "ssd_quality", "dataset": "shapes", "train_images": cfg.shapes_num_train,
                 "val_images": cfg.shapes_num_val, "epochs": epoch, "batch_size": cfg.batch_size,
                 "images_seen": epoch * summary["steps_per_epoch"] * cfg.batch_size,
                 "mAP": round(metrics["mAP"], 4), "mAP50": round(metrics["mAP50"], 4),
                 "train_seconds": round(summary["train_seconds"], 1), "total_seconds": round(total, 1),
                 "target_mAP50": 0.6})


if __name__ == "__main__":
    main()
