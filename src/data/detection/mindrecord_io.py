"""Convert :class:`~src.data.detection.records.DetRecord` lists to MindRecord and read them back.

Layout on disk for ``out_file = "dir/train.mindrecord"``:

* ``num_shards == 1``: ``train.mindrecord`` + ``train.mindrecord.db``;
* ``num_shards == k``: ``train.mindrecord0 .. train.mindrecord{k-1}`` each with its ``.db``;
* ``train.mindrecord.done``: json marker written LAST; without it the set is incomplete.

Row schema (see :data:`SCHEMA`): ``image`` the original encoded file bytes, ``image_id``,
``height``/``width`` of the decoded image, ``boxes`` (N, 4) float32 x1,y1,x2,y2,
``labels``/``iscrowd`` (N,) int32 and ``segm`` the json of the per-object segmentations
(``b"null"`` when the source has none).

MindRecord quirks this module works around (checked with MindSpore 2.10):

* Zero-length arrays are accepted by ``FileWriter`` but read back as a 0-d scalar holding
  uninitialised memory (e.g. ``labels == -1207668605``). An image without objects is therefore
  stored with ONE padding row: box ``[0, 0, 0, 0]``, label ``0`` (background, never a real
  object) and iscrowd ``1``. Readers must drop rows with ``label == 0``; use
  :func:`strip_padding` or :func:`decode_row`.
* Both the data file header (``shard_addresses``) and the ``.db`` index (``SHARD_NAME``)
  store the data file's base name, so RENAMING a part breaks reading. Moving it to another
  folder under the same name works, so the writer builds into a private temporary folder with
  the final names and then moves each part into place.
* ``bytes`` columns come back as a 1-element numpy ``S`` array; indexing it (``a[0]``) strips
  trailing NUL bytes, ``a.tobytes()`` does not. :func:`decode_row` uses ``tobytes``.
* ``FileWriter`` refuses to overwrite existing files, so stale parts are removed first.
* With ``num_shards``/``shard_id`` on reading, MindSpore repeats samples so every shard has
  the same length when the image count is not divisible by ``num_shards``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from src.data.detection.records import DetRecord, ReadStats, sanitize_boxes
from src.data.transforms import decode_image

logger = logging.getLogger("src.data")

SCHEMA = {
    "image": {"type": "bytes"},
    "image_id": {"type": "int64"},
    "height": {"type": "int32"},
    "width": {"type": "int32"},
    "boxes": {"type": "float32", "shape": [-1, 4]},
    "labels": {"type": "int32", "shape": [-1]},
    "iscrowd": {"type": "int32", "shape": [-1]},
    "segm": {"type": "bytes"},
}
COLUMNS = list(SCHEMA)

# Rows decoded in parallel per batch; bounds memory (encoded + decoded images of one batch).
_BATCH = 64
_POLL_SECONDS = 1.0
_WAIT_MESSAGE_SECONDS = 30.0


def marker_path(out_file: str) -> str:
    """Path of the completion marker for ``out_file``."""
    return os.fspath(out_file) + ".done"


def part_names(out_file: str, num_shards: int) -> list[str]:
    """Base names of the data files MindRecord writes for ``out_file`` (without ``.db``)."""
    base = os.path.basename(os.fspath(out_file))
    if num_shards == 1:
        return [base]
    return [f"{base}{i}" for i in range(num_shards)]


# ---------------------------------------------------------------------------------------------
# padding for images without objects
# ---------------------------------------------------------------------------------------------

def _pad_if_empty(boxes, labels, iscrowd):
    if boxes.shape[0] > 0:
        return boxes, labels, iscrowd
    return (np.zeros((1, 4), np.float32), np.zeros((1,), np.int32), np.ones((1,), np.int32))


def strip_padding(boxes, labels, iscrowd=None):
    """Drop the padding row of object-less images (rows with label 0).

    Also copes with a 0-d array (what MindRecord returns for a zero-length array written by
    other tools) by returning empty arrays. Returns ``(boxes, labels)`` or
    ``(boxes, labels, iscrowd)`` when ``iscrowd`` is given.
    """
    boxes = np.asarray(boxes, np.float32)
    labels = np.asarray(labels, np.int32)
    if boxes.ndim != 2 or labels.ndim != 1:
        out = (np.zeros((0, 4), np.float32), np.zeros((0,), np.int32))
        return out if iscrowd is None else out + (np.zeros((0,), np.int32),)
    keep = labels > 0
    out = (boxes[keep], labels[keep])
    if iscrowd is None:
        return out
    return out + (np.asarray(iscrowd, np.int32).reshape(-1)[keep],)


def decode_row(row: dict) -> dict:
    """Turn a row from ``create_dict_iterator(output_numpy=True)`` into plain Python values.

    ``image`` -> exact encoded bytes, ``segm`` -> parsed json (list or None), ``boxes``,
    ``labels``, ``iscrowd`` with the padding row removed, scalars -> int. Columns that are
    absent from ``row`` are left out.
    """
    out = {}
    for key, val in row.items():
        if key == "image":
            out[key] = np.asarray(val).tobytes()
        elif key == "segm":
            out[key] = json.loads(np.asarray(val).tobytes().decode("utf-8"))
        elif key in ("image_id", "height", "width"):
            out[key] = int(val)
        else:
            out[key] = np.asarray(val)
    if "boxes" in out and "labels" in out:
        keep_segm = "segm" in out and isinstance(out["segm"], list)
        if "iscrowd" in out:
            out["boxes"], out["labels"], out["iscrowd"] = strip_padding(
                out["boxes"], out["labels"], out["iscrowd"])
        else:
            out["boxes"], out["labels"] = strip_padding(out["boxes"], out["labels"])
        if keep_segm and len(out["segm"]) != len(out["labels"]):
            raise ValueError(f"row {out.get('image_id')}: {len(out['segm'])} segmentations "
                             f"for {len(out['labels'])} boxes")
    return out


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def _json_default(obj):
    # RLE from pycocotools carries 'counts' as bytes; json needs str.
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in segm json")


def _load_and_decode(rec: DetRecord):
    """Read one image file; returns (bytes, decoded shape or None, error text or None)."""
    try:
        with open(rec.file_name, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, None, f"cannot read ({e.strerror or e})"
    img = decode_image(data)
    if img is None:
        return data, None, "undecodable (corrupt or truncated)"
    return data, img.shape[:2], None


def _make_row(rec: DetRecord, data: bytes, hw, stats: ReadStats):
    h, w = int(hw[0]), int(hw[1])
    if (h, w) != (int(rec.height), int(rec.width)):
        stats.note(f"{rec.file_name}: annotation says {rec.width}x{rec.height}, image is "
                   f"{w}x{h}; using the image size")
    rec = sanitize_boxes(DetRecord(rec.image_id, rec.file_name, h, w, rec.boxes, rec.labels,
                                   rec.iscrowd, rec.segmentations), stats)
    if rec.boxes.shape[0] == 0:
        stats.images_without_annotations += 1
    if rec.labels.size and int(rec.labels.min()) < 1:
        raise ValueError(f"{rec.file_name}: label {int(rec.labels.min())} < 1; label 0 is "
                         f"the background and cannot be an object")
    boxes, labels, iscrowd = _pad_if_empty(rec.boxes, rec.labels, rec.iscrowd)
    segm = b"null" if rec.segmentations is None else \
        json.dumps(rec.segmentations, default=_json_default, separators=(",", ":")).encode()
    return {
        "image": data,
        "image_id": int(rec.image_id),
        "height": h,
        "width": w,
        "boxes": np.ascontiguousarray(boxes, np.float32).reshape(-1, 4),
        "labels": np.ascontiguousarray(labels, np.int32).reshape(-1),
        "iscrowd": np.ascontiguousarray(iscrowd, np.int32).reshape(-1),
        "segm": segm,
    }


def _existing_parts(out_file: str) -> list[str]:
    """Every file in out_file's folder that looks like a part of it (any shard count)."""
    folder = os.path.dirname(os.path.abspath(out_file))
    base = os.path.basename(out_file)
    pat = re.compile(re.escape(base) + r"\d*(\.db)?$")
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, n) for n in os.listdir(folder) if pat.fullmatch(n)]


