"""Training callbacks: loss/time log and its picture, atomic checkpoints, evaluation keeping the
best checkpoint."""
from __future__ import annotations

import glob
import os
import re
import time
from typing import Callable, Sequence

import numpy as np
from mindspore.train.callback import Callback

from src.engine.checkpoint import read_checkpoint, save_checkpoint_atomic
from src.engine.plot import plot_training

_GLOBAL_STEP = re.compile(r"global_step: (\d+)")


def _loss_values(outputs) -> list[float]:
    """The total loss, then the named terms when the network returns a tuple (total, terms...)."""
    values = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [float(np.mean(v.asnumpy())) if hasattr(v, "asnumpy") else float(v) for v in values]


class LossTimeLogger(Callback):
    """Prints and appends to loss_<rank>.log, every `print_every` steps and at each epoch's end:
    epoch, global step, the loss (and each of `loss_terms` when the network returns them after
    the total), the learning rate, seconds per step. Evaluations add their lines (`write`).
    `loss_<rank>.png` is drawn from the log when the run evaluates and when it ends.

    A fresh run starts a new log; a run resumed from `resume_step` keeps the lines up to that
    step and continues after them, so the curve of an interrupted run reads as one."""

    def __init__(self, log_dir: str, rank: int, steps_per_epoch: int, print_every: int = 10,
                 lr: Sequence[float] | None = None, loss_terms: Sequence[str] = (), resume_step: int | None = None):
        super().__init__()
        os.makedirs(log_dir, exist_ok=True)
        self.path = os.path.join(log_dir, f"loss_{rank}.log")
        self.plot_path = os.path.join(log_dir, f"loss_{rank}.png")
        self.steps_per_epoch = steps_per_epoch
        self.print_every = max(print_every, 1)
        self.lr = None if lr is None else np.asarray(lr).reshape(-1)
        self.loss_terms = tuple(loss_terms)
        # MindSpore counts a resumed run's steps from 1 again.
        self.step_offset = resume_step or 0
        self.last_time = time.time()
        self.last_step = None
        kept = []
        if resume_step is not None and os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                kept = [line for line in f if (m := _GLOBAL_STEP.search(line)) and int(m[1]) <= resume_step]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(kept)

    def write(self, line: str) -> None:
        """Print `line` and append it to the log."""
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def plot(self) -> None:
        """Redraw loss_<rank>.png from the log (a run without logged steps has nothing to draw)."""
        if os.path.getsize(self.path):
            plot_training(self.path, self.plot_path)

    def global_step(self, cb) -> int:
        """The step number over the whole run, resumed parts included."""
        return cb.cur_step_num + self.step_offset

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        step = self.global_step(cb)
        if self.last_step is None:
            self.last_step = step - 1 if step else 0
        done = step - self.last_step
        if step % self.print_every and step % self.steps_per_epoch:
            return
        now = time.time()
        per_step = (now - self.last_time) / max(done, 1)
        self.last_time, self.last_step = now, step
        in_epoch = (step - 1) % self.steps_per_epoch + 1
        values = _loss_values(cb.net_outputs)
        terms = "".join(f" {name}: {value:.5f}" for name, value in zip(self.loss_terms, values[1:]))
        lr = f" lr: {self.lr[min(step, len(self.lr)) - 1]:.6g}" if self.lr is not None and len(self.lr) else ""
        self.write(f"epoch: {cb.cur_epoch_num} step: {in_epoch}/{self.steps_per_epoch} global_step: {step} "
                   f"loss: {values[0]:.5f}{terms}{lr} step_time: {per_step * 1000:.1f} ms")

    def on_train_end(self, run_context):
        self.plot()


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
    epochs and after the last epoch, logging each evaluation to `logger`'s log and picture;
    with save_best, keeps `<prefix>_best.ckpt` of the network with the best `metric`. A resumed
    run starts from the best metric its best checkpoint holds, so it never replaces a better one."""

    def __init__(self, evaluate: Callable[[], dict], network, out_dir: str, prefix: str, metric: str = "mAP",
                 start_epoch: int = 1, interval: int = 1, save_best: bool = True,
                 logger: LossTimeLogger | None = None):
        super().__init__()
        self.evaluate = evaluate
        self.network = network
        self.metric = metric
        self.start_epoch = start_epoch
        self.interval = max(interval, 1)
        self.save_best = save_best
        self.logger = logger
        self.best_path = os.path.join(out_dir, f"{prefix}_best.ckpt")
        self.best = -float("inf")
        self.best_epoch = -1
        if save_best and os.path.isfile(self.best_path):
            saved = read_checkpoint(self.best_path)
            if "best_metric" in saved:
                self.best = float(saved["best_metric"].asnumpy())
                self.best_epoch = int(saved["epoch_num"].asnumpy())
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
        if self.logger is not None:
            numbers = " ".join(f"{k}: {v:.6g}" for k, v in metrics.items() if isinstance(v, (int, float)))
            self.logger.write(f"eval epoch: {epoch} global_step: {self.logger.global_step(cb)} metric: {self.metric} "
                              f"{numbers}")
            self.logger.plot()
        if value > self.best:
            self.best, self.best_epoch = value, epoch
            if self.save_best:
                save_checkpoint_atomic(self.network, self.best_path, {"epoch_num": epoch, "best_metric": float(value)})
                print(f"new best {self.metric} {value:.4f} at epoch {epoch}: saved {self.best_path}", flush=True)
