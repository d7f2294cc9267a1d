"""The same images through every supported layout (COCO 2017 tree, COCO json, VOC xml, "other"
txt) give the same boxes and labels in the training pipeline's MindRecord."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest


@pytest.fixture(scope="module")
def layouts(tiny_ssd_args, tmp_path_factory):
    from src.data.synthetic.shapes import shapes_paths
    from src.model_utils.config import parse_cli
    paths = shapes_paths(parse_cli(tiny_ssd_args), progress=False)
    root = tmp_path_factory.mktemp("layouts")
    with open(paths["train_json"], encoding="utf-8") as f:
        coco = json.load(f)
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    # COCO 2017 tree
    for split, data_type in (("train", "train2017"), ("val", "val2017")):
        shutil.copytree(paths[f"{split}_image_dir"], root / "coco" / data_type)
        (root / "coco" / "annotations").mkdir(exist_ok=True)
        shutil.copy(paths[f"{split}_json"], root / "coco" / "annotations" / f"instances_{data_type}.json")
    # VOC tree and "other" txt, both x first
    voc = root / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    shutil.copytree(paths["train_image_dir"], voc / "JPEGImages")
    by_image = {img["id"]: [] for img in coco["images"]}
    for a in coco["annotations"]:
        by_image[a["image_id"]].append(a)
    lines, stems = [], []
    for img in coco["images"]:
        stem = os.path.splitext(img["file_name"])[0]
        stems.append(stem)
        objs, tokens = [], [img["file_name"]]
        for a in by_image[img["id"]]:
            x, y, w, h = a["bbox"]
            x1, y1, x2, y2 = int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h))
            tokens.append(f"{x1},{y1},{x2},{y2},{a['category_id'] - 1}")
            # VOC counts pixels from 1
            objs.append(f"<object><name>{names[a['category_id'] - 1]}</name><difficult>0</difficult><bndbox>"
                        f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
        lines.append(" ".join(tokens))
        (voc / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{img['file_name']}</filename><size><width>{img['width']}</width>"
            f"<height>{img['height']}</height><depth>3</depth></size>{''.join(objs)}</annotation>")
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(stems) + "\n")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return {"root": root, "paths": paths, "names": names}


def _records(args) -> dict:
    from src.data.detection.mindrecord_io import decode_row, open_detection_mindrecord
    from src.data.detection.sources import ensure_split_mindrecord
    from src.model_utils.config import parse_cli
    cfg = parse_cli(args)
    data = open_detection_mindrecord(ensure_split_mindrecord(cfg, "train"), columns=["image", "boxes", "labels"])
    rows = [decode_row(r) for r in data.create_dict_iterator(num_epochs=1, output_numpy=True)]
    return {r["image"][:4096]: (r["boxes"], r["labels"]) for r in rows}  # keyed by image content


@pytest.mark.parametrize("layout", ["coco", "voc", "txt"])
def test_every_layout_gives_the_same_boxes(layouts, tiny_ssd_args, tmp_path, layout):
    root, names = layouts["root"], layouts["names"]
    base = tiny_ssd_args + ["--mindrecord_dir", str(tmp_path / "mr")]
    reference = _records(base + ["--dataset", "coco_json", "--train_json", layouts["paths"]["train_json"],
                                 "--train_image_dir", layouts["paths"]["train_image_dir"]])
    extra = {"coco": ["--dataset", "coco", "--coco_root", str(root / "coco")],
             "voc": ["--dataset", "voc", "--voc_root", str(root / "voc"), "--class_names", json.dumps(names)],
             "txt": ["--dataset", "txt", "--train_txt", str(root / "train.txt"),
                     "--image_dir", layouts["paths"]["train_image_dir"], "--class_names", json.dumps(names)]}
    got = _records(base + extra[layout])
    assert len(got) == len(reference) == 16
    for key, (boxes, labels) in reference.items():
        g_boxes, g_labels = got[key]
        np.testing.assert_array_equal(g_labels, labels)
        # txt and VOC hold integer pixels: within a pixel of the COCO floats
        np.testing.assert_allclose(g_boxes, boxes, atol=0.0 if layout == "coco" else 1.0)
