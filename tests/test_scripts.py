"""Tests of the launch scripts in scripts/ and of src/model_utils/rank_table.py.

Nothing is trained: the scripts run with DRY_RUN=1, where they print one line per process,
  RANK <i> ENV NAME=value ... CMD <command>
instead of starting it. Only bash and python are needed (no MindSpore, mpirun or msrun).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
sys.path.insert(0, str(REPO_ROOT))

from src.model_utils import rank_table as rt  # noqa: E402

# script -> (arguments before the config, arguments after it) of a valid call; "CFG" is the config.
ALL_SCRIPTS = [
    "run_standalone_train_ascend.sh",
    "run_standalone_train_gpu.sh",
    "run_standalone_train_cpu.sh",
    "run_distribute_train_ascend.sh",
    "run_distribute_train_gpu.sh",
    "run_distribute_train_cpu.sh",
    "run_eval_ascend.sh",
    "run_eval_gpu.sh",
    "run_eval_cpu.sh",
    "run_infer_310.sh",
]


# ----------------------------------------------------------------------------- helpers

def v1_table(servers: dict[str, list[int]], first_rank: int = 0) -> dict:
    """A v1.0 rank table; servers maps server_id -> device ids, ranks numbered in order."""
    rank = first_rank
    server_list = []
    for server_id, devices in servers.items():
        entries = []
        for device in devices:
            entries.append({"device_id": str(device), "device_ip": f"192.1.27.{device + 6}",
                            "rank_id": str(rank)})
            rank += 1
        server_list.append({"server_id": server_id, "device": entries, "host_nic_ip": "reserve"})
    return {"version": "1.0", "server_count": str(len(server_list)), "server_list": server_list,
            "status": "completed"}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with a dummy config, checkpoint, MINDIR, data folder and rank tables."""
    (tmp_path / "config.yaml").write_text("epoch_size: 1\n")
    (tmp_path / "model.ckpt").write_bytes(b"ckpt")
    (tmp_path / "model.mindir").write_bytes(b"mindir")
    (tmp_path / "images").mkdir()
    write_json(tmp_path / "rank_table_4p.json", v1_table({"10.0.0.1": [4, 5, 6, 7]}))
    write_json(tmp_path / "rank_table_2s.json",
               v1_table({"203.0.113.1": [0, 1, 2, 3], "203.0.113.2": [4, 5, 6, 7]}))
    return tmp_path


