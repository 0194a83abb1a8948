"""Issue 25, untrusted input: a worker whose model prints without end or allocates more memory than the machine has.
Its log keeps the first and the last of what it wrote (LOG_HEAD_BYTES, LOG_TAIL_BYTES) with a line saying how much
was left out; its process group is killed past its memory limit and the job is `out_of_memory`. The workers here are
tiny modules written under tmp_path and run by run_isolated itself, as bench runs deploycmp.measure.row_worker."""
import contextlib
import json
import os
import signal
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from deploycmp.core import isolation, worker_log, worker_memory
from deploycmp.core.errors import Interrupted
from deploycmp.core.isolation import Outcome, run_isolated
from tests.conftest import FAST, TINY, deploycmp
from tests.test_bad_input_corpus import cli, refused

MB = 1 << 20


def _worker(tmp_path: Path, name: str, body: str) -> tuple[str, dict]:
    """A worker module `name` whose job(spec) is `body` (indented by the caller's dedent), and the environment that
    finds it; the environment carries a tag that marks every process the job starts."""
    folder = tmp_path / "workers"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(
        "import os, sys, time\nfrom deploycmp.core.child import child_main\n\n\ndef job(spec):\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "\n\nif __name__ == '__main__':\n    child_main(job)\n")
    path = os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
    return name, {"PYTHONPATH": path, "DEPLOYCMP_TEST_TAG": f"workers-{uuid.uuid4()}"}


def _tagged(tag: str) -> list[int]:
    """Live processes (not zombies) whose environment carries `tag`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if tag.encode() in (proc / "environ").read_bytes() and "\nState:\tZ" not in (proc / "status").read_text():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _gone(tag: str, within: float = 3.0) -> bool:
    end = time.monotonic() + within
    while _tagged(tag):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


CHATTY = """
line = "x" * 99 + "\\n"
print("the first line")
for i in range(spec["lines"]):
    sys.stdout.write(line)
sys.stdout.flush()
print("and on stderr", file=sys.stderr, flush=True)
print("the last line", flush=True)
return {"lines": spec["lines"]}
"""


def test_a_worker_that_floods_its_log_keeps_its_head_and_tail(tmp_path):
    module, env = _worker(tmp_path, "chatty", CHATTY)
    log = tmp_path / "logs" / "row.log"
    start = time.monotonic()
    outcome = run_isolated(module, {"lines": 300_000}, 60, log, env=env)  # 30 MB
    assert outcome.status == "ok" and outcome.result == {"lines": 300_000}, outcome
    assert time.monotonic() - start < 10
    data = log.read_bytes()
    assert 2 * MB - 200 <= len(data) <= 2 * MB + 300, len(data)
    assert outcome.log_bytes == 300_000 * 100 + len("the first line\nand on stderr\nthe last line\n")
    text = data.decode()
    assert text.startswith("the first line\n")
    markers = [ln for ln in text.splitlines() if ln.startswith("[deploycmp: ")]
    assert len(markers) == 1, markers
    dropped = outcome.log_dropped_bytes
    assert f"[deploycmp: {dropped:,} bytes (" in markers[0] and "first 1 MB and its last 1 MB" in markers[0]
    head, rest = data[:MB], data[MB:].decode()
    assert not head.endswith(b"\n") and rest.startswith("\n" + markers[0] + "\n")  # the head ended inside a line
    tail = rest[len(markers[0]) + 2:]
    assert outcome.log_bytes - dropped == len(head) + len(tail)  # what was kept
    assert tail.startswith("x" * 99 + "\n") and len(tail) <= MB  # the tail starts at a line's beginning
    assert tail.endswith("and on stderr\nthe last line\n")
    assert isolation._last_line(log) == "the last line" and isolation.diagnosis(log) == []
    note = worker_log.log_note(outcome, "logs/row.log")
    assert note == "the worker wrote 28.6 MB to its log; kept its first and last 1 MB (logs/row.log)", note
    assert _gone(env["DEPLOYCMP_TEST_TAG"])


def test_a_row_whose_worker_flooded_its_log_says_so(tmp_path):
    """measure_row.finish_row turns the outcome's dropped bytes into a warning of the row (a failed outcome: no timings)."""
    from deploycmp.measure.row import finish_row
    from deploycmp.measure.targets import Target

    row = {"id": "m-onnx-none-onnxruntime-server-cpu-b1", "warnings": [], "_target": Target("server-cpu")}
    outcome = Outcome("failed", None, "ValueError: no", 1, 1.0, log_bytes=int(1.5 * (1 << 30)),
                      log_dropped_bytes=int(1.5 * (1 << 30)) - 2 * MB)
    out = finish_row(row, None, [outcome], tmp_path, {"host": {}, "versions": {}, "command": []}, None)
    assert out["status"] == "failed"
    assert out["warnings"] == ["the worker wrote 1.5 GB to its log; kept its first and last 1 MB "
                               f"(logs/{row['id']}.log)"], out["warnings"]
    clean = finish_row({**row, "warnings": []}, None, [Outcome("failed", None, "x", 1, 1.0)], tmp_path,
                       {"host": {}, "versions": {}, "command": []}, None)
    assert clean["warnings"] == []


def test_a_normal_worker_keeps_its_whole_log(tmp_path, monkeypatch):
    module, env = _worker(tmp_path, "chatty", CHATTY)
    log = tmp_path / "row.log"
    outcome = run_isolated(module, {"lines": 20}, 60, log, env=env)
    assert outcome.status == "ok" and outcome.log_dropped_bytes == 0, outcome
    expected = "the first line\n" + ("x" * 99 + "\n") * 20 + "and on stderr\nthe last line\n"
    assert log.read_text() == expected and outcome.log_bytes == len(expected)
    assert worker_log.log_note(outcome, "logs/row.log") is None
    # between the head and head + tail: all of it, no marker
    monkeypatch.setenv("DEPLOYCMP_LOG_HEAD_BYTES", "1000")
    monkeypatch.setenv("DEPLOYCMP_LOG_TAIL_BYTES", "1500")
    outcome = run_isolated(module, {"lines": 20}, 60, log, env=env)
    assert outcome.status == "ok" and outcome.log_dropped_bytes == 0 and log.read_text() == expected
    # past it: the first 1000 bytes, the marker, the last 1500 from the beginning of a line
    outcome = run_isolated(module, {"lines": 40}, 60, log, env=env)
    text = log.read_text()
    head, marker, tail = text[:1000], text[1000:].split("\n")[1], text[1000:].split("\n", 2)[2]
    assert head.startswith("the first line\n") and text[1000] == "\n"  # the head ended inside a line
    dropped = outcome.log_dropped_bytes
    assert marker == (f"[deploycmp: {dropped:,} bytes ({worker_log.size_text(dropped)}) of this job's output left out "
                      "here; the log keeps its first 1000 bytes and its last 1.46 KB]"), marker
    assert outcome.log_bytes - dropped == len(head) + len(tail)
    assert tail.endswith("the last line\n") and len(tail) <= 1500 and tail.startswith("x")
    assert worker_log.log_note(outcome, "r.log").endswith("kept its first 1000 bytes and its last 1.46 KB (r.log)")


def test_a_log_that_is_a_link_is_replaced_not_followed(tmp_path):
    """A received run directory's logs/ROW.log may be a symbolic link to a user's file (~/.bashrc): the log replaces
    the link with a file of its own; the file it pointed to is left as it was."""
    module, env = _worker(tmp_path, "chatty", CHATTY)
    theirs = tmp_path / "bashrc"
    theirs.write_text("export KEEP=me\n")
    log = tmp_path / "logs" / "row.log"
    log.parent.mkdir()
    log.symlink_to(theirs)
    outcome = run_isolated(module, {"lines": 3}, 60, log, env=env)
    assert outcome.status == "ok", outcome
    assert theirs.read_text() == "export KEEP=me\n"
    assert not log.is_symlink() and log.is_file() and log.read_text().startswith("the first line\n")
    dangling = tmp_path / "logs" / "dangling.log"  # a link to nowhere: not created through it either
    dangling.symlink_to(tmp_path / "nowhere")
    assert run_isolated(module, {"lines": 1}, 60, dangling, env=env).status == "ok"
    assert not (tmp_path / "nowhere").exists() and not dangling.is_symlink() and dangling.is_file()


def test_an_interruption_says_whether_it_stopped_a_worker(tmp_path, monkeypatch):
    """Ctrl-C while a worker runs: the worker goes and the message says so; Ctrl-C while deploycmp itself is busy
    (building a model, writing the report): no worker is said to be stopped."""
    from deploycmp.cli import entry as command_line
    from deploycmp.core import lock

    monkeypatch.setattr(isolation, "_STOPPED_BY", None)
    monkeypatch.setattr(lock, "_HELD", {})  # no run directory held (an earlier test in this process held one)
    idle = Interrupted(signal.SIGINT)
    assert not isolation.stopped_a_worker(idle)
    assert command_line._interrupted(idle) == "deploycmp: interrupted by SIGINT"
    module, env = _worker(tmp_path, "sleeper", "time.sleep(60)\nreturn {}")

    def interrupt(signum, frame):
        raise Interrupted(signum)

    old = signal.signal(signal.SIGINT, interrupt)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(Interrupted) as caught:
            run_isolated(module, {}, 60, tmp_path / "s.log", env=env)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert isolation.stopped_a_worker(caught.value)
    assert command_line._interrupted(caught.value) == ("deploycmp: interrupted by SIGINT; the worker it was running is "
                                              "stopped")
    assert _gone(env["DEPLOYCMP_TEST_TAG"])
    later = Interrupted(signal.SIGTERM)  # a later interruption outside any worker
    assert command_line._interrupted(later) == "deploycmp: interrupted by SIGTERM"
    monkeypatch.setattr(isolation, "_STOPPED_BY", later)  # as if that one had stopped one
    assert command_line._interrupted(later).endswith("; the worker it was running is stopped")



def test_a_command_called_in_process_again_names_only_the_run_directory_it_held(tmp_path):
    from deploycmp.cli import entry as command_line
    from deploycmp.core.lock import held_run_dir, locked

    with locked(tmp_path / "run"):
        pass
    assert held_run_dir() == tmp_path / "run"  # held last: what an interruption reaching the CLI reports
    with pytest.raises(SystemExit):
        command_line.main(["list", "--help"])
    assert held_run_dir() is None
    assert command_line._interrupted(Interrupted(signal.SIGINT)) == "deploycmp: interrupted by SIGINT"

HOG = """
import numpy as np
keep = []
for i in range(spec["steps"]):
    keep.append(np.ones(spec["step_mb"] << 17))  # float64: step_mb MB, every page touched
    time.sleep(0.02)
return {"allocated_mb": spec["steps"] * spec["step_mb"]}
"""


def test_a_worker_past_its_memory_limit_is_killed_with_its_process_group(tmp_path):
    module, env = _worker(tmp_path, "hog", textwrap.dedent("""
        import subprocess
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a converter it started
    """) + HOG)
    start = time.monotonic()
    outcome = run_isolated(module, {"steps": 20, "step_mb": 50}, 60, tmp_path / "hog.log", env=env,
                           memory_limit_mb=200)
    assert outcome.status == "out_of_memory" and outcome.result is None, outcome
    assert time.monotonic() - start < 10
    assert outcome.error.startswith("worker used ") and outcome.error.endswith(
        "MB, over the limit of 200 MB (memory_limit_mb = 200; killed)"), outcome.error
    used = float(outcome.error.split()[2])
    assert 200 < used < 600, outcome.error
    assert _gone(env["DEPLOYCMP_TEST_TAG"]), "the worker's process group outlived its memory limit"


def test_the_default_memory_limit_is_a_fraction_of_the_available_memory(tmp_path, monkeypatch):
    available = worker_memory.available_memory()
    if available is None:
        pytest.skip("no /proc/meminfo")
    most, why = worker_memory.memory_limit()
    assert why == "90% of the memory available when it started" and 0.8 * available < most < available
    assert worker_memory.memory_limit(100) == (100 * MB, "memory_limit_mb = 100")  # the smaller wins
    assert worker_memory.memory_limit(1e12)[1] == why
    monkeypatch.setenv("DEPLOYCMP_MEMORY_FRACTION", "0")
    assert worker_memory.memory_limit() is None and worker_memory.memory_limit(100)[0] == 100 * MB
    # a fraction that leaves a worker less than Python needs to start: killed, and the row says why
    monkeypatch.setenv("DEPLOYCMP_MEMORY_FRACTION", str(2 * MB / available))
    module, env = _worker(tmp_path, "hog", HOG)
    outcome = run_isolated(module, {"steps": 4, "step_mb": 50}, 60, tmp_path / "hog.log", env=env)
    assert outcome.status == "out_of_memory", outcome
    assert "of the memory available when it started; killed)" in outcome.error, outcome.error
    assert _gone(env["DEPLOYCMP_TEST_TAG"])


@pytest.mark.parametrize("prewarmed", [False, True], ids=["fresh", "prewarmed"])
def test_a_worker_over_its_memory_limit_between_two_polls_is_out_of_memory(tmp_path, monkeypatch, prewarmed):
    """A job that goes past the limit and ends before deploycmp's poll sees it (no poll at all here) is still
    out_of_memory: the worker reads its own peak as it ends, fresh or forked from a prewarmed process."""
    from deploycmp.core import isolation, prewarm

    monkeypatch.setattr(isolation, "MEMORY_POLL_S", 120.0)
    module, env = _worker(tmp_path, "spike", "import numpy as np\nreturn {'sum': float(np.ones(40 << 17).sum())}")
    with open(tmp_path / "workers" / "spike.py", "a") as f:
        f.write("\n\ndef prewarm(arg):\n    import numpy\n")
    try:
        outcome = run_isolated(module, {}, 60, tmp_path / "spike.log", env=env, memory_limit_mb=20,
                               prewarm="numpy" if prewarmed else None)
        assert prewarm._SERVERS if prewarmed else not prewarm._SERVERS  # forked when asked
    finally:
        prewarm.close_all()
    assert outcome.status == "out_of_memory" and outcome.result is None, outcome
    assert outcome.error.startswith("worker used ") and outcome.error.endswith(
        "at its peak, over the limit of 20 MB (memory_limit_mb = 20; it ended between two polls)"), outcome.error
    within = run_isolated(module, {}, 60, tmp_path / "spike.log", env=env, memory_limit_mb=2000)
    assert within.status == "ok" and within.result == {"sum": 40 << 17}, within


def test_a_worker_within_its_memory_limit_is_untouched(tmp_path):
    module, env = _worker(tmp_path, "hog", HOG)
    outcome = run_isolated(module, {"steps": 2, "step_mb": 20}, 60, tmp_path / "hog.log", env=env,
                           memory_limit_mb=400)
    assert outcome.status == "ok" and outcome.result == {"allocated_mb": 40}, outcome


def test_a_worker_killed_by_someone_else(tmp_path):
    """SIGKILL that deploycmp did not send: the kernel's out-of-memory killer, most often; said where the kernel's
    count of such kills cannot tell (and then the row is out_of_memory where it can)."""
    module, env = _worker(tmp_path, "killed", "os.kill(os.getpid(), 9)")
    before = worker_memory.oom_kills()
    outcome = run_isolated(module, {}, 60, tmp_path / "k.log", env=env)
    if before is None:
        assert (outcome.status, outcome.error) == ("crashed", "worker killed by SIGKILL (possibly the kernel's "
                                                              "out-of-memory killer)"), outcome
    elif worker_memory.oom_kills() == before:
        assert (outcome.status, outcome.error) == ("crashed", "worker killed by SIGKILL"), outcome
    assert outcome.returncode == -signal.SIGKILL


def test_what_the_job_left_behind_goes_and_its_log_is_closed(tmp_path, monkeypatch):
    """A worker's child holding the log's pipe after the worker is done goes with the group; one outside the group
    (a new session) cannot hold run_isolated past its grace, and the log keeps what was read."""
    monkeypatch.setattr(worker_log, "LOG_GRACE_S", 1.0)
    module, env = _worker(tmp_path, "leaver", """
        import subprocess
        subprocess.Popen([sys.executable, "-c", "import time; print('child', flush=True); time.sleep(60)"])
        escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True) \\
            if spec["escape"] else None
        time.sleep(0.5)
        return {"escaped": escaped and escaped.pid}
    """)
    start = time.monotonic()
    outcome = run_isolated(module, {"escape": False}, 60, tmp_path / "l.log", env=env)
    assert outcome.status == "ok" and time.monotonic() - start < 4, outcome
    assert (tmp_path / "l.log").read_text() == "child\n"
    assert _gone(env["DEPLOYCMP_TEST_TAG"])
    start = time.monotonic()
    outcome = run_isolated(module, {"escape": True}, 60, tmp_path / "l.log", env=env)
    try:
        assert outcome.status == "ok" and 1 <= time.monotonic() - start < 4, outcome
        assert (tmp_path / "l.log").read_text() == "child\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(outcome.result["escaped"], signal.SIGKILL)


@pytest.mark.parametrize("value, shown", [("-5", "-5"), ("0", "0"), ('"lots"', "'lots'"), ("true", "True"),
                                          ("nan", "nan")])
def test_a_targets_file_with_a_bad_memory_limit_is_refused(tmp_path, value, shown):
    f = tmp_path / "targets.toml"
    f.write_text(f"[targets.small]\nmemory_limit_mb = {value}\n")
    line = refused(cli("list", "--targets-file", f), 2)
    assert line == f"deploycmp: error: {f}: target 'small': memory_limit_mb must be a positive number, not {shown}"


def test_a_targets_file_with_a_memory_limit(tmp_path):
    from deploycmp.measure.targets import parse_targets

    f = tmp_path / "targets.toml"
    f.write_text('[targets.small]\nbase = "mobile-cpu"\nmemory_limit_mb = 300\n')
    proc = cli("list", "--targets-file", f)
    assert proc.returncode == 0, proc.stderr
    assert [ln for ln in proc.stdout.splitlines() if ln.startswith("  small ")][0].split("; runs")[0].endswith(
        "memory budget 512 MB; memory limit 300 MB")
    small, server = parse_targets("small,server-cpu", f)
    assert (small.memory_limit_mb, small.memory_budget_mb, server.memory_limit_mb) == (300.0, 512.0, None)


def test_a_target_memory_limit_makes_rows_out_of_memory(tmp_path):
    """End to end: a target whose memory_limit_mb no worker can keep (a Python with torch imported holds more):
    every measured row is out_of_memory with the limit named, bench exits 1, and report still works."""
    out = tmp_path / "run"
    assert deploycmp("export", *TINY, "--formats", "onnx", "--out", out).returncode == 0
    targets = tmp_path / "targets.toml"
    targets.write_text('[targets.tiny-box]\nbase = "server-cpu"\nmemory_limit_mb = 60\n')
    proc = deploycmp("bench", out, "--targets-file", targets, "--target", "tiny-box", "--runtimes",
                     "torch,onnxruntime", *FAST)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows and {r["status"] for r in rows} == {"out_of_memory"}, [(r["id"], r["status"], r["error"]) for r in rows]
    assert all("over the limit of 60 MB" in r["error"] for r in rows)
    assert deploycmp("report", out, "--format", "md").returncode == 0
