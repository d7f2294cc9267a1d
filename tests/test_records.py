"""Tests of the detection readers (src/data/detection/) on small synthetic data sets."""
import json
import os

import cv2
import numpy as np
import pytest

from src.data.detection.coco import read_coco
from src.data.detection.records import DetRecord, ReadStats, image_size, sanitize_boxes
from src.data.detection.txt import read_txt
from src.data.detection.voc import VOC_CLASSES, read_voc

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_COCO = os.path.join(REPO_ROOT, "..", "shared", "data", "coco_labelme")


def _write_image(path, h=48, w=64):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = np.full((h, w, 3), 127, np.uint8)
    cv2.rectangle(img, (5, 5), (w // 2, h // 2), (0, 0, 255), -1)
    assert cv2.imwrite(path, img)
    return path


def _coco_json(tmp_path, categories, annotations, images=None):
    img_dir = tmp_path / "imgs"
    if images is None:
        images = [{"id": 0, "file_name": "a.jpg", "height": 48, "width": 64},
                  {"id": 7, "file_name": "b.png", "height": 48, "width": 64}]
    for im in images:
        if not im.get("_missing"):
            _write_image(str(img_dir / im["file_name"]))
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{k: v for k, v in im.items() if k != "_missing"}
                                           for im in images],
                                "annotations": annotations, "categories": categories}))
    return str(path), str(img_dir)


CATS = [{"id": 0, "name": "person"}, {"id": 3, "name": "car"},
        {"id": 5, "name": "_background_"}, {"id": 2, "name": "dog"}]
ANNS = [
    {"id": 1, "image_id": 0, "category_id": 0, "bbox": [10, 20, 30, 15], "iscrowd": 0,
     "segmentation": [[10, 20, 40, 20, 40, 35]]},
    {"id": 2, "image_id": 0, "category_id": 3, "bbox": [1.5, 2.5, 4, 5], "iscrowd": 1},
    {"id": 3, "image_id": 7, "category_id": 2, "bbox": [0, 0, 8, 9]},
    {"id": 4, "image_id": 7, "category_id": 5, "bbox": [0, 0, 64, 48]},
]


def test_coco_ids_zero_and_background(tmp_path):
    json_path, img_dir = _coco_json(tmp_path, CATS, ANNS)
    stats = ReadStats()
    recs, names, cat_ids = read_coco(json_path, img_dir, stats=stats)
    # sorted by id, background excluded, id 0 is a real class
    assert names == ["person", "dog", "car"]
    assert cat_ids == [0, 2, 3]
    assert [r.image_id for r in recs] == [0, 7]
    assert stats.images == 2
    r0 = recs[0]
    assert r0.file_name == os.path.join(img_dir, "a.jpg")
    assert (r0.height, r0.width) == (48, 64)
    np.testing.assert_allclose(r0.boxes, [[10, 20, 40, 35], [1.5, 2.5, 5.5, 7.5]])
    assert r0.boxes.dtype == np.float32 and r0.labels.dtype == np.int32
    assert r0.labels.tolist() == [1, 3]
    assert r0.iscrowd.tolist() == [0, 1]
    assert r0.segmentations == [[[10, 20, 40, 20, 40, 35]], None]
    # the _background_ annotation is ignored, only the dog remains
    assert recs[1].labels.tolist() == [2]
    np.testing.assert_allclose(recs[1].boxes, [[0, 0, 8, 9]])


def test_coco_class_names_override(tmp_path):
    json_path, img_dir = _coco_json(tmp_path, CATS, ANNS)
    recs, names, cat_ids = read_coco(json_path, img_dir, class_names=["car", "person"])
    assert names == ["car", "person"] and cat_ids == [3, 0]
    assert recs[0].labels.tolist() == [2, 1]
    assert recs[1].num_objects == 0          # dog not selected: image kept, no objects
    assert recs[1].boxes.shape == (0, 4)
    # a leading background entry does not shift the labels
    _, names2, _ = read_coco(json_path, img_dir, class_names=["background", "car"])
    assert names2 == ["car"]
    with pytest.raises(ValueError, match="'cat'.*ann.json"):
        read_coco(json_path, img_dir, class_names=["car", "cat"])


