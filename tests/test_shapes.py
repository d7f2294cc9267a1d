"""Tests of the embedded synthetic shapes dataset (src/data/synthetic/shapes.py)."""
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from conftest import run_concurrently
from src.data.synthetic.shapes import SHAPE_CLASSES, generate_shapes_dataset

SMALL = dict(num_train=12, num_val=4, seed=0, progress=False)


def _all_files(root):
    """Relative path -> bytes of every file under root."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _mtimes(root):
    return {rel: os.stat(os.path.join(root, rel)).st_mtime_ns for rel in _all_files(root)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "ds"
    return generate_shapes_dataset(str(root), **SMALL)


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_layout_and_paths(dataset):
    root = dataset["root"]
    assert set(dataset) == {"root", "train_json", "train_image_dir", "val_json", "val_image_dir"}
    assert dataset["train_json"] == os.path.join(root, "annotations", "instances_train.json")
    assert dataset["val_json"] == os.path.join(root, "annotations", "instances_val.json")
    assert dataset["train_image_dir"] == os.path.join(root, "train")
    assert dataset["val_image_dir"] == os.path.join(root, "val")
    assert len(os.listdir(dataset["train_image_dir"])) == 12
    assert len(os.listdir(dataset["val_image_dir"])) == 4
    assert os.path.isfile(os.path.join(root, "COMPLETE"))
    # No temp folder is left behind next to the dataset.
    assert os.listdir(os.path.dirname(root)) == ["ds"]


def test_deterministic(tmp_path, dataset):
    other = generate_shapes_dataset(str(tmp_path / "again"), **SMALL)
    a, b = _all_files(dataset["root"]), _all_files(other["root"])
    assert sorted(a) == sorted(b)
    for rel in a:
        assert a[rel] == b[rel], rel


def test_train_and_val_differ(dataset):
    train, val = _load(dataset["train_json"]), _load(dataset["val_json"])
    with open(os.path.join(dataset["train_image_dir"], train["images"][0]["file_name"]), "rb") as f:
        t0 = f.read()
    with open(os.path.join(dataset["val_image_dir"], val["images"][0]["file_name"]), "rb") as f:
        v0 = f.read()
    assert t0 != v0
    assert train["annotations"][:4] != val["annotations"][:4]


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_contents(dataset, split):
    coco = COCO(dataset[f"{split}_json"])
    image_dir = dataset[f"{split}_image_dir"]
    img_ids = sorted(coco.getImgIds())
    assert img_ids[0] == 0
    assert img_ids == list(range(len(img_ids)))
    cats = coco.loadCats(coco.getCatIds())
    assert [c["id"] for c in cats] == [1, 2, 3, 4, 5, 6]
    assert tuple(c["name"] for c in cats) == SHAPE_CLASSES
    ann_ids = coco.getAnnIds()
    # COCOeval treats a gt id of 0 as "not matched", so ids must start at 1.
    assert min(ann_ids) >= 1 and len(set(ann_ids)) == len(ann_ids)

    for img_id in img_ids:
        info = coco.loadImgs(img_id)[0]
        assert os.path.basename(info["file_name"]) == info["file_name"]
        img = cv2.imread(os.path.join(image_dir, info["file_name"]))
        h, w = img.shape[:2]
        assert (info["height"], info["width"]) == (h, w)
        assert 240 <= h <= 400 and 240 <= w <= 400
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert len(anns) >= 1, f"image {img_id} has no objects"
        for ann in anns:
            assert ann["iscrowd"] == 0
            assert 1 <= ann["category_id"] <= 6
            assert ann["area"] > 0
            x, y, bw, bh = ann["bbox"]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert bw > 0 and bh > 0
            assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
            # Objects are sized 12%..50% of the shorter side (occlusion may shrink boxes).
            assert max(bw, bh) <= 0.5 * min(h, w) + 2
            assert max(bw, bh) >= 0.05 * min(h, w)
            assert isinstance(ann["segmentation"], list) and ann["segmentation"]
            pts = []
            for poly in ann["segmentation"]:
                assert len(poly) >= 6 and len(poly) % 2 == 0
                pts.append(np.asarray(poly, np.float64).reshape(-1, 2))
            pts = np.concatenate(pts)
            # Polygons run through boundary pixel centres, boxes cover whole pixels.
            assert abs(pts[:, 0].min() - x) <= 1 and abs(pts[:, 1].min() - y) <= 1
            assert abs(pts[:, 0].max() + 1 - (x + bw)) <= 2
            assert abs(pts[:, 1].max() + 1 - (y + bh)) <= 2
            # The polygon mask must represent the visible area (what Mask R-CNN learns).
            rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
            poly_area = float(mask_utils.area(rle))
            assert 0.8 * ann["area"] <= poly_area <= 1.05 * ann["area"]


def test_multiple_objects_and_classes(dataset):
    data = _load(dataset["train_json"])
    per_image = {}
    for ann in data["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert max(per_image.values()) >= 2
    assert max(per_image.values()) <= 4
    assert len({a["category_id"] for a in data["annotations"]}) >= 4


def test_images_are_textured(dataset):
    data = _load(dataset["train_json"])
    for info in data["images"]:
        img = cv2.imread(os.path.join(dataset["train_image_dir"], info["file_name"]))
        img = img.astype(np.float32)
        background = np.ones(img.shape[:2], bool)
        for ann in data["annotations"]:
            if ann["image_id"] == info["id"]:
                x, y, bw, bh = (int(v) for v in ann["bbox"])
                background[y:y + bh, x:x + bw] = False
        # Large-scale variation (gradients, blobs) ...
        assert img[background].std(axis=0).max() > 8.0
        # ... and pixel-level noise/texture.
        high_pass = img - cv2.GaussianBlur(img, (0, 0), 2.0)
        assert high_pass[background].std() > 2.0


def test_json_is_canonical(dataset):
    with open(dataset["train_json"], encoding="utf-8") as f:
        text = f.read()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_reuse_does_not_rewrite(dataset):
    before = _mtimes(dataset["root"])
    again = generate_shapes_dataset(dataset["root"], **SMALL)
    assert again == dataset
    assert _mtimes(dataset["root"]) == before


def test_interrupted_runs_are_regenerated(tmp_path, dataset):
    reference = _all_files(dataset["root"])
    root = tmp_path / "ds"
    # A run that died before installing: a temp folder of our own pid (pids get reused
    # in containers) plus a half-written root without a marker.
    own_tmp = tmp_path / f"ds.tmp-{os.getpid()}"
    (own_tmp / "train").mkdir(parents=True)
    (own_tmp / "train" / "000000.jpg").write_bytes(b"garbage")
    (root / "train").mkdir(parents=True)
    (root / "train" / "000000.jpg").write_bytes(b"garbage")
    (root / "train" / "999999.jpg").write_bytes(b"garbage")

    generate_shapes_dataset(str(root), **SMALL)
    assert _all_files(str(root)) == reference
    assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_abandoned_foreign_temp_folders_are_cleaned(tmp_path):
    old = tmp_path / "ds.tmp-999999999"
    (old / "train").mkdir(parents=True)
    fresh = tmp_path / "ds.tmp-999999998"
    fresh.mkdir()
    ancient = 1_000_000_000  # 2001
    os.utime(old / "train", (ancient, ancient))
    os.utime(old, (ancient, ancient))
    generate_shapes_dataset(str(tmp_path / "ds"), num_train=1, num_val=1, progress=False)
    # The old one is gone; a recent one may belong to a live process and is left alone.
    assert sorted(os.listdir(tmp_path)) == ["ds", "ds.tmp-999999998"]


def test_different_arguments_regenerate(tmp_path, dataset):
    root = str(tmp_path / "ds")
    generate_shapes_dataset(root, **SMALL)
    paths = generate_shapes_dataset(root, **dict(SMALL, num_val=3, seed=5))
    marker = _load(os.path.join(root, "COMPLETE"))
    assert marker["num_val"] == 3 and marker["seed"] == 5
    assert len(os.listdir(paths["val_image_dir"])) == 3
    assert len(_load(paths["val_json"])["images"]) == 3
    with open(os.path.join(paths["train_image_dir"], "000000.jpg"), "rb") as f:
        new_first = f.read()
    with open(os.path.join(dataset["train_image_dir"], "000000.jpg"), "rb") as f:
        assert f.read() != new_first
    # Going back to the original arguments reproduces the original dataset.
    generate_shapes_dataset(root, **SMALL)
    assert _all_files(root) == _all_files(dataset["root"])


def test_other_process_finished_first(tmp_path, monkeypatch, dataset):
    """If a finished dataset appears while we generate, ours is discarded and theirs used."""
    root = str(tmp_path / "ds")
    generate_shapes_dataset(root, **SMALL)
    before = _mtimes(root)
    from src.data import cache
    real = cache.read_marker
    calls = []

    def first_call_sees_nothing(path):
        calls.append(path)
        return None if len(calls) == 1 else real(path)

    monkeypatch.setattr(cache, "read_marker", first_call_sees_nothing)
    generate_shapes_dataset(root, **SMALL)
    assert len(calls) >= 2  # it did generate and then looked again before installing
    assert _mtimes(root) == before
    assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_concurrent_processes(tmp_path, dataset):
    root = str(tmp_path / "ds")
    outputs = run_concurrently(f"""
        from src.data.synthetic.shapes import generate_shapes_dataset
        p = generate_shapes_dataset({root!r}, num_train=12, num_val=4, seed=0, progress=False)
        print(p["root"])
    """)
    assert outputs == [root] * 3
    assert _all_files(root) == _all_files(dataset["root"])
    assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_shapes_dataset(str(tmp_path / "a"), min_size=300, max_size=200, progress=False)
    with pytest.raises(ValueError):
        generate_shapes_dataset(str(tmp_path / "b"), max_objects=0, progress=False)
    with pytest.raises(ValueError):
        generate_shapes_dataset(str(tmp_path / "c"), seed=-1, progress=False)
