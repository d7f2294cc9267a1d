"""Per-step learning-rate arrays (MindSpore optimizers accept them directly)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from src.errors import ConfigError


def _warmup(step: int, warmup_steps: int, base_lr: float, warmup_ratio: float) -> float:
    start = base_lr * warmup_ratio
    return start + (base_lr - start) * step / max(warmup_steps, 1)


def warmup_cosine_lr(base_lr: float, total_steps: int, warmup_steps: int = 0, end_lr: float = 0.0,
                     warmup_ratio: float = 0.0) -> np.ndarray:
    """Linear warmup from base_lr*warmup_ratio, then cosine decay to end_lr at total_steps."""
    lr = np.empty(total_steps, np.float32)
    decay_steps = max(total_steps - warmup_steps, 1)
    for i in range(total_steps):
        if i < warmup_steps:
            lr[i] = _warmup(i, warmup_steps, base_lr, warmup_ratio)
        else:
            t = (i - warmup_steps) / decay_steps
            lr[i] = end_lr + (base_lr - end_lr) * 0.5 * (1 + math.cos(math.pi * t))
    return lr


def warmup_multistep_lr(base_lr: float, total_steps: int, milestones: Sequence[int], gamma: float = 0.1,
                        warmup_steps: int = 0, warmup_ratio: float = 0.0) -> np.ndarray:
    """Linear warmup, then base_lr multiplied by gamma at each milestone step."""
    lr = np.empty(total_steps, np.float32)
    for i in range(total_steps):
        if i < warmup_steps:
            lr[i] = _warmup(i, warmup_steps, base_lr, warmup_ratio)
        else:
            lr[i] = base_lr * gamma ** sum(i >= m for m in milestones)
    return lr


def build_lr(cfg, steps_per_epoch: int) -> np.ndarray:
    """lr array from config keys lr, lr_schedule (cosine|multistep), warmup_epochs, lr_end,
    lr_milestones (epochs), lr_gamma, epoch_size."""
    total = max(int(cfg.epoch_size * steps_per_epoch), 1)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        return warmup_cosine_lr(cfg.lr, total, warmup, cfg.lr_end, cfg.warmup_ratio)
    if cfg.lr_schedule == "multistep":
        return warmup_multistep_lr(cfg.lr, total, [int(m * steps_per_epoch) for m in cfg.lr_milestones],
                                   cfg.lr_gamma, warmup, cfg.warmup_ratio)
    raise ConfigError(f"config key 'lr_schedule' must be 'cosine' or 'multistep', got '{cfg.lr_schedule}'")
