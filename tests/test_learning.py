"""The models really learn: SSD300 memorises the 3 real photos of ../shared/data/coco_labelme,
CRNN the 10 real word crops of ../shared/data/rec_lmdb_mmocr.

configs/ssd/ssd300_memorize.yaml and configs/crnn/crnn_memorize.yaml (fixed seeds, no
augmentation) are the settings bench/ssd_memorize.py and bench/crnn_memorize.py measured; the
thresholds leave a margin.
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


def test_crnn_memorises_real_word_crops(tmp_path):
    import train
    shared_path("data", "rec_lmdb_mmocr")
    summary = train.main(["--config_path", os.path.join(ROOT, "configs", "crnn", "crnn_memorize.yaml"),
                          "--output_dir", str(tmp_path / "out"), "--save_best_ckpt", "False"])
    epoch, metrics = summary["eval_history"][-1]
    assert epoch == 300 and metrics["count"] == 10
    assert metrics["accuracy"] >= 0.8, metrics
    assert metrics["norm_edit_distance"] >= 0.9, metrics
