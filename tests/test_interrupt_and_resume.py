"""Stop when asked, leave no process behind, pick up where it stopped; one deploycmp per run directory; the export
cache; failures that quote the native library's own words."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import FAST, REPO, TINY, deploycmp, rows_by_id

RUN = [*TINY, "--formats", "torchscript,torch-export,onnx", "--quantize", "none,int8", "--no-cache", *FAST]


def _tagged(tag: str) -> list[str]:
    """Live processes whose environment carries `tag` (deploycmp and everything it started), as 'pid cmdline'."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if tag.encode() not in (proc / "environ").read_bytes():
                continue
            if "\nState:\tZ" in (proc / "status").read_text():  # a zombie runs nothing
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name} {cmdline[:120]}")
        except OSError:
            continue
    return found


def _start(args, tag: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "deploycmp.cli", *map(str, args)], cwd=REPO, stdout=f,
                                stderr=subprocess.STDOUT, env={**os.environ, "DEPLOYCMP_TEST_TAG": tag})


def _wait_for(condition, what: str, timeout: float = 300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _signal_and_wait(proc: subprocess.Popen, sig: int) -> tuple[int, float]:
    start = time.monotonic()
    proc.send_signal(sig)
    rc = proc.wait(timeout=30)
    return rc, time.monotonic() - start


def _worker_running(tag: str, module: str) -> bool:
    return any(module in p for p in _tagged(tag))


def test_sigint_during_export_and_bench_then_the_same_command_finishes(tmp_path):
    out, tag = tmp_path / "run", f"interrupt-{uuid.uuid4()}"
    # 1. Ctrl-C while the second export's worker runs
    proc = _start(["run", *RUN, "--out", out], tag, tmp_path / "1.log")
    _wait_for(lambda: (out / "artifacts" / "torchscript-none.json").is_file() and
              _worker_running(tag, "deploycmp.export.export_worker"), "the second export")
    rc, seconds = _signal_and_wait(proc, signal.SIGINT)
    said = (tmp_path / "1.log").read_text()
    assert rc == 130 and seconds < 5, (rc, seconds, said)
    time.sleep(0.5)
    assert _tagged(tag) == [], "a worker outlived deploycmp"
    assert "Traceback" not in said and "run the same command again" in said, said
    assert not (out / "manifest.json").exists()  # an unfinished export never looks complete
    kept = sorted(p.stem for p in (out / "artifacts").glob("*.json"))
    assert "torchscript-none" in kept

    # 2. the same command goes on; Ctrl-C again while a row is being measured
    proc = _start(["run", *RUN, "--out", out], tag, tmp_path / "2.log")
    _wait_for(lambda: len(list((out / "results").glob("*.json"))) >= 1 and _worker_running(tag, "deploycmp.measure.row_worker"),
              "a row being measured")
    rc, seconds = _signal_and_wait(proc, signal.SIGINT)
    said = (tmp_path / "2.log").read_text()
    assert rc == 130 and seconds < 5, (rc, seconds, said)
    time.sleep(0.5)
    assert _tagged(tag) == []
    assert "kept from this run directory" in said, said
    measured = {p.name for p in (out / "results").glob("*.json")}
    assert measured and all(json.loads((out / "results" / n).read_text())["status"] for n in measured)

    # 3. and finishes, keeping what was done
    done = deploycmp("run", *RUN, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "kept from this run directory" in done.stderr and "measured before with the same" in done.stderr, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reuse"]["run directory"] >= len(kept) - 1
    rows = rows_by_id(out)
    assert {r["status"] for r in rows.values()} <= {"ok", "unavailable"} and len(rows) >= 4


def test_sigterm_exits_143(tmp_path):
    out, tag = tmp_path / "run", f"interrupt-{uuid.uuid4()}"
    proc = _start(["export", *TINY, "--formats", "onnx", "--no-cache", "--out", out], tag, tmp_path / "log")
    _wait_for(lambda: _worker_running(tag, "deploycmp.export.export_worker"), "the export worker")
    rc, seconds = _signal_and_wait(proc, signal.SIGTERM)
    assert rc == 143 and seconds < 5
    time.sleep(0.5)
    assert _tagged(tag) == []
    assert not (out / "artifacts" / "onnx-none").exists()  # the half-made artifact went with its worker


def test_sigkill_of_deploycmp_takes_its_workers_and_their_converters(tmp_path):
    """deploycmp killed outright (SIGKILL, the OOM killer) cannot clean up: its worker and the converter the worker
    started (onnx2tf, for a SavedModel from PyTorch) must go by themselves."""
    out, tag = tmp_path / "run", f"kill-{uuid.uuid4()}"
    proc = _start(["export", *TINY, "--formats", "savedmodel", "--no-cache", "--out", out], tag, tmp_path / "log")
    _wait_for(lambda: _worker_running(tag, "onnx2tf"), "the onnx2tf converter", timeout=600)
    proc.kill()
    proc.wait()
    _wait_for(lambda: _tagged(tag) == [], "every process deploycmp started to end", timeout=5)
    from deploycmp.core.lock import locked

    with locked(out):  # and a dead deploycmp holds no lock
        pass


def test_a_second_deploycmp_on_the_same_run_directory_is_refused(tiny_run):
    from deploycmp.core.lock import locked

    with locked(tiny_run):
        proc = deploycmp("bench", tiny_run, *FAST)
    assert proc.returncode == 2 and "in use by another deploycmp" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_refuses_another_model_data_or_versions(tmp_path):
    out = tmp_path / "run"
    assert deploycmp("export", *TINY, "--formats", "onnx", "--out", out).returncode == 0
    for args, needle in ((["--model", "tests.tiny_models:misbehaving", *TINY[2:]], "another model"),
                         ([*TINY, "--samples", "4"], "another --samples")):
        proc = deploycmp("export", *args, "--formats", "onnx", "--out", out)
        assert proc.returncode == 2 and needle in proc.stderr and "--force" in proc.stderr, proc.stderr
    identity = json.loads((out / "identity.json").read_text())
    identity["versions"]["torch"] = "0.0.1"
    (out / "identity.json").write_text(json.dumps(identity))
    proc = deploycmp("export", *TINY, "--formats", "onnx", "--out", out)
    assert proc.returncode == 2 and "framework versions (torch changed)" in proc.stderr, proc.stderr
    # the same run with more formats is a resume: the ONNX export is kept
    proc = deploycmp("export", *TINY, "--formats", "onnx,torchscript", "--out", out, "--force")
    assert proc.returncode == 0
    proc = deploycmp("export", *TINY, "--formats", "onnx,torchscript,torch-export", "--out", out)
    assert proc.returncode == 0 and "2 kept from this run directory" in proc.stderr, proc.stderr


def test_export_cache_serves_a_new_run_directory_and_drops_a_damaged_entry(tmp_path):
    cache, args = tmp_path / "cache", [*TINY, "--formats", "onnx,torchscript"]
    first = deploycmp("export", *args, "--out", tmp_path / "a", "--cache", cache)
    assert first.returncode == 0 and "copied from the export cache" not in first.stderr
    second = deploycmp("export", *args, "--out", tmp_path / "b", "--cache", cache)
    assert second.returncode == 0 and "2 copied from the export cache" in second.stderr, second.stderr
    made = [a for a in json.loads((tmp_path / "b" / "manifest.json").read_text())["artifacts"] if a["status"] == "ok"]
    assert {a.get("reused") for a in made[1:]} == {"cache"}
    assert not list((tmp_path / "b" / "logs").glob("export-*.log"))  # nothing was exported
    a = {x["id"]: x for x in json.loads((tmp_path / "a" / "manifest.json").read_text())["artifacts"]}
    assert [f["sha256"] for f in made[1]["files"]] == [f["sha256"] for f in a[made[1]["id"]]["files"]]
    # a damaged cache entry is not used: that artifact is exported again
    entry = next(p for p in (cache / "exports").iterdir() if "onnx-none" in (p / "entry.json").read_text())
    next((entry / "files").rglob("*.onnx")).write_bytes(b"damaged")
    third = deploycmp("export", *args, "--out", tmp_path / "c", "--cache", cache)
    assert third.returncode == 0 and "1 copied from the export cache" in third.stderr, third.stderr
    assert (tmp_path / "c" / "logs" / "export-onnx-none.log").is_file()
    # --no-cache exports everything
    fourth = deploycmp("export", *args, "--out", tmp_path / "d", "--no-cache")
    assert fourth.returncode == 0 and "copied" not in fourth.stderr


def test_a_failed_row_quotes_the_native_library(tmp_path):
    out = tmp_path / "run"
    misbehaving = ["--model", "tests.tiny_models:misbehaving", "--input-shape", "1,3,16,16", "--samples", "4"]
    assert deploycmp("export", *misbehaving, "--formats", "onnx", "--out", out).returncode == 0
    proc = deploycmp("bench", out, *FAST, env={"DEPLOYCMP_TEST_MISBEHAVE": "native-error"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    row = rows_by_id(out)["eager-none-torch-server-cpu-b1"]
    assert row["error"].startswith("RuntimeError: Failed to load method forward, error: 0x:1")
    assert "XNNCompiler.cpp:412] Failed to create StaticConstantPad node 178" in row["error"]
    assert row["log"] == "logs/eager-none-torch-server-cpu-b1.log" and len(row["diagnosis"]) == 1
    assert "xnn_status_invalid_parameter" in proc.stderr and "full log:" in proc.stderr


def test_diagnosis_prefers_native_lines_and_skips_the_python_traceback(tmp_path):
    from deploycmp.core.isolation import Outcome, diagnosis

    # the log of swin_t's ExecuTorch int8 row on this x86 machine (deploycmp run --model swin_t --formats executorch
    # --quantize int8), with TensorFlow's usual start-up line added: the XNNPACK line is the answer
    log = tmp_path / "w.log"
    log.write_text("\n".join([
        "E0000 00:00:1 cuda_executor.cc:1309] failed call to cuInit: INTERNAL: CUDA error: UNKNOWN ERROR (303)",
        "W1126 11:49:03.669000 19078 torch/utils/_pytree.py:630] <enum 'KernelPreference'> is an Enum subclass ... "
        "Calling register_constant() on Enum subclasses is deprecated and will be an error in a future release.",
        "[cpuinfo_utils.cpp:87] Failed to open midr file /sys/devices/soc0/image_version",
        "[cpuinfo_utils.cpp:125] CPU info and manual query on # of cpus dont match.",
        "[threadpool.cpp:66] Resetting threadpool to 2 threads.",
        "error: a Python-side error line",
        "[XNNCompiler.cpp:1262] Failed to create StaticConstantPad node 178 with code: xnn_status_invalid_parameter",
        "[XNNPACKBackend.cpp:143] XNNCompiler::compileModel failed: 0x1",
        "[method.cpp:128] Init failed for backend XnnpackBackend: 0x1",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "    raise RuntimeError('Failed to load method forward, error: 0x:1')",
        "RuntimeError: Failed to load method forward, error: 0x:1",
    ]))
    error = "RuntimeError: Failed to load method forward, error: 0x:1"
    found = diagnosis(log, error)
    assert found == ["[XNNCompiler.cpp:1262] Failed to create StaticConstantPad node 178 with code: "
                     "xnn_status_invalid_parameter", "[XNNPACKBackend.cpp:143] XNNCompiler::compileModel failed: 0x1",
                     "[method.cpp:128] Init failed for backend XnnpackBackend: 0x1"]
    assert Outcome("failed", None, error, 1, 0.0, found).error == f"{error} (log: {found[0]})"
    log.write_text("W1126 1 _pytree.py:630] register_constant() is deprecated and will be an error\n"
                   "error: only a plain line\nTraceback (most recent call last):\n  File 'x'\nValueError: bad\n")
    assert diagnosis(log, "ValueError: bad") == ["error: only a plain line"]
    assert diagnosis(tmp_path / "missing.log") == []
    # a library that logs its own traceback as a warning (torch.export loading a program whose outputs are a
    # transformers ModelOutput): its exception line is the answer, the latest line first, glog's prefix cut
    log.write_text("W1126 11:51:08.251000 19443 torch/export/__init__.py:403] Ran into the following error when "
                   "deserializing\nW1126 11:51:08.251000 19443 torch/export/__init__.py:403] NotImplementedError: "
                   "Deserializing SequenceClassifierOutput in pytree is not registered.\nTraceback (most recent call "
                   "last):\n  File 'x'\nRuntimeError: We ran into an error when deserializing the saved file.\n")
    assert diagnosis(log, "RuntimeError: We ran into an error when deserializing the saved file.") == [
        "__init__.py:403] NotImplementedError: Deserializing SequenceClassifierOutput in pytree is not registered.",
        "__init__.py:403] Ran into the following error when deserializing"]
