"""Image transforms shared by training, evaluation, export and inference."""
from __future__ import annotations

import numpy as np
import cv2

# ImageNet statistics in RGB order, on the 0-255 scale.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode encoded image bytes to an RGB uint8 array, or None when undecodable."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def normalize_chw(img_rgb: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW, (x - mean) / std per channel."""
    x = img_rgb.astype(np.float32)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to size=(height, width), ignoring the aspect ratio."""
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def preprocess_for_inference(img_rgb: np.ndarray, size: tuple[int, int],
                             mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """The inference preprocessing every path uses (eval, infer.py, the 310 program).

    Resize (no aspect keeping) to size=(height, width) with bilinear interpolation, then
    normalise. Returns a (1, 3, H, W) float32 batch.
    """
    return normalize_chw(resize(img_rgb, size), mean, std)[None]


def pad_ground_truth(boxes: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray, max_gt: int):
    """Ground truth padded (or cut) to max_gt rows so that evaluation images can be batched;
    padding rows have label 0."""
    n = min(labels.size, max_gt)
    out_boxes = np.zeros((max_gt, 4), np.float32)
    out_labels = np.zeros(max_gt, np.int32)
    out_crowd = np.zeros(max_gt, np.int32)
    out_boxes[:n] = boxes.reshape(-1, 4)[:n]
    out_labels[:n] = labels.reshape(-1)[:n]
    out_crowd[:n] = iscrowd.reshape(-1)[:n]
    return out_boxes, out_labels, out_crowd


# ---------------------------------------------------------------- box-aware augmentations
# All take and return RGB uint8 images and (N,4) x1,y1,x2,y2 pixel boxes; `rng` is a
# numpy Generator so that a seeded pipeline is reproducible.

def random_hflip(img: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, prob: float = 0.5):
    """Mirror left-right with probability prob."""
    if rng.random() >= prob:
        return img, boxes
    w = img.shape[1]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    return img[:, ::-1], boxes


def photometric_distort(img: np.ndarray, rng: np.random.Generator, brightness: float = 32,
                        contrast: tuple = (0.5, 1.5), saturation: tuple = (0.5, 1.5), hue: float = 18):
    """Random brightness, contrast, saturation and hue, each applied with probability 0.5."""
    x = img.astype(np.float32)
    if rng.random() < 0.5:
        x += rng.uniform(-brightness, brightness)
    if rng.random() < 0.5:
        x *= rng.uniform(*contrast)
    if rng.random() < 0.5 or rng.random() < 0.5:
        hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 1] *= rng.uniform(*saturation)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue) / 2) % 180  # OpenCV hue is 0..180
        x = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def random_expand(img: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, max_ratio: float = 2.0,
                  prob: float = 0.5, fill=IMAGENET_MEAN):
    """Place the image at a random spot of a canvas up to max_ratio times larger (zoom out)."""
    if max_ratio <= 1 or rng.random() >= prob:
        return img, boxes
    h, w = img.shape[:2]
    ratio = rng.uniform(1, max_ratio)
    nh, nw = int(h * ratio), int(w * ratio)
    top, left = int(rng.uniform(0, nh - h)), int(rng.uniform(0, nw - w))
    canvas = np.empty((nh, nw, 3), np.uint8)
    canvas[:] = np.asarray(fill, np.uint8)
    canvas[top:top + h, left:left + w] = img
    return canvas, boxes + np.asarray([left, top, left, top], np.float32)


def ssd_random_crop(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                    min_ious=(None, 0.1, 0.3, 0.5, 0.7, 0.9), max_trials: int = 50):
    """SSD patch sampling: pick a minimum IoU (or no crop), then try random patches of 0.3-1.0 of
    each side and aspect 0.5-2 until one overlaps every kept box enough. Boxes whose centres fall
    outside the patch are dropped; the others are clipped to it."""
    from src.box.iou import box_iou
    h, w = img.shape[:2]
    if boxes.shape[0] == 0:
        return img, boxes, labels
    while True:
        min_iou = min_ious[rng.integers(len(min_ious))]
        if min_iou is None:
            return img, boxes, labels
        for _ in range(max_trials):
            cw, ch = rng.uniform(0.3 * w, w), rng.uniform(0.3 * h, h)
            if not 0.5 <= ch / cw <= 2:
                continue
            left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            patch = np.asarray([[left, top, left + cw, top + ch]], np.float32)
            if box_iou(boxes, patch).min() < min_iou:
                continue
            centers = (boxes[:, :2] + boxes[:, 2:]) / 2
            keep = np.all((centers > patch[0, :2]) & (centers < patch[0, 2:]), axis=1)
            if not keep.any():
                continue
            x1, y1, x2, y2 = (int(v) for v in patch[0])
            new_boxes = boxes[keep].copy()
            new_boxes[:, :2] = np.maximum(new_boxes[:, :2], [x1, y1]) - [x1, y1]
            new_boxes[:, 2:] = np.minimum(new_boxes[:, 2:], [x2, y2]) - [x1, y1]
            return img[y1:y2, x1:x2], new_boxes.astype(np.float32), labels[keep]
