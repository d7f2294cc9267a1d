"""Training callbacks: loss/time log, atomic checkpoints, evaluation keeping the best checkpoint."""
from __future__ import annotations

import glob
import os
import time
from typing import Callable

import numpy as np
from mindspore.train.callback import Callback

from src.engine.checkpoint import save_checkpoint_atomic


def _loss_value(outputs) -> float:
    if isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    return float(np.mean(outputs.asnumpy())) if hasattr(outputs, "asnumpy") else float(outputs)


class LossTimeLogger(Callback):
    """Prints and appends to loss_<rank>.log: epoch, global step, loss, seconds per step."""

    def __init__(self, log_dir: str, rank: int, steps_per_epoch: int, print_every: int = 10):
        super().__init__()
        os.makedirs(log_dir, exist_ok=True)
        self.path = os.path.join(log_dir, f"loss_{rank}.log")
        self.steps_per_epoch = steps_per_epoch
        self.print_every = max(print_every, 1)
        self.last_time = time.time()
        self.last_step = None

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        step = cb.cur_step_num
        if self.last_step is None:
            self.last_step = step - 1 if step else 0
        done = step - self.last_step
        if step % self.print_every and step % self.steps_per_epoch:
            return
        now = time.time()
        per_step = (now - self.last_time) / max(done, 1)
        self.last_time, self.last_step = now, step
        in_epoch = (step - 1) % self.steps_per_epoch + 1
        line = (f"epoch: {cb.cur_epoch_num} step: {in_epoch}/{self.steps_per_epoch} global_step: {step} "
                f"loss: {_loss_value(cb.net_outputs):.5f} step_time: {per_step * 1000:.1f} ms")
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class CheckpointSaver(Callback):
    """Saves the whole train step (weights, optimizer state, loss scale) with epoch and step
    every `every_epochs`, atomically and with a crc, keeping the newest `keep_max` files."""

    def __init__(self, cell, out_dir: str, prefix: str, every_epochs: int = 1, keep_max: int = 5):
        super().__init__()
        self.cell = cell
        self.out_dir = out_dir
        self.prefix = prefix
        self.every = max(every_epochs, 1)
        self.keep_max = keep_max

    def on_train_epoch_end(self, run_context):
        cb = run_context.original_args()
        epoch = cb.cur_epoch_num
        if epoch % self.every and epoch != cb.epoch_num:
            return
        path = os.path.join(self.out_dir, f"{self.prefix}-{epoch}_{cb.batch_num}.ckpt")
        save_checkpoint_atomic(self.cell, path, {"epoch_num": epoch, "step_num": cb.cur_step_num})
        existing = sorted(glob.glob(os.path.join(self.out_dir, f"{self.prefix}-*.ckpt")), key=os.path.getmtime)
        for old in existing[:-self.keep_max] if self.keep_max > 0 else []:
            os.remove(old)


class EvalCallback(Callback):
    """Runs `evaluate()` (returning a metrics dict) from eval_start_epoch every eval_interval
    epochs and after the last epoch; with save_best, keeps `<prefix>_best.ckpt` of the network
    with the best `metric`."""

    def __init__(self, evaluate: Callable[[], dict], network, out_dir: str, prefix: str, metric: str = "mAP",
                 start_epoch: int = 1, interval: int = 1, save_best: bool = True):
        super().__init__()
        self.evaluate = evaluate
        self.network = network
        self.out_dir = out_dir
        self.prefix = prefix
        self.metric = metric
        self.start_epoch = start_epoch
        self.interval = max(interval, 1)
        self.save_best = save_best
        self.best = -float("inf")
        self.best_epoch = -1
        self.history: list[tuple[int, dict]] = []

    def on_train_epoch_end(self, run_context):
        cb = run_context.original_args()
        epoch = cb.cur_epoch_num
        on_grid = epoch >= self.start_epoch and (epoch - self.start_epoch) % self.interval == 0
        if not on_grid and epoch != cb.epoch_num:
            return
        start = time.time()
        metrics = self.evaluate()
        self.history.append((epoch, metrics))
        value = metrics[self.metric]
        print(f"epoch {epoch}: {self.metric} = {value:.4f} (eval took {time.time() - start:.1f} s)", flush=True)
        if value > self.best:
            self.best, self.best_epoch = value, epoch
            if self.save_best:
                path = os.path.join(self.out_dir, f"{self.prefix}_best.ckpt")
                save_checkpoint_atomic(self.network, path, {"epoch_num": epoch, "best_metric": float(value)})
                print(f"new best {self.metric} {value:.4f} at epoch {epoch}: saved {path}", flush=True)
