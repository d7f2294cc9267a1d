"""Text-recognition LMDB in the layout MJSynth and the evaluation sets are distributed in.

Keys: ``num-samples`` (decimal count), ``image-%09d`` (encoded image bytes) and ``label-%09d``
(UTF-8 text), numbered from 1. The embedded rendered crops add ``pos-%09d``: the horizontal
centre of every label character as a fraction of the image width, comma-separated (only a
renderer knows them; they let training supervise each CTC time step directly). A "root" is
either one LMDB folder (holding ``data.mdb``) or a folder whose sub-folders hold several (as
``data_lmdb_release/training/MJ`` does); all of them are concatenated in sorted path order.

The writer builds into a temporary folder next to the target and renames it into place only
when every sample and ``num-samples`` are committed, so an interrupted conversion never
leaves an LMDB that looks complete.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from typing import Iterable, Iterator, Sequence

import lmdb
from tqdm import tqdm

logger = logging.getLogger("src.data")

NUM_SAMPLES_KEY = b"num-samples"
_COMMIT_EVERY = 1000
# py-lmdb refuses to open one environment twice in a process, so read-only environments
# are shared per (process, folder); a forked worker opens its own.
_ENVS: dict[tuple, lmdb.Environment] = {}
_ENVS_LOCK = threading.Lock()


def open_readonly(path: str) -> lmdb.Environment:
    """The process's shared read-only environment of the LMDB folder `path`."""
    # The data file's identity is part of the key: an LMDB replaced on disk (regenerated
    # cache, re-run conversion) must not be served from the old, deleted file.
    st = os.stat(os.path.join(path, "data.mdb"))
    key = (os.getpid(), os.path.realpath(path), st.st_ino, st.st_mtime_ns)
    with _ENVS_LOCK:
        env = _ENVS.get(key)
        if env is None:
            env = _ENVS[key] = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)
        return env


def image_key(index: int) -> bytes:
    """Key of the 1-based sample `index`'s image."""
    return b"image-%09d" % index


def label_key(index: int) -> bytes:
    """Key of the 1-based sample `index`'s label."""
    return b"label-%09d" % index


def position_key(index: int) -> bytes:
    """Key of the 1-based sample `index`'s character centres."""
    return b"pos-%09d" % index


def format_positions(centres: Sequence[float]) -> bytes:
    """The ``pos-%09d`` value of character centres (fractions of the image width)."""
    return ",".join(f"{c:.4f}" for c in centres).encode()


def find_lmdb_dirs(root: str) -> list[str]:
    """Every LMDB folder at or below `root` (a folder holding data.mdb), sorted."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"LMDB root not found: {root}")
    found = []
    for path, dirs, files in os.walk(root):
        dirs.sort()
        if "data.mdb" in files:
            found.append(path)
            dirs[:] = []  # an LMDB folder does not nest another
    if not found:
        raise FileNotFoundError(f"no LMDB (data.mdb) at or below {root}")
    return sorted(found)


def write_text_lmdb(path: str, samples: Iterable[tuple], total: int | None = None,
                    desc: str | bool | None = None, map_size: int = 1 << 40) -> int:
    """Write (image bytes, label) or (image bytes, label, character centres) samples as an
    LMDB at `path`; returns the sample count.

    An existing LMDB at `path` is replaced only after the new one is complete. `total` and
    `desc` drive the progress bar (desc=False: no bar). `map_size` is virtual address space, not disk: LMDB files
    grow with the data.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    count = 0
    try:
        env = lmdb.open(tmp, map_size=map_size, subdir=True, meminit=False, map_async=True)
        try:
            txn = env.begin(write=True)
            for image, label, *rest in tqdm(samples, total=total, desc=desc or f"writing {os.path.basename(path)}",
                                            disable=desc is False, mininterval=2):
                count += 1
                txn.put(image_key(count), bytes(image))
                txn.put(label_key(count), label.encode("utf-8"))
                centres = rest[0] if rest else None
                if centres is not None:
                    txn.put(position_key(count), format_positions(centres))
                if count % _COMMIT_EVERY == 0:
                    txn.commit()
                    txn = env.begin(write=True)
            txn.put(NUM_SAMPLES_KEY, str(count).encode())
            txn.commit()
            env.sync(True)
        finally:
            env.close()
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return count


