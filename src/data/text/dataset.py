"""Text-recognition samples from LMDB sets: label filtering, image decoding, skipping bad records.

Labels are read once when the dataset is built (a cursor pass, seconds even for MJSynth);
samples whose label is missing, empty, too long or outside the alphabet are left out and
counted there. Images are decoded when a sample is read; a missing or undecodable image is
replaced by the next good sample of the same shard and counted, so an epoch never stops on a
bad record. Every skip is logged with the LMDB folder and key.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from src.data import transforms as T
from src.data.message_log import MessageLog
from src.data.text.alphabet import Alphabet
from src.data.text.lmdb_io import TextLMDB
from src.model_utils.config import Config

# Ground truth travels through the eval pipeline as fixed-size UTF-8 bytes (zero-padded).
LABEL_BYTES = 256
# Time steps the alignment loss leaves free (see ctc_step_targets).
IGNORE = -1


@dataclass
class SkipLog(MessageLog):
    """Counts of skipped samples by reason, plus the messages naming the records."""

    counts: Counter = field(default_factory=Counter)

    def skip(self, reason: str, where: str) -> None:
        with self._lock:
            self.counts[reason] += 1
        self.note(f"skipped {where}: {reason}")

    def summary(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items())) or "none"


@dataclass
class TextSet:
    """One named evaluation (or training) set: the LMDB roots it concatenates."""

    name: str
    roots: list[str]


class TextSamples:
    """The usable samples of one or more sets: (set id, LMDB number, index, normalised label).

    `unknown` overrides the alphabet's policy for characters outside it ("strip" is the
    standard protocol for evaluating a 36-character model on mixed-case, punctuated sets).
    `max_length` drops labels CTC cannot emit in the available time steps.
    """

    def __init__(self, sets: Sequence[TextSet], alphabet: Alphabet, max_length: int, unknown: str | None = None,
                 progress: bool = True):
        self.sets = list(sets)
        self.alphabet = alphabet
        self.dbs = [TextLMDB(s.roots) for s in self.sets]
        self.log = SkipLog()
        rows = []
        for set_id, db in enumerate(self.dbs):
            for index, raw in db.labels(progress):
                if raw is None:
                    self.log.skip("missing label", db.describe(index, "label"))
                    continue
                text = alphabet.normalize(raw.strip(), unknown)
                if text is None:
                    reason = "empty label" if not raw.strip() else "characters outside the alphabet"
                    self.log.skip(reason, f"{db.describe(index, 'label')} ({raw[:40]!r})")
                elif len(text) > max_length:
                    self.log.skip(f"label longer than {max_length}", f"{db.describe(index, 'label')} ({raw[:40]!r})")
                else:
                    rows.append((set_id, index, text))
        self.rows = rows
        total = sum(len(db) for db in self.dbs)
        print(f"text samples: {len(rows)} of {total} usable in {', '.join(s.name for s in self.sets)}; "
              f"skipped: {self.log.summary()}", flush=True)

    def __len__(self) -> int:
        return len(self.rows)


def ctc_step_targets(centres: Sequence[float], ids: Sequence[int], num_steps: int, blank: int) -> np.ndarray:
    """Per-time-step classes of one sample for a cross-entropy beside CTC: a CTC path placing
    each character at the time step nearest its centre.

    `centres` are the characters' horizontal centres as fractions of the image width; time
    step t of a CTC model whose steps tile the width evenly looks at (t + 1) / (num_steps + 1)
    of it (CRNN: x = 4(t + 1) of 100 px). Steps are pushed apart where characters crowd, so
    the path stays valid (in order, one step each, a blank between repeated characters).
    The steps just beside a character are IGNORE, because the model may spread it over them
    (greedy decoding merges the repeats); the rest are blank. All steps are IGNORE when the
    centres do not match the label or the characters do not fit.
    """
    ids = list(ids)
    n = len(ids)
    if n == 0 or len(centres) != n:
        return np.full(num_steps, IGNORE, np.int32)
    steps = np.rint(np.asarray(centres, np.float64) * (num_steps + 1) - 1).astype(np.int64)
    gaps = [1] + [2 if ids[i] == ids[i - 1] else 1 for i in range(1, n)]
    steps[0] = max(steps[0], 0)
    for i in range(1, n):
        steps[i] = max(steps[i], steps[i - 1] + gaps[i])
    steps[-1] = min(steps[-1], num_steps - 1)
    for i in range(n - 2, -1, -1):
        steps[i] = min(steps[i], steps[i + 1] - gaps[i + 1])
    if steps[0] < 0:
        return np.full(num_steps, IGNORE, np.int32)
    target = np.full(num_steps, blank, np.int32)
    target[steps] = ids
    for t in steps:
        for side in (t - 1, t + 1):
            if 0 <= side < num_steps and target[side] == blank:
                target[side] = IGNORE
    for i in range(1, n):
        if gaps[i] == 2:
            between = slice(steps[i - 1] + 1, steps[i])
            target[between] = blank  # what keeps a repeated character from merging
    return target


def preprocess_crop(img_rgb: np.ndarray, height: int, width: int, channels: int = 3) -> np.ndarray:
    """RGB uint8 word crop -> float32 (C, H, W) in [-1, 1], stretched to the network's size:
    the shared inference preprocessing with mean = std = 127.5 (so the 310 program's C++
    preprocessing applies too)."""
    img = T.resize(img_rgb, (height, width))
    if channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
    return T.normalize_chw(img, (127.5,) * channels, (127.5,) * channels)


class TextSource:
    """Random-access source for ``mindspore.dataset.GeneratorDataset``.

    Training items: (image, label ids padded with the blank to max_length, label length), and
    with `time_steps` the per-time-step targets of `ctc_step_targets` from the LMDB's
    character centres. Evaluation items: (image, the ground truth as UTF-8 bytes, set id,
    sample number). `rows` selects this source's samples (a data-parallel shard).
    """

    def __init__(self, samples: TextSamples, rows: Sequence[int], image_size: Sequence[int], channels: int,
                 max_length: int, training: bool, time_steps: int = 0):
        if time_steps and training:
            for db in samples.dbs:
                if not db.has_positions():
                    raise ValueError(f"per-time-step targets need character centres (pos-%09d keys), which "
                                     f"{', '.join(db.dirs)} does not store; only the embedded word crops "
                                     "(dataset: words) have them. Set align_loss_steps: 0 for this data.")
        self.time_steps = time_steps if training else 0
        self.samples = samples
        self.rows = list(rows)
        self.height, self.width = int(image_size[0]), int(image_size[1])
        self.channels = channels
        self.max_length = max_length
        self.training = training
        if not self.rows:
            raise ValueError("no usable text samples (see the skipped counts above)")

    def __len__(self) -> int:
        return len(self.rows)

    def _decode(self, row: int) -> np.ndarray | None:
        set_id, index, _ = self.samples.rows[row]
        db = self.samples.dbs[set_id]
        data = db.image(index)
        if data is None:
            self.samples.log.skip("missing image", db.describe(index))
            return None
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None or img.shape[0] < 2 or img.shape[1] < 2:
            self.samples.log.skip("undecodable image", db.describe(index))
            return None
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def __getitem__(self, item: int):
        for attempt in range(len(self.rows)):
            row = self.rows[(item + attempt) % len(self.rows)]
            img = self._decode(row)
            if img is not None:
                break
        else:
            raise ValueError("no decodable image in the data set (see the skipped counts above)")
        set_id, index, text = self.samples.rows[row]
        image = preprocess_crop(img, self.height, self.width, self.channels)
        if self.training:
            ids = self.samples.alphabet.encode(text)
            label = np.full(self.max_length, self.samples.alphabet.blank, np.int32)
            label[:len(ids)] = ids
            if not self.time_steps:
                return image, label, np.int32(len(ids))
            # Centres that no longer match the label (characters stripped) leave every step free.
            centres = self.samples.dbs[set_id].positions(index) or []
            steps = ctc_step_targets(centres, ids, self.time_steps, self.samples.alphabet.blank)
            return image, label, np.int32(len(ids)), steps
        truth = np.zeros(LABEL_BYTES, np.uint8)
        raw = text.encode("utf-8")[:LABEL_BYTES]
        truth[:len(raw)] = np.frombuffer(raw, np.uint8)
        return image, truth, np.int32(set_id), np.int32(row)


def label_from_bytes(row: np.ndarray) -> str:
    """Inverse of the zero-padded UTF-8 ground-truth column."""
    return bytes(np.asarray(row, np.uint8)).rstrip(b"\0").decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# dataset kind "lmdb": LMDBs already on disk (converted with convert_text_lmdb.py)
# ---------------------------------------------------------------------------------------------

def lmdb_sets(cfg: Config, split: str) -> list[TextSet]:
    """Training reads `train_lmdb` as one set (all roots concatenated); evaluation scores every
    root of `eval_lmdb` as its own set, named after its folder, as the benchmarks are reported."""
    if split == "train":
        return [TextSet("train", cfg.paths("train_lmdb"))]
    return [TextSet(os.path.basename(p.rstrip("/")) or p, [p]) for p in cfg.paths("eval_lmdb")]