def test_coco_missing_paths_and_images(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_coco(missing, tmp_path)
    images = [{"id": 0, "file_name": "a.jpg", "height": 48, "width": 64},
              {"id": 1, "file_name": "gone.jpg", "height": 48, "width": 64, "_missing": True}]
    json_path, img_dir = _coco_json(tmp_path, CATS, ANNS, images=images)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        read_coco(json_path, tmp_path / "no_such_dir")
    stats = ReadStats()
    recs, _, _ = read_coco(json_path, img_dir, stats=stats)
    assert [r.image_id for r in recs] == [0]
    assert stats.skipped_images == 1
    assert any("gone.jpg" in m for m in stats.messages)
    assert "skipped_images=1" in stats.summary()


def test_shared_coco_labelme():
    json_path = os.path.join(SHARED_COCO, "annotations.json")
    if not os.path.isfile(json_path):
        pytest.skip(f"../shared/data absent: {os.path.normpath(json_path)} not found")
    stats = ReadStats()
    recs, names, cat_ids = read_coco(json_path, SHARED_COCO, stats=stats)
    assert len(recs) == 3
    assert sum(r.num_objects for r in recs) == 12
    assert len(names) == 20 and "_background_" not in names
    assert cat_ids == list(range(1, 21))
    assert stats.skipped_images == 0
    assert 0 in [r.image_id for r in recs]
    person = names.index("person") + 1
    assert sum(int((r.labels == person).sum()) for r in recs) == 6
    for r in recs:
        assert r.boxes.shape == (r.num_objects, 4)
        assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
        assert (r.height, r.width) == image_size(r.file_name)
        assert len(r.segmentations) == r.num_objects


def _voc_xml(filename, w, h, objects, size=True):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects)
    sz = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>{filename}</filename>{sz}{objs}</annotation>"


def _voc_tree(root):
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    _write_image(str(root / "JPEGImages" / "000001.jpg"), 48, 64)
    _write_image(str(root / "JPEGImages" / "000002.jpg"), 40, 50)
    _write_image(str(root / "JPEGImages" / "000003.jpg"), 30, 20)
    (root / "Annotations" / "000001.xml").write_text(_voc_xml(
        "000001.jpg", 64, 48, [("dog", (11, 21, 40, 35), 0), ("person", (1, 1, 64, 48), 1)]))
    (root / "Annotations" / "000002.xml").write_text(_voc_xml("000002.jpg", 50, 40, []))
    # no <size>: read from the image header
    (root / "Annotations" / "000003.xml").write_text(_voc_xml(
        "000003.jpg", 0, 0, [("car", (2, 3, 10, 12), 0)], size=False))
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n000002\n")