class TextLMDB:
    """Random access to the samples of one or more text LMDB roots, concatenated.

    ``len(db)`` is the total of every LMDB's ``num-samples``; ``db.label(i)`` and
    ``db.image(i)`` take a 0-based global index and return None when the key is missing
    (the caller skips and counts it; :meth:`describe` names the LMDB and the key).
    Environments are opened lazily per process and per thread, so an instance may be handed
    to dataset workers.
    """

    def __init__(self, roots: str | Sequence[str]):
        roots = [roots] if isinstance(roots, str) else list(roots)
        if not roots:
            raise ValueError("no LMDB root given")
        self.dirs: list[str] = []
        for root in roots:
            self.dirs.extend(find_lmdb_dirs(root))
        self.counts: list[int] = []
        for d in self.dirs:
            with open_readonly(d).begin() as txn:
                raw = txn.get(NUM_SAMPLES_KEY)
            if raw is None:
                raise ValueError(f"{d} has no 'num-samples' key: not a text-recognition LMDB "
                                 "(or an interrupted conversion)")
            try:
                self.counts.append(int(raw.decode()))
            except ValueError:
                raise ValueError(f"{d}: 'num-samples' is {raw[:40]!r}, not a number") from None
        self.offsets = [0]
        for c in self.counts:
            self.offsets.append(self.offsets[-1] + c)
        self._local = threading.local()

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(LMDB number, 1-based key number) of a 0-based global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        lo, hi = 0, len(self.counts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.offsets[mid] <= index:
                lo = mid
            else:
                hi = mid - 1
        return lo, index - self.offsets[lo] + 1

    def describe(self, index: int, what: str = "image") -> str:
        """'<lmdb folder>:<key>' of a sample, for messages."""
        db, key = self.locate(index)
        name = image_key(key) if what == "image" else label_key(key)
        return f"{self.dirs[db]}:{name.decode()}"

    def _txn(self, db: int):
        state = self._local.__dict__
        if state.get("pid") != os.getpid():
            state.clear()
            state["pid"] = os.getpid()
            state["txns"] = {}
        txns = state["txns"]
        if db not in txns:
            txns[db] = open_readonly(self.dirs[db]).begin()
        return txns[db]

    def label(self, index: int) -> str | None:
        db, key = self.locate(index)
        raw = self._txn(db).get(label_key(key))
        return None if raw is None else raw.decode("utf-8", errors="replace")

    def image(self, index: int) -> bytes | None:
        db, key = self.locate(index)
        return self._txn(db).get(image_key(key))

    def positions(self, index: int) -> list[float] | None:
        """The character centres of a sample (fractions of its image width), or None when
        the LMDB does not store them or the value is malformed."""
        db, key = self.locate(index)
        raw = self._txn(db).get(position_key(key))
        if not raw:
            return None
        try:
            return [float(v) for v in raw.split(b",")]
        except ValueError:
            return None

    def has_positions(self) -> bool:
        """Whether every LMDB of these roots stores character centres (checked on its first sample)."""
        return all(c == 0 or self._txn(db).get(position_key(1)) is not None for db, c in enumerate(self.counts))

    def labels(self, progress: bool = True) -> Iterator[tuple[int, str | None]]:
        """(global index, label or None) for every sample, by cursor (fast on big sets)."""
        for db, d in enumerate(self.dirs):
            with open_readonly(d).begin() as txn:
                get = txn.get
                base = self.offsets[db]
                for key in tqdm(range(1, self.counts[db] + 1), desc=f"labels of {os.path.basename(d)}",
                                disable=not progress or self.counts[db] < 100_000, mininterval=2):
                    raw = get(label_key(key))
                    yield base + key - 1, None if raw is None else raw.decode("utf-8", errors="replace")
