"""SSD300 really learns: it memorises the 3 real photos of ../shared/data/coco_labelme.

configs/ssd/ssd300_memorize.yaml (fixed seed, no augmentation): bench/ssd_memorize.py reached mAP@0.5 1.00 with these settings,
the threshold leaves a margin.
"""
from __future__ import annotations

import os

from conftest import ROOT, shared_path


def test_ssd_memorises_real_photos(tmp_path):
    import train
    shared_path("data", "coco_labelme")
    summary = train.main(["--config_path", os.path.join(ROOT, "configs", "ssd", "ssd300_memorize.yaml"),
                          "--mindrecord_dir", str(tmp_path / "mr"), "--output_dir", str(tmp_path / "out"),
                          "--log_every", "100", "--save_best_ckpt", "False"])
    epoch, metrics = summary["eval_history"][-1]
    assert epoch == 300
    assert metrics["mAP50"] >= 0.8, metrics
    assert metrics["mAP"] >= 0.6, metrics
