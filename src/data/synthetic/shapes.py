"""Embedded synthetic shapes dataset (COCO format) for detection and instance segmentation.

The dataset is generated on first use into a cache folder, so that training works on a
fresh machine without downloads and so that learning of a detector is measurable within
minutes on a CPU. Images show 1..N filled geometric shapes of six classes with random
colours, sizes, rotations and overlaps on textured, noisy backgrounds.

Layout of a generated dataset::

    root/COMPLETE                          generation arguments (json); written last
    root/train/000000.jpg ...
    root/val/000000.jpg ...
    root/annotations/instances_train.json
    root/annotations/instances_val.json

Annotations are computed from the visible part of every object after all objects of an
image have been drawn, so occlusion is reflected in masks, boxes and areas.

The last section is the `shapes` dataset kind (src/data/registry.py): generated on first use,
then read as any COCO json.
"""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from src.data.cache import build_cached, write_json
from src.data.detection.coco import read_coco
from src.model_utils.config import Config

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "hexagon", "cross")

# Bump whenever the rendering changes, so cached datasets made by an older generator are
# regenerated instead of silently reused.
_GENERATOR_VERSION = 1

_SPLIT_CODES = {"train": 1, "val": 2}

# Object size is the diameter of the circumscribed circle, relative to the shorter side.
_MIN_REL_SIZE = 0.12
_MAX_REL_SIZE = 0.50
# Instances less visible than this are not annotated (spec of the dataset).
_MIN_VISIBLE = 0.6
# Placement is stricter than the annotation rule, so that an object drawn on the image
# essentially never ends up unannotated (an unannotated visible shape would teach the
# detector that real shapes are background).
_PLACE_MIN_VISIBLE = 0.7
# Visible fragments smaller than this (fraction of the full object) are refused at
# placement time: they survive blur/JPEG as a few smeared pixels and make box and polygon
# disagree.
_MIN_FRAGMENT = 0.05
_PLACE_TRIES = 30
# Minimum colour distance (RGB euclidean, 5th percentile over the outline's surroundings).
_MIN_CONTRAST = 70.0
_COLOUR_CANDIDATES = 32


def _unit_shapes() -> dict[str, np.ndarray]:
    """Outline of every class as an (N, 2) float polygon scaled to max radius 1."""
    def ring(n, start_deg):
        a = np.deg2rad(start_deg) + np.arange(n) * (2 * np.pi / n)
        return np.stack([np.cos(a), np.sin(a)], 1)

    star = ring(10, -90.0)
    # 0.45 rather than the regular 0.38 keeps the arms thick enough to survive blurring
    # at the smallest sizes.
    star[1::2] *= 0.45
    w = 0.32
    cross = np.array([(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1),
                      (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)], np.float64)
    cross /= np.hypot(1.0, w)
    return {
        "circle": ring(64, 0.0),
        "square": ring(4, 45.0),
        "triangle": ring(3, -90.0),
        "star": star,
        "hexagon": ring(6, 0.0),
        "cross": cross,
    }


_UNIT_SHAPES = _unit_shapes()


# ----------------------------------------------------------------------------- rendering

