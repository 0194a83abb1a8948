"""A worker's memory limit: a fraction of the memory available when it starts (or less if asked), and the resident
memory of its process group, which deploycmp polls to kill the group past that limit."""
from __future__ import annotations

import os
from pathlib import Path

# the default memory limit of a job: this fraction of MemAvailable when it starts (env DEPLOYCMP_MEMORY_FRACTION;
# 0 for none), polled this often
MEMORY_FRACTION = 0.9
MEMORY_POLL_S = 0.1
MB = 1 << 20


def own_memory_mb(field: str) -> float | None:
    """This process's VmHWM (its peak resident memory, which starts afresh at exec: getrusage's ru_maxrss carries the
    parent's peak across fork+exec, so it would charge every worker the harness's memory) or VmRSS, in MB, from
    /proc/self/status."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


class GroupMemory:
    """The resident memory of a process group: the sum of the RSS of the processes whose process group is `pgid`
    (read from /proc/PID/stat). Processes seen in another group are not read again while their pid lives: a
    process cannot join a group of another session, and the job's group is the leader of its own session."""

    def __init__(self, pgid: int):
        self.pgid, self.others, self.page = pgid, set(), os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int | None:
        try:
            names = os.listdir("/proc")
        except OSError:
            return None
        total, alive = 0, set()
        for name in names:
            if not name.isdigit():
                continue
            pid = int(name)
            alive.add(pid)
            if pid in self.others:
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                fields = stat[stat.rindex(b")") + 2:].split()  # after the command name, which may hold anything
                pgrp, pages = int(fields[2]), int(fields[21])  # the stat fields 5 (pgrp) and 24 (rss)
            except (OSError, ValueError, IndexError):
                continue
            if pgrp != self.pgid:
                self.others.add(pid)
            else:
                total += pages * self.page
        self.others &= alive
        return total


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: /proc/meminfo's MemAvailable, else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    """What this process's memory cgroup still lets it use (its limit less what it uses, page cache that can be
    dropped not counted as used), for a container whose /proc/meminfo shows the host's memory; None: no limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # cgroup v2
            names, roots = ("memory.max", "memory.current"), [f"/sys/fs/cgroup{path}", "/sys/fs/cgroup"]
        elif "memory" in controllers.split(","):  # cgroup v1
            names, roots = ("memory.limit_in_bytes", "memory.usage_in_bytes"), [f"/sys/fs/cgroup/memory{path}",
                                                                                "/sys/fs/cgroup/memory"]
        else:
            continue
        for root in roots:
            try:
                limit, usage = (Path(root, n).read_text().strip() for n in names)
                if limit == "max" or int(limit) >= 1 << 60:
                    break  # no limit in this hierarchy
                stat = dict(ln.split() for ln in Path(root, "memory.stat").read_text().splitlines() if " " in ln)
                cache = int(stat.get("total_inactive_file", stat.get("inactive_file", 0)))
                return max(0, int(limit) - int(usage) + cache)
            except (OSError, ValueError):
                continue
    return None


def memory_limit(memory_limit_mb: float | None = None) -> tuple[int, str] | None:
    """A job's memory limit in bytes and where it comes from: MEMORY_FRACTION of the memory available now, or
    `memory_limit_mb` where that is smaller; None where neither applies (no /proc/meminfo, fraction 0)."""
    fraction = _env_number("DEPLOYCMP_MEMORY_FRACTION", MEMORY_FRACTION)
    available = None
    if fraction > 0:
        found = [n for n in (available_memory(), _cgroup_available()) if n is not None]
        available = min(found) if found else None
    limits = []
    if available is not None:
        limits.append((int(available * fraction), f"{fraction * 100:.3g}% of the memory available when it started"))
    if memory_limit_mb is not None:
        limits.append((int(memory_limit_mb * MB), f"memory_limit_mb = {memory_limit_mb:g}"))
    return min(limits) if limits else None


def oom_kills() -> int | None:
    """The kernel's count of processes its out-of-memory killer killed (every cgroup's included)."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None
