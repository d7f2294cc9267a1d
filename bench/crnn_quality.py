"""CRNN from scratch on the embedded rendered word crops, within a wall-clock budget, then the
same model on the 10 real crops of ../shared/data/rec_lmdb_mmocr (reported as it is).

    python bench/crnn_quality.py [--key value ...]     # any config override, e.g. --epoch_size 4

Trains with configs/crnn/crnn_words.yaml (evaluating at the last epoch only) and prints one
JSON line: word accuracy and 1 - normalised edit distance on the val split and on the real
crops, training time, images seen.
"""
import os
import sys

import common
import src  # noqa: F401

REAL = os.path.join(os.path.dirname(common.REPO_ROOT), "shared", "data", "rec_lmdb_mmocr")


def main() -> None:
    argv = ["--config_path", f"{common.REPO_ROOT}/configs/crnn/crnn_words.yaml",
            "--output_dir", "./outputs/bench_crnn_quality"] + sys.argv[1:]
    cfg, summary, total, (epoch, metrics) = common.train_and_evaluate_last_epoch(argv)
    result = {"benchmark": "crnn_quality", "dataset": "rendered word crops", "train_images": cfg.words_num_train,
              "val_images": metrics["count"], "epochs": epoch, "batch_size": cfg.batch_size,
              "optimizer": cfg.optimizer, "lr": cfg.lr,
              "images_seen": epoch * summary["steps_per_epoch"] * cfg.batch_size,
              "accuracy": round(metrics["accuracy"], 4), "norm_edit_distance": round(metrics["norm_edit_distance"], 4),
              "train_seconds": round(summary["train_seconds"], 1), "total_seconds": round(total, 1),
              "target_accuracy": 0.9, "budget_seconds": 1200}
    if os.path.isdir(REAL):
        import eval as eval_entry
        best = os.path.join(summary["ckpt_dir"], f"{cfg.model}_best.ckpt")
        real = eval_entry.main(argv + ["--dataset", "lmdb", "--eval_lmdb", REAL, "--checkpoint_path", best,
                                       "--output_dir", "./outputs/bench_crnn_quality/real"])
        result["real_crops_accuracy"] = round(real["accuracy"], 4)
        result["real_crops_norm_edit_distance"] = round(real["norm_edit_distance"], 4)
    common.emit(result)


if __name__ == "__main__":
    main()
