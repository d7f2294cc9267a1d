"""Device context and data-parallel initialisation from the config and the launcher's environment."""
from __future__ import annotations

import os

import mindspore as ms
from src.errors import ConfigError

DEVICE_TARGETS = ("Ascend", "GPU", "CPU")


def device_id(cfg) -> int:
    """DEVICE_ID from the launcher (Ascend rank-table scripts) wins over the config."""
    return int(os.environ.get("DEVICE_ID", cfg.device_id))


def init_context(cfg) -> tuple[int, int]:
    """Set the execution mode and device; initialise data parallelism when run_distribute.

    Ascend: HCCL through a rank table (RANK_TABLE_FILE/RANK_ID/DEVICE_ID) or msrun;
    GPU: NCCL through mpirun or msrun; CPU: msrun's dynamic cluster. Returns (rank, group_size).
    """
    if cfg.device_target not in DEVICE_TARGETS:
        raise ConfigError(f"config key 'device_target' must be one of {DEVICE_TARGETS}, got '{cfg.device_target}'")
    mode = ms.GRAPH_MODE if str(cfg.mode).lower() == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode)
    if cfg.run_distribute:
        from mindspore.communication import get_group_size, get_local_rank, get_rank, init
        if cfg.device_target == "CPU":
            ms.set_device("CPU")
            init()
        else:
            # Under msrun/mpirun the device is the local rank (rank-table launches set DEVICE_ID).
            init()
            ms.set_device(cfg.device_target, int(os.environ.get("DEVICE_ID", get_local_rank())))
        rank, group_size = get_rank(), get_group_size()
        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=group_size)
        return rank, group_size
    if cfg.device_target == "CPU":
        ms.set_device("CPU")
    else:
        ms.set_device(cfg.device_target, device_id(cfg))
    return 0, 1