def run_script(name: str, *args: str, cwd: Path, env: dict | None = None,
               dry_run: bool = True) -> subprocess.CompletedProcess:
    """Run scripts/<name> with bash; RUN_DIR defaults to <cwd>/run so the repo stays clean."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("DEVICE_ID", "RANK_ID", "RANK_SIZE", "RANK_TABLE_FILE", "SERVER_ID",
                             "RUN_DIR", "RUN_NAME", "MASTER_PORT", "WAIT", "DRY_RUN")}
    full_env["RUN_DIR"] = str(cwd / "run")
    if dry_run:
        full_env["DRY_RUN"] = "1"
    full_env["PYTHON"] = sys.executable
    full_env.update(env or {})
    return subprocess.run(["bash", str(SCRIPTS / name), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=60, check=False)


def rank_lines(out: str) -> list[tuple[int, dict[str, str], list[str]]]:
    """Parse the DRY_RUN lines: (rank, env, command words)."""
    parsed = []
    for line in out.splitlines():
        if not line.startswith("RANK "):
            continue
        head, cmd = line.split(" CMD ", 1)
        rank_part, env_part = head.split(" ENV", 1)
        env = dict(word.split("=", 1) for word in shlex.split(env_part))
        parsed.append((int(rank_part.split()[1]), env, shlex.split(cmd)))
    return parsed


def flag(cmd: list[str], name: str) -> str:
    """Value of the last `name value` pair in a command."""
    idx = max(i for i, w in enumerate(cmd) if w == name)
    return cmd[idx + 1]


def valid_args(name: str, work: Path) -> list[str]:
    """Arguments of a correct call of the script, with paths relative to `work`."""
    return {
        "run_standalone_train_ascend.sh": ["config.yaml", "1"],
        "run_standalone_train_gpu.sh": ["config.yaml", "1"],
        "run_standalone_train_cpu.sh": ["config.yaml"],
        "run_distribute_train_ascend.sh": ["rank_table_4p.json", "4", "config.yaml"],
        "run_distribute_train_gpu.sh": ["2", "config.yaml"],
        "run_distribute_train_cpu.sh": ["2", "config.yaml"],
        "run_eval_ascend.sh": ["config.yaml", "model.ckpt", "1"],
        "run_eval_gpu.sh": ["config.yaml", "model.ckpt", "1"],
        "run_eval_cpu.sh": ["config.yaml", "model.ckpt"],
        "run_infer_310.sh": ["config.yaml", "model.mindir", "images", "1"],
    }[name]


# ----------------------------------------------------------------------------- syntax / lint

@pytest.mark.parametrize("name", ALL_SCRIPTS + ["common.sh"])
def test_bash_syntax(name: str):
    result = subprocess.run(["bash", "-n", str(SCRIPTS / name)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    files = [str(SCRIPTS / n) for n in ALL_SCRIPTS + ["common.sh"]]
    result = subprocess.run(["shellcheck", "-x", *files], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_is_listed():
    on_disk = {p.name for p in SCRIPTS.glob("*.sh")} - {"common.sh"}
    assert on_disk == set(ALL_SCRIPTS)


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_scripts_source_common(name: str):
    text = (SCRIPTS / name).read_text()
    assert "common.sh" in text
    assert "mkdir -p \"$RUN_DIR\"" not in text  # run-folder logic lives in common.sh only


# ----------------------------------------------------------------------------- argument errors

@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_no_args_prints_usage(name: str, work: Path):
    result = run_script(name, cwd=work)
    assert result.returncode != 0
    assert f"Usage: bash scripts/{name}" in result.stderr
    assert not (work / "run").exists()


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_help_prints_usage(name: str, work: Path):
    result = run_script(name, "--help", cwd=work)
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: bash scripts/{name} ")


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_valid_dry_run(name: str, work: Path):
    result = run_script(name, *valid_args(name, work), cwd=work)
    assert result.returncode == 0, result.stderr
    lines = rank_lines(result.stdout)
    assert lines, result.stdout
    assert (work / "run").is_dir()
    for _, env, cmd in lines:
        for value in list(env.values()) + cmd:
            if value.endswith((".yaml", ".ckpt", ".json", ".mindir")):
                assert os.path.isabs(value.split("=", 1)[-1]), value


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_missing_config(name: str, work: Path):
    args = [a if a != "config.yaml" else "missing.yaml" for a in valid_args(name, work)]
    result = run_script(name, *args, cwd=work)
    assert result.returncode != 0
    assert "missing.yaml" in result.stderr and "CONFIG_PATH" in result.stderr
    assert "Usage:" in result.stderr
    assert not (work / "run").exists()


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_stray_positional_argument(name: str, work: Path):
    result = run_script(name, *valid_args(name, work), "surplus", cwd=work)
    assert result.returncode != 0
    assert "surplus" in result.stderr and "Usage:" in result.stderr


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_flag_without_value(name: str, work: Path):
    result = run_script(name, *valid_args(name, work), "--epoch_size", cwd=work)
    assert result.returncode != 0
    assert "--epoch_size needs a value" in result.stderr


@pytest.mark.parametrize("name,args", [
    ("run_standalone_train_ascend.sh", ["config.yaml", "one"]),
    ("run_standalone_train_gpu.sh", ["config.yaml", "1.5"]),
    ("run_eval_ascend.sh", ["config.yaml", "model.ckpt", "x"]),
    ("run_eval_gpu.sh", ["config.yaml", "model.ckpt", "x1"]),
    ("run_infer_310.sh", ["config.yaml", "model.mindir", "images", "abc"]),
])
def test_non_integer_device_id(name: str, args: list[str], work: Path):
    result = run_script(name, *args, cwd=work)
    assert result.returncode != 0
    assert "DEVICE_ID must be an integer" in result.stderr and "Usage:" in result.stderr


@pytest.mark.parametrize("name,args,label", [
    ("run_distribute_train_ascend.sh", ["rank_table_4p.json", "four", "config.yaml"], "DEVICE_NUM"),
    ("run_distribute_train_ascend.sh", ["rank_table_4p.json", "0", "config.yaml"], "DEVICE_NUM"),
    ("run_distribute_train_gpu.sh", ["2x", "config.yaml"], "DEVICE_NUM"),
    ("run_distribute_train_gpu.sh", ["-2", "config.yaml"], "DEVICE_NUM"),
    ("run_distribute_train_cpu.sh", ["two", "config.yaml"], "WORKER_NUM"),
])
def test_non_integer_device_num(name: str, args: list[str], label: str, work: Path):
    result = run_script(name, *args, cwd=work)
    assert result.returncode != 0
    assert "Usage:" in result.stderr
    assert label in result.stderr or "at least" in result.stderr


@pytest.mark.parametrize("name,args,what", [
    ("run_eval_ascend.sh", ["config.yaml", "nope.ckpt"], "CHECKPOINT_PATH"),
    ("run_eval_gpu.sh", ["config.yaml", "nope.ckpt"], "CHECKPOINT_PATH"),
    ("run_eval_cpu.sh", ["config.yaml", "nope.ckpt"], "CHECKPOINT_PATH"),
    ("run_distribute_train_ascend.sh", ["nope.json", "4", "config.yaml"], "RANK_TABLE_FILE"),
    ("run_infer_310.sh", ["config.yaml", "nope.mindir", "images"], "MINDIR_PATH"),
    ("run_infer_310.sh", ["config.yaml", "model.mindir", "no_images"], "DATA_PATH"),
])
def test_missing_files(name: str, args: list[str], what: str, work: Path):
    result = run_script(name, *args, cwd=work)
    assert result.returncode != 0
    assert what in result.stderr and "Usage:" in result.stderr


# ----------------------------------------------------------------------------- standalone / eval

def test_standalone_ascend_dry_run(work: Path):
    result = run_script("run_standalone_train_ascend.sh", "config.yaml", "3", "--epoch_size", "2",
                        cwd=work)
    assert result.returncode == 0, result.stderr
    [(rank, env, cmd)] = rank_lines(result.stdout)
    assert rank == 0 and env["DEVICE_ID"] == "3" and env["RANK_ID"] == "0" and env["RANK_SIZE"] == "1"
    assert cmd[:2] == [sys.executable, "train.py"]
    assert flag(cmd, "--config_path") == str(work / "config.yaml")
    assert flag(cmd, "--device_target") == "Ascend"
    assert flag(cmd, "--device_id") == "3"
    assert flag(cmd, "--run_distribute") == "False"
    assert flag(cmd, "--output_dir") == str(work / "run")
    assert cmd[-2:] == ["--epoch_size", "2"]  # extra flags last so they win


def test_standalone_device_id_from_env(work: Path):
    result = run_script("run_standalone_train_ascend.sh", "config.yaml", "--epoch_size", "2",
                        cwd=work, env={"DEVICE_ID": "6"})
    [(_, env, cmd)] = rank_lines(result.stdout)
    assert env["DEVICE_ID"] == "6" and flag(cmd, "--device_id") == "6"


def test_device_id_leading_zero_is_normalised(work: Path):
    result = run_script("run_standalone_train_ascend.sh", "config.yaml", "07", cwd=work)
    [(_, env, cmd)] = rank_lines(result.stdout)
    assert env["DEVICE_ID"] == "7" and flag(cmd, "--device_id") == "7"


def test_standalone_gpu_dry_run(work: Path):
    result = run_script("run_standalone_train_gpu.sh", "config.yaml", "5", cwd=work)
    assert result.returncode == 0, result.stderr
    [(_, env, cmd)] = rank_lines(result.stdout)
    assert env["CUDA_VISIBLE_DEVICES"] == "5" and env["DEVICE_ID"] == "0"
    assert flag(cmd, "--device_target") == "GPU" and flag(cmd, "--device_id") == "0"


def test_standalone_cpu_dry_run_keeps_quoted_values(work: Path):
    result = run_script("run_standalone_train_cpu.sh", "config.yaml", "--note", "two words",
                        "--lr=0.1", cwd=work)
    assert result.returncode == 0, result.stderr
    [(_, _, cmd)] = rank_lines(result.stdout)
    assert flag(cmd, "--device_target") == "CPU"
    assert cmd[-3:] == ["--note", "two words", "--lr=0.1"]


def test_config_path_made_absolute_from_other_cwd(work: Path):
    sub = work / "sub"
    sub.mkdir()
    result = run_script("run_eval_cpu.sh", "../config.yaml", "../model.ckpt", cwd=sub)
    assert result.returncode == 0, result.stderr
    [(_, _, cmd)] = rank_lines(result.stdout)
    assert flag(cmd, "--config_path") == str(work / "config.yaml")
    assert flag(cmd, "--checkpoint_path") == str(work / "model.ckpt")
    assert flag(cmd, "--output_dir") == str(sub / "run")
    assert cmd[1] == "eval.py"


def test_eval_ascend_dry_run(work: Path):
    result = run_script("run_eval_ascend.sh", "config.yaml", "model.ckpt", "2", cwd=work)
    [(_, env, cmd)] = rank_lines(result.stdout)
    assert env["DEVICE_ID"] == "2"
    assert flag(cmd, "--device_target") == "Ascend" and flag(cmd, "--device_id") == "2"


def test_infer_310_dry_run(work: Path):
    result = run_script("run_infer_310.sh", "config.yaml", "model.mindir", "images", "2",
                        "--iou_threshold", "0.5", cwd=work, env={"IMAGE_HEIGHT": "640"})
    assert result.returncode == 0, result.stderr
    lines = rank_lines(result.stdout)
    cmds = [cmd for _, _, cmd in lines]
    main_cmd = next(c for c in cmds if c[0].endswith("ascend310_infer/build/main"))
    assert f"--mindir_path={work / 'model.mindir'}" in main_cmd
    assert f"--dataset_path={work / 'images'}" in main_cmd
    assert "--device_id=2" in main_cmd
    assert "--image_height=640" in main_cmd and "--image_width=300" in main_cmd
    assert f"--output_dir={work / 'run' / 'result_Files'}" in main_cmd
    post = cmds[-1]
    assert post[1] == "postprocess.py"
    assert flag(post, "--result_dir") == str(work / "run" / "result_Files")
    assert "--image_dir" not in post  # the val split comes from the config
    assert post[-2:] == ["--iou_threshold", "0.5"]
    if not (REPO_ROOT / "ascend310_infer" / "build" / "main").exists():
        assert cmds[0] == ["bash", "ascend310_infer/build.sh"]


def _infer_main_cmd(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return next(cmd for _, _, cmd in rank_lines(result.stdout) if cmd[0].endswith("ascend310_infer/build/main"))


def test_infer_310_norm_defaults_are_imagenet(work: Path):
    """SSD's scripts pass no NORM_*: main must still get the ImageNet statistics."""
    cmd = _infer_main_cmd(run_script("run_infer_310.sh", *valid_args("run_infer_310.sh", work), cwd=work))
    assert "--mean=123.675,116.28,103.53" in cmd
    assert "--std=58.395,57.12,57.375" in cmd


