"""The training procedure behind train.py, the same for every model."""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

import mindspore as ms
import numpy as np
import mindspore.dataset  # noqa: F401  (ms.dataset.config)
from mindspore import nn
from mindspore.train import Model

from src.engine.callbacks import CheckpointSaver, EvalCallback, LossTimeLogger
from src.engine.checkpoint import TEMPORARY_SUFFIX, CheckpointError, load_weights, read_checkpoint
from src.engine.evaluate import run_evaluation
from src.engine.lr_schedule import build_lr
from src.engine.train_step import TrainStep
from src.errors import ConfigError, DataError
from src.model_utils.device import init_context
from src.registry import get_model


def build_optimizer(cfg, params, lr):
    """Optimizer from config key `optimizer`; no weight decay on BatchNorm and bias parameters."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    lr = ms.Tensor(lr)
    if cfg.optimizer == "momentum":
        return nn.Momentum(groups, lr, cfg.momentum, loss_scale=1.0)
    if cfg.optimizer == "sgd":
        return nn.SGD(groups, lr, cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return nn.Adam(groups, lr, beta1=float(cfg.adam_beta1), beta2=float(cfg.adam_beta2))
    raise ConfigError(f"config key 'optimizer' must be momentum, sgd or adam, got '{cfg.optimizer}'")


def freeze(network: nn.Cell, prefix: str) -> int:
    """Stop gradients to parameters under `prefix`; returns how many were frozen."""
    frozen = 0
    for p in network.get_parameters():
        if p.name.startswith(prefix):
            p.requires_grad = False
            frozen += 1
    return frozen


def mixed_precision(net_with_loss: nn.Cell, amp_level: str) -> None:
    """Mixed precision for `net_with_loss.network` only (the loss stays fp32), in place.

    MindSpore's wrappers insert `_backbone.` into parameter names; the original names are put
    back so checkpoints of an AMP run load into the fp32 network used for eval and export.
    """
    names = {id(p): p.name for p in net_with_loss.get_parameters()}
    net_with_loss.network = ms.amp.auto_mixed_precision(net_with_loss.network, amp_level)
    for p in net_with_loss.get_parameters():
        p.name = names[id(p)]


@dataclass
class TrainingRun:
    """Everything `train` builds before the first step: what a test of resuming inspects."""
    cfg: Any
    api: Any
    rank: int
    group_size: int
    output_dir: str
    ckpt_dir: str
    dataset: Any
    steps_per_epoch: int
    net_with_loss: nn.Cell
    train_step: TrainStep
    lr: np.ndarray
    initial_epoch: int = 0
    initial_step: int = 0
    resumed_from: str | None = None


CHECKPOINT_NAME = re.compile(r"(?P<prefix>.+)-(?P<epoch>\d+)_(?P<steps>\d+)\.ckpt")


def latest_checkpoint(ckpt_dir: str, prefix: str) -> str | None:
    """The checkpoint of the latest epoch among `<prefix>-<epoch>_<steps>.ckpt` in ckpt_dir. Only
    complete files carry that name (CheckpointSaver writes under a hidden temporary name and
    renames), so a write cut short is never picked."""
    found = []
    for name in os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []:
        match = CHECKPOINT_NAME.fullmatch(name)
        if match and match["prefix"] == prefix:
            found.append((int(match["epoch"]), os.path.join(ckpt_dir, name)))
    return max(found)[1] if found else None


def remove_partial_checkpoints(ckpt_dir: str) -> list[str]:
    """Delete the temporary files of checkpoint writes that a crash cut short."""
    removed = []
    for name in os.listdir(ckpt_dir):
        if name.startswith(".") and name.endswith(TEMPORARY_SUFFIX):
            os.remove(os.path.join(ckpt_dir, name))
            removed.append(name)
    return removed


def resume_path(cfg, ckpt_dir: str) -> str | None:
    """The checkpoint `resume` asks for: a path, or `auto` for the latest complete checkpoint of
    this run (None, and training starts afresh, when there is none yet)."""
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        path = latest_checkpoint(ckpt_dir, cfg.model)
        if path is None:
            print(f"resume: auto found no checkpoint in {ckpt_dir}; starting from the beginning", flush=True)
        return path
    return cfg.path("resume")


def prepare(cfg) -> TrainingRun:
    """Build the dataset, the network, the optimizer and the train step, and restore a
    checkpoint when resuming."""
    rank, group_size = init_context(cfg)
    ms.set_seed(cfg.seed)
    ms.dataset.config.set_seed(cfg.seed)  # the shuffle order too, so runs repeat
    api = get_model(cfg.model)
    output_dir = os.path.abspath(cfg.output_dir)
    ckpt_dir = os.path.join(output_dir, f"ckpt_{rank}")
    os.makedirs(ckpt_dir, exist_ok=True)
    for name in remove_partial_checkpoints(ckpt_dir):
        print(f"removed {name}: a checkpoint write that did not complete", flush=True)

    dataset = api.create_dataset(cfg, "train", rank, group_size)
    steps_per_epoch = dataset.get_dataset_size()
    if steps_per_epoch == 0:
        raise DataError(f"the training set has fewer images than batch_size={cfg.batch_size} per device")
    print(f"rank {rank}/{group_size}: {steps_per_epoch} steps per epoch of batch {cfg.batch_size}", flush=True)

    net_with_loss = api.build_train_network(cfg)
    if cfg.pre_trained:
        load_weights(net_with_loss, cfg.path("pre_trained"), filter_shape_mismatch=cfg.filter_weight,
                     official=api.OFFICIAL_CHECKPOINT)
    if cfg.freeze_layer == "backbone":
        print(f"froze {freeze(net_with_loss, api.BACKBONE_PREFIX)} backbone parameters", flush=True)
    elif cfg.freeze_layer != "none":
        raise ConfigError(f"config key 'freeze_layer' must be none or backbone, got '{cfg.freeze_layer}'")

    if cfg.amp_level != "O0":
        mixed_precision(net_with_loss, cfg.amp_level)
    lr = build_lr(cfg, steps_per_epoch)
    optimizer = build_optimizer(cfg, net_with_loss.trainable_params(), lr)
    dynamic = bool(cfg.dynamic_loss_scale) and cfg.loss_scale > 1
    train_step = TrainStep(net_with_loss, optimizer, cfg.loss_scale, dynamic, cfg.clip_norm)
    run = TrainingRun(cfg, api, rank, group_size, output_dir, ckpt_dir, dataset, steps_per_epoch, net_with_loss,
                      train_step, lr)

    path = resume_path(cfg, ckpt_dir)
    if path is not None:
        params = read_checkpoint(path)
        if "epoch_num" not in params:
            raise CheckpointError(f"{path} has no epoch_num: not a checkpoint written by train.py (use pre_trained)")
        load_weights(train_step, params, strict=True, source=path)
        run.initial_epoch = int(params["epoch_num"].asnumpy())
        run.initial_step = int(params["step_num"].asnumpy())
        run.resumed_from = path
        print(f"resumed from {path} at epoch {run.initial_epoch}, step {run.initial_step}", flush=True)
        if run.initial_epoch >= cfg.epoch_size:
            print(f"nothing to do: epoch_size {cfg.epoch_size} already reached", flush=True)
    return run


def train(cfg) -> dict:
    """Train the configured model; returns a summary (output paths, last loss, eval history)."""
    run = prepare(cfg)
    api, prefix = run.api, cfg.model
    logger = LossTimeLogger(run.output_dir, run.rank, run.steps_per_epoch, cfg.log_every, run.lr,
                            getattr(api, "LOSS_TERMS", ()), resume_step=run.initial_step if run.resumed_from else None)
    callbacks = [logger, CheckpointSaver(run.train_step, run.ckpt_dir, prefix, cfg.save_checkpoint_epochs,
                                         cfg.keep_checkpoint_max)]
    eval_cb = None
    if cfg.run_eval and run.rank == 0:
        net_with_loss = run.net_with_loss
        infer_net = api.build_inference_network(cfg, net_with_loss)
        eval_set = api.create_dataset(cfg, "val", 0, 1)
        evaluator = api.create_evaluator(cfg)

        def evaluate() -> dict:
            infer_net.set_train(False)  # the weights change between evaluations: no frozen_forward
            metrics = run_evaluation(api, cfg, infer_net, eval_set, evaluator)
            net_with_loss.set_train(True)
            return metrics

        eval_cb = EvalCallback(evaluate, net_with_loss.network, run.ckpt_dir, prefix, api.METRIC,
                               cfg.eval_start_epoch, cfg.eval_interval, cfg.save_best_ckpt, logger)
        callbacks.append(eval_cb)

    model = Model(run.train_step)
    start = time.time()
    if run.initial_epoch < cfg.epoch_size:
        model.train(cfg.epoch_size, run.dataset, callbacks=callbacks, dataset_sink_mode=cfg.dataset_sink_mode,
                    initial_epoch=run.initial_epoch)
    elapsed = time.time() - start
    print(f"training finished in {elapsed:.1f} s; checkpoints in {run.ckpt_dir}", flush=True)
    summary = {"rank": run.rank, "group_size": run.group_size, "ckpt_dir": run.ckpt_dir, "train_seconds": elapsed,
               "steps_per_epoch": run.steps_per_epoch, "loss_log": logger.path, "loss_plot": logger.plot_path,
               "resumed_from": run.resumed_from}
    if eval_cb is not None:
        summary["eval_history"] = eval_cb.history
        summary["best"] = {"epoch": eval_cb.best_epoch, api.METRIC: eval_cb.best}
    return summary
