"""Prewarmed workers: a job forked from a process that has imported its frameworks already, instead of a new Python
that imports them again (torch takes 1-2 s, TensorFlow 4-5 s, ExecuTorch's runtime 4 s, for every row).

A prewarmed process is started fresh, exactly as a worker would be: the job's environment (thread variables), its
CPU affinity set before anything is imported, then the worker module's `prewarm(arg)` imports what the job's import
phase imports, timed from the process's start: that is the import part of each forked job's cold start. It is used
only when those imports left the process with no thread but its own and OpenBLAS's pools (which OpenBLAS stops
before a fork): a fork copies no thread, so a thread pool started at import would be missing in the child, with
whatever locks its threads held. Where that is not so (ONNX Runtime and OpenVINO start a thread at import), or the
imports fail, jobs start fresh as before.

Each job is forked on request and then is what a fresh worker is: the leader of its own process group (so a
timeout or an interruption kills its group; the session, without a terminal, is the prewarmed process's), its
stdout and stderr on its own capped log, a watchdog on deploycmp's pipe, the prewarmed process's resident library
pages mapped again (resident_file_pages) and its peak memory counted from there (VmHWM reset through
/proc/self/clear_refs), so that its memory figures are a fresh worker's. The prewarmed process waits for it and
says how it ended. A prewarmed process ends with the command's measuring (close_all), or when deploycmp does (end
of file on its socket). DEPLOYCMP_PREWARM=off starts every job fresh.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from deploycmp.core import timeline
from deploycmp.core.worker_log import CappedLog

MOST = 4            # prewarmed processes kept at once (each holds its frameworks in memory); the oldest goes first
READY_TIMEOUT_S = 180.0
_SERVERS: OrderedDict = OrderedDict()  # (key, slot) -> _Server, or None where prewarming that key was refused
_STARTING: set = set()  # the Popen of each prewarmed process started and not ready yet (close_all ends them too)
_LOCK = threading.Lock()


def enabled() -> bool:
    return os.environ.get("DEPLOYCMP_PREWARM", "on") != "off"


def forked_from() -> dict | None:
    """In a job: {"import_s", "fork_t", "from_pid"} when it was forked from a prewarmed process, else None."""
    text = os.environ.get("DEPLOYCMP_FORKED")
    return json.loads(text) if text else None


class _Server:
    """deploycmp's side of one prewarmed process."""

    def __init__(self, module: str, arg: str, env: dict, cpus: list | None, log_path: Path, timeout: float):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {"module": module, "arg": arg, "cpus": cpus}
        child_env = {**os.environ, **env, "DEPLOYCMP_SPAWN_T": repr(time.monotonic()),
                     "DEPLOYCMP_PREWARM_FD": str(theirs.fileno())}
        self.log = CappedLog(log_path)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "deploycmp.core.prewarm", json.dumps(config)],
                                         stdout=self.log.write_fd, stderr=self.log.write_fd, stdin=subprocess.DEVNULL,
                                         env=child_env, start_new_session=True, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
            os.close(self.log.write_fd)
        self.sock, self.alive, self.busy = ours, True, threading.Lock()
        started = time.monotonic()
        _STARTING.add(self.proc)
        try:
            hello = self.recv(min(timeout, READY_TIMEOUT_S))
        except subprocess.TimeoutExpired:
            hello = {"refused": "its imports took too long"}
        except BaseException:  # interrupted while it imports (SIGINT, SIGTERM in this thread): it ends with us
            self.close()
            raise
        finally:
            _STARTING.discard(self.proc)
        self.refused = None if hello.get("ready") else (hello.get("refused") or "it ended before it was ready")
        timeline.record("prewarm", time.monotonic() - started, module=module.rsplit(".", 1)[-1], what=arg,
                        refused=self.refused)

    def recv(self, timeout: float | None) -> dict:
        """The next message; subprocess.TimeoutExpired when none came within `timeout`; {} when the process is gone."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise subprocess.TimeoutExpired("prewarmed job", timeout) from None
        except OSError:
            data = b""
        if not data:
            self.alive = False
            return {}
        return json.loads(data)

    def start(self, spec_path: Path, result_path: Path, log_fd: int, alive_fd: int, env: dict) -> "_Forked":
        """Fork one job with `env` added to its environment (OSError when the process cannot: gone, or busy with
        another thread's job); its pid comes back once it runs. The process is this job's until its wait() returns."""
        if not self.busy.acquire(blocking=False):
            raise OSError("the prewarmed process runs another job")
        try:
            request = json.dumps({"spec": str(spec_path), "result": str(result_path), "env": env}).encode()
            socket.send_fds(self.sock, [request], [log_fd, alive_fd])
            reply = self.recv(READY_TIMEOUT_S)
            if "pid" not in reply:
                raise OSError("the prewarmed process did not fork the job")
        except BaseException:
            self.alive = False
            self.busy.release()
            raise
        return _Forked(self, reply["pid"])

    def close(self) -> None:
        self.alive = False
        self.sock.close()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.log.close()


class _Forked:
    """A forked job, with what run_isolated needs of a Popen: pid, wait(timeout) -> exit code (-signal when killed)."""

    def __init__(self, server: _Server, pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            reply = self.server.recv(timeout)
            # the prewarmed process gone with its job: the job was killed with it
            self.returncode = reply.get("exit", -signal.SIGKILL)
            self.server.busy.release()
        return self.returncode


def server_for(module: str, arg: str, env: dict, cpus: list | None, log_path: Path, timeout: float) -> _Server | None:
    """The prewarmed process for jobs of `module` prewarmed with `arg` under `env` and `cpus` (started now when there
    is none); None where it refused (it writes why in its log) or prewarming is off."""
    if not enabled():
        return None
    with _LOCK:  # jobs side by side (exports) each get a process of their own: slot 0, 1 ... of the same key
        return _idle_or_new(module, arg, env, cpus, log_path, timeout)


def _idle_or_new(module: str, arg: str, env: dict, cpus: list | None, log_path: Path, timeout: float) -> _Server | None:
    base = (module, arg, tuple(sorted(env.items())), tuple(cpus or ()))
    slot = 0
    while (key := (*base, slot)) in _SERVERS:
        server = _SERVERS[key]
        if server is None:  # refused: so would any other slot be
            return None
        if not server.alive:
            server.close()
            del _SERVERS[key]
            break
        if not server.busy.locked():
            _SERVERS.move_to_end(key)
            return server
        slot += 1
    while len(_SERVERS) >= MOST:
        _, oldest = _SERVERS.popitem(last=False)
        if oldest is not None:
            oldest.close()
    name = arg + (f"-{len(cpus)}cpu" if cpus else "") + (f"-{slot + 1}" if slot else "")
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    server = _Server(module, arg, env, cpus, Path(log_path).parent / f"prewarmed-{slug}.log", timeout)
    if server.refused:
        server.close()
        _SERVERS[key] = None
        return None
    _SERVERS[key] = server
    return server


def close_all() -> None:
    """End every prewarmed process (the end of a command's measuring), those still importing too (an interrupted
    command: the thread that started one is waiting for it, and sees it end)."""
    for proc in list(_STARTING):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    while _SERVERS:
        _, server = _SERVERS.popitem()
        if server is not None:
            server.close()


# --- the prewarmed process itself ---

def resident_file_pages() -> list[tuple[int, int]]:
    """(address, bytes) of the runs of pages of readable file mappings that are resident in this process now. A fork
    copies no page-table entry of a file mapping the process never wrote to (the child would fault it in again), so
    the child's resident memory would leave out the frameworks' libraries that a fresh process counts: the child
    maps these same pages again (refault) before its peak memory starts, and then holds what a fresh process held
    after the same imports. Read from /proc/self/pagemap (bit 63: present)."""
    import numpy as np

    page, runs = os.sysconf("SC_PAGE_SIZE"), []
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or not fields[5].startswith("/") or not fields[1].startswith("r"):
                continue  # anonymous memory is copied on fork and counted; unreadable mappings are never touched
            start, end = (int(x, 16) for x in fields[0].split("-"))
            pagemap.seek(start // page * 8)
            entries = np.frombuffer(pagemap.read((end - start) // page * 8), dtype=np.uint64)
            present = (entries >> np.uint64(63)).astype(bool)
            if not present.any():
                continue
            edges = np.flatnonzero(np.diff(np.concatenate([[0], present.view(np.int8), [0]])))
            runs.extend((start + int(a) * page, int(b - a) * page) for a, b in zip(edges[::2], edges[1::2]))
    return runs


def refault(runs: list[tuple[int, int]]) -> None:
    """Map the given pages into this process again (MADV_POPULATE_READ, Linux 5.14; else a read of one byte a page)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    page = os.sysconf("SC_PAGE_SIZE")
    for address, size in runs:
        if libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(size), 22) != 0:  # 22: MADV_POPULATE_READ
            for a in range(address, address + size, page):
                ctypes.c_char.from_address(a).value


