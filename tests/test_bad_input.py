"""Bad input gets a clear error naming the file or key, or is skipped and counted."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from src.engine.checkpoint import CheckpointError
from src.model_utils.config import ConfigError


def _shapes_root(tiny_ssd_args) -> str:
    return tiny_ssd_args[tiny_ssd_args.index("--shapes_dir") + 1]


@pytest.fixture(scope="module")
def messy_coco(tiny_ssd_run, tmp_path_factory) -> dict:
    """A COCO json dataset built from the tiny shapes: one corrupt JPEG, one image without
    annotations, one box partly outside its image and one degenerate box."""
    src_root = _shapes_root(tiny_ssd_run["args"])
    root = tmp_path_factory.mktemp("messy")
    shutil.copytree(os.path.join(src_root, "train"), root / "images")
    with open(os.path.join(src_root, "annotations", "instances_train.json"), encoding="utf-8") as f:
        data = json.load(f)
    corrupt = data["images"][3]["file_name"]
    (root / "images" / corrupt).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    empty = data["images"][5]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != empty["id"]]
    img0 = data["images"][0]
    next_id = max(a["id"] for a in data["annotations"]) + 1
    data["annotations"] += [
        {"id": next_id, "image_id": img0["id"], "category_id": 1, "iscrowd": 0, "area": 100.0,
         "bbox": [img0["width"] - 20.0, 10.0, 60.0, 30.0]},                      # sticks out right
        {"id": next_id + 1, "image_id": img0["id"], "category_id": 2, "iscrowd": 0, "area": 0.0,
         "bbox": [30.0, 30.0, 0.0, 12.0]},                                      # zero width
    ]
    with open(root / "train.json", "w", encoding="utf-8") as f:
        json.dump(data, f)
    return {"root": root, "corrupt": corrupt, "empty_file": empty["file_name"]}


def test_corrupt_image_empty_image_and_bad_boxes_are_counted_and_training_goes_on(
        tiny_ssd_run, messy_coco, tmp_path, capsys, caplog):
    import train
    shapes = _shapes_root(tiny_ssd_run["args"])
    args = tiny_ssd_run["args"] + [
        "--dataset", "coco_json", "--train_json", str(messy_coco["root"] / "train.json"),
        "--train_image_dir", str(messy_coco["root"] / "images"),
        "--val_json", os.path.join(shapes, "annotations", "instances_val.json"),
        "--val_image_dir", os.path.join(shapes, "val"), "--mindrecord_dir", str(tmp_path / "mr"),
        "--epoch_size", "1", "--batch_size", "3", "--output_dir", str(tmp_path / "out")]
    summary = train.main(args)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "written=15" in text and "skipped_images=1" in text, text[-3000:]
    assert "boxes_clipped=1" in text and "boxes_dropped=1" in text
    assert "images_without_annotations=1" in text
    assert any(messy_coco["corrupt"] in r.getMessage() for r in caplog.records)  # the skipped file is named
    assert summary["steps_per_epoch"] == 5  # 15 images, batch 3: training went on without the corrupt one


def test_missing_dataset_path_names_key_and_path(tiny_ssd_args, tmp_path):
    import train
    missing = str(tmp_path / "nowhere" / "train.json")
    with pytest.raises(FileNotFoundError) as err:
        train.main(tiny_ssd_args + ["--dataset", "coco_json", "--train_json", missing,
                                    "--mindrecord_dir", str(tmp_path / "mr"), "--output_dir", str(tmp_path / "o")])
    assert "train_json" in str(err.value) and missing in str(err.value)


def test_missing_coco_root_names_key(tiny_ssd_args, tmp_path):
    import train
    with pytest.raises(FileNotFoundError, match="coco_root"):
        train.main(tiny_ssd_args + ["--dataset", "coco", "--coco_root", str(tmp_path / "coco"),
                                    "--output_dir", str(tmp_path / "o")])


def test_unknown_config_key_is_an_error_naming_it(tiny_ssd_args):
    import train
    with pytest.raises(ConfigError, match="epochs_size"):
        train.main(tiny_ssd_args + ["--epochs_size", "3"])


def test_checkpoint_of_another_model_lists_mismatched_parameters(tiny_ssd_args, tmp_path):
    import mindspore as ms
    import eval as eval_entry
    other = tmp_path / "other.ckpt"
    ms.save_checkpoint(ms.nn.Dense(4, 3), str(other))
    with pytest.raises(CheckpointError) as err:
        eval_entry.main(tiny_ssd_args + ["--checkpoint_path", str(other), "--output_dir", str(tmp_path)])
    message = str(err.value)
    assert "not a checkpoint of this network: 409 of 409 parameters are missing" in message
    assert "network.backbone." in message and "the file holds others (bias, weight)" in message
    assert "\n" not in message


def test_checkpoint_with_other_class_count_lists_shapes(tiny_ssd_run, tmp_path):
    import eval as eval_entry
    with pytest.raises(CheckpointError) as err:  # 3 classes instead of the 6 shapes
        eval_entry.main(tiny_ssd_run["args"] + ["--checkpoint_path", tiny_ssd_run["last_ckpt"],
                                                "--class_names", "[circle, square, triangle]",
                                                "--output_dir", str(tmp_path)])
    assert "multi_cls_layers.0.3.weight: checkpoint (21, 576, 1, 1) vs network (12, 576, 1, 1)" in str(err.value)


def test_filter_weight_drops_head_of_other_class_count(tiny_ssd_run, tmp_path):
    import train
    summary = train.main(tiny_ssd_run["args"] + [
        "--pre_trained", tiny_ssd_run["last_ckpt"], "--filter_weight", "True", "--epoch_size", "1",
        "--class_names", "[circle, square, triangle]", "--output_dir", str(tmp_path / "o"),
        "--mindrecord_dir", str(tmp_path / "mr")])
    assert summary["steps_per_epoch"] == 4


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_a_crc_error_not_wrong_weights(tiny_ssd_run, tmp_path, damage):
    import eval as eval_entry
    bad = tmp_path / "bad.ckpt"
    data = bytearray(open(tiny_ssd_run["last_ckpt"], "rb").read())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        mid = len(data) // 2
        data[mid:mid + 8] = bytes(b ^ 0x5A for b in data[mid:mid + 8])
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        eval_entry.main(tiny_ssd_run["args"] + ["--checkpoint_path", str(bad), "--output_dir", str(tmp_path)])


# ------------------------------------------------- entry points: one line, status 2, --debug

def _entry(script: str, *args: str, env: dict | None = None):
    import subprocess
    import sys
    from conftest import ROOT
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_entry_points_report_user_errors_in_one_line_with_status_2(tiny_ssd_run, tmp_path):
    from conftest import SSD_CONFIG
    foreign = tmp_path / "foreign.ckpt"
    foreign.write_bytes(b"not a checkpoint at all")
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"base: [{SSD_CONFIG}]\nlr_shedule: multistep\n")
    cases = [
        (("train.py", "--config_path", str(typo)), "typo.yaml:2: unknown config key 'lr_shedule' (did you mean "
                                                     "'lr_schedule'?)"),
        (("train.py", "--config_path", str(tmp_path / "nope.yaml")), "config file not found"),
        (("eval.py", *tiny_ssd_run["args"], "--checkpoint_path", str(foreign)), f"cannot read checkpoint {foreign}"),
        (("export.py", *tiny_ssd_run["args"], "--ckpt_file", tiny_ssd_run["last_ckpt"], "--file_format", "PNG"),
         "--file_format must be one of MINDIR, ONNX, AIR"),
        (("infer.py", *tiny_ssd_run["args"], "--ckpt_file", tiny_ssd_run["last_ckpt"], "--image",
          str(tmp_path / "missing.jpg")), "image not found"),
    ]
    for args, message in cases:
        result = _entry(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert lines[-1].startswith("error: ") and message in lines[-1], (args, lines[-3:])
        assert "Traceback" not in result.stderr, args


def test_debug_flag_and_variable_show_the_traceback(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    for args, env in ((("--config_path", missing, "--debug"), None), (("--config_path", missing), {"MS_ZOO_DEBUG": "1"})):
        result = _entry("train.py", *args, env=env)
        assert result.returncode == 1 and "Traceback" in result.stderr
        assert "MissingFileError: config file not found" in result.stderr


def test_internal_errors_keep_their_traceback():
    from src.model_utils.cli import run

    def broken(argv):
        raise KeyError("a bug, not the user's")

    with pytest.raises(KeyError):
        run(broken, [])
