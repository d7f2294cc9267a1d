"""Tests for src/data/detection/mindrecord_io.py: conversion, atomic builds, sharding, rank waiting."""
import json
import os
import threading
import time

import cv2
import numpy as np
import pytest

import src.data.detection.mindrecord_io as mio
from src.data.detection.coco import read_coco
from src.data.detection.mindrecord_io import (decode_row, ensure_mindrecord, is_complete, marker_path,
                                              open_detection_mindrecord, write_detection_mindrecord)
from src.data.detection.records import DetRecord, ReadStats

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_COCO = os.path.join(REPO_ROOT, "..", "shared", "data", "coco_labelme")


def _image(path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return str(path)


def _rec(image_id, path, h, w, boxes, labels=None, crowd=None, segms=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = boxes.shape[0]
    labels = np.asarray(labels if labels is not None else [1] * n, np.int32)
    crowd = np.asarray(crowd if crowd is not None else [0] * n, np.int32)
    return DetRecord(image_id, path, h, w, boxes, labels, crowd, segms)


def _read_all(out_file, **kw):
    ds = open_detection_mindrecord(out_file, **kw)
    return {r["image_id"]: r for r in
            (decode_row(row) for row in ds.create_dict_iterator(output_numpy=True))}


def _dataset(tmp_path, n=3):
    recs = []
    for i in range(n):
        ext = ".png" if i % 2 else ".jpg"
        p = _image(tmp_path / f"img{i}{ext}", 30 + i, 40 + 2 * i, seed=i)
        recs.append(_rec(i, p, 30 + i, 40 + 2 * i, [[1, 2, 10 + i, 12], [3, 4, 20, 25]],
                         labels=[1 + i % 3, 2], crowd=[0, 1]))
    return recs


def test_round_trip(tmp_path):
    recs = _dataset(tmp_path, 3)
    recs[1].segmentations = [[[1, 2, 10, 2, 10, 12]], {"size": [31, 42], "counts": b"abc"}]
    empty = _rec(0, _image(tmp_path / "empty.jpg", 16, 16, seed=9), 16, 16, [])
    empty.image_id = 100
    recs.append(empty)
    out = str(tmp_path / "mr" / "train.mindrecord")
    stats = ReadStats()
    assert write_detection_mindrecord(recs, out, stats=stats, progress=False) == 4
    assert stats.images_without_annotations == 1 and stats.images_written == 4
    assert is_complete(out)
    assert sorted(os.listdir(tmp_path / "mr")) == [
        "train.mindrecord", "train.mindrecord.db", "train.mindrecord.done"]
    marker = json.loads(open(marker_path(out)).read())
    assert marker["images"] == 4 and marker["files"] == ["train.mindrecord"]
    assert "images_without_annotations=1" in marker["stats"]

    rows = _read_all(out)
    assert sorted(rows) == [0, 1, 2, 100]
    for rec in recs:
        row = rows[rec.image_id]
        with open(rec.file_name, "rb") as f:
            assert row["image"] == f.read()          # original bytes, not re-encoded
        assert (row["height"], row["width"]) == (rec.height, rec.width)
        np.testing.assert_array_equal(row["boxes"], rec.boxes)
        np.testing.assert_array_equal(row["labels"], rec.labels)
        np.testing.assert_array_equal(row["iscrowd"], rec.iscrowd)
        assert row["boxes"].dtype == np.float32 and row["labels"].dtype == np.int32
    assert rows[1]["segm"] == [[[1, 2, 10, 2, 10, 12]], {"size": [31, 42], "counts": "abc"}]
    assert rows[0]["segm"] is None
    assert rows[100]["boxes"].shape == (0, 4) and rows[100]["labels"].shape == (0,)

    # raw rows: the object-less image carries exactly one label-0 padding row
    ds = open_detection_mindrecord(out, columns=["image_id", "boxes", "labels"])
    raw = {int(r["image_id"]): r for r in ds.create_dict_iterator(output_numpy=True)}
    assert raw[100]["boxes"].shape == (1, 4) and raw[100]["labels"].tolist() == [0]
    assert set(raw[100]) == {"image_id", "boxes", "labels"}


def test_corrupt_and_truncated_images_skipped(tmp_path):
    recs = _dataset(tmp_path, 2)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg at all" * 10)
    good = _image(tmp_path / "whole.jpg", 64, 64, seed=5)
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    recs += [_rec(10, str(garbage), 64, 64, [[1, 1, 5, 5]]),
             _rec(11, str(truncated), 64, 64, [[1, 1, 5, 5]]),
             _rec(12, str(tmp_path / "vanished.jpg"), 64, 64, [[1, 1, 5, 5]])]
    out = str(tmp_path / "c.mindrecord")
    stats = ReadStats()
    assert write_detection_mindrecord(recs, out, stats=stats, progress=False) == 2
    assert stats.skipped_images == 3
    text = "\n".join(stats.messages)
    for name in ("garbage.jpg", "truncated.jpg", "vanished.jpg"):
        assert name in text
    assert sorted(_read_all(out)) == [0, 1]


def test_true_size_wins_and_boxes_sanitized(tmp_path):
    p = _image(tmp_path / "a.jpg", 20, 30)
    # annotation claims 100x100; the real image is 30 wide, 20 high
    rec = _rec(5, p, 100, 100, [[10, 5, 80, 15], [40, 0, 60, 10], [2, 2, 12, 12]],
               labels=[1, 2, 3])
    out = str(tmp_path / "s.mindrecord")
    stats = ReadStats()
    write_detection_mindrecord([rec], out, stats=stats, progress=False)
    row = _read_all(out)[5]
    assert (row["height"], row["width"]) == (20, 30)
    np.testing.assert_allclose(row["boxes"], [[10, 5, 30, 15], [2, 2, 12, 12]])
    assert row["labels"].tolist() == [1, 3]
    assert stats.boxes_clipped == 1 and stats.boxes_dropped == 1
    assert any("a.jpg" in m and "30x20" in m for m in stats.messages)


def test_no_usable_images_raises_and_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8junk")
    out = str(tmp_path / "none.mindrecord")
    with pytest.raises(ValueError, match="none.mindrecord"):
        write_detection_mindrecord([_rec(0, str(bad), 8, 8, [])], out, progress=False)
    assert os.listdir(tmp_path) == ["bad.jpg"]


def test_interrupted_build_is_rebuilt(tmp_path, monkeypatch):
    recs = _dataset(tmp_path, 4)
    out = str(tmp_path / "i.mindrecord")
    calls = []

    def build(path):
        calls.append(path)
        write_detection_mindrecord(recs, path, progress=False)

    # 1) the build dies midway: exception propagates, nothing complete or stray is left
    real_make_row = mio._make_row
    seen = []

    def dying_make_row(*a, **kw):
        seen.append(1)
        if len(seen) == 3:
            raise KeyboardInterrupt("simulated kill")
        return real_make_row(*a, **kw)

    monkeypatch.setattr(mio, "_make_row", dying_make_row)
    with pytest.raises(KeyboardInterrupt):
        ensure_mindrecord(out, build)
    monkeypatch.setattr(mio, "_make_row", real_make_row)
    assert not is_complete(out)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(("i.mindrecord", ".i.mind"))]

    # 2) a normal build, then a second call does not rebuild
    calls.clear()
    assert ensure_mindrecord(out, build) == out and len(calls) == 1
    assert ensure_mindrecord(out, build) == out and len(calls) == 1

    # 3) parts present but marker missing (killed right before the marker) -> rebuild
    os.remove(marker_path(out))
    assert not is_complete(out)
    ensure_mindrecord(out, build)
    assert len(calls) == 2 and is_complete(out)

    # 4) marker present but a part missing -> rebuild (FileWriter must not trip on leftovers)
    os.remove(out + ".db")
    assert not is_complete(out)
    ensure_mindrecord(out, build)
    assert len(calls) == 3 and sorted(_read_all(out)) == [0, 1, 2, 3]

    # 5) build_fn that "succeeds" without producing a set
    with pytest.raises(RuntimeError, match="not complete"):
        ensure_mindrecord(str(tmp_path / "other.mindrecord"), lambda p: None)


def test_shards(tmp_path):
    recs = _dataset(tmp_path, 6)
    out = str(tmp_path / "sh" / "train.mindrecord")
    # a previous single-file build must be replaced cleanly by a sharded one
    write_detection_mindrecord(recs[:2], out, progress=False)
    assert write_detection_mindrecord(recs, out, num_shards=3, progress=False) == 6
    names = sorted(os.listdir(tmp_path / "sh"))
    assert names == sorted([f"train.mindrecord{i}{s}" for i in range(3) for s in ("", ".db")]
                           + ["train.mindrecord.done"])
    assert sorted(_read_all(out)) == list(range(6))
    for n in (2, 3):
        parts = [sorted(_read_all(out, num_shards=n, shard_id=s, columns=["image_id"]))
                 for s in range(n)]
        flat = [i for p in parts for i in p]
        assert sorted(flat) == list(range(6)), parts       # disjoint and covering
    with pytest.raises(ValueError, match="both"):
        open_detection_mindrecord(out, num_shards=2)


def test_open_incomplete_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.mindrecord"):
        open_detection_mindrecord(str(tmp_path / "nothing.mindrecord"))


def test_rank_waits_for_rank0(tmp_path, monkeypatch):
    monkeypatch.setattr(mio, "_POLL_SECONDS", 0.2)
    recs = _dataset(tmp_path, 2)
    out = str(tmp_path / "w.mindrecord")
    errors = []

    def rank0():
        try:
            time.sleep(1.0)
            ensure_mindrecord(out, lambda p: write_detection_mindrecord(recs, p, progress=False))
        except Exception as e:  # surfaced through the list below
            errors.append(e)

    t = threading.Thread(target=rank0)
    t0 = time.monotonic()
    t.start()
    never = []
    assert ensure_mindrecord(out, never.append, rank=1, timeout=60) == out
    t.join()
    assert not errors and not never
    assert time.monotonic() - t0 >= 1.0
    assert sorted(_read_all(out)) == [0, 1]


def test_rank_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(mio, "_POLL_SECONDS", 0.2)
    out = str(tmp_path / "never.mindrecord")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="never.mindrecord"):
        ensure_mindrecord(out, lambda p: None, rank=1, timeout=1.0)
    assert 0.9 <= time.monotonic() - t0 < 5


def test_shared_coco_labelme_round_trip(tmp_path):
    json_path = os.path.join(SHARED_COCO, "annotations.json")
    if not os.path.isfile(json_path):
        pytest.skip(f"../shared/data absent: {os.path.normpath(json_path)} not found")
    stats = ReadStats()
    recs, names, _ = read_coco(json_path, SHARED_COCO, stats=stats)
    out = str(tmp_path / "labelme.mindrecord")
    assert write_detection_mindrecord(recs, out, stats=stats, progress=False) == 3
    assert stats.skipped_images == 0 and stats.boxes_dropped == 0
    rows = _read_all(out)
    assert sorted(rows) == sorted(r.image_id for r in recs)
    assert sum(len(r["labels"]) for r in rows.values()) == 12
    for rec in recs:
        row = rows[rec.image_id]
        assert (row["height"], row["width"]) == (rec.height, rec.width)
        np.testing.assert_allclose(row["boxes"], rec.boxes)
        assert row["segm"] == rec.segmentations
