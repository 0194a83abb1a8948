"""Targets: where a row runs (device, threads, CPU cores) and which runtimes it runs.

Built in: server-cpu, mobile-cpu and gpu. Users add their own in a TOML file (--targets-file):

    [targets.mobile-4t]
    base = "mobile-cpu"      # optional: start from a built-in target
    threads = 4
    cores = 4                # how many of the host's cores the worker may use (or cpus = [0, 1, 2, 3])
    memory_budget_mb = 1024  # a soft budget: a warning when load + inference add more
    memory_limit_mb = 4096   # a hard limit: the worker's processes are killed past it (the row: out_of_memory)
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from deploycmp import runtimes
from deploycmp.core import gpu
from deploycmp.core.errors import UsageError
from deploycmp.core.specs import split_list

DEVICES = ("cpu", "cuda")


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Target:
    name: str
    device: str = "cpu"
    threads: int | None = None               # None: one per core the target may use
    cores: int | None = None                 # None: every usable core; N: the last N usable cores
    cpus: tuple[int, ...] | None = None      # explicit core numbers (instead of cores)
    runtimes: tuple[str, ...] | None = None  # None: every runtime except opt-in ones (keras-predict ...)
    memory_budget_mb: float | None = None    # checked against the memory a row's load + inference added
    memory_limit_mb: float | None = None     # the most the worker's processes may hold (RSS); None: 90% of what is
                                             # available when the worker starts (worker_memory.memory_limit)
    description: str = ""

    def resolved_cpus(self) -> list[int]:
        avail = usable_cpus()
        if self.cpus:
            return [c for c in self.cpus if c in avail]
        return avail[-self.cores:] if self.cores else avail

    def resolved_threads(self, override: int | None = None) -> int:
        if override is not None:
            return override
        return self.threads or max(1, len(self.resolved_cpus()))

    def runs(self, runtime: str) -> bool:
        """Named in the target's runtimes list; without a list, every runtime that is not opt-in and runs on the
        target's device."""
        if self.runtimes is not None:
            return runtime in self.runtimes
        from deploycmp import runtimes

        return not runtimes.opt_in(runtime) and self.device in runtimes.devices(runtime)

    def unavailable_reason(self) -> str | None:
        avail = usable_cpus()
        if self.cpus and not self.resolved_cpus():
            return f"target {self.name}: cpus {list(self.cpus)} are not usable on this host (usable: {avail})"
        if self.cores and self.cores > len(avail):
            return f"target {self.name}: needs {self.cores} cores, this host lets deploycmp use {len(avail)}"
        if self.device == "cuda" and not gpu.names():
            return f"target {self.name}: no CUDA GPU on this host (nvidia-smi lists none)"
        return None

    def describe(self, threads: int | None = None) -> str:
        if self.description:
            return self.description
        n, cpus = self.resolved_threads(threads), self.resolved_cpus()
        where = f"{len(cpus)} core(s) {cpus}" if (self.cores or self.cpus) else f"all {len(cpus)} core(s)"
        text = f"host CPU, {where}, {n} thread(s)"
        if self.device == "cuda":
            names = gpu.names()
            text = f"CUDA GPU {names[0] if names else '(none found)'}; host side: {text}"
        if self.memory_budget_mb:
            text += f"; memory budget {self.memory_budget_mb:g} MB"
        if self.memory_limit_mb:
            text += f"; memory limit {self.memory_limit_mb:g} MB"
        return text


BUILTIN = {
    "server-cpu": Target("server-cpu"),
    "mobile-cpu": Target("mobile-cpu", threads=1, cores=1, runtimes=runtimes.on_device(), memory_budget_mb=512,
                         description="host CPU limited to 1 core, 1 thread, on-device runtimes only, 512 MB budget "
                                     "for what load + inference add; a phone-class budget, not a phone"),
    "gpu": Target("gpu", device="cuda", runtimes=runtimes.on_gpu()),
}

KEYS = {f.name for f in fields(Target)} - {"name"} | {"base"}


def _positive_int(where: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"{where}: {key} must be a positive integer, not {value!r}")
    return value


