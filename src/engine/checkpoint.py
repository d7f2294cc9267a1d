"""Checkpoints that are written atomically, verified on load, and matched by name and shape."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Iterable

import mindspore as ms

from src.errors import UserError

logger = logging.getLogger("src.engine")

# Keys the training loop stores beside the weights; never reported as unexpected.
BOOKKEEPING_KEYS = ("epoch_num", "step_num", "loss_scale", "loss_scale_good_steps", "global_step",
                    "learning_rate", "best_metric")
# Rebuilt from the config on every run (its length follows epoch_size), so never restored.
NOT_RESTORED = ("learning_rate",)
# Ends the hidden name a checkpoint is written under before it is renamed into place.
TEMPORARY_SUFFIX = ".tmp.ckpt"
# Optimizer state saved with a training checkpoint; irrelevant when loading a network for inference.
OPTIMIZER_PREFIXES = ("moments.", "accum.", "moment1.", "moment2.", "beta1_power", "beta2_power")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used: missing, corrupted, or of another network."""


def _some(names: list[str], shown: int = 5) -> str:
    """The first `shown` names, and how many more: keeps a one-line error readable."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@dataclass(frozen=True)
class OfficialLayout:
    """How the parameter names of a model-zoo checkpoint map onto a network of ours; each model
    package declares one (its rename table). Rules are regular expressions over the whole name:
    `renames` (pattern, replacement), the first match wins; `ignored` (pattern, reason): names
    with no counterpart here, dropped and reported; `unsupported` (pattern, reason): names of
    a network we do not build (another variant), which make the checkpoint an error."""
    name: str
    renames: tuple[tuple[str, str], ...]
    ignored: tuple[tuple[str, str], ...] = ()
    unsupported: tuple[tuple[str, str], ...] = ()

    def rename(self, key: str) -> str | None:
        """Our name for an official parameter, or None when no rule covers it."""
        for pattern, replacement in self.renames:
            if re.fullmatch(pattern, key):
                return re.sub(pattern, replacement, key)
        return None

    def ignore_reason(self, key: str) -> str | None:
        return next((reason for pattern, reason in self.ignored if re.fullmatch(pattern, key)), None)

    def unsupported_reason(self, key: str) -> str | None:
        return next((reason for pattern, reason in self.unsupported if re.fullmatch(pattern, key)), None)


def _is_state(key: str) -> bool:
    """Optimizer state or training bookkeeping rather than a weight of the network."""
    return key in BOOKKEEPING_KEYS or key.startswith(OPTIMIZER_PREFIXES)


def import_official(params: dict, own_names: Iterable[str], layout: OfficialLayout | None,
                    source: str = "checkpoint") -> dict:
    """Return `params` in our parameter names.

    A checkpoint whose weights are mostly named as ours is returned unchanged. Otherwise, if the
    model declares an official layout, each weight is renamed by it: the load report then says
    the file was recognised, how many weights were mapped, and what was ignored and why
    (optimizer state, parameters the official network defines but never uses). Weights no
    rule covers are kept under their names and reported as unexpected by `load_weights`.
    """
    own = set(own_names)
    weights = [k for k in params if not _is_state(k)]
    if layout is None or not weights or sum(k in own for k in weights) * 2 > len(weights):
        return params
    unsupported = sorted({r for k in weights if (r := layout.unsupported_reason(k)) is not None})
    if unsupported:
        raise CheckpointError(f"{source} is a {layout.name} checkpoint of a network this repository does "
                              f"not build: {'; '.join(unsupported)}")
    renamed, ignored, unmapped = {}, {}, []
    for key in weights:
        reason = layout.ignore_reason(key)
        if reason is not None:
            ignored.setdefault(reason, []).append(key)
            continue
        ours = layout.rename(key)
        if ours is None:
            unmapped.append(key)
            renamed[key] = params[key]
        else:
            renamed[ours] = params[key]
    mapped = len(renamed) - len(unmapped)
    if mapped * 2 <= len(weights) - sum(len(v) for v in ignored.values()):
        return params  # not this layout: load_weights reports the names as they are
    state = [k for k in params if _is_state(k)]
    renamed.update({k: params[k] for k in state})
    print(f"{source}: recognised a {layout.name} checkpoint; {mapped} parameters mapped to this network's "
          "names", flush=True)
    for reason, keys in ignored.items():
        print(f"  ignored {len(keys)} ({reason}): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}",
              flush=True)
    optimizer = [k for k in state if k.startswith(OPTIMIZER_PREFIXES)]
    if optimizer:
        print(f"  ignored {len(optimizer)} optimizer state entries ({', '.join(optimizer[:2])} ...)", flush=True)
    return renamed


def save_checkpoint_atomic(obj, path: str, append_dict: dict | None = None) -> str:
    """Save with a crc under a temporary name, then rename: an interrupted write never leaves a
    file under the final name."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # save_checkpoint appends ".ckpt" to names without it, so the temporary name keeps the suffix.
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}{TEMPORARY_SUFFIX}")
    ms.save_checkpoint(obj, tmp, append_dict=append_dict, crc_check=True)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint's parameters, checking its crc. Errors name the file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return ms.load_checkpoint(path, crc_check=True)
    except Exception as e:  # MindSpore raises ValueError/RuntimeError with long C++ traces
        # MindSpore wraps a failed crc check in "May not have permission to read it"; report the whole chain.
        reasons, cause = [], e
        while cause is not None:
            reasons.append(str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
            cause = cause.__cause__
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupted "
                              f"(crc check or parse failed: {'; '.join(reasons)})") from e


