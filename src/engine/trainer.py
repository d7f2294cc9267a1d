"""The training procedure behind train.py, the same for every model."""
from __future__ import annotations

import os
import time

import mindspore as ms
import mindspore.dataset  # noqa: F401  (ms.dataset.config)
from mindspore import nn
from mindspore.train import Model

from src.engine.callbacks import CheckpointSaver, EvalCallback, LossTimeLogger
from src.engine.checkpoint import CheckpointError, load_weights, read_checkpoint
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


def train(cfg) -> dict:
    """Train the configured model; returns a summary (output paths, last loss, eval history)."""
    rank, group_size = init_context(cfg)
    ms.set_seed(cfg.seed)
    ms.dataset.config.set_seed(cfg.seed)  # the shuffle order too, so runs repeat
    api = get_model(cfg.model)
    output_dir = os.path.abspath(cfg.output_dir)
    ckpt_dir = os.path.join(output_dir, f"ckpt_{rank}")
    os.makedirs(ckpt_dir, exist_ok=True)

    dataset = api.create_dataset(cfg, "train", rank, group_size)
    steps_per_epoch = dataset.get_dataset_size()
    if steps_per_epoch == 0:
        raise DataError(f"the training set has fewer images than batch_size={cfg.batch_size} per device")
    print(f"rank {rank}/{group_size}: {steps_per_epoch} steps per epoch of batch {cfg.batch_size}", flush=True)
    if group_size > 1:
        ids = api.shard_ids(cfg, rank, group_size)
        with open(os.path.join(output_dir, f"shard_{rank}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(map(str, ids)) + "\n")
        print(f"rank {rank} reads {len(ids)} images (ids in {output_dir}/shard_{rank}.txt)", flush=True)

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

    initial_epoch = 0
    if cfg.resume:
        path = cfg.path("resume")
        params = read_checkpoint(path)
        if "epoch_num" not in params:
            raise CheckpointError(f"{path} has no epoch_num: not a checkpoint written by train.py (use pre_trained)")
        load_weights(train_step, params, strict=True, source=path)
        initial_epoch = int(params["epoch_num"].asnumpy())
        print(f"resumed from {path} at epoch {initial_epoch}, step {int(params['step_num'].asnumpy())}", flush=True)
        if initial_epoch >= cfg.epoch_size:
            print(f"nothing to do: epoch_size {cfg.epoch_size} already reached", flush=True)

    prefix = cfg.model
    callbacks = [LossTimeLogger(output_dir, rank, steps_per_epoch, cfg.log_every),
                 CheckpointSaver(train_step, ckpt_dir, prefix, cfg.save_checkpoint_epochs, cfg.keep_checkpoint_max)]
    eval_cb = None
    if cfg.run_eval and rank == 0:
        infer_net = api.build_inference_network(cfg, net_with_loss)
        eval_set = api.create_dataset(cfg, "val", 0, 1)
        evaluator = api.create_evaluator(cfg)

        def evaluate() -> dict:
            infer_net.set_train(False)  # the weights change between evaluations: no frozen_forward
            metrics = run_evaluation(api, cfg, infer_net, eval_set, evaluator)
            net_with_loss.set_train(True)
            return metrics

        eval_cb = EvalCallback(evaluate, net_with_loss.network, ckpt_dir, prefix, api.METRIC,
                               cfg.eval_start_epoch, cfg.eval_interval, cfg.save_best_ckpt)
        callbacks.append(eval_cb)

    model = Model(train_step)
    start = time.time()
    if initial_epoch < cfg.epoch_size:
        model.train(cfg.epoch_size, dataset, callbacks=callbacks, dataset_sink_mode=cfg.dataset_sink_mode,
                    initial_epoch=initial_epoch)
    elapsed = time.time() - start
    print(f"training finished in {elapsed:.1f} s; checkpoints in {ckpt_dir}", flush=True)
    summary = {"rank": rank, "group_size": group_size, "ckpt_dir": ckpt_dir, "train_seconds": elapsed,
               "steps_per_epoch": steps_per_epoch, "loss_log": callbacks[0].path}
    if eval_cb is not None:
        summary["eval_history"] = eval_cb.history
        summary["best"] = {"epoch": eval_cb.best_epoch, api.METRIC: eval_cb.best}
    return summary
