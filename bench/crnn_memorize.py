"""CRNN memorises the 10 real word crops of ../shared/data/rec_lmdb_mmocr (mixed case, one with
'/'): train on them with the printable alphabet, evaluate on the same crops.

    python bench/crnn_memorize.py [--key value ...]

Prints one JSON line with the word accuracy (target 1.0) and the normalised edit distance.
"""
import os
import sys
import time

import common
import src  # noqa: F401
from src.engine.trainer import train
from src.model_utils.config import parse_cli

DATA = os.path.join(os.path.dirname(common.REPO_ROOT), "shared", "data", "rec_lmdb_mmocr")


def main() -> None:
    if not os.path.isdir(DATA):
        sys.exit(f"{DATA} not found: this benchmark needs ../shared/data beside the repository")
    cfg = parse_cli(["--config_path", f"{common.REPO_ROOT}/configs/crnn/crnn_memorize.yaml"] + sys.argv[1:])
    start = time.time()
    summary = train(cfg)
    epoch, metrics = summary["eval_history"][-1]
    common.emit({"benchmark": "crnn_memorize", "dataset": "rec_lmdb_mmocr (10 real crops)",
                 "steps": epoch * summary["steps_per_epoch"], "batch_size": cfg.batch_size,
                 "accuracy": round(metrics["accuracy"], 4),
                 "norm_edit_distance": round(metrics["norm_edit_distance"], 4),
                 "train_seconds": round(summary["train_seconds"], 1), "total_seconds": round(time.time() - start, 1),
                 "target_accuracy": 1.0})


if __name__ == "__main__":
    main()
