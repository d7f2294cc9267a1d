"""Long-run behaviour of train.py: a run killed in the middle of a checkpoint write resumes from
its last complete checkpoint with the same weights and optimizer state; the best checkpoint is
the best evaluation of the log; the loss log and its picture."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

PREFIX = "ssd300_mobilenet_v2"


def _steps_in_log(path: str) -> list[int]:
    from src.engine.plot import read_loss_log
    return read_loss_log(path)["steps"]


def _logged_steps(path: str) -> list[int]:
    """The global_step of every step line, in file order (repeats included)."""
    with open(path, encoding="utf-8") as f:
        return [int(line.split("global_step: ")[1].split()[0]) for line in f if line.startswith("epoch: ")]


def _kill_during_a_later_checkpoint_write(args: list[str], ckpt_dir: str, timeout: float = 600) -> str:
    """Start training in a subprocess; once the first epoch's checkpoint is complete, SIGKILL it
    as soon as a later checkpoint is being written. Returns the partial file's name."""
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
            partial = [n for n in names if n.endswith(".tmp.ckpt") and f"{PREFIX}-1_" not in n]
            if f"{PREFIX}-1_4.ckpt" in names and partial:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return partial[0]
            if proc.poll() is not None:
                raise AssertionError(f"training ended before it could be killed: {proc.stderr.read()[-2000:]}")
            time.sleep(0.002)
        raise AssertionError("no later checkpoint write was seen")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigkill_during_a_checkpoint_write_then_resume_auto(tiny_ssd_args, tmp_path):
    from src.engine import trainer
    from src.engine.checkpoint import read_checkpoint
    from src.model_utils.config import parse_cli
    out = str(tmp_path / "run")
    ckpt_dir = os.path.join(out, "ckpt_0")
    args = tiny_ssd_args + ["--output_dir", out, "--epoch_size", "5", "--keep_checkpoint_max", "10"]
    partial = _kill_during_a_later_checkpoint_write(args, ckpt_dir)

    # The write was cut: its epoch has only the hidden temporary file.
    killed_epoch = int(partial.split(f"{PREFIX}-")[1].split("_")[0])
    complete = sorted(n for n in os.listdir(ckpt_dir) if not n.startswith("."))
    assert complete == [f"{PREFIX}-{e}_4.ckpt" for e in range(1, killed_epoch)], complete
    assert partial in os.listdir(ckpt_dir)
    last = os.path.join(ckpt_dir, complete[-1])

    # Resuming picks the last complete checkpoint (never the partial file, which it removes) and
    # restores weights, optimizer moments and step counters exactly.
    run = trainer.prepare(parse_cli(args + ["--resume", "auto"]))
    assert run.resumed_from == last and run.initial_epoch == killed_epoch - 1
    assert run.initial_step == 4 * (killed_epoch - 1)
    assert not [n for n in os.listdir(ckpt_dir) if n.startswith(".")]
    saved = read_checkpoint(last)
    restored = {p.name: p.asnumpy() for p in run.train_step.get_parameters()}
    moments = [k for k in saved if k.startswith(("moment1.", "moment2.", "moments."))]
    assert len(moments) > 100 and "global_step" in saved
    for name in [k for k in saved if k.startswith("network.")] + moments + ["global_step"]:
        np.testing.assert_array_equal(restored[name], saved[name].asnumpy(), err_msg=name)

    # ... and training goes on to the end; the loss log continues from the resumed step.
    import train
    summary = train.main(args + ["--resume", "auto"])
    assert summary["resumed_from"] == last
    assert sorted(os.listdir(ckpt_dir)) == [f"{PREFIX}-{e}_4.ckpt" for e in range(1, 6)]
    final = read_checkpoint(os.path.join(ckpt_dir, f"{PREFIX}-5_4.ckpt"))
    assert int(final["global_step"].asnumpy().reshape(-1)[0]) == 20
    assert _logged_steps(summary["loss_log"]) == list(range(1, 21))  # no step twice, none missing


def test_resume_auto_without_checkpoints_starts_afresh(tiny_ssd_args, tmp_path, capsys):
    from src.engine import trainer
    from src.model_utils.config import parse_cli
    run = trainer.prepare(parse_cli(tiny_ssd_args + ["--output_dir", str(tmp_path), "--resume", "auto"]))
    assert run.resumed_from is None and run.initial_epoch == 0
    assert "resume: auto found no checkpoint" in capsys.readouterr().out


