"""CRNN's model interface: what the entry points call (see src/registry.py)."""
from __future__ import annotations

import numpy as np
import mindspore as ms
import mindspore.dataset as ds

from src.crnn.network import CRNN, CRNNInference, CRNNWithAlignedLoss, CRNNWithLoss
from src.crnn.official import LAYOUT as OFFICIAL_CHECKPOINT  # noqa: F401  (model interface)
from src.data.registry import TEXT, kind_of
from src.data.text.alphabet import Alphabet, alphabet_from_config
from src.data.text.dataset import LABEL_BYTES, TextSamples, TextSet, TextSource, label_from_bytes, preprocess_crop
from src.engine.read_log import ReadLog, read_log_for
from src.metric.text_accuracy import TextAccuracy
from src.model_utils.config import Config

BACKBONE_PREFIX = "network.vgg."
METRIC = "accuracy"
# Ground-truth labels of evaluation sets may be longer than what the model is trained on.
_EVAL_MAX_LENGTH = LABEL_BYTES // 4


def alphabet(cfg: Config) -> Alphabet:
    return alphabet_from_config(cfg)


def num_classes(cfg: Config) -> int:
    """Characters + the CTC blank."""
    return alphabet(cfg).num_classes


def build_network(cfg: Config) -> CRNN:
    return CRNN(num_classes(cfg), cfg.image_channels, cfg.hidden_size)


def time_steps(cfg: Config) -> int:
    """CTC time steps: the CNN divides the width by 4, and its last 2x2 conv takes one more."""
    return cfg.img_shape[1] // 4 - 1


def build_train_network(cfg: Config) -> CRNNWithLoss:
    if cfg.align_loss_steps > 0:
        return CRNNWithAlignedLoss(build_network(cfg), alphabet(cfg).blank, cfg.align_loss_steps)
    return CRNNWithLoss(build_network(cfg), alphabet(cfg).blank)


def build_inference_network(cfg: Config, train_network: CRNNWithLoss | None = None) -> CRNNInference:
    """The exported graph; shares weights with train_network when given."""
    return CRNNInference(train_network.network if train_network is not None else build_network(cfg))


def example_inputs(cfg: Config, batch_size: int = 1) -> tuple:
    h, w = cfg.img_shape
    return (ms.Tensor(np.zeros((batch_size, cfg.image_channels, h, w), np.float32)),)


def output_shapes(cfg: Config, batch_size: int = 1) -> list[tuple]:
    """Shape of the exported graph's output: per-step probabilities (B, T, C)."""
    return [(batch_size, time_steps(cfg), num_classes(cfg))]


# ------------------------------------------------------------------------ data

def text_sets(cfg: Config, split: str) -> list[TextSet]:
    """The LMDB sets of a split, from the dataset kind config key `dataset` names
    (src/data/registry.py: words, the embedded rendered crops; lmdb, LMDBs on disk)."""
    return kind_of(cfg, TEXT).read(cfg, split)


def _samples(cfg: Config, split: str) -> TextSamples:
    if split == "train":
        return TextSamples(text_sets(cfg, split), alphabet(cfg), cfg.max_text_length)
    # The usual protocol: characters the model cannot produce are removed from the ground truth.
    return TextSamples(text_sets(cfg, split), alphabet(cfg), _EVAL_MAX_LENGTH, unknown=cfg.eval_label_filter)


def _shard(num_rows: int, rank: int, group_size: int) -> list[int]:
    """Every rank gets the same number of rows (unequal step counts would hang the
    gradient all-reduce); the few rows that do not divide evenly are left out."""
    per_rank = num_rows // group_size
    return list(range(rank, per_rank * group_size, group_size))


class _RecordingSource:
    """A training TextSource that records the row (over the concatenated training LMDBs) of
    every sample it is asked for in a ReadLog."""

    def __init__(self, source: TextSource, read_log: ReadLog):
        self.source = source
        self.read_log = read_log

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        self.read_log.record(self.source.rows[index])
        return self.source[index]


def create_dataset(cfg: Config, split: str, rank: int = 0, group_size: int = 1,
                   training: bool | None = None) -> ds.Dataset:
    """Batched dataset of a split. Training batches: (image, label, label_length), plus
    step_target with align_loss_steps; evaluation batches: (image, label_bytes, set_id, sample)."""
    training = split == "train" if training is None else training
    samples = _samples(cfg, split)
    rows = _shard(len(samples), rank, group_size) if training else range(len(samples))
    aligned = training and cfg.align_loss_steps > 0
    source = TextSource(samples, rows, cfg.img_shape, cfg.image_channels, cfg.max_text_length, training,
                        time_steps(cfg) if aligned else 0)
    read_log = read_log_for(cfg, rank) if training else None
    if read_log is not None:
        source = _RecordingSource(source, read_log)
    if training:
        columns = ["image", "label", "label_length"] + (["step_target"] if aligned else [])
    else:
        columns = ["image", "label_bytes", "set_id", "sample"]
    # One thread: it reads 1,000-2,000 crops/s here (bench/crnn_speed.py), 50x what training
    # consumes, and the same source with 2 threads measured 4x slower. No processes, so the
    # skip counters stay in one place.
    data = ds.GeneratorDataset(source, columns, shuffle=training, num_parallel_workers=1,
                               python_multiprocessing=False)
    batch_size = cfg.batch_size if training else cfg.eval_batch_size
    return data.batch(batch_size, drop_remainder=training)


# ------------------------------------------------------------------- evaluation & output

def create_evaluator(cfg: Config) -> TextAccuracy:
    return TextAccuracy([s.name for s in text_sets(cfg, "val")])


def metas_from_batch(batch: dict) -> list[dict]:
    return [{"label": label_from_bytes(batch["label_bytes"][i]), "set": int(batch["set_id"][i]),
             "key": int(batch["sample"][i])} for i in range(len(batch["sample"]))]


def postprocess(cfg: Config, outputs, metas) -> list[dict]:
    """Per-step probabilities (B, T, C) -> [{"text", "confidence"}] by greedy CTC decoding.
    Shared by eval.py, infer.py and postprocess.py."""
    return [{"text": t, "confidence": c} for t, c in alphabet(cfg).greedy_decode(np.asarray(outputs[0]))]


def eval_items(cfg: Config):
    """(file stem, meta) of every evaluation sample, named as
    `convert_text_lmdb.py --export_images` names the image files it writes for the 310 program."""
    samples = _samples(cfg, "val")
    for row, (set_id, index, text) in enumerate(samples.rows):
        yield f"{samples.sets[set_id].name}_{index + 1:09d}", {"label": text, "set": set_id, "key": row}


def preprocess_image(cfg: Config, img_rgb: np.ndarray) -> np.ndarray:
    """One RGB word crop -> the network's (1, C, H, W) input."""
    return preprocess_crop(img_rgb, cfg.img_shape[0], cfg.img_shape[1], cfg.image_channels)[None]


def show_result(cfg: Config, img_rgb: np.ndarray, result: dict, output: str | None) -> None:
    """infer.py: print the recognised text and its confidence."""
    print(f"text: {result['text']!r} confidence: {result['confidence']:.3f}", flush=True)
