"""A worker's log: its stdout and stderr read from a pipe into a file that keeps the first and the last bytes (a job
that prints without end cannot fill the disk), with a line saying how much was left out between them."""
from __future__ import annotations

import fcntl
import os
import select
import threading
from pathlib import Path

# what a job's log keeps of its output: the first and the last bytes (env DEPLOYCMP_LOG_HEAD_BYTES, _TAIL_BYTES)
LOG_HEAD_BYTES = 1 << 20
LOG_TAIL_BYTES = 1 << 20
# how long the log waits for the end of a job's output once its process group is killed (a process that left the
# group may still hold the pipe)
LOG_GRACE_S = 5.0


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


def size_text(n: float) -> str:
    """Bytes for people: 512 bytes, 1 MB, 1.5 GB (binary units, as the rows' *_mb figures)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{int(n)} bytes"
        n /= 1024
    return ""  # not reached


def log_note(outcome, log: str | Path) -> str | None:
    """A warning for a job whose output its log did not keep whole (None for one whose log holds it all)."""
    if not getattr(outcome, "log_dropped_bytes", 0):
        return None
    head = int(_env_number("DEPLOYCMP_LOG_HEAD_BYTES", LOG_HEAD_BYTES))
    tail = int(_env_number("DEPLOYCMP_LOG_TAIL_BYTES", LOG_TAIL_BYTES))
    kept = (f"its first and last {size_text(head)}" if head == tail else
            f"its first {size_text(head)} and its last {size_text(tail)}")
    return f"the worker wrote {size_text(outcome.log_bytes)} to its log; kept {kept} ({log})"


def _open_new(path: Path):
    """`path` as a new, empty regular file: whatever was there goes first (a symbolic link itself, never the file it
    points to, which a received run directory's logs/ROW.log may be), and the open follows no link."""
    path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o666)
    return os.fdopen(fd, "wb", buffering=0)


class CappedLog:
    """A job's stdout and stderr into its log file, read from a pipe by a thread: the first `head` bytes go straight
    to the file, the last `tail` bytes are kept in memory and written after a line saying how many bytes in between
    were left out. `close()` waits for the end of the pipe (every process holding it gone) for up to LOG_GRACE_S."""

    def __init__(self, path: Path, head: int | None = None, tail: int | None = None):
        head = int(_env_number("DEPLOYCMP_LOG_HEAD_BYTES", LOG_HEAD_BYTES)) if head is None else head
        tail = int(_env_number("DEPLOYCMP_LOG_TAIL_BYTES", LOG_TAIL_BYTES)) if tail is None else tail
        self.path, self.head, self.tail = Path(path), max(0, head), max(0, tail)
        self.total = self.written = self.dropped = 0
        self.file = _open_new(self.path)  # the head is in the file as it comes
        self.read_fd, self.write_fd = os.pipe()
        try:  # a larger pipe: fewer wake-ups for a chatty job (the default, 64 KiB, where the kernel refuses)
            fcntl.fcntl(self.write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except OSError:
            pass
        self.ends_line = True  # whether what the file holds ends with a newline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"log {self.path.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        kept = bytearray()  # the tail, once the head is full
        poll = select.poll()
        poll.register(self.read_fd, select.POLLIN)
        try:
            while not self._stop.is_set():  # until the pipe's end, or close() gives up on it
                if not poll.poll(250):
                    continue
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    break
                self.total += len(chunk)
                if self.written < self.head:
                    part = chunk[:self.head - self.written]
                    self._write(part)
                    self.written += len(part)
                    self.ends_line = part.endswith(b"\n")
                    chunk = chunk[len(part):]
                if chunk:
                    kept += chunk
                    if len(kept) > 2 * self.tail + (1 << 20):  # trim now and then, not on every read
                        self.dropped += len(kept) - self.tail
                        del kept[:len(kept) - self.tail]
            self._finish(kept)
        finally:
            os.close(self.read_fd)
            if self.file is not None:
                self.file.close()

    def _finish(self, kept: bytearray) -> None:
        if len(kept) > self.tail:
            self.dropped += len(kept) - self.tail
            del kept[:len(kept) - self.tail]
        if self.dropped:
            cut = kept.find(b"\n")  # the tail starts at the beginning of a line where it can
            if 0 <= cut < len(kept) - 1:
                self.dropped += cut + 1
                del kept[:cut + 1]
        elif not kept:
            return
        if self.dropped:
            self._write(b"" if self.ends_line else b"\n")
            self._write(f"[deploycmp: {self.dropped:,} bytes ({size_text(self.dropped)}) of this job's output left "
                            f"out here; the log keeps its first {size_text(self.head)} and its last "
                            f"{size_text(self.tail)}]\n".encode())
        self._write(kept)

    def _write(self, data: bytes) -> None:
        if self.file is not None:
            try:
                self.file.write(data)
            except OSError:  # a full disk: the pipe is still read to its end, so the job never blocks on it
                self.file.close()
                self.file = None

    def close(self) -> None:
        """After the job's process group is gone: the tail and the marker line written, the file closed."""
        self._thread.join(LOG_GRACE_S)
        if self._thread.is_alive():  # a process outside the group holds the pipe: keep what was read so far
            self._stop.set()
            self._thread.join()
