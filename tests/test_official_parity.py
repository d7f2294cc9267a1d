"""Our SSD300 and CRNN compute what the model zoo's networks compute, and the model zoo's
checkpoints load everywhere a checkpoint is accepted.

The oracle (../shared/reference/parity) holds official checkpoints with seeded weights, an input
per model, the official outputs and the official intermediate maps. The official SSD returns
boxes y1,x1,y2,x2; ours are x1,y1,x2,y2: the same numbers with the columns swapped in pairs.

Tolerances: with MindSpore's operators our networks give the official outputs bit for bit. The
CPU kernels and BatchNorm folding sum in another order (float32 differences of ~1e-7 relative
per layer, checked layer by layer below); these seeded weights amplify such differences about
2x every three layers (4e-7 relative after the first blocks, 8e-5 at SSD's last extra layer),
so SSD's scores then differ by up to 1.5e-5 (measured), hence FLOAT_ORDER_TOLERANCE there.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from conftest import ROOT, shared_path

SSD_CONFIG = os.path.join(ROOT, "configs", "ssd", "ssd300.yaml")
CRNN_CONFIG = os.path.join(ROOT, "configs", "crnn", "crnn.yaml")
EXACT = 1e-5
FLOAT_ORDER_TOLERANCE = 5e-5


def _parity(name: str) -> str:
    return shared_path("reference", "parity", name)


def _official_yx(boxes: np.ndarray) -> np.ndarray:
    """Our x1,y1,x2,y2 boxes in the official y1,x1,y2,x2 order."""
    return boxes[..., [1, 0, 3, 2]]


def _cfg(path: str, *overrides: str):
    from src.model_utils.config import parse_cli
    return parse_cli(["--config_path", path, *overrides])


def _network(cfg, ckpt: str, operators: str):
    """The model's inference network with an official checkpoint: "standard" MindSpore's
    operators, "kernels" the CPU kernels, "eval" as eval.py runs it (kernels, folded BatchNorm,
    one compiled function)."""
    from src.engine.checkpoint import load_weights
    from src.engine.inference import frozen_forward, load_inference_network
    from src.ops.aot import standard_operators
    from src.registry import get_model
    api = get_model(cfg.model)
    if operators == "eval":
        return frozen_forward(load_inference_network(cfg, api, ckpt))
    if operators == "standard":
        with standard_operators():
            net = api.build_inference_network(cfg)
    else:
        net = api.build_inference_network(cfg)
    load_weights(net, ckpt, strict=True, official=api.OFFICIAL_CHECKPOINT)
    net.set_train(False)
    return net


@pytest.fixture(scope="module")
def graph_mode():
    import mindspore as ms
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=mode)


# ------------------------------------------------------------------------------------- SSD300

@pytest.mark.parametrize("operators,tolerance", [("standard", EXACT), ("kernels", FLOAT_ORDER_TOLERANCE),
                                                 ("eval", FLOAT_ORDER_TOLERANCE)])
def test_ssd300_gives_the_official_boxes_and_scores(operators, tolerance, graph_mode):
    import mindspore as ms
    net = _network(_cfg(SSD_CONFIG), _parity("ssd_official.ckpt"), operators)
    boxes, scores = (o.asnumpy() for o in net(ms.Tensor(np.load(_parity("ssd_input.npy")))))
    np.testing.assert_allclose(_official_yx(boxes), np.load(_parity("ssd_official_boxes.npy")), rtol=0,
                               atol=tolerance)
    np.testing.assert_allclose(scores, np.load(_parity("ssd_official_scores.npy")), rtol=0, atol=tolerance)


def test_ssd300_each_layer_on_the_cpu_kernels_gives_the_official_map():
    """Fed the official input of each block, each block's output equals the official one up to
    float32 summation order: the same layers, padding and activations, one by one."""
    import mindspore as ms
    taps = np.load(_parity("ssd_official_taps.npz"))
    net = _network(_cfg(SSD_CONFIG), _parity("ssd_official.ckpt"), "kernels").network
    backbone = net.backbone
    blocks = [(f"backbone.features_1.{i}", "input" if i == 0 else f"backbone.features_1.{i - 1}", layer)
              for i, layer in enumerate(backbone.features_1)]
    blocks.append(("backbone.expand_layer_conv_13", "backbone.features_1.13", backbone.expand_layer_conv_13))
    blocks += [(f"backbone.features_2.{i}", "backbone.features_1.13" if i == 0 else f"backbone.features_2.{i - 1}",
                layer) for i, layer in enumerate(backbone.features_2)]
    blocks += [(f"multi_residual.{i}", "backbone.features_2.4" if i == 0 else f"multi_residual.{i - 1}", layer)
               for i, layer in enumerate(net.multi_residual)]
    features = ["backbone.expand_layer_conv_13", "backbone.features_2.4"] + [f"multi_residual.{i}" for i in range(4)]
    for i, feature in enumerate(features):
        blocks.append((f"multi_box.multi_loc_layers.{i}", feature, net.multi_box.multi_loc_layers[i]))
        blocks.append((f"multi_box.multi_cls_layers.{i}", feature, net.multi_box.multi_cls_layers[i]))
    assert len(blocks) == 14 + 1 + 5 + 4 + 12
    for name, source, block in blocks:
        want = taps[name]
        got = block(ms.Tensor(taps[source])).asnumpy()
        assert got.shape == want.shape, name
        assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max(), name


def test_ssd300_priors_are_the_official_default_boxes():
    from src.ssd import model
    np.testing.assert_allclose(model.priors(_cfg(SSD_CONFIG))[:, [1, 0, 3, 2]],
                               np.load(_parity("ssd_default_boxes.npy")), rtol=0, atol=1e-7)


# --------------------------------------------------------------------------------------- CRNN

@pytest.mark.parametrize("operators", ["standard", "kernels", "eval"])
def test_crnn_gives_the_official_logits(operators, graph_mode):
    """Our inference graph returns softmax(logits) batch-first; the official logits are time-major."""
    import mindspore as ms
    net = _network(_cfg(CRNN_CONFIG), _parity("crnn_official.ckpt"), operators)
    (probs,) = net(ms.Tensor(np.load(_parity("crnn_input.npy"))))
    logits = np.load(_parity("crnn_official_logits.npy")).transpose(1, 0, 2)
    want = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs.asnumpy(), want, rtol=0, atol=EXACT)


def test_crnn_network_returns_the_official_logits_bit_for_bit(graph_mode):
    import mindspore as ms
    from src.crnn import model
    from src.engine.checkpoint import load_weights
    from src.ops.aot import standard_operators
    cfg = _cfg(CRNN_CONFIG)
    with standard_operators():
        net = model.build_train_network(cfg)
    load_weights(net, _parity("crnn_official.ckpt"), strict=True, official=model.OFFICIAL_CHECKPOINT)
    net.set_train(False)
    logits = net.network(ms.Tensor(np.load(_parity("crnn_input.npy")))).asnumpy()
    np.testing.assert_array_equal(logits, np.load(_parity("crnn_official_logits.npy")))


# ------------------------------------------------------------------ the rename table at work

def test_official_crnn_checkpoint_is_recognised_and_reported(capsys):
    from src.crnn import model
    from src.engine.checkpoint import load_weights
    net = model.build_inference_network(_cfg(CRNN_CONFIG))
    report = load_weights(net, _parity("crnn_official.ckpt"), strict=True, official=model.OFFICIAL_CHECKPOINT)
    out = capsys.readouterr().out
    assert report["loaded"] == 55 and not report["missing"] and not report["unexpected"]
    assert "recognised a model zoo CRNN checkpoint; 55 parameters mapped" in out
    assert "ignored 4 (vgg.bn1: a BatchNorm the official network defines but never calls)" in out


def _official_training_checkpoint(tmp_path, prefix_weights: str = "") -> str:
    """The CRNN oracle saved as official training does: weights, the optimizer's moments and
    the training bookkeeping."""
    import mindspore as ms
    from src.engine.checkpoint import read_checkpoint
    weights = read_checkpoint(_parity("crnn_official.ckpt"))
    entries = [{"name": prefix_weights + k, "data": v} for k, v in weights.items()]
    entries += [{"name": f"moments.{k}", "data": ms.Tensor(np.zeros(v.shape, np.float32))} for k, v in weights.items()
                if not k.startswith("vgg.bn1.") and "moving" not in k]
    entries += [{"name": "learning_rate", "data": ms.Tensor(np.full(10, 0.02, np.float32))},
                {"name": "global_step", "data": ms.Tensor(np.array([120], np.int32))}]
    path = str(tmp_path / "crnn-10_1000.ckpt")
    ms.save_checkpoint(entries, path)
    return path


def test_official_training_checkpoint_loads_with_optimizer_state_ignored(tmp_path, capsys):
    from src.crnn import model
    from src.engine.checkpoint import load_weights, read_checkpoint
    path = _official_training_checkpoint(tmp_path)
    net = model.build_inference_network(_cfg(CRNN_CONFIG))
    report = load_weights(net, path, strict=True, official=model.OFFICIAL_CHECKPOINT)
    assert report["loaded"] == 55 and not report["unexpected"]
    assert "ignored 41 optimizer state entries" in capsys.readouterr().out  # moments of the 41 trainable
    official = read_checkpoint(_parity("crnn_official.ckpt"))
    ours = {p.name: p.asnumpy() for p in net.get_parameters()}
    np.testing.assert_array_equal(ours["network.rnn.1.rnn.weight_hh_l0_reverse"],
                                  official["rnn.1.rnn.weight_hh_l0_reverse"].asnumpy())


def test_crnn_v1_checkpoint_is_refused_with_a_reason(tmp_path):
    import mindspore as ms
    from src.crnn import model
    from src.engine.checkpoint import CheckpointError, load_weights
    entries = [{"name": n, "data": ms.Tensor(np.zeros((4, 4), np.float32))} for n in ("w1", "w1_bw", "w2", "b1")]
    entries.append({"name": "vgg.conv1.conv.weight", "data": ms.Tensor(np.zeros((64, 3, 3, 3), np.float32))})
    path = str(tmp_path / "v1.ckpt")
    ms.save_checkpoint(entries, path)
    with pytest.raises(CheckpointError, match="model_version V1"):
        load_weights(model.build_inference_network(_cfg(CRNN_CONFIG)), path, official=model.OFFICIAL_CHECKPOINT)


def test_convert_checkpoint_writes_our_names(tmp_path, capsys):
    import convert_checkpoint
    from src.crnn import model
    from src.engine.checkpoint import load_weights, read_checkpoint
    out = str(tmp_path / "converted" / "crnn_ours.ckpt")
    convert_checkpoint.main(["--config_path", CRNN_CONFIG, "--input", _official_training_checkpoint(tmp_path),
                             "--output", out])
    printed = capsys.readouterr().out
    assert "recognised a model zoo CRNN checkpoint" in printed and f"wrote 55 parameters of crnn to {out}" in printed
    assert os.listdir(os.path.dirname(out)) == ["crnn_ours.ckpt"]  # no temporary file left
    converted = read_checkpoint(out)
    assert len(converted) == 55 and all(k.startswith("network.") for k in converted)
    # Loads as one of ours: no rename table needed, every parameter found.
    net = model.build_inference_network(_cfg(CRNN_CONFIG))
    assert load_weights(net, out, strict=True)["loaded"] == 55
    official = read_checkpoint(_parity("crnn_official.ckpt"))
    np.testing.assert_array_equal(converted["network.vgg.conv7.conv.weight"].asnumpy(),
                                  official["vgg.conv7.conv.weight"].asnumpy())


# ----------------------------------------- a checkpoint and a config are enough (no dataset)

def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_export_official_ssd_with_no_dataset_gives_the_official_outputs(tmp_path, monkeypatch):
    """On a fresh clone (no COCO anywhere): export.py with the COCO config and an official
    checkpoint; the MINDIR returns the official outputs, the ONNX graph agrees within 1e-4."""
    import mindspore as ms
    import onnxruntime as ort
    import export
    monkeypatch.chdir(tmp_path)
    assert not os.path.exists(_cfg(SSD_CONFIG).coco_root)
    common = ["--config_path", SSD_CONFIG, "--ckpt_file", _parity("ssd_official.ckpt")]
    mindir = export.main(common + ["--file_format", "MINDIR", "--file_name", "ssd_zoo"])
    onnx_path = export.main(common + ["--file_format", "ONNX", "--file_name", "ssd_zoo"])
    assert mindir == "ssd_zoo.mindir" and os.path.isfile(mindir)
    x = np.load(_parity("ssd_input.npy"))
    boxes, scores = (o.asnumpy() for o in ms.nn.GraphCell(ms.load(mindir))(ms.Tensor(x)))
    np.testing.assert_allclose(_official_yx(boxes), np.load(_parity("ssd_official_boxes.npy")), rtol=0, atol=EXACT)
    np.testing.assert_allclose(scores, np.load(_parity("ssd_official_scores.npy")), rtol=0, atol=EXACT)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    onnx_boxes, onnx_scores = session.run(None, {session.get_inputs()[0].name: x})
    assert np.abs(onnx_boxes - boxes).max() < 1e-4 and np.abs(onnx_scores - scores).max() < 1e-4


def test_export_official_crnn_with_no_dataset_gives_the_official_outputs(tmp_path, monkeypatch):
    import mindspore as ms
    import export
    monkeypatch.chdir(tmp_path)
    path = export.main(["--config_path", CRNN_CONFIG, "--ckpt_file", _parity("crnn_official.ckpt"),
                        "--file_format", "MINDIR", "--file_name", "crnn_zoo"])
    (probs,) = ms.nn.GraphCell(ms.load(path))(ms.Tensor(np.load(_parity("crnn_input.npy"))))
    want = _softmax(np.load(_parity("crnn_official_logits.npy")).transpose(1, 0, 2))
    np.testing.assert_allclose(probs.asnumpy(), want, rtol=0, atol=EXACT)


def test_infer_with_official_ssd_and_no_dataset_names_coco_classes(tmp_path, monkeypatch, capsys):
    import infer
    monkeypatch.chdir(tmp_path)
    image = shared_path("data", "coco_labelme", "JPEGImages", "2011_000003.jpg")
    out = str(tmp_path / "drawn.png")
    det = infer.main(["--config_path", SSD_CONFIG, "--ckpt_file", _parity("ssd_official.ckpt"), "--image", image,
                      "--output", out, "--min_score", "0.0", "--max_boxes", "5"])
    printed = capsys.readouterr().out
    assert len(det["scores"]) == 5 and det["labels"].min() >= 1 and det["labels"].max() <= 80
    from src.data.detection.sources import class_names
    names = class_names(_cfg(SSD_CONFIG))
    assert len(names) == 80 and names[0] == "person" and names[-1] == "toothbrush"
    assert any(names[int(label) - 1] in printed for label in det["labels"])
    assert cv2.imread(out).shape == cv2.imread(image).shape


def _coco_named_copy(tmp_path) -> tuple[str, str]:
    """The three real photos of ../shared/data/coco_labelme as a COCO json with the 80 COCO
    categories, their VOC-style labels renamed to the COCO ones."""
    from src.data.detection.sources import class_names
    voc_to_coco = {"aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle",
                   "sofa": "couch", "tv/monitor": "tv"}
    root = shared_path("data", "coco_labelme")
    with open(os.path.join(root, "annotations.json"), encoding="utf-8") as f:
        data = json.load(f)
    coco_ids = {name: i + 1 for i, name in enumerate(class_names(_cfg(SSD_CONFIG)))}
    voc_names = {c["id"]: voc_to_coco.get(c["name"], c["name"]) for c in data["categories"]}
    data["annotations"] = [dict(a, category_id=coco_ids[voc_names[a["category_id"]]]) for a in data["annotations"]]
    data["categories"] = [{"id": i, "name": name} for name, i in coco_ids.items()]
    path = tmp_path / "coco_named.json"
    path.write_text(json.dumps(data))
    return str(path), root


def test_eval_accepts_the_official_ssd_checkpoint(tmp_path, capsys):
    import eval as eval_entry
    json_path, image_dir = _coco_named_copy(tmp_path)
    metrics = eval_entry.main(["--config_path", SSD_CONFIG, "--checkpoint_path", _parity("ssd_official.ckpt"),
                               "--dataset", "coco_json", "--val_json", json_path, "--val_image_dir", image_dir,
                               "--mindrecord_dir", str(tmp_path / "mr"), "--output_dir", str(tmp_path / "out"),
                               "--eval_batch_size", "3", "--min_score", "0.0"])
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert "Average Precision  (AP) @[ IoU=0.50:0.95" in capsys.readouterr().out
    with open(tmp_path / "out" / "eval" / "detections.json", encoding="utf-8") as f:
        detections = json.load(f)
    assert detections and {d["category_id"] for d in detections} <= set(range(1, 81))


def test_pretrained_official_ssd_with_filter_weight_keeps_the_backbone(tmp_path, tiny_ssd_args, capsys):
    """Fine-tuning from the official 81-class checkpoint on the 6 shape classes: the class
    head is filtered by shape, everything else loads, and the frozen backbone trains unchanged."""
    import train
    from src.engine.checkpoint import read_checkpoint
    summary = train.main(tiny_ssd_args + ["--output_dir", str(tmp_path), "--epoch_size", "1",
                                          "--pre_trained", _parity("ssd_official.ckpt"), "--filter_weight", "True",
                                          "--freeze_layer", "backbone"])
    filtered = next(line for line in capsys.readouterr().out.splitlines() if "dropped by filter_weight" in line)
    # The class convs' weight and bias of the six maps; nothing else differs in shape.
    assert filtered.startswith("12 parameters dropped by filter_weight (shape differs)")
    assert "multi_cls_layers" in filtered and "multi_loc_layers" not in filtered
    official = read_checkpoint(_parity("ssd_official.ckpt"))
    saved = read_checkpoint(os.path.join(summary["ckpt_dir"], sorted(os.listdir(summary["ckpt_dir"]))[-1]))
    for name in ("network.backbone.features_1.0.features.0.weight", "network.backbone.features_2.4.features.0.weight"):
        np.testing.assert_array_equal(saved[name].asnumpy(), official[name].asnumpy())
    # The box-offset head has the same shape for any class count: it starts from the official one.
    name = "network.multi_box.multi_loc_layers.0.3.weight"
    assert not np.array_equal(saved[name].asnumpy(), official[name].asnumpy())  # trained, not frozen
