"""Data-parallel training with 2 msrun CPU workers: same weights on both ranks, different shards."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import ROOT


@pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (installed with mindspore) is not on PATH")
def test_two_cpu_workers_keep_identical_weights_on_different_shards(tiny_ssd_args, tmp_path):
    # Build the dataset and MindRecord first, so the workers only train.
    import train  # noqa: F401
    from src.data.sources import ensure_split_mindrecord
    from src.model_utils.config import parse_cli
    ensure_split_mindrecord(parse_cli(tiny_ssd_args), "train")

    run_dir = tmp_path / "run"
    env = dict(os.environ, RUN_DIR=str(run_dir), WAIT="1")
    args = tiny_ssd_args[2:] + ["--epoch_size", "1", "--batch_size", "2"]
    proc = subprocess.run(["bash", "scripts/run_distribute_train_cpu.sh", "2", tiny_ssd_args[1], *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    logs = ""
    for root, _, files in os.walk(run_dir):
        for name in files:
            if name.endswith(".log"):
                with open(os.path.join(root, name), errors="replace") as f:
                    logs += f"--- {name}\n" + f.read()[-3000:]
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs

    shards = []
    for rank in (0, 1):
        with open(run_dir / f"shard_{rank}.txt", encoding="utf-8") as f:
            shards.append([int(v) for v in f.read().split()])
    assert len(shards[0]) == len(shards[1]) == 8
    assert not set(shards[0]) & set(shards[1]), shards
    assert set(shards[0]) | set(shards[1]) == set(range(16))

    from src.engine.checkpoint import read_checkpoint
    weights = [read_checkpoint(str(run_dir / f"ckpt_{rank}" / "ssd300_mobilenet_v2-1_4.ckpt")) for rank in (0, 1)]
    names = [k for k in weights[0] if k.startswith("network.") and "moving_" not in k]
    assert len(names) > 200
    for name in names:
        np.testing.assert_allclose(weights[0][name].asnumpy(), weights[1][name].asnumpy(), rtol=0, atol=1e-6,
                                   err_msg=name)
    # ... and training moved them: the step counter advanced on both ranks.
    assert all(int(w["global_step"].asnumpy().reshape(-1)[0]) == 4 for w in weights)