def _positive_number(where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise UsageError(f"{where}: {key} must be a positive number, not {value!r}")
    return float(value)


def _target_from_table(name: str, table, where: str) -> Target:
    from deploycmp import runtimes

    if not isinstance(table, dict):
        raise UsageError(f"{where}: expected a table [targets.{name}], got {type(table).__name__}")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(KEYS))}")
    base_name = table.get("base")
    if base_name is not None and base_name not in BUILTIN:
        raise UsageError(f"{where}: base {base_name!r} is not a built-in target ({', '.join(BUILTIN)})")
    base = BUILTIN[base_name] if base_name else Target(name)
    values = {}
    for key in ("threads", "cores"):
        if key in table:
            values[key] = _positive_int(where, key, table[key])
    if "cores" in table and "cpus" in table:
        raise UsageError(f"{where}: give cores (how many) or cpus (which), not both")
    if "cores" in values:
        values["cpus"] = None
    if "cpus" in table:
        cpus = table["cpus"]
        if not isinstance(cpus, list) or not cpus or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in cpus):
            raise UsageError(f"{where}: cpus must be a list of core numbers, e.g. [0, 1], not {cpus!r}")
        values["cpus"], values["cores"] = tuple(cpus), None
    if "device" in table:
        if table["device"] not in DEVICES:
            raise UsageError(f"{where}: device must be one of {', '.join(DEVICES)}, not {table['device']!r}")
        values["device"] = table["device"]
    if "runtimes" in table:
        names = table["runtimes"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UsageError(f"{where}: runtimes must be a list of runtime names, e.g. [\"litert\"]")
        bad = [n for n in names if n not in runtimes.RUNTIMES]
        if bad:
            raise UsageError(f"{where}: unknown runtime {bad[0]!r}; runtimes: {', '.join(runtimes.RUNTIMES)}")
        values["runtimes"] = tuple(names)
    for key in ("memory_budget_mb", "memory_limit_mb"):
        if key in table:
            values[key] = _positive_number(where, key, table[key])
    if "description" in table:
        if not isinstance(table["description"], str):
            raise UsageError(f"{where}: description must be a string")
        values["description"] = table["description"]
    elif base_name:
        values["description"] = ""  # the built-in's words no longer describe the changed target
    return replace(base, name=name, **values)


def load_targets_file(path) -> dict[str, Target]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"--targets-file {path}: cannot read it ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--targets-file {path}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - {"targets"})
    if unknown or not isinstance(data.get("targets"), dict) or not data["targets"]:
        raise UsageError(f"--targets-file {path}: expected [targets.NAME] tables only"
                         + (f", found {unknown[0]!r}" if unknown else ""))
    out = {}
    for name, table in data["targets"].items():
        where = f"{path}: target {name!r}"
        if name in BUILTIN:
            raise UsageError(f"{where} has a built-in target's name; pick another and use base = {name!r}")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"{where}: names may hold letters, digits, '-' and '_' only")
        out[name] = _target_from_table(name, table, where)
    return out


def parse_runtimes(spec: str | None) -> tuple[str, ...] | None:
    """bench --runtimes: the runtimes to measure, checked against the registry; None: every one."""
    if spec is None:
        return None
    names = split_list(spec, "--runtimes")
    unknown = [n for n in names if n not in runtimes.RUNTIMES]
    if unknown:
        raise UsageError(f"--runtimes: unknown runtime {unknown[0]!r}; runtimes: {', '.join(runtimes.RUNTIMES)}")
    return tuple(names)


def parse_targets(spec: str, targets_file=None) -> list[Target]:
    known = {**BUILTIN, **(load_targets_file(targets_file) if targets_file else {})}
    names = split_list(spec, "--target")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown target {unknown[0]!r}; known targets: {', '.join(known)}"
                         + ("" if targets_file else " (add your own with --targets-file)"))
    return [known[n] for n in names]


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "XNNPACK_NUM_THREADS")


def worker_env(threads: int, device: str = "cpu") -> dict:
    """Environment variables that fix thread pools before any framework in the worker starts them."""
    env = {k: str(threads) for k in THREAD_ENV}
    env["TF_NUM_INTEROP_THREADS"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU row must not touch a GPU the host may have
    return env