def test_voc_reader(tmp_path):
    root = tmp_path / "VOC2007"
    _voc_tree(root)
    recs, names, cat_ids = read_voc(root)
    assert names == list(VOC_CLASSES) and cat_ids == list(range(1, 21))
    assert [r.image_id for r in recs] == [0, 1]
    r = recs[0]
    assert (r.height, r.width) == (48, 64)
    np.testing.assert_allclose(r.boxes, [[10, 20, 40, 35], [0, 0, 64, 48]])
    assert r.labels.tolist() == [names.index("dog") + 1, names.index("person") + 1]
    assert r.iscrowd.tolist() == [0, 1]          # difficult -> iscrowd
    assert recs[1].boxes.shape == (0, 4)
    # set file missing -> every xml
    stats = ReadStats()
    recs, _, _ = read_voc(root, split="test", stats=stats)
    assert len(recs) == 3 and any("test.txt" in m for m in stats.messages)
    assert (recs[2].height, recs[2].width) == (30, 20)
    # class override, unknown name names it and the xml
    with pytest.raises(ValueError, match="'dog'.*000001.xml"):
        read_voc(root, class_names=["person", "car"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_voc(tmp_path / "nowhere")


def _txt_setup(tmp_path, lines):
    img_dir = tmp_path / "images"
    _write_image(str(img_dir / "a.jpg"), 100, 200)
    _write_image(str(img_dir / "sub dir" / "b.png"), 50, 60)
    txt = tmp_path / "train.txt"
    txt.write_text("\n".join(lines) + "\n")
    return str(txt), str(img_dir)


def test_txt_reader_x_first_and_classes(tmp_path):
    txt, img_dir = _txt_setup(tmp_path, [
        "# comment", "a.jpg 10,20,110,60,0 5,6,7,8,cat", "", "sub dir/b.png",
        "missing.jpg 1,2,3,4,0"])
    stats = ReadStats()
    recs, names, cat_ids = read_txt(txt, img_dir, ["dog", "cat"], stats=stats)
    assert names == ["dog", "cat"] and cat_ids == [1, 2]
    assert len(recs) == 2 and stats.skipped_images == 1
    assert any("missing.jpg" in m for m in stats.messages)
    r = recs[0]
    assert (r.height, r.width) == (100, 200)
    x1, y1, x2, y2 = r.boxes[0].tolist()
    assert (x1, y1, x2, y2) == (10, 20, 110, 60)
    assert r.labels.tolist() == [1, 2]
    assert recs[1].file_name.endswith(os.path.join("sub dir", "b.png"))
    assert recs[1].boxes.shape == (0, 4) and (recs[1].height, recs[1].width) == (50, 60)


@pytest.mark.parametrize("bad, pattern", [
    ("a.jpg 10,20,110,x,0", r"train.txt:3: non-numeric"),
    ("a.jpg 10,20,110,0", r"train.txt:3: malformed box"),
    ("a.jpg 10,20,110,60,0 junk", r"train.txt:3: malformed box 'junk'"),
    ("a.jpg 10,20,110,60,5", r"train.txt:3: class index 5"),
    ("a.jpg 10,20,110,60,horse", r"'horse'.*train.txt line 3"),
    ("1,2,3,4,0", r"train.txt:3: line starts with a box"),
    ("a.jpg 10 20 110 60 0", r"train.txt:3: malformed box '10'"),
])
def test_txt_reader_errors(tmp_path, bad, pattern):
    txt, img_dir = _txt_setup(tmp_path, ["a.jpg 1,2,3,4,0", "a.jpg", bad])
    with pytest.raises(ValueError, match=pattern):
        read_txt(txt, img_dir, ["dog", "cat"])


def test_txt_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_txt(tmp_path / "absent.txt", tmp_path, ["dog"])


def test_sanitize_boxes():
    rec = DetRecord(3, "img/x.jpg", 40, 50,
                    np.array([[-5, 10, 20, 30],        # partly outside: clipped
                              [10, 10, 60, 45],        # partly outside on two sides: clipped
                              [5, 5, 15, 25],          # fine
                              [10, 10, 10.5, 30],      # too thin: dropped
                              [55, 0, 70, 10],         # fully outside: dropped
                              [np.nan, 0, 5, 5]],      # not finite: dropped
                             np.float32),
                    np.array([1, 2, 3, 1, 2, 3], np.int32), np.array([0, 1, 0, 0, 0, 0], np.int32),
                    [["s0"], ["s1"], ["s2"], ["s3"], ["s4"], ["s5"]])
    stats = ReadStats()
    out = sanitize_boxes(rec, stats)
    np.testing.assert_allclose(out.boxes, [[0, 10, 20, 30], [10, 10, 50, 40], [5, 5, 15, 25]])
    assert out.labels.tolist() == [1, 2, 3] and out.iscrowd.tolist() == [0, 1, 0]
    assert out.segmentations == [["s0"], ["s1"], ["s2"]]
    assert stats.boxes_clipped == 2 and stats.boxes_dropped == 3
    assert all("img/x.jpg" in m for m in stats.messages) and len(stats.messages) == 2
    assert rec.boxes.shape == (6, 4)           # input untouched


def test_stats_message_cap():
    stats = ReadStats()
    for i in range(200):
        stats.note(f"m{i}")
    assert len(stats.messages) == 50 and stats.suppressed_messages == 150
    assert "messages=200" in stats.summary()
