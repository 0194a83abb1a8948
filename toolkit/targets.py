"""Targets: where a row runs (device, threads, CPU affinity) and which runtimes it runs."""
from __future__ import annotations

import os
from dataclasses import dataclass

from toolkit.errors import UsageError


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Target:
    name: str
    device: str = "cpu"
    threads: int | None = None          # None: one per usable core
    cpus: tuple[int, ...] | None = None  # None: every usable core
    runtimes: tuple[str, ...] | None = None  # None: every runtime
    description: str = ""

    def resolved_cpus(self) -> list[int]:
        avail = usable_cpus()
        return [c for c in self.cpus if c in avail] if self.cpus else avail

    def resolved_threads(self, override: int | None = None) -> int:
        if override is not None:
            return override
        return self.threads or len(self.resolved_cpus())

    def runs(self, runtime: str) -> bool:
        return self.runtimes is None or runtime in self.runtimes

    def unavailable_reason(self) -> str | None:
        if self.device == "cpu":
            return None
        return f"target {self.name}: device {self.device} is not supported yet"

    def describe(self, threads: int | None = None) -> str:
        n = self.resolved_threads(threads)
        return self.description or f"host CPU, {len(self.resolved_cpus())} core(s), {n} thread(s)"


BUILTIN = {
    "server-cpu": Target("server-cpu", description=""),
}


def parse_targets(spec: str) -> list[Target]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UsageError("--target needs at least one target name")
    unknown = [n for n in names if n not in BUILTIN]
    if unknown:
        raise UsageError(f"unknown target {unknown[0]!r}; known targets: {', '.join(BUILTIN)}")
    return [BUILTIN[n] for n in dict.fromkeys(names)]


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "XNNPACK_NUM_THREADS")


def worker_env(threads: int) -> dict:
    """Environment variables that fix thread pools before any framework in the worker starts them."""
    env = {k: str(threads) for k in THREAD_ENV}
    env["TF_NUM_INTEROP_THREADS"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env
