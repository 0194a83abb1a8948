"""What nvidia-smi says about this host's NVIDIA GPUs: read without importing a framework."""
from __future__ import annotations

import functools
import shutil
import subprocess


def _query(args: list[str]) -> list[list[str]]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [[c.strip() for c in ln.split(",")] for ln in out.stdout.splitlines() if ln.strip()]


@functools.lru_cache(maxsize=1)
def devices() -> list[dict]:
    """One dict per GPU: name, driver version, total memory (MB)."""
    return [{"name": name, "driver": driver, "memory_mb": float(mem)}
            for name, driver, mem in _query(["--query-gpu=name,driver_version,memory.total"])]


def names() -> list[str]:
    return [d["name"] for d in devices()]


def process_memory_mb(pid: int) -> float | None:
    """Device memory held by process `pid` now (all GPUs), or None when nvidia-smi does not list it."""
    used = [float(mem) for p, mem in _query(["--query-compute-apps=pid,used_memory"]) if p == str(pid)]
    return sum(used) if used else None
