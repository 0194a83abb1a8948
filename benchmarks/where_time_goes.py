"""Where the time of a `deploycmp run` (or of the whole test suite) goes: export, worker start and imports, load,
first inference, drift, warm-up, timed loop, report, per row and in total.

Every deploycmp command and worker job appends one line to the file named by DEPLOYCMP_TIMELINE when it ends
(deploycmp.core.timeline); this script sets it, runs the command, and adds the lines up.

    python benchmarks/where_time_goes.py run [DEPLOYCMP RUN OPTIONS]  # default: `make demo`'s run, empty export cache
    python benchmarks/where_time_goes.py suite [PYTEST OPTIONS]       # `make test`'s pytest, with its durations
    python benchmarks/where_time_goes.py read TIMELINE.jsonl          # a timeline written before
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW_PHASES = ("start_and_import", "load", "first_inference", "drift", "warmup", "timed_loop")


def demo_args(out: Path) -> list[str]:
    """The run `make demo` makes (bf16 where the CPU has it), into `out`."""
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    quantize = "none,bf16,int8" if ("avx512_bf16" in cpu or "amx_bf16" in cpu) else "none,int8"
    return ["--model", "resnet18", "--formats", "torchscript,torch-export,onnx,openvino,tflite,executorch",
            "--quantize", quantize, "--target", "server-cpu,mobile-cpu", "--format", "md,csv,json,html",
            "--out", str(out), "--force"]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def fmt_row(label: str, seconds: float, total: float, count: int | None = None) -> str:
    share = f"{100 * seconds / total:5.1f}%" if total else "     "
    return f"  {label:<44s} {seconds:8.1f} s {share}" + (f"  ({count})" if count is not None else "")


def covered(events: list[dict]) -> float:
    """Seconds during which at least one of the events ran (each ends at `at`, `seconds` long)."""
    spans = sorted((e["at"] - e["seconds"], e["at"]) for e in events)
    total, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def summarize(events: list[dict], wall: float | None, per_row: bool) -> None:
    """Print the phases: the command's steps, and inside them what the worker processes spent their time on."""
    steps = defaultdict(float)
    for e in events:
        if e["kind"] == "step":
            steps[e["step"]] += e["seconds"]
    commands = [e for e in events if e["kind"] == "command"]
    workers = [e for e in events if e["kind"] == "worker"]
    total = wall or sum(e["seconds"] for e in commands)
    print(f"wall {total:.1f} s" if wall else f"commands {total:.1f} s (summed)")
    print(f"{len(commands)} deploycmp command(s) in this process tree, {sum(e['seconds'] for e in commands):.1f} s; "
          f"{len(workers)} worker process(es), {sum(e['seconds'] for e in workers):.1f} s")
    by_module = defaultdict(list)
    for e in workers:
        by_module[e["module"]].append(e)

    exports = by_module.pop("export_worker", [])
    print("export")
    if "export" in steps:
        print(fmt_row("export step (all of it)", steps["export"], total))
    busy = covered(exports)
    print(fmt_row(f"export workers running (wall; {len(exports)} workers, side by side)", busy, total))
    exported = sum(e.get("export_s") or 0 for e in exports)
    print(fmt_row("  of which converting, summed over the workers", exported, total))
    print(fmt_row("  of which start, imports, source model, sizes, summed", sum(e["seconds"] for e in exports) - exported, total))
    warm = [e for e in events if e["kind"] == "prewarm"]
    warm_export = [e for e in warm if e.get("module") == "export_worker"]
    print(fmt_row(f"prewarmed processes' start and imports ({len(warm_export)})", sum(e["seconds"] for e in warm_export), total))
    if "export" in steps:
        print(fmt_row("the command's own (source, references, cache)",
                      steps["export"] - busy - sum(e["seconds"] for e in warm_export), total))

    rows = [e for e in by_module.pop("row_worker", []) if " peak " not in f" {e.get('what')} "]
    peaks = [e for e in workers if e["module"] == "row_worker" and e not in rows]
    print("bench")
    if "bench" in steps:
        print(fmt_row("bench step (all of it)", steps["bench"], total))
    phases = defaultdict(float)
    measured = [e for e in rows if e.get("phases")]
    for e in measured:
        for k in ROW_PHASES:
            phases[k] += e["phases"].get(k, 0)
        phases["exit_and_result"] += e["seconds"] - sum(e["phases"].get(k, 0) for k in ROW_PHASES)
    for k in (*ROW_PHASES, "exit_and_result"):
        print(fmt_row(f"rows: {k.replace('_', ' ')}", phases[k], total))
    unmeasured = [e for e in rows if not e.get("phases")]
    print(fmt_row("rows that failed or were unavailable (whole worker)", sum(e["seconds"] for e in unmeasured), total,
                  len(unmeasured)))
    print(fmt_row("matmul peak probes", sum(e["seconds"] for e in peaks), total, len(peaks)))
    warm = [e for e in warm if e not in warm_export]
    print(fmt_row(f"prewarmed processes' start and imports ({sum(not e.get('refused') for e in warm)} used, "
                  f"{sum(bool(e.get('refused')) for e in warm)} refused)", sum(e["seconds"] for e in warm), total))
    for module, es in sorted(by_module.items()):
        print(fmt_row(f"other workers: {module}", sum(e["seconds"] for e in es), total, len(es)))
    if "bench" in steps:
        print(fmt_row("the command's own (planning, peaks, row files)",
                      steps["bench"] - sum(e["seconds"] for e in rows + peaks + warm), total))
    print("report")
    if "report" in steps:
        print(fmt_row("report step", steps["report"], total))
    if per_row and rows:
        print("\nper row (s): " + " ".join(f"{k[:12]:>12s}" for k in ("worker", *ROW_PHASES)))
        for e in rows:
            p = e.get("phases") or {}
            print(f"  {str(e.get('what')):<40s} {e['status']:<10s} {e['seconds']:8.2f} "
                  + " ".join(f"{p.get(k, 0):12.2f}" for k in ROW_PHASES))


