"""A record of the samples a training pipeline actually read: with `log_read_ids`, every sample
id that goes through a rank's training transform is appended to
`<output_dir>/read_ids_<rank>.txt`, one per line, so the sharding of a data-parallel run can be
checked against what each rank trained on (not against a list computed beside it)."""
from __future__ import annotations

import os
import threading


class ReadLog:
    """Thread-safe appender of sample ids (the pipeline's map runs in worker threads). A new
    run starts a new file."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.lock = threading.Lock()
        self.file = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115  (open for the run)

    def record(self, sample_id) -> None:
        with self.lock:
            self.file.write(f"{int(sample_id)}\n")


def read_log_for(cfg, rank: int) -> ReadLog | None:
    """The ReadLog of a rank's training pipeline when the config asks for one."""
    if not cfg.log_read_ids:
        return None
    return ReadLog(os.path.join(os.path.abspath(cfg.output_dir), f"read_ids_{rank}.txt"))