def test_infer_310_crnn_norm_passed_through(work: Path):
    env = {"IMAGE_HEIGHT": "32", "IMAGE_WIDTH": "100",
           "NORM_MEAN": "127.5,127.5,127.5", "NORM_STD": "127.5, 127.5, 127.5"}  # spaces are dropped
    cmd = _infer_main_cmd(run_script("run_infer_310.sh", *valid_args("run_infer_310.sh", work), cwd=work, env=env))
    assert "--image_height=32" in cmd and "--image_width=100" in cmd
    assert "--mean=127.5,127.5,127.5" in cmd and "--std=127.5,127.5,127.5" in cmd
    signed = {"NORM_MEAN": "-1.5,+2,.5e1", "NORM_STD": "1e-2,0.5,3."}  # any decimal form main parses
    cmd = _infer_main_cmd(run_script("run_infer_310.sh", *valid_args("run_infer_310.sh", work), cwd=work,
                                     env=signed))
    assert "--mean=-1.5,+2,.5e1" in cmd and "--std=1e-2,0.5,3." in cmd


@pytest.mark.parametrize("var,value", [
    ("NORM_MEAN", "127.5,127.5"),          # two values
    ("NORM_MEAN", "127.5,127.5,127.5,1"),  # four values
    ("NORM_MEAN", "a,b,c"),
    ("NORM_MEAN", "1,,2"),
    ("NORM_MEAN", "1;2;3"),
    ("NORM_STD", "127.5,0,127.5"),         # std must be positive: division by zero
    ("NORM_STD", "1,-2,3"),
    ("NORM_STD", "0.0e3,1,1"),
    ("NORM_STD", "1,2,3,"),
])
def test_infer_310_bad_norm_rejected(var: str, value: str, work: Path):
    result = run_script("run_infer_310.sh", *valid_args("run_infer_310.sh", work), cwd=work, env={var: value})
    assert result.returncode == 1
    assert var in result.stderr and f"'{value}'" in result.stderr
    assert not rank_lines(result.stdout)  # stopped before building or running anything