def remove_mindrecord(out_file: str) -> None:
    """Delete ``out_file``'s marker and every part (marker first, so no reader trusts a
    half-deleted set)."""
    out_file = os.fspath(out_file)
    try:
        os.remove(marker_path(out_file))
    except FileNotFoundError:
        pass
    for p in _existing_parts(out_file):
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def _write_marker(out_file: str, info: dict) -> None:
    final = marker_path(out_file)
    tmp = f"{final}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


def write_detection_mindrecord(records, out_file, stats=None, num_shards=1, progress=True,
                               num_workers=4) -> int:
    """Write ``records`` to a MindRecord set at ``out_file``; returns the number of images.

    Each image file is read and decoded exactly once: undecodable or unreadable images are
    skipped (counted in ``stats.skipped_images`` with a message naming the file), the decoded
    size replaces the annotated one, and boxes go through
    :func:`~src.data.detection.records.sanitize_boxes`. Images without objects are kept (stored with one
    label-0 padding row, see the module docstring) and counted in
    ``stats.images_without_annotations``.

    The set is built in a private temporary folder next to ``out_file``, then every part is
    moved into place (same base names, since MindRecord stores them inside the files) and the
    ``.done`` marker is written last, so an interrupted build never looks complete.

    Args:
        records: iterable of :class:`DetRecord`.
        out_file: target path, e.g. ``data/train.mindrecord``.
        stats: optional :class:`ReadStats` to fill (also summarised in the marker).
        num_shards: number of MindRecord files (1..1000), capped at the number of records.
        progress: show a tqdm progress bar.
        num_workers: threads that read and decode images (OpenCV releases the GIL).

    Raises:
        ValueError: when no image could be written (nothing usable in ``records``).
    """
    from mindspore.mindrecord import FileWriter
    from tqdm import tqdm

    stats = stats if stats is not None else ReadStats()
    out_file = os.path.abspath(os.fspath(out_file))
    records = list(records)
    if not 1 <= int(num_shards) <= 1000:
        raise ValueError(f"num_shards must be 1..1000, got {num_shards}")
    num_shards = int(num_shards)
    if 1 < len(records) < num_shards:
        # Empty shard files make MindSpore warn "does not contain any samples" on every read.
        stats.note(f"{out_file}: num_shards {num_shards} > {len(records)} records; "
                   f"using {len(records)}")
        num_shards = len(records)
    elif len(records) <= 1:
        num_shards = 1
    folder = os.path.dirname(out_file)
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(out_file)
    tmp_dir = os.path.join(folder, f".{base}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp_dir)
    written = 0
    try:
        writer = FileWriter(os.path.join(tmp_dir, base), num_shards, overwrite=False)
        writer.add_schema(SCHEMA, "detection")
        bar = tqdm(total=len(records), desc=f"mindrecord {base}", unit="img",
                   disable=not progress)
        with ThreadPoolExecutor(max_workers=max(1, int(num_workers))) as pool:
            for start in range(0, len(records), _BATCH):
                chunk = records[start:start + _BATCH]
                rows = []
                for rec, (data, hw, err) in zip(chunk, pool.map(_load_and_decode, chunk)):
                    if err is not None:
                        stats.skipped_images += 1
                        stats.note(f"{rec.file_name}: {err}; image id {rec.image_id} skipped")
                        continue
                    rows.append(_make_row(rec, data, hw, stats))
                if rows:
                    writer.write_raw_data(rows)
                    written += len(rows)
                bar.update(len(chunk))
        bar.close()
        if written == 0:
            raise ValueError(f"{out_file}: no usable image among {len(records)} records "
                             f"({stats.summary()})")
        writer.commit()
        stats.images_written += written
        names = part_names(out_file, num_shards)
        for n in names:
            for suffix in ("", ".db"):
                if not os.path.isfile(os.path.join(tmp_dir, n + suffix)):
                    raise RuntimeError(f"MindRecord did not write {n + suffix} in {tmp_dir}")
        # Marker goes first, then stale parts (possibly of another shard count), so nothing
        # is considered complete until the new marker is written at the very end.
        remove_mindrecord(out_file)
        for n in names:
            for suffix in (".db", ""):
                src = os.path.join(tmp_dir, n + suffix)
                os.chmod(src, 0o644)  # FileWriter creates 0600; other users/jobs must read it
                os.replace(src, os.path.join(folder, n + suffix))
        _write_marker(out_file, {"images": written, "num_shards": num_shards, "files": names,
                                 "stats": stats.summary(), "created": time.time()})
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("wrote %d images to %s (%s)", written, out_file, stats.summary())
    return written


# ---------------------------------------------------------------------------------------------
# completeness, waiting and reading
# ---------------------------------------------------------------------------------------------

def _read_marker(out_file: str) -> dict | None:
    try:
        with open(marker_path(out_file), "r", encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def mindrecord_files(out_file: str) -> list[str] | None:
    """Full paths of the data files of a COMPLETE set, or None when it is incomplete.

    Complete means: the ``.done`` marker exists and parses, and every data file it lists
    exists together with its ``.db``.
    """
    out_file = os.path.abspath(os.fspath(out_file))
    info = _read_marker(out_file)
    if info is None or not isinstance(info.get("files"), list) or not info["files"]:
        return None
    folder = os.path.dirname(out_file)
    paths = [os.path.join(folder, n) for n in info["files"]]
    for p in paths:
        if not (os.path.isfile(p) and os.path.isfile(p + ".db")):
            return None
    return paths


def is_complete(out_file: str) -> bool:
    """True when ``out_file`` was fully built (marker plus all parts present)."""
    return mindrecord_files(out_file) is not None


def ensure_mindrecord(out_file, build_fn, rank=0, timeout=3600) -> str:
    """Make sure a complete MindRecord set exists at ``out_file`` and return ``out_file``.

    Rank 0 builds it with ``build_fn(out_file)`` unless it is already complete; other ranks
    wait for the ``.done`` marker (polling every second, printing a note every ~30 s).

    Raises:
        TimeoutError: on rank != 0 when the set is not complete after ``timeout`` seconds.
        RuntimeError: on rank 0 when ``build_fn`` returns without producing a complete set.
    """
    out_file = os.fspath(out_file)
    if is_complete(out_file):
        return out_file
    if rank == 0:
        if os.path.exists(marker_path(out_file)) or _existing_parts(out_file):
            logger.warning("%s is incomplete (interrupted build?); rebuilding", out_file)
        build_fn(out_file)
        if not is_complete(out_file):
            raise RuntimeError(f"build_fn returned but {out_file} is not complete "
                               f"(no {marker_path(out_file)} or missing parts)")
        return out_file
    start = time.monotonic()
    last_msg = start
    while True:
        if is_complete(out_file):
            return out_file
        now = time.monotonic()
        if now - start >= timeout:
            raise TimeoutError(f"rank {rank}: {out_file} not built after {timeout:.0f}s "
                               f"(waiting for rank 0 to write {marker_path(out_file)})")
        if now - last_msg >= _WAIT_MESSAGE_SECONDS:
            print(f"rank {rank}: waiting for rank 0 to build {out_file} "
                  f"({now - start:.0f}s)", flush=True)
            last_msg = now
        time.sleep(min(_POLL_SECONDS, max(0.05, timeout - (now - start))))


def open_detection_mindrecord(out_file, columns=None, num_shards=None, shard_id=None,
                              shuffle=False, num_parallel_workers=1):
    """Open a complete set as ``mindspore.dataset.MindDataset``.

    Args:
        out_file: the path given to the writer.
        columns: columns to load (default: all of :data:`COLUMNS`).
        num_shards, shard_id: data-parallel split (device count and rank); both or neither.
            Unrelated to the writer's ``num_shards`` (number of files). When the image count
            is not divisible, MindSpore repeats samples so every shard has the same length.
        shuffle: shuffle the samples.
        num_parallel_workers: MindDataset reader threads.

    Rows still carry the padding row of object-less images; see :func:`decode_row` /
    :func:`strip_padding`.

    Raises:
        FileNotFoundError: when the set is missing or incomplete.
    """
    import mindspore.dataset as ds

    files = mindrecord_files(out_file)
    if files is None:
        raise FileNotFoundError(f"MindRecord set not found or incomplete: {out_file} "
                                f"(needs {marker_path(out_file)} and all parts; build it "
                                f"with ensure_mindrecord)")
    if (num_shards is None) != (shard_id is None):
        raise ValueError("give both num_shards and shard_id, or neither")
    if num_shards is not None and not 0 <= int(shard_id) < int(num_shards):
        raise ValueError(f"shard_id {shard_id} out of range for num_shards {num_shards}")
    cols = list(columns) if columns is not None else list(COLUMNS)
    unknown = [c for c in cols if c not in SCHEMA]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; available: {COLUMNS}")
    return ds.MindDataset(files, columns_list=cols, num_parallel_workers=num_parallel_workers,
                          shuffle=shuffle, num_shards=num_shards, shard_id=shard_id)
