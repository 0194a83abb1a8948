"""Where deploycmp's time goes, written down when asked: with DEPLOYCMP_TIMELINE=FILE in the environment, every
command and every worker job (an export, a measured row) appends one JSON line to FILE when it ends, so that
benchmarks/where_time_goes.py can add up a run, or a whole test suite, by phase. Without the variable nothing is
written. Lines are appended with one write each (O_APPEND), so processes running side by side do not mix them."""
from __future__ import annotations

import functools
import json
import os
import time

VARIABLE = "DEPLOYCMP_TIMELINE"


def record(kind: str, seconds: float, **details) -> None:
    """Append {kind, seconds, pid, at, **details} to the timeline file, if one is set."""
    path = os.environ.get(VARIABLE)
    if not path:
        return
    line = json.dumps({"kind": kind, "seconds": round(seconds, 4), "pid": os.getpid(), "at": round(time.time(), 3),
                       **details}, default=str) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:  # a measurement aid: never the reason a command fails
        pass


def step(name: str):
    """Decorator: record how long each call of the function took, as the command step `name`."""
    def wrap(fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                record("step", time.monotonic() - start, step=name)
        return timed
    return wrap
