"""CRNN end to end on a tiny rendered word-crop set: train.py, eval.py, export.py (MINDIR and
ONNX), infer.py and postprocess.py through the same decoding."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from conftest import ROOT

CRNN_WORDS = os.path.join(ROOT, "configs", "crnn", "crnn_words.yaml")


@pytest.fixture(scope="module")
def tiny_crnn_run(data_cache, tmp_path_factory) -> dict:
    """Train CRNN for 2 short epochs on 64 rendered crops (16 for validation)."""
    import train
    args = ["--config_path", CRNN_WORDS, "--words_dir", os.path.join(data_cache, "words_tiny"),
            "--words_num_train", "64", "--words_num_val", "16", "--batch_size", "16", "--eval_batch_size", "8",
            "--epoch_size", "2", "--eval_start_epoch", "2", "--optimizer", "adam", "--lr", "0.001",
            "--log_every", "1"]
    out = str(tmp_path_factory.mktemp("tiny_crnn_run"))
    summary = train.main(args + ["--output_dir", out])
    return {"args": args, "out": out, "summary": summary,
            "ckpt": os.path.join(summary["ckpt_dir"], "crnn-2_4.ckpt")}


def test_train_logs_checkpoints_and_evaluates(tiny_crnn_run):
    summary = tiny_crnn_run["summary"]
    assert summary["steps_per_epoch"] == 4
    assert os.path.isfile(tiny_crnn_run["ckpt"])
    with open(summary["loss_log"], encoding="utf-8") as f:
        losses = [float(line.split("loss: ")[1].split()[0]) for line in f if "loss: " in line]
    assert len(losses) == 8 and all(np.isfinite(losses))
    epoch, metrics = summary["eval_history"][-1]
    assert epoch == 2 and metrics["count"] == 16 and 0.0 <= metrics["accuracy"] <= 1.0
    # crnn_words.yaml adds the per-step cross-entropy; its fade counter is checkpointed for resume.
    from src.engine.checkpoint import read_checkpoint
    assert float(read_checkpoint(tiny_crnn_run["ckpt"])["align_step"].asnumpy()) == 8.0


def test_eval_writes_predictions_for_every_crop(tiny_crnn_run, tmp_path, capsys):
    import eval as eval_entry
    metrics = eval_entry.main(tiny_crnn_run["args"] + ["--checkpoint_path", tiny_crnn_run["ckpt"],
                                                       "--output_dir", str(tmp_path)])
    assert "1-N.E.D." in capsys.readouterr().out
    with open(tmp_path / "eval" / "predictions.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 16 == metrics["count"]
    assert all(set(r) >= {"label", "text", "confidence", "set"} and r["set"] == "val" for r in rows)
    assert metrics["accuracy"] == pytest.approx(np.mean([r["text"] == r["label"] for r in rows]))
    with open(tmp_path / "eval" / "metrics.json", encoding="utf-8") as f:
        assert json.load(f)["accuracy"] == metrics["accuracy"]


def _val_crops(args):
    """(stem, RGB crop, label) of every validation sample, in eval_items order."""
    from src.crnn import model
    from src.model_utils.config import parse_cli
    cfg = parse_cli(args)
    samples = model._samples(cfg, "val")
    crops = []
    for (stem, meta), (set_id, index, _) in zip(model.eval_items(cfg), samples.rows):
        data = samples.dbs[set_id].image(index)
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        crops.append((stem, img, meta["label"]))
    return cfg, crops


def test_export_mindir_onnx_and_postprocess_agree_with_eval(tiny_crnn_run, tmp_path):
    import mindspore as ms
    import onnxruntime as ort

    import eval as eval_entry
    import export
    import postprocess
    from src.crnn import model
    args, ckpt = tiny_crnn_run["args"], tiny_crnn_run["ckpt"]
    mindir = export.main(args + ["--ckpt_file", ckpt, "--file_format", "MINDIR", "--file_name", str(tmp_path / "crnn")])
    onnx_path = export.main(args + ["--ckpt_file", ckpt, "--file_format", "ONNX", "--file_name", str(tmp_path / "crnn")])
    graph = ms.nn.GraphCell(ms.load(mindir))
    session = ort.InferenceSession(onnx_path)
    cfg, crops = _val_crops(args)
    results = tmp_path / "result_Files"
    results.mkdir()
    for stem, img, _ in crops:
        x = model.preprocess_image(cfg, img)
        probs = graph(ms.Tensor(x))
        probs = (probs[0] if isinstance(probs, (tuple, list)) else probs).asnumpy()
        assert probs.shape == model.output_shapes(cfg, 1)[0]
        onnx_probs = session.run(None, {session.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(onnx_probs, probs, atol=1e-4)
        probs.astype(np.float32).tofile(results / f"{stem}_0.bin")
    from_bins = postprocess.main(args + ["--result_dir", str(results)])
    from_eval = eval_entry.main(args + ["--checkpoint_path", ckpt, "--output_dir", str(tmp_path / "ev")])
    assert from_bins["count"] == from_eval["count"] == 16
    assert from_bins["accuracy"] == pytest.approx(from_eval["accuracy"])
    assert from_bins["norm_edit_distance"] == pytest.approx(from_eval["norm_edit_distance"], abs=1e-6)


def test_infer_prints_text_and_confidence(tiny_crnn_run, tmp_path, capsys):
    import infer
    _, crops = _val_crops(tiny_crnn_run["args"])
    path = str(tmp_path / "crop.png")
    cv2.imwrite(path, cv2.cvtColor(crops[0][1], cv2.COLOR_RGB2BGR))
    result = infer.main(tiny_crnn_run["args"] + ["--ckpt_file", tiny_crnn_run["ckpt"], "--image", path])
    out = capsys.readouterr().out
    assert f"text: {result['text']!r}" in out and "confidence:" in out
    assert 0.0 < result["confidence"] <= 1.0