def test_best_checkpoint_holds_the_best_evaluation_of_the_log(tiny_ssd_run, tmp_path):
    """Continue the tiny run with an evaluation per epoch: the best checkpoint is the network of
    the epoch with the highest mAP among the evaluations in the log, weight for weight."""
    import train
    from src.engine.checkpoint import read_checkpoint
    from src.engine.plot import read_loss_log
    out = tmp_path / "evaluated"
    summary = train.main(tiny_ssd_run["args"] + [
        "--pre_trained", tiny_ssd_run["last_ckpt"], "--epoch_size", "3", "--lr", "0.004", "--run_eval", "True",
        "--eval_start_epoch", "1", "--eval_interval", "1", "--min_score", "0.01", "--output_dir", str(out),
        "--keep_checkpoint_max", "5"])
    evals = read_loss_log(summary["loss_log"])["evals"]
    assert [epoch for epoch, _, _ in evals] == [1, 2, 3]
    values = [metrics["mAP"] for _, _, metrics in evals]
    assert len(set(values)) > 1, values  # the evaluations differ, so the choice means something
    best_epoch = evals[int(np.argmax(values))][0]
    best = read_checkpoint(os.path.join(summary["ckpt_dir"], f"{PREFIX}_best.ckpt"))
    assert int(best["epoch_num"].asnumpy()) == best_epoch
    assert float(best["best_metric"].asnumpy()) == pytest.approx(max(values), rel=1e-5)
    of_that_epoch = read_checkpoint(os.path.join(summary["ckpt_dir"], f"{PREFIX}-{best_epoch}_4.ckpt"))
    weights = [k for k in best if k.startswith("network.")]
    assert len(weights) == 409
    for name in weights:
        np.testing.assert_array_equal(best[name].asnumpy(), of_that_epoch[name].asnumpy(), err_msg=name)
    # The picture of the run: losses, lr and the evaluations.
    assert os.path.getsize(summary["loss_plot"]) > 10_000


def test_loss_log_and_plot_command(tiny_ssd_run, tmp_path):
    """The tiny run's log names the loss and the lr per step; plot_loss.py redraws it."""
    import plot_loss
    from src.engine.plot import read_loss_log
    log = os.path.join(tiny_ssd_run["output_dir"], "loss_0.log")
    data = read_loss_log(log)
    assert data["steps"] == list(range(1, 9)) and list(data["losses"]) == ["loss"]
    assert all(v > 0 for v in data["losses"]["loss"]) and all(v is not None and v > 0 for v in data["lr"])
    assert os.path.isfile(os.path.join(tiny_ssd_run["output_dir"], "loss_0.png"))  # written at the end
    picture = plot_loss.main([log, "--output", str(tmp_path / "curves.png")])
    assert picture == str(tmp_path / "curves.png") and os.path.getsize(picture) > 10_000
    import matplotlib.image
    assert matplotlib.image.imread(picture).shape[:2] == (450, 900)


def test_plot_reads_named_loss_terms_evaluations_and_a_resumed_log(tmp_path):
    from src.engine.plot import plot_training, read_loss_log
    log = tmp_path / "loss_0.log"
    log.write_text(
        "epoch: 1 step: 1/2 global_step: 1 loss: 2.0 rpn_cls: 0.5 rcnn_reg: 1.5 lr: 0.01 step_time: 10.0 ms\n"
        "epoch: 1 step: 2/2 global_step: 2 loss: 1.5 rpn_cls: 0.4 rcnn_reg: 1.1 lr: 0.02 step_time: 10.0 ms\n"
        "eval epoch: 1 global_step: 2 metric: bbox/mAP bbox/mAP: 0.1000 segm/mAP: 0.0500\n"
        "epoch: 2 step: 1/2 global_step: 3 loss: 9.0 rpn_cls: 9.0 rcnn_reg: 0.0 lr: 0.02 step_time: 10.0 ms\n"
        # resumed from step 2: step 3 again, with other values, wins
        "epoch: 2 step: 1/2 global_step: 3 loss: 1.0 rpn_cls: 0.3 rcnn_reg: 0.7 lr: 0.02 step_time: 10.0 ms\n")
    data = read_loss_log(str(log))
    assert data["steps"] == [1, 2, 3]
    assert data["losses"] == {"loss": [2.0, 1.5, 1.0], "rpn_cls": [0.5, 0.4, 0.3], "rcnn_reg": [1.5, 1.1, 0.7]}
    assert data["evals"] == [(1, 2, {"bbox/mAP": 0.1, "segm/mAP": 0.05})] and data["metric"] == "bbox/mAP"
    assert os.path.getsize(plot_training(str(log))) > 10_000
    assert set(os.listdir(tmp_path)) == {"loss_0.log", "loss_0.png"}  # no temporary picture left