def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured, noisy float32 HxWx3 background, different for every rng state."""
    # Smooth colour field from a tiny random grid; mid-range values leave room for both
    # darker and brighter objects.
    gh, gw = rng.integers(2, 5, size=2)
    grid = rng.uniform(30, 225, (gh, gw, 3)).astype(np.float32)
    bg = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)

    # Mottled mid-frequency texture.
    ch, cw = max(2, h // 16), max(2, w // 16)
    coarse = rng.standard_normal((ch, cw, 3), dtype=np.float32) * np.float32(rng.uniform(4, 12))
    bg += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)

    if rng.random() < 0.5:
        # Oriented stripes, so edges alone do not identify objects.
        period = rng.uniform(6, 30)
        ang = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / period
        ys = (np.arange(h, dtype=np.float32) * np.float32(k * np.sin(ang)) + np.float32(phase))
        xs = np.arange(w, dtype=np.float32) * np.float32(k * np.cos(ang))
        wave = np.sin(ys[:, None] + xs[None, :])
        amp = rng.uniform(3, 12, 3).astype(np.float32)
        bg += wave[..., None] * amp

    # Low-contrast clutter: straight lines and soft blobs, alpha-blended in.
    overlay = bg.copy()
    coverage = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(2, 10))):
        p1 = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
        p2 = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
        col = tuple(float(c) for c in rng.uniform(0, 255, 3))
        th = int(rng.integers(1, 4))
        cv2.line(overlay, p1, p2, col, th, cv2.LINE_AA)
        cv2.line(coverage, p1, p2, 1.0, th, cv2.LINE_AA)
    side = min(h, w)
    for _ in range(int(rng.integers(1, 6))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.uniform(0.03, 0.25) * side), int(rng.uniform(0.03, 0.25) * side))
        col = tuple(float(c) for c in rng.uniform(0, 255, 3))
        ang = float(rng.uniform(0, 180))
        cv2.ellipse(overlay, centre, axes, ang, 0, 360, col, -1, cv2.LINE_AA)
        cv2.ellipse(coverage, centre, axes, ang, 0, 360, 1.0, -1, cv2.LINE_AA)
    # Soft edges keep blobs from being mistaken for (circle) objects.
    coverage = cv2.GaussianBlur(coverage, (0, 0), 2.0)
    alpha = (coverage * np.float32(rng.uniform(0.15, 0.35)))[..., None]
    overlay -= bg
    overlay *= alpha
    bg += overlay
    return np.clip(bg, 0, 255, out=bg)


def _rasterize(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """Binary uint8 mask of a float polygon (sub-pixel vertices via fixed point)."""
    mask = np.zeros((h, w), np.uint8)
    pts = np.round(poly * 16.0).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, 4)
    return mask


def _sample_shape(rng: np.random.Generator, h: int, w: int):
    """Random class, size, rotation and position of one object, fully inside the image."""
    cls = int(rng.integers(0, len(SHAPE_CLASSES)))
    radius = rng.uniform(_MIN_REL_SIZE, _MAX_REL_SIZE) * min(h, w) / 2
    theta = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    pts = _UNIT_SHAPES[SHAPE_CLASSES[cls]] @ np.array([[c, s], [-s, c]]) * radius
    lo = -pts.min(0)
    hi = np.array([w - 1, h - 1], np.float64) - pts.max(0)
    centre = rng.uniform(lo, hi)
    return cls, pts + centre, centre, radius


def _occlusion_ok(mask: np.ndarray, visible: list[np.ndarray], full_areas: list[int]) -> bool:
    """Whether drawing `mask` on top keeps every earlier object cleanly annotatable."""
    for vis, full in zip(visible, full_areas):
        if not np.any(vis & mask):
            continue
        left = vis & (1 - mask)
        if int(left.sum()) < _PLACE_MIN_VISIBLE * full:
            return False
        x, y, bw, bh = cv2.boundingRect(left)
        crop = np.ascontiguousarray(left[y:y + bh, x:x + bw])
        # COCO polygons cannot express holes, so refuse occlusions that punch one.
        _, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is not None and np.any(hierarchy[0][:, 3] >= 0):
            return False
        n, _, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
        if n > 2 and stats[1:, cv2.CC_STAT_AREA].min() < _MIN_FRAGMENT * full:
            return False
    return True


def _pick_colour(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Random fill colour that stands out from everything around the object's outline.

    The surroundings are read from the current canvas, so earlier (overlapped) objects
    count as surroundings too and neighbouring instances stay separable.
    """
    h, w = mask.shape
    x, y, bw, bh = cv2.boundingRect(mask)
    pad = 4
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(w, x + bw + pad), min(h, y + bh + pad)
    m = mask[y0:y1, x0:x1]
    ring = cv2.dilate(m, np.ones((2 * pad - 1, 2 * pad - 1), np.uint8)) & (1 - m)
    around = canvas[y0:y1, x0:x1][ring.astype(bool)]
    cands = rng.integers(0, 256, (_COLOUR_CANDIDATES, 3)).astype(np.float32)
    if around.size == 0:
        return cands[0]
    # Subsample: a few hundred pixels estimate the percentile well and keep this cheap.
    step = max(1, len(around) // 400)
    around = around[::step]
    dist = np.linalg.norm(around[None, :, :] - cands[:, None, :], axis=2)
    score = np.percentile(dist, 5, axis=1)
    good = np.nonzero(score >= _MIN_CONTRAST)[0]
    return cands[good[0] if len(good) else int(np.argmax(score))]


def _render_image(rng: np.random.Generator, min_size: int, max_size: int, max_objects: int):
    """Draw one image; return (uint8 BGR image, list of annotation dicts without ids)."""
    h = int(rng.integers(min_size, max_size + 1))
    w = int(rng.integers(min_size, max_size + 1))
    canvas = _background(rng, h, w)

    classes: list[int] = []
    visible: list[np.ndarray] = []
    full_areas: list[int] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(_PLACE_TRIES):
            cls, poly, centre, radius = _sample_shape(rng, h, w)
            mask = _rasterize(poly, h, w)
            area = int(mask.sum())
            if area > 0 and _occlusion_ok(mask, visible, full_areas):
                break
        else:
            # The image is too crowded for another clean object; fewer objects is fine.
            continue
        colour = _pick_colour(rng, canvas, mask)
        # A mild linear shading makes objects less flat than a pure fill.
        ys, xs = np.nonzero(mask)
        phi = rng.uniform(0, 2 * np.pi)
        t = ((xs - centre[0]) * np.cos(phi) + (ys - centre[1]) * np.sin(phi)) / radius
        shade = np.float32(rng.uniform(0, 20))
        canvas[ys, xs] = colour[None, :] + (t.astype(np.float32) * shade)[:, None]
        for vis in visible:
            vis &= 1 - mask
        classes.append(cls)
        visible.append(mask)
        full_areas.append(area)

    # Soften edges and add sensor-like noise after drawing, so boundaries are not crisp.
    canvas = cv2.GaussianBlur(canvas, (0, 0), float(rng.uniform(0.5, 1.1)))
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(3, 10))
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

    anns = []
    for cls, vis, full in zip(classes, visible, full_areas):
        area = int(vis.sum())
        if area < _MIN_VISIBLE * full:
            continue
        contours, _ = cv2.findContours(vis, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        segm = [[float(v) for v in c.reshape(-1)] for c in contours if len(c) >= 3]
        if not segm:
            continue
        x, y, bw, bh = cv2.boundingRect(vis)
        anns.append({
            "category_id": cls + 1,
            "segmentation": segm,
            "bbox": [float(x), float(y), float(bw), float(bh)],
            "area": float(area),
            "iscrowd": 0,
        })
    return image, anns


# ----------------------------------------------------------------------------- splits

def _progress_iter(n: int, desc: str, enabled: bool):
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:  # progress is cosmetic; never fail generation over it
            pass
        else:
            return tqdm(range(n), desc=desc, file=sys.stderr, unit="img", dynamic_ncols=True)
    return range(n)


def _generate_split(base: str, split: str, params: dict, progress: bool) -> None:
    n = params[f"num_{split}"]
    image_dir = os.path.join(base, split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for i in _progress_iter(n, f"shapes {split}", progress):
        # One stream per image: images do not depend on each other, so the result is
        # independent of generation order and train/val never share a stream.
        rng = np.random.default_rng([params["seed"], _SPLIT_CODES[split], i])
        image, anns = _render_image(rng, params["min_size"], params["max_size"],
                                    params["max_objects"])
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {split} image {i}")
        file_name = f"{i:06d}.jpg"
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(buf.tobytes())
        images.append({"id": i, "file_name": file_name,
                       "height": int(image.shape[0]), "width": int(image.shape[1])})
        for ann in anns:
            # Annotation ids start at 1: COCOeval treats a matched gt id of 0 as "unmatched".
            ann["id"] = len(annotations) + 1
            ann["image_id"] = i
            annotations.append(ann)
    data = {
        "info": {"description": "synthetic shapes", "version": str(_GENERATOR_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"}
                       for k, name in enumerate(SHAPE_CLASSES)],
    }
    write_json(os.path.join(base, "annotations", f"instances_{split}.json"), data)


# ----------------------------------------------------------------------------- caching

def _paths(root: str) -> dict:
    return {
        "root": root,
        "train_json": os.path.join(root, "annotations", "instances_train.json"),
        "train_image_dir": os.path.join(root, "train"),
        "val_json": os.path.join(root, "annotations", "instances_val.json"),
        "val_image_dir": os.path.join(root, "val"),
    }


def generate_shapes_dataset(root: str, num_train: int = 1000, num_val: int = 100, seed: int = 0,
                            min_size: int = 240, max_size: int = 400, max_objects: int = 4,
                            progress: bool = True) -> dict:
    """Generate (or reuse, if complete) the synthetic shapes dataset under root.

    Args:
        root: dataset folder; created next to sibling temp folders ``root.tmp-<pid>``.
        num_train, num_val: number of images per split.
        seed: non-negative base seed; each split and image derives its own stream from it.
        min_size, max_size: inclusive range of image width and height in pixels.
        max_objects: upper bound of objects drawn per image (at least one is drawn).
        progress: show a tqdm progress bar per split on stderr.

    Returns:
        ``{"train_json", "train_image_dir", "val_json", "val_image_dir", "root"}`` with
        absolute paths. Category ids 1..6 follow ``SHAPE_CLASSES``; image ids start at 0.

    The same arguments give byte-identical files on the same machine. An existing dataset
    is reused only if its ``COMPLETE`` marker records the same arguments; otherwise
    (interrupted or different arguments) it is regenerated. Concurrent callers (e.g.
    several distributed ranks) all end up with the same valid dataset.
    """
    if min_size < 32 or max_size < min_size:
        raise ValueError(f"need 32 <= min_size <= max_size, got {min_size}, {max_size}")
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be >= 0")
    if max_objects < 1:
        raise ValueError("max_objects must be >= 1")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    params = {
        "generator_version": _GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "seed": int(seed),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "max_objects": int(max_objects),
    }
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    paths = _paths(root)

    def build(tmp: str) -> None:
        for split in ("train", "val"):
            _generate_split(tmp, split, params, progress)

    build_cached(root, params, build)
    return paths


# ----------------------------------------------------------------------------- dataset kind "shapes"

def shapes_paths(cfg: Config, progress: bool = True) -> dict:
    """Generate (first use) or reuse the dataset that `shapes_dir`, `shapes_num_train`,
    `shapes_num_val` and `shapes_seed` configure; returns its paths."""
    return generate_shapes_dataset(cfg.path("shapes_dir", must_exist=False), num_train=cfg.shapes_num_train,
                                   num_val=cfg.shapes_num_val, seed=cfg.shapes_seed, progress=progress)


def describe(cfg: Config, split: str) -> dict:
    """The generation inputs of the split, so that other sizes or seeds get their own MindRecord."""
    return {"dir": cfg.path("shapes_dir", must_exist=False), "split": split,
            "n": cfg.shapes_num_train if split == "train" else cfg.shapes_num_val, "seed": cfg.shapes_seed}


def read_split(cfg: Config, split: str, source: dict, class_names, stats):
    """Both splits are generated together (one cache), hence the whole config, not `source`."""
    paths = shapes_paths(cfg)
    return read_coco(paths[f"{split}_json"], paths[f"{split}_image_dir"], class_names, stats)


def categories(cfg: Config) -> tuple[list[str], list[int]]:
    """The shape classes with the ids the generated json gives them, known before generation."""
    return list(SHAPE_CLASSES), list(range(1, len(SHAPE_CLASSES) + 1))