def load_weights(net: ms.nn.Cell, params: dict | str, filter_shape_mismatch: bool = False,
                 drop_prefixes: Iterable[str] = (), strict: bool = False, source: str = "",
                 official: OfficialLayout | None = None) -> dict:
    """Load parameters into `net` by name.

    A model-zoo checkpoint is first renamed by the model's `official` layout (import_official).
    Shape mismatches are an error listing every mismatched name, unless filter_shape_mismatch
    (filter_weight: e.g. a head trained for another class count), which drops and reports them.
    With strict, any network parameter missing from the checkpoint is an error too.
    Returns a report {loaded, missing, unexpected, filtered}.
    """
    if isinstance(params, str):
        source = source or params
        params = read_checkpoint(params)
    source = source or "checkpoint"
    own = {p.name: p for p in net.get_parameters()}
    params = import_official(params, own, official, source)
    params = {k: v for k, v in params.items()
              if k not in NOT_RESTORED and not any(k.startswith(d) for d in drop_prefixes)}
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs network {tuple(own[k].shape)}"
                  for k, v in params.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    filtered = []
    if mismatched:
        if not filter_shape_mismatch:
            raise CheckpointError(f"{source} does not fit this network; {len(mismatched)} parameters differ "
                                  f"in shape (use filter_weight to drop them): {_some(mismatched, 3)}")
        filtered = [m.split(":")[0] for m in mismatched]
        params = {k: v for k, v in params.items() if k not in filtered}
    missing = sorted(k for k in own if k not in params and k not in NOT_RESTORED)
    unexpected = sorted(k for k in params if k not in own and k not in BOOKKEEPING_KEYS
                        and not k.startswith(OPTIMIZER_PREFIXES))
    if strict and missing:
        raise CheckpointError(f"{source} is not a checkpoint of this network: {len(missing)} of {len(own)} "
                              f"parameters are missing ({_some(missing)})" +
                              (f"; the file holds others ({_some(unexpected)})" if unexpected else ""))
    ms.load_param_into_net(net, {k: v for k, v in params.items() if k in own}, strict_load=False)
    report = {"loaded": len(own) - len(missing), "missing": missing, "unexpected": unexpected, "filtered": filtered}
    logger.info("loaded %d/%d parameters from %s", report["loaded"], len(own), source)
    for key, label in (("missing", "not in the checkpoint (kept initial values)"),
                       ("unexpected", "in the checkpoint but not in the network (ignored)"),
                       ("filtered", "dropped by filter_weight (shape differs)")):
        if report[key]:
            print(f"{len(report[key])} parameters {label}: {', '.join(report[key][:10])}"
                  f"{' ...' if len(report[key]) > 10 else ''}", flush=True)
    return report
