"""Run one job (an export, a measured row) in a fresh Python process with a timeout and its own log.

The child reads a JSON spec and writes a JSON result; a raise, a segfault or a hang there spoils only its job.
The child lives in its own process group, which goes when its job does: after a timeout, when deploycmp is
interrupted (the exception unwinds through run_isolated, which kills the group), and when deploycmp itself dies
(a watchdog forked into the group reads a pipe whose other end only deploycmp holds: end of file kills the group,
the converters a worker started included).

A job's input is not trusted to behave: its output goes through a pipe that deploycmp reads into a capped log
(worker_log: the first and the last bytes kept, so a model that prints 50 MB per call cannot fill the disk); and
deploycmp polls the resident memory of the job's process group and kills the group past a limit (worker_memory: a
fraction of the memory available when the job started, or less if asked), so a model that allocates more than the
machine has ends as `out_of_memory` instead of swapping the machine to a halt or calling the kernel's out-of-memory
killer onto other processes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from deploycmp.core import timeline
from deploycmp.core.worker_log import CappedLog, size_text
from deploycmp.core.worker_memory import MEMORY_POLL_S, GroupMemory, oom_kills, memory_limit

# the interruption (SIGINT, SIGTERM) that last unwound through run_isolated while its worker ran, and so stopped it
_STOPPED_BY: BaseException | None = None
# set while jobs waited on in other threads (exports side by side) must stop: the main thread was interrupted
_STOP_ALL = threading.Event()


class Stopped(Exception):
    """A job stopped because another thread's run_isolated was interrupted (stop_all)."""


def stop_all(stop: bool = True, because: BaseException | None = None) -> None:
    """Kill every job run_isolated is waiting on in any thread (stop=False: let new ones run again); `because`: the
    interruption that stops them (stopped_a_worker(because) is then true)."""
    global _STOPPED_BY
    (_STOP_ALL.set if stop else _STOP_ALL.clear)()
    if because is not None:
        _STOPPED_BY = because


@dataclass
class Outcome:
    status: str  # ok | failed | crashed | timeout | out_of_memory | unavailable
    result: dict | None
    error: str | None
    returncode: int | None
    seconds: float
    diagnosis: list | None = None  # the telling lines of the native libraries' own log, for a job that failed
    log_bytes: int = 0             # what the job wrote to stdout and stderr
    log_dropped_bytes: int = 0     # what of that its log left out (all but the first and last bytes)

    def __post_init__(self):
        if self.diagnosis:  # the one most telling line goes with the error wherever it is shown
            self.error = f"{self.error} (log: {self.diagnosis[0]})"


def _last_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in Path(log_path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


# lines of a worker's log that a library wrote about a failure (glog E/F lines, C++ file:line, "Failed to", a
# logged exception such as NotImplementedError: ...)
_TELLING = re.compile(r"\b(error|fatal|failed|failure|abort(ed)?|invalid|unsupported|not supported|cannot|"
                      r"segmentation fault|out of memory)\b|[a-z](Error|Exception):", re.I)
_NATIVE = re.compile(r"^[EF]\d{4} |\.(cc|cpp|cxx|c|h|hpp):\d+|\b[A-Z][A-Za-z]+\.(cc|cpp)\b|\bxnn_status_|^\[?(E|F|ERROR|FATAL)\]? ")
# never the reason: what TensorFlow and CUDA print on every start of a machine without a GPU, what ExecuTorch's
# cpuinfo prints on every load on x86 (it looks for ARM's MIDR registers), deprecation notices
_NOISE = re.compile(r"cuInit|cuda_diagnostics|Unable to register cu|computation_placer|TF-TRT Warning|cuda drivers|"
                    r"midr file|CPU info and manual query|deprecat", re.I)
_GLOG = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ (?:\S*/)?(\S+:\d+\]) ")  # W1126 11:49:03.6 19078 dir/file.py:630] ...


