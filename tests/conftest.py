"""Shared test fixtures: repo on sys.path, ../shared data lookup, a tiny trained SSD."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import src  # noqa: E402,F401  (sets ONEDNN_MAX_CPU_ISA before MindSpore loads)
import mindspore as ms  # noqa: E402

# The device can only be chosen before the first kernel runs; tests that run ops directly may
# come before the ones that go through init_context, which then finds it set already.
ms.set_device("CPU")

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
SSD_CONFIG = os.path.join(ROOT, "configs", "ssd", "ssd300_shapes.yaml")


def run_concurrently(code: str, copies: int = 3, timeout: float = 120) -> list[str]:
    """Run the same Python snippet in `copies` processes at once (from the repo root); every
    one must succeed. Returns their stripped standard outputs."""
    import subprocess
    import textwrap
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(copies)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def shared_path(*parts: str) -> str:
    """Path under ../shared, or skip the test when the folder is absent."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"../shared is absent ({path} not found): real-sample tests need the shared folder beside the repo")
    return path


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> str:
    """One cache folder for generated datasets and MindRecords, shared by the whole session."""
    return str(tmp_path_factory.mktemp("data_cache"))


@pytest.fixture(scope="session")
def tiny_ssd_args(data_cache) -> list[str]:
    """Overrides that make SSD300 on shapes run in seconds: 16 train / 6 val images, batch 4."""
    return ["--config_path", SSD_CONFIG, "--shapes_dir", os.path.join(data_cache, "shapes_tiny"),
            "--mindrecord_dir", os.path.join(data_cache, "mindrecord"), "--shapes_num_train", "16",
            "--shapes_num_val", "6", "--batch_size", "4", "--eval_batch_size", "3", "--epoch_size", "2",
            "--run_eval", "False", "--warmup_epochs", "0", "--lr", "0.002", "--log_every", "1"]


@pytest.fixture(scope="session")
def tiny_ssd_run(tiny_ssd_args, tmp_path_factory) -> dict:
    """Train the tiny SSD once for the session; returns its args, output dir and checkpoints."""
    import train
    out = str(tmp_path_factory.mktemp("tiny_ssd_run"))
    summary = train.main(tiny_ssd_args + ["--output_dir", out])
    ckpts = sorted(f for f in os.listdir(summary["ckpt_dir"]) if f.endswith(".ckpt"))
    return {"args": tiny_ssd_args, "output_dir": out, "summary": summary,
            "last_ckpt": os.path.join(summary["ckpt_dir"], ckpts[-1]), "ckpts": ckpts}