@pytest.mark.parametrize("how", ["config", "flag"])
def test_infer_310_grey_crnn_gets_one_channel(how: str, work: Path):
    """The channel count the 310 program feeds comes from the config (or its flag)."""
    base = REPO_ROOT / "configs" / "crnn" / "crnn.yaml"
    config = work / "crnn_grey.yaml"
    config.write_text(f"base: [{base}]\n" + ("image_channels: 1\n" if how == "config" else ""))
    extra = ["--image_channels", "1"] if how == "flag" else []
    env = {"IMAGE_HEIGHT": "32", "IMAGE_WIDTH": "100", "NORM_MEAN": "127.5,127.5,127.5",
           "NORM_STD": "127.5,127.5,127.5"}
    cmd = _infer_main_cmd(run_script("run_infer_310.sh", str(config), "model.mindir", "images", *extra, cwd=work,
                                     env=env))
    assert "--image_channels=1" in cmd
    rgb = _infer_main_cmd(run_script("run_infer_310.sh", str(base), "model.mindir", "images", cwd=work, env=env))
    assert "--image_channels=3" in rgb


def test_infer_310_refuses_other_channel_counts(work: Path):
    config = work / "crnn_4.yaml"
    config.write_text(f"base: [{REPO_ROOT / 'configs' / 'crnn' / 'crnn.yaml'}]\nimage_channels: 4\n")
    result = run_script("run_infer_310.sh", str(config), "model.mindir", "images", cwd=work)
    assert result.returncode == 1
    assert "image_channels: 4" in result.stderr
    assert not rank_lines(result.stdout)


def test_infer_310_crnn_with_imagenet_stats_warns(work: Path):
    config = str(REPO_ROOT / "configs" / "crnn" / "crnn.yaml")
    warned = run_script("run_infer_310.sh", config, "model.mindir", "images", cwd=work)
    assert warned.returncode == 0 and "NORM_MEAN=127.5" in warned.stderr
    env = {"NORM_MEAN": "127.5,127.5,127.5", "NORM_STD": "127.5,127.5,127.5"}
    quiet = run_script("run_infer_310.sh", config, "model.mindir", "images", cwd=work, env=env)
    assert quiet.returncode == 0 and "WARNING" not in quiet.stderr


