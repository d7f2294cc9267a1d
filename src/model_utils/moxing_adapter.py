"""ModelArts support: copy data in from OBS before a job and results out after it.

Active only with `enable_modelarts: True`; `moxing` exists only on ModelArts, so it is imported
lazily and nothing here runs elsewhere.
"""
from __future__ import annotations

import functools
import os


def _copy(src: str, dst: str) -> None:
    import moxing as mox  # noqa: F401  (ModelArts only)
    print(f"copying {src} -> {dst}", flush=True)
    mox.file.copy_parallel(src, dst)


def moxing_wrapper(cfg):
    """Decorator: with enable_modelarts, sync `data_url` -> `data_path` (once per server) before
    the function and `output_dir` -> `train_url` after it."""
    def decorator(run):
        @functools.wraps(run)
        def wrapped(*args, **kwargs):
            if not cfg.enable_modelarts:
                return run(*args, **kwargs)
            marker = os.path.join(cfg.data_path, ".synced")
            if cfg.data_url and int(os.environ.get("RANK_ID", 0)) % 8 == 0 and not os.path.exists(marker):
                _copy(cfg.data_url, cfg.data_path)
                open(marker, "w").close()
            result = run(*args, **kwargs)
            if cfg.train_url:
                _copy(cfg.output_dir, cfg.train_url)
            return result
        return wrapped
    return decorator
