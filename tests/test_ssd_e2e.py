"""End to end on the tiny shapes set: train, resume, eval, export (MINDIR/ONNX/AIR), infer,
postprocess of 310-layout outputs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest


def test_train_writes_checkpoints_and_loss_log(tiny_ssd_run):
    summary = tiny_ssd_run["summary"]
    assert summary["steps_per_epoch"] == 4
    assert tiny_ssd_run["ckpts"] == ["ssd300_mobilenet_v2-1_4.ckpt", "ssd300_mobilenet_v2-2_4.ckpt"]
    with open(os.path.join(tiny_ssd_run["output_dir"], "loss_0.log"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == 8, lines
    losses = [float(line.split("loss: ")[1].split()[0]) for line in lines]
    assert all(np.isfinite(losses))


def test_checkpoint_holds_epoch_step_and_optimizer_state(tiny_ssd_run):
    from src.engine.checkpoint import read_checkpoint
    params = read_checkpoint(tiny_ssd_run["last_ckpt"])
    assert int(params["epoch_num"].asnumpy()) == 2
    assert int(params["step_num"].asnumpy()) == 8
    assert any(k.startswith(("moment1.", "moments.")) for k in params)  # Adam's / momentum's state
    assert int(params["global_step"].asnumpy().reshape(-1)[0]) == 8


def test_resume_continues_from_saved_epoch(tiny_ssd_run, tmp_path):
    import train
    out = str(tmp_path / "resumed")
    summary = train.main(tiny_ssd_run["args"] + ["--output_dir", out, "--resume", tiny_ssd_run["last_ckpt"],
                                                 "--epoch_size", "3"])
    ckpts = sorted(os.listdir(summary["ckpt_dir"]))
    assert ckpts == ["ssd300_mobilenet_v2-3_4.ckpt"], ckpts  # only epoch 3 was trained
    from src.engine.checkpoint import read_checkpoint
    params = read_checkpoint(os.path.join(summary["ckpt_dir"], ckpts[0]))
    # The optimizer's step counter went on from 8, so the lr schedule continued too.
    assert int(params["global_step"].asnumpy().reshape(-1)[0]) == 12
    with open(os.path.join(out, "loss_0.log"), encoding="utf-8") as f:
        first = f.readline()
    assert first.startswith("epoch: 3 "), first


def test_eval_prints_coco_table_and_writes_detections(tiny_ssd_run, tmp_path, capsys):
    import eval as eval_entry
    out = str(tmp_path / "eval")
    metrics = eval_entry.main(tiny_ssd_run["args"] + ["--checkpoint_path", tiny_ssd_run["last_ckpt"],
                                                      "--output_dir", out, "--min_score", "0.01"])
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in printed
    assert set(metrics) >= {"mAP", "mAP50", "mAP75"} and 0.0 <= metrics["mAP"] <= 1.0
    with open(os.path.join(out, "eval", "detections.json"), encoding="utf-8") as f:
        dets = json.load(f)
    assert dets, "an untrained-ish network with min_score 0.01 still yields detections"
    with open(os.path.join(os.path.dirname(tiny_ssd_run["args"][3]), "shapes_tiny", "annotations",
                           "instances_val.json"), encoding="utf-8") as f:
        sizes = {img["id"]: (img["width"], img["height"]) for img in json.load(f)["images"]}
    assert {d["image_id"] for d in dets} <= set(sizes)
    for d in dets:  # original-image coordinates, not the 300x300 network input
        w, h = sizes[d["image_id"]]
        x, y, bw, bh = d["bbox"]
        assert -0.01 <= x and x + bw <= w + 0.01 and -0.01 <= y and y + bh <= h + 0.01
    assert max(d["bbox"][0] + d["bbox"][2] for d in dets) > 1.5  # pixels, not normalised


@pytest.fixture(scope="module")
def exported(tiny_ssd_run, tmp_path_factory):
    import export
    out = tmp_path_factory.mktemp("export")
    paths = {}
    for fmt in ("MINDIR", "ONNX"):
        paths[fmt] = export.main(tiny_ssd_run["args"] + ["--ckpt_file", tiny_ssd_run["last_ckpt"],
                                                         "--file_format", fmt, "--file_name", str(out / "ssd")])
    return paths


def _reference_outputs(tiny_ssd_run, x):
    import mindspore as ms
    from src.engine.inference import load_inference_network
    from src.model_utils.config import parse_cli
    from src.registry import get_model
    cfg = parse_cli(tiny_ssd_run["args"])
    net = load_inference_network(cfg, get_model(cfg.model), tiny_ssd_run["last_ckpt"])
    return [o.asnumpy() for o in net(ms.Tensor(x))]


def test_mindir_loads_back_with_the_same_outputs(tiny_ssd_run, exported):
    import mindspore as ms
    assert os.path.isfile(exported["MINDIR"])
    x = np.random.default_rng(0).standard_normal((1, 3, 300, 300)).astype(np.float32)
    graph = ms.load(exported["MINDIR"])
    outs = [o.asnumpy() for o in ms.nn.GraphCell(graph)(ms.Tensor(x))]
    ref = _reference_outputs(tiny_ssd_run, x)
    assert [o.shape for o in outs] == [(1, 1917, 4), (1, 1917, 7)]
    for a, b in zip(outs, ref):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_onnx_matches_mindspore_within_1e4(tiny_ssd_run, exported):
    import onnxruntime as ort
    x = np.random.default_rng(1).standard_normal((1, 3, 300, 300)).astype(np.float32)
    sess = ort.InferenceSession(exported["ONNX"], providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    ref = _reference_outputs(tiny_ssd_run, x)
    for a, b in zip(outs, ref):
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 1e-4


def test_air_export_off_ascend_fails_clearly(tiny_ssd_run, tmp_path):
    import export
    from src.errors import ConfigError
    with pytest.raises(ConfigError, match="AIR export needs an Ascend device"):
        export.main(tiny_ssd_run["args"] + ["--ckpt_file", tiny_ssd_run["last_ckpt"], "--file_format", "AIR",
                                            "--file_name", str(tmp_path / "x")])


def test_infer_draws_detections(tiny_ssd_run, tmp_path, capsys):
    import cv2
    import infer
    image = os.path.join(os.path.dirname(tiny_ssd_run["args"][3]), "shapes_tiny", "val", "000000.jpg")
    out = str(tmp_path / "out.png")
    det = infer.main(tiny_ssd_run["args"] + ["--ckpt_file", tiny_ssd_run["last_ckpt"], "--image", image,
                                             "--output", out, "--min_score", "0.0"])
    drawn, original = cv2.imread(out), cv2.imread(image)
    assert drawn.shape == original.shape
    assert len(det["scores"]) > 0
    assert "detections; picture written to" in capsys.readouterr().out
    from src.engine.inference import draw_detections
    top = {"boxes": det["boxes"][:1], "scores": np.array([1.0]), "labels": det["labels"][:1]}
    pic = draw_detections(cv2.cvtColor(original, cv2.COLOR_BGR2RGB), top, ["a"] * 6)
    assert np.abs(pic.astype(int) - original.astype(int)).sum() > 0  # something was drawn


def test_postprocess_of_310_layout_outputs_matches_eval(tiny_ssd_run, exported, tmp_path):
    """Run the exported MINDIR per val image, write outputs as the 310 program does
    (<stem>_<i>.bin, raw float32), and check postprocess.py scores them as eval.py does."""
    import mindspore as ms
    import eval as eval_entry
    import postprocess
    from src.engine.inference import read_image
    from src.model_utils.config import parse_cli
    from src.registry import get_model
    cfg = parse_cli(tiny_ssd_run["args"])
    api = get_model(cfg.model)
    graph = ms.nn.GraphCell(ms.load(exported["MINDIR"]))
    image_dir = os.path.join(os.path.dirname(tiny_ssd_run["args"][3]), "shapes_tiny", "val")
    result_dir = tmp_path / "result_Files"
    result_dir.mkdir()
    for name in sorted(os.listdir(image_dir)):
        x = api.preprocess_image(cfg, read_image(os.path.join(image_dir, name)))
        for i, out in enumerate(graph(ms.Tensor(x))):
            out.asnumpy().astype(np.float32).tofile(result_dir / f"{os.path.splitext(name)[0]}_{i}.bin")
    common = tiny_ssd_run["args"] + ["--min_score", "0.01"]
    from_bins = postprocess.main(common + ["--result_dir", str(result_dir)])
    from_eval = eval_entry.main(common + ["--checkpoint_path", tiny_ssd_run["last_ckpt"],
                                          "--output_dir", str(tmp_path / "e")])
    for key in ("mAP", "mAP50", "AR100"):
        assert from_bins[key] == pytest.approx(from_eval[key], abs=1e-3)


def test_freeze_backbone_with_pretrained_and_eval_while_training_keeps_best(tiny_ssd_run, tmp_path):
    import train
    from src.engine.checkpoint import read_checkpoint
    out = tmp_path / "frozen"
    summary = train.main(tiny_ssd_run["args"] + [
        "--pre_trained", tiny_ssd_run["last_ckpt"], "--freeze_layer", "backbone", "--epoch_size", "2",
        "--run_eval", "True", "--eval_start_epoch", "1", "--eval_interval", "1", "--save_best_ckpt", "True",
        "--output_dir", str(out)])
    assert [e for e, _ in summary["eval_history"]] == [1, 2]
    best = os.path.join(summary["ckpt_dir"], "ssd300_mobilenet_v2_best.ckpt")
    assert os.path.isfile(best)
    assert int(read_checkpoint(best)["epoch_num"].asnumpy()) == summary["best"]["epoch"]
    before = read_checkpoint(tiny_ssd_run["last_ckpt"])
    after = read_checkpoint(os.path.join(summary["ckpt_dir"], "ssd300_mobilenet_v2-2_4.ckpt"))
    conv = "network.backbone.features_1.3.conv.1.features.0.weight"
    np.testing.assert_array_equal(before[conv].asnumpy(), after[conv].asnumpy())  # frozen
    head = "network.multi_box.multi_cls_layers.0.3.weight"
    assert np.abs(before[head].asnumpy() - after[head].asnumpy()).max() > 0  # trained


@pytest.mark.parametrize("preset", [None, "AVX512_CORE"])
def test_entry_points_set_onednn_isa_unless_user_did(preset):
    import subprocess
    import sys
    from conftest import ROOT
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if preset:
        env["ONEDNN_MAX_CPU_ISA"] = preset
    for entry in ("train", "eval", "export", "infer", "postprocess"):
        out = subprocess.run([sys.executable, "-c", f"import {entry}, os; print(os.environ['ONEDNN_MAX_CPU_ISA'])"],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.split()[-1]
        assert out == (preset or "AVX2"), entry