# ----------------------------------------------------------------------------- distributed

def test_distribute_ascend_dry_run(work: Path):
    result = run_script("run_distribute_train_ascend.sh", "rank_table_4p.json", "4", "config.yaml",
                        "--epoch_size", "3", cwd=work)
    assert result.returncode == 0, result.stderr
    lines = rank_lines(result.stdout)
    assert [r for r, _, _ in lines] == [0, 1, 2, 3]
    for i, (rank, env, cmd) in enumerate(lines):
        assert env["RANK_ID"] == str(i)
        assert env["DEVICE_ID"] == str(4 + i)
        assert env["RANK_SIZE"] == "4"
        assert env["RANK_TABLE_FILE"] == str(work / "rank_table_4p.json")
        assert os.path.isabs(env["RANK_TABLE_FILE"])
        assert flag(cmd, "--run_distribute") == "True"
        assert flag(cmd, "--device_target") == "Ascend"
        assert flag(cmd, "--device_id") == str(4 + i)
        assert cmd[-2:] == ["--epoch_size", "3"]
        assert (work / "run" / f"rank_{i}").is_dir()


def test_distribute_ascend_device_num_mismatch(work: Path):
    result = run_script("run_distribute_train_ascend.sh", "rank_table_4p.json", "8", "config.yaml",
                        cwd=work)
    assert result.returncode != 0
    assert "DEVICE_NUM is 8" in result.stderr and "4 device(s)" in result.stderr
    assert not rank_lines(result.stdout)


def test_distribute_ascend_bad_table(work: Path):
    (work / "bad.json").write_text("{not json")
    result = run_script("run_distribute_train_ascend.sh", "bad.json", "4", "config.yaml", cwd=work)
    assert result.returncode != 0
    assert "not valid JSON" in result.stderr and "bad.json" in result.stderr


def test_distribute_ascend_second_server(work: Path):
    result = run_script("run_distribute_train_ascend.sh", "rank_table_2s.json", "4", "config.yaml",
                        cwd=work, env={"SERVER_ID": "203.0.113.2"})
    assert result.returncode == 0, result.stderr
    lines = rank_lines(result.stdout)
    assert [env["RANK_ID"] for _, env, _ in lines] == ["4", "5", "6", "7"]
    assert [env["DEVICE_ID"] for _, env, _ in lines] == ["4", "5", "6", "7"]
    assert {env["RANK_SIZE"] for _, env, _ in lines} == {"8"}


def test_distribute_ascend_unknown_server(work: Path):
    result = run_script("run_distribute_train_ascend.sh", "rank_table_2s.json", "4", "config.yaml",
                        cwd=work, env={"SERVER_ID": "203.0.113.9"})
    assert result.returncode != 0
    assert "203.0.113.9" in result.stderr and "not in the rank table" in result.stderr


def test_distribute_gpu_dry_run(work: Path):
    result = run_script("run_distribute_train_gpu.sh", "8", "config.yaml", "--batch_size", "4", cwd=work,
                        env={"MPIRUN": "mpirun"})
    assert result.returncode == 0, result.stderr
    [(_, env, cmd)] = rank_lines(result.stdout)
    assert cmd[:3] == ["mpirun", "-n", "8"]
    assert "--allow-run-as-root" in cmd and "--merge-stderr-to-stdout" in cmd
    assert flag(cmd, "--output-filename") == str(work / "run" / "log_output")
    assert flag(cmd, "--run_distribute") == "True" and flag(cmd, "--device_target") == "GPU"
    assert "train.py" in cmd and cmd[-2:] == ["--batch_size", "4"]
    assert env["RANK_SIZE"] == "8"


def test_distribute_cpu_dry_run(work: Path):
    result = run_script("run_distribute_train_cpu.sh", "3", "config.yaml", cwd=work,
                        env={"MASTER_PORT": "12345"})
    assert result.returncode == 0, result.stderr
    [(_, _, cmd)] = rank_lines(result.stdout)
    assert cmd[0] == "msrun"
    for word in ("--worker_num=3", "--local_worker_num=3", "--master_addr=127.0.0.1",
                 "--master_port=12345", f"--log_dir={work / 'run' / 'msrun_log'}", "--join=True"):
        assert word in cmd
    assert cmd[cmd.index("--join=True") + 1] == "train.py"
    assert flag(cmd, "--run_distribute") == "True" and flag(cmd, "--device_target") == "CPU"


def test_distribute_cpu_picks_free_port(work: Path):
    result = run_script("run_distribute_train_cpu.sh", "2", "config.yaml", cwd=work)
    assert result.returncode == 0, result.stderr
    [(_, _, cmd)] = rank_lines(result.stdout)
    port = int(next(w for w in cmd if w.startswith("--master_port=")).split("=")[1])
    assert 0 < port < 65536


