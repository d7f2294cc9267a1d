"""The registry of dataset kinds: the config glue finds every format through it, so a new format
is a reader module plus one entry, and a wrong `dataset` value says what would be right."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from conftest import SSD_CONFIG
from src.data import registry
from src.data.detection import sources
from src.data.detection.mindrecord_io import decode_row, open_detection_mindrecord
from src.data.detection.records import DetRecord, ReadStats, image_size
from src.data.registry import DETECTION, TEXT, DatasetKind
from src.model_utils.config import ConfigError, parse_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRNN_CONFIG = os.path.join(ROOT, "configs", "crnn", "crnn.yaml")


def test_builtin_kinds_are_registered_for_their_task():
    assert registry.kind_names(DETECTION) == ["shapes", "coco", "coco_json", "voc", "txt"]
    assert registry.kind_names(TEXT) == ["words", "lmdb"]
    for name in registry.kind_names(DETECTION):
        kind = registry.kind_of(parse_cli(["--config_path", SSD_CONFIG, "--dataset", name]), DETECTION)
        assert kind.name == name and kind.describe is not None
        # Only the txt list names no classes; only COCO-format sources carry ids of their own.
        assert (kind.categories is None) == (name == "txt")
        assert kind.source_category_ids == (name in ("shapes", "coco", "coco_json"))


@pytest.mark.parametrize("config, value, task, known", [
    (SSD_CONFIG, "bogus", DETECTION, "shapes, coco, coco_json, voc, txt"),
    (SSD_CONFIG, "lmdb", DETECTION, "shapes, coco, coco_json, voc, txt"),   # a text kind cannot feed SSD
    (CRNN_CONFIG, "coco", TEXT, "words, lmdb"),
])
def test_unknown_kind_names_the_key_the_value_and_the_known_kinds(config, value, task, known):
    cfg = parse_cli(["--config_path", config, "--dataset", value])
    with pytest.raises(ConfigError) as err:
        registry.kind_of(cfg, task)
    assert str(err.value) == f"config key 'dataset' is '{value}'; expected one of {known}"


def test_the_glue_and_the_model_report_an_unknown_kind():
    from src.crnn.model import text_sets
    with pytest.raises(ConfigError, match="^config key 'dataset' is 'bogus'; expected one of shapes,"):
        sources.mindrecord_path(parse_cli(["--config_path", SSD_CONFIG, "--dataset", "bogus"]), "train")
    with pytest.raises(ConfigError, match="^config key 'dataset' is 'bogus'; expected one of words, lmdb$"):
        text_sets(parse_cli(["--config_path", CRNN_CONFIG, "--dataset", "bogus"]), "val")


def test_a_name_is_registered_once(monkeypatch):
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    with pytest.raises(ValueError, match="'coco' is registered already"):
        registry.register(DatasetKind("coco", DETECTION, read=lambda *a: None, describe=lambda cfg, split: {}))
    with pytest.raises(ValueError, match="needs `describe`"):
        registry.register(DatasetKind("no_describe", DETECTION, read=lambda *a: None))


# A format of the test's own: every PNG of `image_dir` holds one object, the middle half of the
# image. What a real reader module would hold, the reader and its kind's functions, is below.

def _read_dots(image_dir, class_names, stats=None):
    stats = stats if stats is not None else ReadStats()
    records = []
    for i, name in enumerate(sorted(f for f in os.listdir(image_dir) if f.endswith(".png"))):
        path = os.path.join(image_dir, name)
        h, w = image_size(path)
        box = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], np.float32)
        records.append(DetRecord(i, path, h, w, box, np.array([1], np.int32), np.zeros(1, np.int32)))
        stats.images += 1
    return records, list(class_names or ["dot"]), [1]


def _describe_dots(cfg, split):
    return {"image_dir": cfg.path("image_dir"), "split": split}


def _read_dots_split(cfg, split, source, class_names, stats):
    return _read_dots(source["image_dir"], class_names, stats)


def _dot_categories(cfg):
    return ["dot"], [1]


def test_a_registered_kind_is_converted_to_mindrecord_by_the_unchanged_glue(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))  # the entry leaves with the test
    registry.register(DatasetKind("dots", DETECTION, read=_read_dots_split, describe=_describe_dots,
                                  categories=_dot_categories))
    images = tmp_path / "dots"
    images.mkdir()
    for i, (h, w) in enumerate([(40, 60), (64, 32), (48, 48)]):
        assert cv2.imwrite(str(images / f"{i}.png"), np.full((h, w, 3), 40 * i, np.uint8))
    cfg = parse_cli(["--config_path", SSD_CONFIG, "--dataset", "dots", "--image_dir", str(images),
                     "--mindrecord_dir", str(tmp_path / "mr")])

    assert registry.kind_names(DETECTION)[-1] == "dots"
    assert sources.class_names(cfg) == ["dot"] and sources.class_info(cfg) == (["dot"], [1])
    assert sources.source_description(cfg, "val") == {"kind": "dots", "image_dir": str(images), "split": "val"}
    path = sources.ensure_split_mindrecord(cfg, "train")
    assert os.path.basename(path).startswith("dots_train_") and path == sources.mindrecord_path(cfg, "train")
    rows = [decode_row(r) for r in open_detection_mindrecord(path).create_dict_iterator(num_epochs=1,
                                                                                       output_numpy=True)]
    by_id = {int(r["image_id"]): r for r in rows}
    assert sorted(by_id) == [0, 1, 2]
    np.testing.assert_allclose(by_id[1]["boxes"], [[8, 16, 24, 48]])
    assert by_id[1]["labels"].tolist() == [1] and (by_id[1]["height"], by_id[1]["width"]) == (64, 32)
