"""SSD300 really learns: it memorises the 3 real photos of ../shared/data/coco_labelme.

Fixed seed, no augmentation; bench/ssd_memorize.py reached mAP@0.5 1.00 with these settings,
the threshold leaves a margin.
"""
from __future__ import annotations

import os

from conftest import ROOT, shared_path


def test_ssd_memorises_real_photos(tmp_path):
    import train
    data = shared_path("data", "coco_labelme")
    ann = os.path.join(data, "annotations.json")
    summary = train.main([
        "--config_path", os.path.join(ROOT, "configs", "ssd", "ssd300.yaml"), "--dataset", "coco_json",
        "--train_json", ann, "--train_image_dir", data, "--val_json", ann, "--val_image_dir", data,
        "--mindrecord_dir", str(tmp_path / "mr"), "--output_dir", str(tmp_path / "out"),
        "--batch_size", "3", "--eval_batch_size", "3", "--epoch_size", "300", "--optimizer", "adam",
        "--lr", "0.002", "--warmup_epochs", "10", "--weight_decay", "0", "--augment", "False",
        "--log_every", "100", "--save_checkpoint_epochs", "300", "--keep_checkpoint_max", "1", "--seed", "1",
        "--run_eval", "True", "--eval_start_epoch", "300", "--save_best_ckpt", "False"])
    epoch, metrics = summary["eval_history"][-1]
    assert epoch == 300
    assert metrics["mAP50"] >= 0.8, metrics
    assert metrics["mAP"] >= 0.6, metrics