def test_distribute_cpu_bad_master_port(work: Path):
    result = run_script("run_distribute_train_cpu.sh", "2", "config.yaml", cwd=work,
                        env={"MASTER_PORT": "port"})
    assert result.returncode != 0 and "MASTER_PORT" in result.stderr


@pytest.mark.parametrize("name,var,tool", [
    ("run_distribute_train_gpu.sh", "MPIRUN", "mpirun"),
    ("run_distribute_train_cpu.sh", "MSRUN", "msrun"),
])
def test_missing_launcher_is_a_clear_error(name: str, var: str, tool: str, work: Path):
    missing = str(work / f"no-{tool}")
    result = run_script(name, "2", "config.yaml", cwd=work, env={var: missing}, dry_run=False)
    assert result.returncode != 0
    assert f"{tool} '{missing}' not found" in result.stderr
    assert not (work / "run").exists()


# ----------------------------------------------------------------------------- real launches (fake programs)

def fake_program(path: Path, exit_code: int = 0) -> Path:
    """An executable that records its arguments, cwd and launcher variables, then exits.
    `-m ...` runs the real python, so the rank table reader still works."""
    path.write_text(f"""#!/bin/bash
if [[ "${{1:-}}" == "-m" || "${{1:-}}" == "-c" ]]; then exec {shlex.quote(sys.executable)} "$@"; fi
echo "ARGS $*"
echo "CWD $PWD"
for v in DEVICE_ID RANK_ID RANK_SIZE RANK_TABLE_FILE CUDA_VISIBLE_DEVICES; do echo "$v=${{!v-unset}}"; done
exit {exit_code}
""")
    path.chmod(0o755)
    return path


def test_real_launch_distribute_ascend(work: Path):
    fake = fake_program(work / "fake_python")
    result = run_script("run_distribute_train_ascend.sh", "rank_table_4p.json", "4", "config.yaml",
                        cwd=work, dry_run=False, env={"PYTHON": str(fake), "WAIT": "1"})
    assert result.returncode == 0, result.stderr
    for i in range(4):
        log = work / "run" / f"rank_{i}" / f"log_rank{i}.log"
        assert str(log) in result.stdout
        text = log.read_text()
        assert f"CWD {REPO_ROOT}" in text
        assert f"DEVICE_ID={4 + i}" in text and f"RANK_ID={i}" in text and "RANK_SIZE=4" in text
        assert f"RANK_TABLE_FILE={work / 'rank_table_4p.json'}" in text
        assert "ARGS train.py --config_path" in text
    assert sorted(p.name for p in (work / "run").iterdir()) == [f"rank_{i}" for i in range(4)]


@pytest.mark.parametrize("exit_code", [2, 3])
def test_real_launch_failure_passes_the_status_through_with_wait(work: Path, exit_code: int):
    """2 is a user error (a one-line message ending the log), anything else an internal one:
    the script exits with the program's own status and shows that last line."""
    fake = fake_program(work / "fake_python", exit_code=exit_code)
    result = run_script("run_standalone_train_cpu.sh", "config.yaml", cwd=work, dry_run=False,
                        env={"PYTHON": str(fake), "WAIT": "1"})
    assert result.returncode == exit_code
    assert f"(exit status {exit_code})" in result.stderr and "CUDA_VISIBLE_DEVICES=unset" in result.stderr
    assert f"see {work / 'run' / 'train.log'}" in result.stderr


def test_real_launch_background_by_default(work: Path):
    fake = fake_program(work / "fake_python")
    result = run_script("run_standalone_train_ascend.sh", "config.yaml", "2", cwd=work, dry_run=False,
                        env={"PYTHON": str(fake)})
    assert result.returncode == 0, result.stderr
    assert "tail -f" in result.stdout and str(work / "run" / "train.log") in result.stdout
    log = work / "run" / "train.log"
    for _ in range(100):
        if "CUDA_VISIBLE_DEVICES" in (log.read_text() if log.exists() else ""):
            break
        time.sleep(0.05)
    assert "DEVICE_ID=2" in log.read_text()


@pytest.mark.parametrize("name,var", [("run_distribute_train_gpu.sh", "MPIRUN"),
                                      ("run_distribute_train_cpu.sh", "MSRUN")])
def test_real_launch_distributed_clears_device_id(name: str, var: str, work: Path):
    fake = fake_program(work / "fake_launcher")
    result = run_script(name, "2", "config.yaml", cwd=work, dry_run=False,
                        env={var: str(fake), "WAIT": "1", "DEVICE_ID": "5", "RANK_TABLE_FILE": "x"})
    assert result.returncode == 0, result.stderr
    text = (work / "run" / "train.log").read_text()
    assert "DEVICE_ID=unset" in text and "RANK_TABLE_FILE=unset" in text and "RANK_SIZE=2" in text
    assert f"CWD {REPO_ROOT}" in text