def suite_durations(junit: Path, top: int = 15) -> None:
    """The suite's test modules by total time (setup, call and teardown), from pytest's JUnit XML."""
    per_module, per_test = defaultdict(float), []
    for case in ET.parse(junit).getroot().iter("testcase"):
        t = float(case.get("time", 0))
        per_module[case.get("classname", "?")] += t
        per_test.append((t, f"{case.get('classname')}::{case.get('name')}"))
    print(f"\ntest modules by time (summed over both pytest workers), top {top}:")
    for name, t in sorted(per_module.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {t:8.1f} s  {name}")
    print(f"slowest tests, top {top}:")
    for t, name in sorted(per_test, reverse=True)[:top]:
        print(f"  {t:8.1f} s  {name}")


def main(argv: list[str]) -> int:
    mode, rest = (argv[0], argv[1:]) if argv else ("run", [])
    if mode == "read":
        summarize(read(Path(rest[0])), None, per_row=True)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="deploycmp-timeline-"))
    timeline = tmp / "timeline.jsonl"
    env = {**os.environ, "DEPLOYCMP_TIMELINE": str(timeline)}
    if mode == "run":
        args = rest or demo_args(tmp / "run")
        if not rest:
            env["DEPLOYCMP_CACHE"] = str(tmp / "cache")  # an empty export cache, as after `make install`
        cmd = [sys.executable, "-m", "deploycmp.cli", "run", *args]
    elif mode == "suite":
        junit = tmp / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-n", os.environ.get("TEST_WORKERS", "2"), "--dist", "loadfile",
               f"--junitxml={junit}", *rest]
    else:
        print(__doc__)
        return 2
    print("$ " + " ".join(cmd), flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL if mode == "run" else None)
    wall = time.monotonic() - start
    print(f"exit status {proc.returncode}; timeline in {timeline}\n")
    summarize(read(timeline) if timeline.exists() else [], wall, per_row=mode == "run")
    if mode == "suite" and junit.exists():
        suite_durations(junit)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
