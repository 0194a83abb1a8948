"""A worker process's side of core.isolation: read the job's spec, run it, write its result, and die with
deploycmp (the watchdog). Every worker module ends with `child_main(job)`."""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path


def _watch_parent() -> None:
    """In a worker: fork a watchdog into the worker's process group that blocks on the read end of deploycmp's pipe.
    End of file (deploycmp died or is done with this worker) kills the whole group, what the worker started too."""
    fd = os.environ.pop("DEPLOYCMP_ALIVE_FD", None)
    if fd is None:  # run by hand, not by deploycmp
        return
    fd = int(fd)
    if os.fork() == 0:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        os.killpg(0, signal.SIGKILL)
        os._exit(0)
    os.close(fd)


def child_main(job) -> None:
    """Entry point of a worker module: job(spec) -> result dict; an exception becomes {'error': ...}, exit 1."""
    spec_path, result_path = sys.argv[1], sys.argv[2]
    _watch_parent()
    with open(spec_path) as f:
        spec = json.load(f)
    from deploycmp.core.errors import Unavailable

    limit = os.environ.pop("DEPLOYCMP_MEMORY_LIMIT", None)
    try:
        result, code = job(spec), 0
    except Unavailable as e:
        result, code = {"unavailable": str(e)}, 3
    except BaseException as e:  # the parent reads the reason from the result file
        traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        result, code = {"error": f"{type(e).__name__}: {msg}"[:300]}, 1
    from deploycmp.core.worker_memory import MB, own_memory_mb

    peak = own_memory_mb("VmHWM")
    if limit and peak is not None and peak * MB > int(limit):  # over it between two of deploycmp's polls
        result, code = {"out_of_memory": int(peak * MB)}, 1
    from deploycmp.core.rundir import write_json

    write_json(Path(result_path), result)
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: some frameworks crash on exit, after the result is safe
