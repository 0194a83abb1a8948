"""Run one job (an export, a measured row) in a fresh Python process with a timeout and its own log.

The child reads a JSON spec and writes a JSON result; a raise, a segfault or a hang there spoils only its job.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    status: str  # ok | failed | crashed | timeout | unavailable
    result: dict | None
    error: str | None
    returncode: int | None
    seconds: float


def _last_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in Path(log_path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def run_isolated(module: str, spec: dict, timeout: float, log_path: Path, env: dict | None = None) -> Outcome:
    """Run `python -m module SPEC RESULT` in a new session (so a timeout kills its whole process group)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deploycmp-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec, default=str))
        child_env = {**os.environ, **(env or {})}
        child_env["DEPLOYCMP_SPAWN_T"] = repr(time.monotonic())
        start = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", module, str(spec_path), str(result_path)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=child_env, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return Outcome("timeout", None, f"no result after {timeout:g} s (killed)", None, time.monotonic() - start)
        seconds = time.monotonic() - start
        result = None
        if result_path.is_file():
            try:
                result = json.loads(result_path.read_text())
            except ValueError:
                result = None
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else f"signal {-rc}"
        return Outcome("crashed", None, f"worker killed by {name}", rc, seconds)
    if rc == 0 and result is not None and "error" not in result:
        return Outcome("ok", result, None, rc, seconds)
    if result and "unavailable" in result:
        return Outcome("unavailable", None, result["unavailable"], rc, seconds)
    error = (result or {}).get("error") or _last_line(log_path) or f"worker exited with status {rc}"
    return Outcome("failed", result, error, rc, seconds)


def child_main(job) -> None:
    """Entry point of a worker module: job(spec) -> result dict; an exception becomes {'error': ...}, exit 1."""
    spec_path, result_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    from deploycmp.errors import Unavailable

    try:
        result, code = job(spec), 0
    except Unavailable as e:
        result, code = {"unavailable": str(e)}, 3
    except BaseException as e:  # the parent reads the reason from the result file
        traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        result, code = {"error": f"{type(e).__name__}: {msg}"[:300]}, 1
    from deploycmp.rundir import write_json

    write_json(Path(result_path), result)
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown: some frameworks crash on exit, after the result is safe