# ----------------------------------------------------------------------------- run folders

def test_default_run_folder_under_repo(work: Path):
    name = f"pytest_{uuid.uuid4().hex[:8]}"
    runs = REPO_ROOT / "runs"
    runs_existed = runs.exists()
    env = {"RUN_NAME": name}
    try:
        full_env = {k: v for k, v in os.environ.items() if k != "RUN_DIR"}
        full_env.update(env, DRY_RUN="1", PYTHON=sys.executable)
        result = subprocess.run(["bash", str(SCRIPTS / "run_standalone_train_cpu.sh"), "config.yaml"],
                                cwd=work, env=full_env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        run_dir = runs / f"train_standalone_cpu_{name}"
        assert run_dir.is_dir()
        [(_, _, cmd)] = rank_lines(result.stdout)
        assert flag(cmd, "--output_dir") == str(run_dir)
    finally:
        shutil.rmtree(runs / f"train_standalone_cpu_{name}", ignore_errors=True)
        if not runs_existed and runs.exists() and not any(runs.iterdir()):
            runs.rmdir()


def test_timestamped_run_folders_do_not_collide(work: Path):
    """Without RUN_DIR/RUN_NAME the folder is runs/<kind>_<timestamp>[_N]: two quick runs differ."""
    runs = REPO_ROOT / "runs"
    runs_existed = runs.exists()
    before = set(runs.glob("eval_cpu_*")) if runs_existed else set()
    full_env = {k: v for k, v in os.environ.items() if k not in ("RUN_DIR", "RUN_NAME")}
    full_env.update(DRY_RUN="1", PYTHON=sys.executable)
    made: set[Path] = set()
    try:
        for _ in range(2):
            result = subprocess.run(["bash", str(SCRIPTS / "run_eval_cpu.sh"), "config.yaml", "model.ckpt"],
                                    cwd=work, env=full_env, capture_output=True, text=True, check=False)
            assert result.returncode == 0, result.stderr
        made = set(runs.glob("eval_cpu_*")) - before
        assert len(made) == 2
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        if not runs_existed and runs.exists() and not any(runs.iterdir()):
            runs.rmdir()


# ----------------------------------------------------------------------------- rank table parsing

def test_parse_valid_8_device_table(tmp_path: Path):
    path = write_json(tmp_path / "rt8.json", v1_table({"10.0.0.1": list(range(8))}))
    entries = rt.load_rank_table(str(path))
    assert entries == [rt.RankEntry("10.0.0.1", i, i) for i in range(8)]


def test_parse_two_servers(tmp_path: Path):
    path = write_json(tmp_path / "rt.json", v1_table({"10.0.0.1": [0, 1], "10.0.0.2": [0, 1]}))
    entries = rt.load_rank_table(str(path))
    assert [(e.server_id, e.device_id, e.rank_id) for e in entries] == [
        ("10.0.0.1", 0, 0), ("10.0.0.1", 1, 1), ("10.0.0.2", 0, 2), ("10.0.0.2", 1, 3)]
    assert rt.server_ids(entries) == ["10.0.0.1", "10.0.0.2"]
    assert rt.select_server(entries, local=[]) == "10.0.0.1"
    assert rt.select_server(entries, local=["127.0.0.1", "10.0.0.2"]) == "10.0.0.2"
    assert rt.select_server(entries, "10.0.0.2") == "10.0.0.2"
    with pytest.raises(rt.RankTableError, match="10.0.0.3"):
        rt.select_server(entries, "10.0.0.3")


def test_parse_unordered_ranks_are_sorted(tmp_path: Path):
    data = v1_table({"s": [0, 1, 2]})
    devices = data["server_list"][0]["device"]
    devices[0]["rank_id"], devices[2]["rank_id"] = "2", "0"
    entries = rt.parse_rank_table(data, "t")
    assert [(e.device_id, e.rank_id) for e in entries] == [(2, 0), (1, 1), (0, 2)]


def test_parse_v0_group_list(tmp_path: Path):
    data = {"board_id": "0x0000", "chip_info": "910", "deploy_mode": "lab", "group_count": "1",
            "status": "completed",
            "group_list": [{"device_num": "2", "server_num": "1", "group_name": "", "instance_count": "2",
                            "instance_list": [
                                {"devices": [{"device_id": "6", "device_ip": "192.1.27.6"}],
                                 "rank_id": "0", "server_id": "10.0.0.1"},
                                {"devices": [{"device_id": "7", "device_ip": "192.1.27.7"}],
                                 "rank_id": "1", "server_id": "10.0.0.1"}]}]}
    path = write_json(tmp_path / "v0.json", data)
    assert rt.load_rank_table(str(path)) == [rt.RankEntry("10.0.0.1", 6, 0), rt.RankEntry("10.0.0.1", 7, 1)]


def test_parse_server_group_list():
    data = {"version": "1.0", "status": "completed",
            "server_group_list": [{"group_id": "2", "server_count": "1",
                                   "server_list": v1_table({"n0": [3, 4]})["server_list"]}]}
    assert [e.device_id for e in rt.parse_rank_table(data, "g")] == [3, 4]


def test_malformed_json(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text('{"version": "1.0", "server_list": [')
    with pytest.raises(rt.RankTableError, match=r"bad\.json.*not valid JSON"):
        rt.load_rank_table(str(path))


def test_missing_file(tmp_path: Path):
    with pytest.raises(rt.RankTableError, match="cannot read"):
        rt.load_rank_table(str(tmp_path / "absent.json"))


def test_duplicate_rank(tmp_path: Path):
    data = v1_table({"10.0.0.1": [0, 1, 2, 3]})
    data["server_list"][0]["device"][3]["rank_id"] = "1"
    path = write_json(tmp_path / "dup.json", data)
    with pytest.raises(rt.RankTableError, match=r"dup\.json: duplicate rank_id 1"):
        rt.load_rank_table(str(path))


def test_non_contiguous_ranks(tmp_path: Path):
    data = v1_table({"10.0.0.1": [0, 1]})
    data["server_list"][0]["device"][1]["rank_id"] = "5"
    path = write_json(tmp_path / "gap.json", data)
    with pytest.raises(rt.RankTableError, match=r"gap\.json: rank ids are not contiguous.*1 is missing"):
        rt.load_rank_table(str(path))


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["server_list"][0]["device"][0].pop("device_id"), r"missing key 'device_id' in server_list\[0\]\.device\[0\]"),
    (lambda d: d["server_list"][0]["device"][1].pop("rank_id"), r"missing key 'rank_id' in server_list\[0\]\.device\[1\]"),
    (lambda d: d["server_list"][0].pop("server_id"), r"missing key 'server_id' in server_list\[0\]"),
    (lambda d: d["server_list"][0].pop("device"), r"missing key 'device' in server_list\[0\]"),
    (lambda d: d.pop("server_list"), "missing key 'server_list'"),
    (lambda d: d["server_list"][0]["device"][0].update(device_id="x"), "device_id .* must be a non-negative integer"),
    (lambda d: d.update(server_count="2"), "server_count is 2 but server_list has 1"),
    (lambda d: d.update(status="initializing"), "status is 'initializing'"),
    (lambda d: d["server_list"][0].update(device=[]), "empty 'device' list"),
    (lambda d: d["server_list"][0]["device"][1].update(device_id="0"), "device_id 0 appears twice"),
])
def test_invalid_tables_name_the_problem(tmp_path: Path, mutate, message: str):
    data = v1_table({"10.0.0.1": [0, 1]})
    mutate(data)
    path = write_json(tmp_path / "broken.json", data)
    with pytest.raises(rt.RankTableError, match=message) as info:
        rt.load_rank_table(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_top_level_not_object(tmp_path: Path):
    path = write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(ValueError, match="must be a JSON object"):
        rt.load_rank_table(str(path))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.model_utils.rank_table", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=30, check=False)


def test_cli_prints_devices_count_and_ranks(work: Path):
    table = str(work / "rank_table_4p.json")
    assert _cli(table).stdout == "4 5 6 7\n"
    assert _cli(table, "--count").stdout == "4\n"
    assert _cli(table, "--ranks").stdout == "0 1 2 3\n"
    assert _cli(table, "--world-size").stdout == "4\n"


def test_cli_two_servers(work: Path):
    table = str(work / "rank_table_2s.json")  # documentation-only addresses, never this host
    assert _cli(table, "--server", "203.0.113.2").stdout == "4 5 6 7\n"
    assert _cli(table, "--server", "203.0.113.2", "--ranks").stdout == "4 5 6 7\n"
    assert _cli(table, "--server", "203.0.113.2", "--count").stdout == "4\n"
    assert _cli(table, "--servers").stdout == "203.0.113.1 203.0.113.2\n"
    # this host is neither server: the first one is used
    assert _cli(table).stdout == "0 1 2 3\n"
    missing = _cli(table, "--server", "203.0.113.9")
    assert missing.returncode == 1 and "203.0.113.9" in missing.stderr


def test_cli_picks_this_host_among_servers(tmp_path: Path):
    table = write_json(tmp_path / "rt.json", v1_table({"some-other-host": [0, 1], socket.gethostname(): [2, 3]}))
    assert _cli(str(table)).stdout == "2 3\n"
    assert _cli(str(table), "--ranks").stdout == "2 3\n"


def test_cli_error_exit_code(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("nope")
    result = _cli(str(bad))
    assert result.returncode == 1
    assert "error:" in result.stderr and "not valid JSON" in result.stderr and str(bad) in result.stderr
    assert result.stdout == ""
