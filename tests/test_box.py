"""Tests for src/box: priors, IoU, coder, matcher and NMS (numpy only)."""
from __future__ import annotations

import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import shared_path  # noqa: E402
from src.box.coder import CenterSizeCoder  # noqa: E402
from src.box.iou import box_area, box_iou  # noqa: E402
from src.box.matcher import match_priors  # noqa: E402
from src.box import nms as nms_module  # noqa: E402
from src.box.nms import batched_nms, multiclass_nms, nms  # noqa: E402
from src.box.priors import (cxcywh_to_xyxy, num_boxes_per_location, ssd_default_boxes,  # noqa: E402
                            xyxy_to_cxcywh)

SSD300 = dict(image_size=300, feature_sizes=[19, 10, 5, 3, 2, 1], steps=[16, 32, 64, 100, 150, 300],
              min_scale=0.2, max_scale=0.95, aspect_ratios=[[], [2, 3], [2, 3], [2, 3], [2, 3], [2, 3]])


def random_boxes(rng, n, lo=0.0, hi=1.0, min_size=0.02, max_size=0.5):
    xy = rng.uniform(lo, hi - max_size, size=(n, 2))
    wh = rng.uniform(min_size, max_size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def iou_one(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ----------------------------------------------------------------------------- priors

@pytest.fixture(scope="module")
def ssd_priors():
    return ssd_default_boxes(**SSD300)


def test_ssd300_prior_count(ssd_priors):
    assert ssd_priors.shape == (1917, 4)
    assert ssd_priors.dtype == np.float32
    per_loc = num_boxes_per_location(SSD300["aspect_ratios"])
    assert per_loc == [3, 6, 6, 6, 6, 6]
    assert sum(f * f * k for f, k in zip(SSD300["feature_sizes"], per_loc)) == 1917


def test_num_boxes_per_location_general():
    assert num_boxes_per_location([[2], [2, 3], []]) == [4, 6, 3]


def test_ssd300_first_cell_and_layout(ssd_priors):
    c = 0.5 / (300 / 16)
    assert c == pytest.approx(0.5 / 18.75)
    np.testing.assert_allclose(ssd_priors[:3, :2], [[c, c]] * 3, atol=1e-7)
    np.testing.assert_allclose(ssd_priors[0], [c, c, 0.1, 0.1], atol=1e-7)     # the small 0.1 square
    s = 0.2
    np.testing.assert_allclose(ssd_priors[1, 2:], [s * math.sqrt(2), s / math.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(ssd_priors[2, 2:], [s / math.sqrt(2), s * math.sqrt(2)], rtol=1e-6)
    # next cell along a row: x advances by one step, y stays
    np.testing.assert_allclose(ssd_priors[3, :2], [1.5 / 18.75, c], rtol=1e-6)
    # first cell of row 1
    np.testing.assert_allclose(ssd_priors[19 * 3, :2], [c, 1.5 / 18.75], rtol=1e-6)


def test_ssd300_second_map_sizes(ssd_priors):
    start = 19 * 19 * 3
    cell = ssd_priors[start:start + 6]
    c = 0.5 / (300 / 32)
    np.testing.assert_allclose(cell[:, :2], [[c, c]] * 6, rtol=1e-6)
    s, s_next = 0.2 + 0.75 / 5, 0.2 + 2 * 0.75 / 5
    expected = [(s, s), (s * math.sqrt(2), s / math.sqrt(2)), (s / math.sqrt(2), s * math.sqrt(2)),
                (s * math.sqrt(3), s / math.sqrt(3)), (s / math.sqrt(3), s * math.sqrt(3)),
                (math.sqrt(s * s_next),) * 2]
    np.testing.assert_allclose(cell[:, 2:], expected, rtol=1e-6)


def test_ssd300_last_map_single_cell_centre(ssd_priors):
    last = ssd_priors[-6:]
    np.testing.assert_allclose(last[:, :2], 0.5, atol=1e-7)
    # the last map's extra square uses sqrt(0.95 * 1.0)
    assert last[-1, 2] == pytest.approx(math.sqrt(0.95), rel=1e-6)


def test_ssd300_priors_are_not_clipped(ssd_priors):
    """The boxes of border cells reach past the image, as in the model zoo (whose steps even put
    the last centres of the 10x10 map at 9.5 / 9.375 > 1)."""
    assert np.all(ssd_priors[:, :2] > 0.0) and ssd_priors[:, :2].max() == pytest.approx(9.5 / 9.375)
    assert np.all(ssd_priors[:, 2:] > 0)
    corners = cxcywh_to_xyxy(ssd_priors)
    assert (corners < 0).any() and (corners > 1).any()


def test_ssd300_priors_equal_the_official_default_boxes(ssd_priors):
    """The model zoo's default boxes are cy,cx,h,w: the same numbers, y first."""
    official = np.load(shared_path("reference", "parity", "ssd_default_boxes.npy"))
    np.testing.assert_allclose(ssd_priors[:, [1, 0, 3, 2]], official, rtol=0, atol=1e-7)


def test_box_format_round_trip():
    rng = np.random.default_rng(0)
    b = random_boxes(rng, 50)
    np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b, atol=1e-6)
    c = xyxy_to_cxcywh(b)
    np.testing.assert_allclose(c[:, 2:], b[:, 2:] - b[:, :2], atol=1e-6)
    np.testing.assert_allclose(c[:, :2], (b[:, 2:] + b[:, :2]) / 2, atol=1e-6)


# ----------------------------------------------------------------------------- iou

def test_box_iou_matches_brute_force():
    rng = np.random.default_rng(1)
    a = random_boxes(rng, 23)
    b = random_boxes(rng, 17)
    b[:3] = a[:3]                                       # some exact matches
    got = box_iou(a, b)
    assert got.shape == (23, 17)
    ref = np.array([[iou_one(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert (ref > 0).any() and (ref == 0).any()        # the sample exercises both cases


def test_box_iou_batched_sets():
    """Leading dimensions are batches of box sets: each set against its partner only."""
    rng = np.random.default_rng(3)
    a = np.stack([random_boxes(rng, 5) for _ in range(4)])
    b = np.stack([random_boxes(rng, 6) for _ in range(4)])
    got = box_iou(a, b)
    assert got.shape == (4, 5, 6)
    for g in range(4):
        np.testing.assert_allclose(got[g], box_iou(a[g], b[g]), rtol=1e-6)
    np.testing.assert_allclose(box_area(a)[2], box_area(a[2]))


def test_box_iou_identical_and_disjoint():
    a = np.array([[0.1, 0.1, 0.4, 0.5], [10, 20, 30, 60]], np.float32)
    np.testing.assert_allclose(np.diag(box_iou(a, a)), [1.0, 1.0], rtol=1e-6)
    disjoint = np.array([[0.5, 0.5, 0.9, 0.9]], np.float32)
    np.testing.assert_array_equal(box_iou(a[:1], disjoint), [[0.0]])
    touching = np.array([[0.4, 0.1, 0.6, 0.5]], np.float32)     # shares an edge only
    np.testing.assert_array_equal(box_iou(a[:1], touching), [[0.0]])
    half = np.array([[0.1, 0.1, 0.4, 0.3]], np.float32)         # contained, half the area
    np.testing.assert_allclose(box_iou(a[:1], half), [[0.5]], rtol=1e-5)


def test_box_area_and_degenerate_boxes():
    b = np.array([[0, 0, 2, 3], [1, 1, 0, 5], [0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(box_area(b), [6, 0, 0])
    iou = box_iou(b, b)
    assert np.all(np.isfinite(iou))
    assert iou[2, 2] == 0 and iou[0, 0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- coder

def test_coder_round_trip():
    rng = np.random.default_rng(2)
    priors = xyxy_to_cxcywh(random_boxes(rng, 64, min_size=0.05))
    boxes = random_boxes(rng, 64, min_size=0.03)
    coder = CenterSizeCoder(priors, (0.1, 0.2))
    deltas = coder.encode(boxes)
    assert deltas.shape == (64, 4) and deltas.dtype == np.float32
    np.testing.assert_allclose(coder.decode(deltas), boxes, atol=1e-5)


def test_coder_known_values_and_batched_decode():
    priors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    coder = CenterSizeCoder(priors, (0.1, 0.2))
    box = np.array([[0.42, 0.3, 0.62, 0.9]], np.float32)      # cx .52 cy .6 w .2 h .6
    d = coder.encode(box)[0]
    np.testing.assert_allclose(d, [0.02 / 0.2 / 0.1, 0.1 / 0.4 / 0.1, 0.0, math.log(1.5) / 0.2], atol=1e-5)
    batched = np.stack([coder.encode(box), np.zeros((1, 4), np.float32)])       # (2, 1, 4)
    dec = coder.decode(batched)
    assert dec.shape == (2, 1, 4)
    np.testing.assert_allclose(dec[0], box, atol=1e-5)
    np.testing.assert_allclose(dec[1], coder.priors_xyxy, atol=1e-6)   # zero deltas decode to the prior


def test_coder_y_first_deltas():
    """delta_order 'yx' (the model zoo's SSD heads): (dcy, dcx, dh, dw), decoding to the same boxes."""
    priors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    box = np.array([[0.42, 0.3, 0.62, 0.9]], np.float32)
    coder = CenterSizeCoder(priors, (0.1, 0.2), delta_order="yx")
    d = coder.encode(box)[0]
    np.testing.assert_allclose(d, [0.1 / 0.4 / 0.1, 0.02 / 0.2 / 0.1, math.log(1.5) / 0.2, 0.0], atol=1e-5)
    np.testing.assert_allclose(coder.decode(coder.encode(box)), box, atol=1e-5)
    with pytest.raises(ValueError, match="delta_order"):
        CenterSizeCoder(priors, delta_order="xyxy")


def test_coder_encode_with_prior_mask():
    rng = np.random.default_rng(3)
    priors = xyxy_to_cxcywh(random_boxes(rng, 40, min_size=0.05))
    boxes = random_boxes(rng, 40)
    mask = rng.random(40) < 0.4
    assert 0 < mask.sum() < 40
    coder = CenterSizeCoder(priors)
    full = coder.encode(boxes)
    np.testing.assert_allclose(coder.encode(boxes[mask], prior_mask=mask), full[mask], rtol=1e-6, atol=1e-6)


def test_coder_variances_scale_deltas():
    rng = np.random.default_rng(4)
    priors = xyxy_to_cxcywh(random_boxes(rng, 10, min_size=0.05))
    boxes = random_boxes(rng, 10)
    d1 = CenterSizeCoder(priors, (0.1, 0.2)).encode(boxes)
    d2 = CenterSizeCoder(priors, (1.0, 1.0)).encode(boxes)
    np.testing.assert_allclose(d1[:, :2] * 0.1, d2[:, :2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d1[:, 2:] * 0.2, d2[:, 2:], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- matcher

PRIORS = np.array([
    [0.0, 0.0, 0.2, 0.2],      # 0
    [0.05, 0.0, 0.25, 0.2],    # 1 overlaps 0 strongly
    [0.5, 0.5, 0.7, 0.7],      # 2
    [0.55, 0.5, 0.75, 0.7],    # 3 overlaps 2
    [0.9, 0.9, 1.0, 1.0],      # 4 far from everything
], np.float32)


def test_match_no_gt_all_background():
    m = match_priors(np.zeros((0, 4), np.float32), PRIORS, 0.5)
    assert m.shape == (5,) and np.all(m == -1)


def test_match_threshold_and_best_gt():
    gt = np.array([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]], np.float32)
    m = match_priors(gt, PRIORS, 0.5)
    iou = box_iou(gt, PRIORS)
    assert iou[0, 1] >= 0.5 and iou[1, 3] >= 0.5      # the neighbours pass the threshold
    np.testing.assert_array_equal(m, [0, 0, 1, 1, -1])


def test_match_gt_below_threshold_keeps_its_best_prior():
    gt = np.array([[0.85, 0.85, 1.0, 1.0]], np.float32)    # IoU with prior 4 is 0.44 < 0.5
    iou = box_iou(gt, PRIORS)[0]
    assert iou.max() < 0.5 and iou.argmax() == 4
    m = match_priors(gt, PRIORS, 0.5)
    np.testing.assert_array_equal(m, [-1, -1, -1, -1, 0])


def test_match_gt_without_overlap_stays_unmatched():
    gt = np.array([[0.3, 0.3, 0.4, 0.4]], np.float32)      # touches no prior
    assert np.all(match_priors(gt, PRIORS, 0.5) == -1)


def test_match_two_gts_competing():
    # both gts overlap priors 0 and 1; gt 0 fits prior 0 best, gt 1 fits prior 1 best
    gt = np.array([[0.0, 0.0, 0.2, 0.2], [0.06, 0.0, 0.26, 0.2]], np.float32)
    iou = box_iou(gt, PRIORS)
    assert (iou[:, :2] >= 0.5).all()
    m = match_priors(gt, PRIORS, 0.5)
    np.testing.assert_array_equal(m, [0, 1, -1, -1, -1])
    # a low-IoU gt whose best prior is claimed above threshold by another gt still takes it
    gt = np.array([[0.0, 0.0, 0.2, 0.2], [0.1, 0.0, 0.3, 0.1]], np.float32)
    iou = box_iou(gt, PRIORS)
    assert iou[1].max() < 0.5 and iou[1].argmax() == 1 and iou[0, 1] >= 0.5
    m = match_priors(gt, PRIORS, 0.5)
    assert m[0] == 0 and m[1] == 1


def test_match_random_properties():
    rng = np.random.default_rng(5)
    priors = cxcywh_to_xyxy(ssd_default_boxes(**SSD300))
    gt = random_boxes(rng, 6, min_size=0.05, max_size=0.6)
    m = match_priors(gt, priors, 0.5)
    iou = box_iou(gt, priors)
    assert set(np.unique(m)) <= set(range(-1, 6))
    for g in range(6):                                       # every gt gets at least its best prior
        assert m[iou[g].argmax()] == g
    forced = set(iou.argmax(axis=1))
    for p in np.nonzero(m >= 0)[0]:
        if p not in forced:
            assert iou[m[p], p] >= 0.5 and m[p] == iou[:, p].argmax()
    above = iou.max(axis=0) >= 0.5
    assert np.all(m[above] >= 0)
    assert np.all(m[(~above) & ~np.isin(np.arange(len(priors)), list(forced))] == -1)


# ----------------------------------------------------------------------------- nms

def nms_reference(boxes, scores, thr, max_keep=-1):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(iou_one(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep[:max_keep] if max_keep > 0 else keep


@pytest.mark.parametrize("seed, thr", [(0, 0.5), (1, 0.3), (2, 0.7)])
def test_nms_matches_reference(seed, thr):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 120, min_size=0.1, max_size=0.4)
    scores = rng.permutation(120).astype(np.float32) / 120 + 0.001
    keep = nms(boxes, scores, thr)
    ref = nms_reference(boxes, scores, thr)
    assert keep.dtype == np.int64
    assert keep.tolist() == ref
    assert 1 < len(ref) < 120            # something was suppressed, something kept
    assert nms(boxes, scores, thr, max_keep=5).tolist() == ref[:5]


def test_nms_empty_and_identical():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).size == 0
    b = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3]], np.float32)
    assert nms(b, np.array([0.5, 0.9, 0.1], np.float32), 0.5).tolist() == [1, 2]


def test_batched_nms_never_crosses_labels():
    b = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], np.float32)
    s = np.array([0.9, 0.8, 0.7], np.float32)
    assert sorted(batched_nms(b, s, np.array([0, 1, 1]), 0.5).tolist()) == [0, 1]
    assert sorted(batched_nms(b, s, np.array([0, 1, 2]), 0.5).tolist()) == [0, 1, 2]
    assert batched_nms(b, s, np.array([3, 3, 3]), 0.5).tolist() == [0]
    assert batched_nms(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, np.int64), 0.5).size == 0


def test_batched_nms_matches_per_class_reference():
    rng = np.random.default_rng(6)
    boxes = random_boxes(rng, 90, min_size=0.1, max_size=0.4) * 300   # pixel coordinates
    scores = rng.permutation(90).astype(np.float32) / 90 + 0.001
    labels = rng.integers(0, 4, 90)
    keep = batched_nms(boxes, scores, labels, 0.45)
    ref = []
    for c in range(4):
        idx = np.nonzero(labels == c)[0]
        ref += [idx[i] for i in nms_reference(boxes[idx], scores[idx], 0.45)]
    assert sorted(keep.tolist()) == sorted(ref)
    assert np.all(np.diff(scores[keep]) <= 0)                          # highest score first


@pytest.mark.parametrize("all_groups_at_once", [True, False])
def test_batched_nms_many_classes_ties_and_max_keep(all_groups_at_once, monkeypatch):
    """Both ways batched_nms reduces the classes (one table for all, or class by class) give
    the per-class reference, ordered by score then index, cut at max_keep."""
    if not all_groups_at_once:
        monkeypatch.setattr(nms_module, "_TABLE_MAX", 0)
    rng = np.random.default_rng(8)
    boxes = random_boxes(rng, 300, min_size=0.05, max_size=0.4)
    scores = np.round(rng.random(300) * 8).astype(np.float32) / 8 + 0.01     # many ties
    labels = rng.integers(0, 40, 300)
    labels[:120] = 3                                                          # one large class
    ref = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        ref += [int(idx[i]) for i in nms_reference(boxes[idx], scores[idx], 0.5)]
    ref.sort(key=lambda i: (-scores[i], i))
    assert len(ref) > 100 and len(ref) < 300
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == ref
    assert batched_nms(boxes, scores, labels, 0.5, max_keep=100).tolist() == ref[:100]


def test_multiclass_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    scores = np.array([  # 2 foreground classes
        [0.90, 0.05],
        [0.80, 0.70],    # overlaps box 0: suppressed in class 0, kept in class 1
        [0.02, 0.60],    # below threshold in class 0
        [0.30, 0.04],
    ], np.float32)
    out_b, out_s, out_l = multiclass_nms(boxes, scores, score_threshold=0.1, iou_threshold=0.5, max_per_image=10)
    np.testing.assert_allclose(out_s, [0.9, 0.7, 0.6, 0.3], rtol=1e-6)   # highest score first
    assert out_l.tolist() == [0, 1, 1, 0]
    assert np.all(out_s > 0.1)
    assert set(out_l.tolist()) == {0, 1}                  # 0-based foreground labels
    for b, s, lab in zip(out_b, out_s, out_l):            # boxes are the right rows
        row = np.nonzero(np.isclose(scores[:, lab], s))[0][0]
        np.testing.assert_array_equal(b, boxes[row])
    # max_per_image keeps the top-scoring detections
    out_b, out_s, out_l = multiclass_nms(boxes, scores, 0.1, 0.5, max_per_image=2)
    np.testing.assert_allclose(out_s, [0.9, 0.7], rtol=1e-6)
    assert out_l.tolist() == [0, 1]
    # nothing above threshold
    out_b, out_s, out_l = multiclass_nms(boxes, scores, 0.95, 0.5, 10)
    assert out_b.shape == (0, 4) and out_s.size == 0 and out_l.size == 0


def test_multiclass_nms_pre_nms_top_k_and_random():
    rng = np.random.default_rng(7)
    boxes = random_boxes(rng, 60, min_size=0.1, max_size=0.4)
    scores = rng.random((60, 3)).astype(np.float32)
    out_b, out_s, out_l = multiclass_nms(boxes, scores, 0.3, 0.5, max_per_image=200)
    rows, cls = np.nonzero(scores > 0.3)
    ref = []
    for c in range(3):
        r = rows[cls == c]
        ref += [(float(scores[r[i], c]), c) for i in nms_reference(boxes[r], scores[r, c], 0.5)]
    assert sorted(zip(out_s.tolist(), out_l.tolist())) == sorted(ref)
    assert np.all(np.diff(out_s) <= 0)
    # pre_nms_top_k keeps only the k best candidates before NMS
    _, s_k, _ = multiclass_nms(boxes, scores, 0.3, 0.5, max_per_image=200, pre_nms_top_k=10)
    top10 = np.sort(scores[scores > 0.3])[::-1][:10]
    assert len(s_k) <= 10 and s_k.max() == top10[0]
    assert np.all(np.isin(s_k, top10))
