"""Data-parallel training with 2 msrun CPU workers (SSD and CRNN): same weights on both ranks,
different shards."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import ROOT


def _run_two_cpu_workers(config: str, args: list[str], tmp_path) -> str:
    """Run scripts/run_distribute_train_cpu.sh with 2 workers; returns its run folder."""
    run_dir = tmp_path / "run"
    env = dict(os.environ, RUN_DIR=str(run_dir), WAIT="1")
    proc = subprocess.run(["bash", "scripts/run_distribute_train_cpu.sh", "2", config, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    logs = ""
    for root, _, files in os.walk(run_dir):
        for name in files:
            if name.endswith(".log"):
                with open(os.path.join(root, name), errors="replace") as f:
                    logs += f"--- {name}\n" + f.read()[-3000:]
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    return run_dir


def _assert_same_trained_weights(paths: list, steps: int) -> None:
    from src.engine.checkpoint import read_checkpoint
    weights = [read_checkpoint(str(p)) for p in paths]
    names = [k for k in weights[0] if k.startswith("network.") and "moving_" not in k]
    assert len(names) > 40
    for name in names:
        np.testing.assert_allclose(weights[0][name].asnumpy(), weights[1][name].asnumpy(), rtol=0, atol=1e-6,
                                   err_msg=name)
    # ... and training moved them: the step counter advanced on both ranks.
    assert all(int(w["global_step"].asnumpy().reshape(-1)[0]) == steps for w in weights)


def _shards(run_dir) -> list[list[int]]:
    """The sample ids each rank's training pipeline read (log_read_ids)."""
    shards = []
    for rank in (0, 1):
        with open(run_dir / f"read_ids_{rank}.txt", encoding="utf-8") as f:
            shards.append([int(v) for v in f.read().split()])
    return shards


needs_msrun = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (installed with mindspore) is not on PATH")


@needs_msrun
def test_two_cpu_workers_keep_identical_weights_on_different_shards(tiny_ssd_args, tmp_path):
    # Build the dataset and MindRecord first, so the workers only train.
    import train  # noqa: F401
    from src.data.detection.sources import ensure_split_mindrecord
    from src.model_utils.config import parse_cli
    ensure_split_mindrecord(parse_cli(tiny_ssd_args), "train")
    run_dir = _run_two_cpu_workers(tiny_ssd_args[1], tiny_ssd_args[2:] + ["--epoch_size", "1", "--batch_size", "2",
                                                                          "--log_read_ids", "True"], tmp_path)
    # (MindRecord shuffles before sharding, so a rank's images change from epoch to epoch: one epoch.)
    shards = _shards(run_dir)
    assert len(shards[0]) == len(shards[1]) == 8
    assert len(set(shards[0])) == len(set(shards[1])) == 8
    assert not set(shards[0]) & set(shards[1]), shards
    assert set(shards[0]) | set(shards[1]) == set(range(16))
    _assert_same_trained_weights([run_dir / f"ckpt_{rank}" / "ssd300_mobilenet_v2-1_4.ckpt" for rank in (0, 1)], 4)


@needs_msrun
def test_crnn_trains_data_parallel_on_two_cpu_workers(data_cache, tmp_path):
    from src.data.synthetic.words import ensure_word_crops
    words = os.path.join(data_cache, "words_tiny")
    ensure_word_crops(words, 64, 16)  # the workers only train
    config = os.path.join(ROOT, "configs", "crnn", "crnn_words.yaml")
    run_dir = _run_two_cpu_workers(config, ["--words_dir", words, "--words_num_train", "64", "--words_num_val", "16",
                                            "--batch_size", "8", "--epoch_size", "1", "--run_eval", "False",
                                            "--optimizer", "adam", "--lr", "0.001", "--log_read_ids", "True"],
                                   tmp_path)
    shards = _shards(run_dir)
    assert len(shards[0]) == len(shards[1]) == 32
    assert not set(shards[0]) & set(shards[1]) and set(shards[0]) | set(shards[1]) == set(range(64))
    _assert_same_trained_weights([run_dir / f"ckpt_{rank}" / "crnn-1_4.ckpt" for rank in (0, 1)], 4)