def _send(sock: socket.socket, message: dict) -> None:
    sock.send(json.dumps(message).encode())


def _run_job(sock: socket.socket, worker, request: dict, fds: list, import_s: float, resident: list) -> None:
    """In the forked child: become a fresh worker of `worker` on the given spec, log and watchdog; never returns."""
    code = 70
    try:
        fork_t = time.monotonic()
        sock.close()
        os.setpgid(0, 0)  # its own process group (the prewarmed process sets it too, before it says the pid)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log_fd, alive_fd = fds
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.environ.update(request["env"], DEPLOYCMP_ALIVE_FD=str(alive_fd))
        os.environ["DEPLOYCMP_FORKED"] = json.dumps({"import_s": import_s, "fork_t": fork_t, "from_pid": os.getppid()})
        refault(resident)
        try:  # peak memory from here on: "5" resets VmHWM to the current RSS
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        from deploycmp.core.child import child_main

        sys.argv = [worker.__file__, request["spec"], request["result"]]
        child_main(worker.job)  # exits
    finally:
        os._exit(code)


def _openblas_workers() -> int:
    """The worker threads of the OpenBLAS copies loaded (numpy's, scipy's): OpenBLAS stops its pool before a fork
    and starts it again when next needed (pthread_atfork), so these threads are safe to fork past. Read with
    threadpoolctl; 0 without it (then only a process with no thread but its own is forked from)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return 0
    return sum(max(0, int(i.get("num_threads") or 1) - 1) for i in threadpool_info() if i.get("internal_api") == "openblas")


def serve(sock: socket.socket, config: dict) -> None:
    spawn_t = float(os.environ.pop("DEPLOYCMP_SPAWN_T", time.monotonic()))
    if config.get("cpus"):
        os.sched_setaffinity(0, config["cpus"])
    try:
        worker = importlib.import_module(config["module"])
        worker.prewarm(config["arg"])
    except BaseException as e:  # the jobs start fresh and meet it there, each in its own row
        _send(sock, {"refused": f"its imports failed: {type(e).__name__}: {str(e)[:200]}"})
        return
    import_s = time.monotonic() - spawn_t
    threads, allowed = len(os.listdir("/proc/self/task")), 1 + _openblas_workers()
    if threads > allowed:
        print(f"prewarm: {config['arg']}: {threads} threads after its imports ({allowed - 1} of them OpenBLAS's); "
              "its jobs start fresh", flush=True)
        _send(sock, {"refused": f"{threads} threads after its imports"})
        return
    resident = resident_file_pages()
    _send(sock, {"ready": True, "import_s": import_s, "pid": os.getpid()})
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 2)
        except OSError:
            return
        if not data:  # deploycmp closed its end, or died
            return
        request = json.loads(data)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_job(sock, worker, request, fds, import_s, resident)
        try:
            os.setpgid(pid, pid)
        except OSError:  # the child did it first
            pass
        for fd in fds:
            os.close(fd)
        _send(sock, {"pid": pid})
        _, status = os.waitpid(pid, 0)
        try:
            _send(sock, {"exit": os.waitstatus_to_exitcode(status)})
        except OSError:
            return


if __name__ == "__main__":
    serve(socket.socket(fileno=int(os.environ.pop("DEPLOYCMP_PREWARM_FD"))), json.loads(sys.argv[1]))
