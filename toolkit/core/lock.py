"""One deploycmp at a time per run directory: RUN_DIR/.lock, held with flock for the whole command.

The kernel drops an flock when its holder dies, however it dies (SIGKILL, OOM killer), so a dead process never
keeps a run directory locked; the pid and start time written into the file only make the refusal say who holds it.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from deploycmp.core.errors import UsageError

LOCK = ".lock"
_HELD: dict = {}  # the run directory this command holds, or held last


def held_run_dir() -> Path | None:
    """The run directory this command holds or held last: what an interruption, which reaches the CLI after the
    lock is let go, kept."""
    return _HELD.get("run_dir")


def new_command() -> None:
    """A new command in this process (the CLI called in-process again) holds no run directory yet."""
    _HELD.clear()


@contextmanager
def locked(run_dir: Path):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise UsageError(f"{run_dir} is in use by another deploycmp ({holder}); wait for it to end or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        _HELD["run_dir"] = run_dir
        yield run_dir
    finally:
        os.close(fd)  # releases the flock
