"""Embedded datasets generated on first use into a cache folder, safely under concurrency.

A dataset is built in a private temporary sibling folder; a marker file holding the
generation parameters is written last, then the folder is renamed into place. A folder
whose marker matches the requested parameters is reused; any other is replaced. Several
processes (data-parallel ranks) may build at once: the first complete copy wins.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from typing import Callable

MARKER = "COMPLETE"
# Temp/stale folders older than this are assumed to belong to dead processes.
_STALE_SECONDS = 3600.0


def write_json(path: str, obj) -> None:
    """Compact, key-sorted json (so equal parameters give equal bytes)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def build_cached(root: str, params: dict, build: Callable[[str], None]) -> None:
    """Make `root` hold the dataset generated with `params`: reuse it when its marker matches,
    otherwise call `build(tmp_folder)` and install the result atomically."""
    if read_marker(root) == params:
        return
    os.makedirs(os.path.dirname(root), exist_ok=True)
    _remove_abandoned(root)
    tmp = f"{root}.tmp-{os.getpid()}"
    # Containers often reuse small pids, so a folder with our name is a dead run's leftover.
    _remove(tmp)
    try:
        os.makedirs(tmp)
        build(tmp)
        # The marker goes in last: its presence means every other file is complete.
        write_json(os.path.join(tmp, MARKER), params)
        _install(tmp, root, params)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def read_marker(root: str):
    """The parameters recorded in a complete dataset folder, or None."""
    try:
        with open(os.path.join(root, MARKER), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


def _remove_abandoned(root: str) -> None:
    """Delete temp/stale siblings left by processes that were killed long ago."""
    parent, base = os.path.split(root)
    now = time.time()
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(base + ".tmp-") or name.startswith(base + ".stale-")):
            continue
        path = os.path.join(parent, name)
        # A running generator only touches its subfolders, so look at those too before
        # deciding that nobody is writing here any more.
        stamps = []
        for sub in ("", "train", "val", "annotations"):
            with contextlib.suppress(OSError):
                stamps.append(os.path.getmtime(os.path.join(path, sub)))
        if stamps and now - max(stamps) > _STALE_SECONDS:
            _remove(path)


@contextlib.contextmanager
def _dir_lock(directory: str):
    """Exclusive flock on a directory, where supported; otherwise no locking.

    Only the short check-and-rename step runs under it, to close the window in which two
    processes could both decide that the same old dataset is stale.
    """
    fd = None
    try:
        import fcntl
        fd = os.open(directory, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        # e.g. Windows, or NFS where flock on a directory fd is refused; the rename
        # protocol below is still safe except for that narrow window.
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock


def _install(tmp: str, root: str, params: dict) -> None:
    """Atomically move the finished temp folder to root, tolerating concurrent installers."""
    with _dir_lock(os.path.dirname(root)):
        for _ in range(5):
            if os.path.lexists(root):
                if read_marker(root) == params:
                    return  # another process finished the same dataset first
                # Move the stale dataset out of the way first so nobody ever sees a
                # half-deleted folder under the real name.
                stale = f"{root}.stale-{os.getpid()}"
                _remove(stale)
                try:
                    os.rename(root, stale)
                except FileNotFoundError:
                    pass
                else:
                    _remove(stale)
            try:
                os.rename(tmp, root)
                return
            except OSError:
                # root reappeared between the check and the rename (another process
                # installed its copy): look at it again.
                continue
    raise RuntimeError(f"could not move {tmp} into place at {root}")