def diagnosis(log_path: Path, error: str | None = None, most: int = 3) -> list[str]:
    """The most telling lines of a failed job's log, the most telling first: the last native error lines (the
    chain that led to the failure, in order: its first line is usually the cause, the later ones consequences),
    else the last other error lines, latest first. The worker's own Python traceback is left out (`error` sums it
    up); glog's time and thread prefix is cut to the file and line."""
    try:
        lines = Path(log_path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    found, native, in_traceback = [], [], False
    for line in lines:
        text = line.strip()
        if text.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback:
            if line.startswith((" ", "\t")) or not text or text.startswith(("During handling", "The above exception")):
                continue
            in_traceback = False  # the exception's own line ends the traceback: it is `error` already
            continue
        if not text or not _TELLING.search(text) or _NOISE.search(text) or (error and text in error):
            continue
        short = _GLOG.sub(r"\1 ", text)[:300]
        if short not in found:
            found.append(short)
            if _NATIVE.search(text):
                native.append(short)
    return native[-most:] if native else found[-most:][::-1]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_isolated(module: str, spec: dict, timeout: float, log_path: Path, env: dict | None = None,
                 memory_limit_mb: float | None = None, prewarm: str | None = None) -> Outcome:
    """Run `python -m module SPEC RESULT` in a new session (so a timeout or an interruption kills its whole
    process group). Its output goes to `log_path`, capped (LOG_HEAD_BYTES and LOG_TAIL_BYTES kept); its process
    group is killed past `memory_limit(memory_limit_mb)` and the job is then `out_of_memory`. `prewarm`: the job is
    forked from a process that ran `module.prewarm(prewarm)` under the same environment and CPUs (core.prewarm),
    where one can be, instead of started as a new Python."""
    server, job = None, spec if isinstance(spec, dict) else {}
    if prewarm is not None:
        from deploycmp.core import prewarm as warm

        server = warm.server_for(module, prewarm, env or {}, job.get("cpus"), log_path, timeout)
    outcome = _run(module, spec, timeout, log_path, env, memory_limit_mb, server)
    result = outcome.result if isinstance(outcome.result, dict) else {}
    timeline.record("worker", outcome.seconds, module=module.rsplit(".", 1)[-1], status=outcome.status,
                    what=" ".join(str(v) for v in ((job.get("artifact") or {}).get("id"), job.get("format"),
                                                    job.get("quantization"), job.get("runtime"), job.get("job"),
                                                    job.get("threads")) if v is not None),
                    phases=(result.get("timing") or {}).get("phases_s"), export_s=result.get("export_seconds"))
    return outcome


def _run(module: str, spec: dict, timeout: float, log_path: Path, env: dict | None,
         memory_limit_mb: float | None, server) -> Outcome:
    global _STOPPED_BY
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    limit = memory_limit(memory_limit_mb)
    oom_before = oom_kills()
    over = None  # (bytes used, the limit) when deploycmp killed the job for its memory
    with tempfile.TemporaryDirectory(prefix="deploycmp-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec, default=str))
        child_env = {**os.environ, **(env or {})}
        child_env["DEPLOYCMP_SPAWN_T"] = repr(time.monotonic())
        log = CappedLog(log_path)  # a new file: an old log, or a link in its place, goes first
        alive_r, alive_w = os.pipe()  # deploycmp holds the write end for as long as the worker may live
        child_env["DEPLOYCMP_ALIVE_FD"] = str(alive_r)
        job_env = {"DEPLOYCMP_MEMORY_LIMIT": str(limit[0])} if limit else {}  # its own peak is checked as it ends
        child_env.update(job_env)
        start = time.monotonic()
        proc = None
        try:
            try:
                try:
                    if server is not None:
                        try:
                            proc = server.start(spec_path, result_path, log.write_fd, alive_r, job_env)
                        except OSError:  # the prewarmed process is gone: this job starts fresh
                            server = None
                    if server is None:
                        proc = subprocess.Popen([sys.executable, "-m", module, str(spec_path), str(result_path)],
                                                stdout=log.write_fd, stderr=log.write_fd, stdin=subprocess.DEVNULL,
                                                env=child_env, start_new_session=True, pass_fds=(alive_r,))
                finally:
                    os.close(alive_r)
                    os.close(log.write_fd)  # the job's processes hold the pipe now; its end comes when they are gone
                group, deadline = GroupMemory(proc.pid), start + timeout
                while True:
                    try:
                        rc = proc.wait(timeout=max(0.0, min(MEMORY_POLL_S, deadline - time.monotonic())))
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if _STOP_ALL.is_set():
                        raise Stopped("stopped with the other jobs")
                    if time.monotonic() >= deadline:
                        _kill_group(proc)
                        rc = "timeout"
                        break
                    used = group.rss() if limit else None
                    if used is not None and used > limit[0]:
                        _kill_group(proc)
                        rc, over = "out_of_memory", (used, limit)
                        break
            except BaseException as e:  # interrupted (SIGINT, SIGTERM): the worker and what it started go first
                if proc is not None:
                    if not isinstance(e, Stopped):
                        _STOPPED_BY = e
                    _kill_group(proc)
                raise
            finally:
                os.close(alive_w)  # the watchdog kills what the worker left behind (a converter it started)
                if proc is not None:
                    try:  # and so does deploycmp, for a job without a watchdog
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        finally:
            log.close()
        seconds = time.monotonic() - start
        result = None
        if result_path.is_file():
            try:
                result = json.loads(result_path.read_text())
            except ValueError:
                result = None
    logged = {"log_bytes": log.total, "log_dropped_bytes": log.dropped}
    if rc == "timeout":
        return Outcome("timeout", None, f"no result after {timeout:g} s (killed)", None, seconds, diagnosis(log_path),
                       **logged)
    if rc == "out_of_memory":
        (used, (most, why)) = over
        return Outcome("out_of_memory", None, f"worker used {size_text(used)}, over the limit of {size_text(most)} "
                       f"({why}; killed)", None, seconds, diagnosis(log_path), **logged)
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else f"signal {-rc}"
        error, status = f"worker killed by {name}", "crashed"
        if rc == -signal.SIGKILL:  # not by deploycmp: the kernel's out-of-memory killer, most often
            oom_after = oom_kills()
            if oom_before is None or oom_after is None:
                error += " (possibly the kernel's out-of-memory killer)"
            elif oom_after > oom_before:
                error += " (the kernel's out-of-memory killer, most likely: it killed a process while the job ran)"
                status = "out_of_memory"
        return Outcome(status, None, error, rc, seconds, diagnosis(log_path), **logged)
    if limit and result and "out_of_memory" in result:
        return Outcome("out_of_memory", None, f"worker used {size_text(result['out_of_memory'])} at its peak, over the "
                       f"limit of {size_text(limit[0])} ({limit[1]}; it ended between two polls)", rc, seconds,
                       diagnosis(log_path), **logged)
    if rc == 0 and result is not None and "error" not in result:
        return Outcome("ok", result, None, rc, seconds, **logged)
    if result and "unavailable" in result:
        return Outcome("unavailable", None, result["unavailable"], rc, seconds, **logged)
    error = (result or {}).get("error") or _last_line(log_path) or f"worker exited with status {rc}"
    return Outcome("failed", result, error, rc, seconds, diagnosis(log_path, error), **logged)


def stopped_a_worker(e: BaseException) -> bool:
    """Whether the interruption `e` stopped a running worker on its way up (not one that came while deploycmp
    itself was busy, building a model or writing the report)."""
    return _STOPPED_BY is e
