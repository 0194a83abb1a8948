"""Is deploycmp's OpenVINO row as fast as OpenVINO's own benchmark_app on the same IR? p50 of both, in one run.

deploycmp exports resnet18 (random weights) to OpenVINO IR, fp32 and int8 (NNCF). For each IR, rounds alternate
benchmark_app and deploycmp's own row measurement (a fresh worker process, the harness's perf_counter around the
timed call), each for the same number of seconds, on the same cores and thread environment, so a slow spell of the
shared machine touches both. benchmark_app runs with the settings deploycmp compiles with: `-hint none -nstreams 1
-nthreads N` (deploycmp asks for the LATENCY hint and N threads, which gives one stream), the row's static shape
(`-shape`, as deploycmp reshapes the IR to the row's shape) and f32 input (`-ip f32`: benchmark_app would feed an
image input as u8 with a conversion in the graph); the precision is left to OpenVINO on both sides (bf16 on CPUs
with AVX-512 BF16 or AMX). The properties both compiled models read back are printed side by side. benchmark_app
reports OpenVINO's own per-request latency (measured in C++), deploycmp the wall time of the Python call: the
ratio includes what Python adds. Goal (issue 26): deploycmp p50 within 3% of benchmark_app's.

    python benchmarks/openvino_vs_benchmark_app.py [--rounds 3] [--seconds 8] [--threads 2] [--run-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GOAL = 1.03
# properties both sides read back from the compiled model, compared line by line
COMPARED = ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT",
            "EXECUTION_MODE_HINT", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE")
SPELLING = {"bfloat16": "bf16", "float32": "f32", "True": "True", "False": "False"}


def benchmark_app(xml: Path, shapes: dict, threads: int, seconds: float, cpus: list[int], env: dict) -> dict:
    """benchmark_app's median latency (ms) and the properties it read back from its compiled model."""
    exe = Path(sys.executable).with_name("benchmark_app")
    shape = ",".join(f"{name}[{','.join(map(str, dims))}]" for name, dims in shapes.items())
    cmd = [str(exe), "-m", str(xml), "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads", str(threads),
           "-t", str(seconds), "-shape", shape, "-ip", "f32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    if proc.returncode:
        raise RuntimeError(f"benchmark_app failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    found = re.search(r"Median:\s+([\d.]+) (ms|us)", proc.stdout)
    props = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"\[ INFO \]\s+([A-Z_]+): (.*)$", line)
        if m and m.group(1) in COMPARED:
            value = re.sub(r"^<Type: '(\w+)'>$", r"\1", m.group(2).strip()).split(".")[-1]
            props[m.group(1)] = SPELLING.get(value, value)
    api = re.search(r"Start inference (\w+)ly", proc.stdout)
    return {"p50": float(found.group(1)) / (1e3 if found.group(2) == "us" else 1), "properties": props,
            "api": api and api.group(1), "command": " ".join(cmd[1:])}


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="deploycmp-ov-"))
    try:
        return compare(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare(tmp: Path) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8, help="timed seconds of each measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--run-dir", type=Path, default=None, help="reuse a run directory with openvino none,int8 artifacts")
    args = ap.parse_args()

    from deploycmp.core.environment import host
    from deploycmp.core.rundir import load_manifest, read_feed
    from deploycmp.measure.bench import plan
    from deploycmp.measure.row import Settings, measure_once
    from deploycmp.measure.targets import parse_targets, worker_env

    run_dir = args.run_dir or tmp / "run"
    if not (run_dir / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "deploycmp.cli", "export", "--model", "resnet18", "--weights", "random",
                        "--formats", "openvino", "--quantize", "none,int8", "--out", str(run_dir)], cwd=REPO,
                       check=True, capture_output=True)
    targets = tmp / "targets.toml"
    targets.write_text(f'[targets.ov]\nthreads = {args.threads}\nruntimes = ["openvino"]\n')
    target = parse_targets("ov", targets)[0]
    manifest = load_manifest(run_dir)
    rows = [r for r in plan(manifest, [target], [1], None) if r["runtime"] == "openvino" and r["_artifact"]["status"] == "ok"]
    cpus, threads = target.resolved_cpus(), target.resolved_threads()
    env = {**os.environ, **worker_env(threads)}
    settings = Settings(min_runs=50, min_time_s=args.seconds, warmup_runs=5, warmup_s=1.0)
    feed = read_feed(run_dir / "reference.npz")[0]

    import openvino as ov  # only to read the IR's input names; every measurement runs in its own process

    measured = {r["id"]: {"deploycmp": [], "benchmark_app": [], "row": r} for r in rows}
    for i in range(args.rounds):
        for row in rows:
            xml = run_dir / row["_artifact"]["main_file"]
            names = [p.get_any_name() for p in ov.Core().read_model(str(xml)).inputs]
            shapes = {n: list(a[:row["batch"]].shape) for n, a in zip(names, feed.values())}
            m = measured[row["id"]]
            for side in (("benchmark_app", "deploycmp") if i % 2 == 0 else ("deploycmp", "benchmark_app")):
                if side == "benchmark_app":
                    m["bapp"] = benchmark_app(xml, shapes, threads, args.seconds, cpus, env)
                    m[side].append(m["bapp"]["p50"])
                    continue
                outcome = measure_once(row, run_dir, manifest, settings)
                if outcome.status != "ok":
                    print(f"{row['id']}: deploycmp row {outcome.status}: {outcome.error}")
                    return 1
                m["info"] = outcome.result["runtime_info"]
                m[side].append(outcome.result["latency_ms"]["p50"])
            print(f"round {i + 1} {row['artifact']:14} deploycmp p50 {m['deploycmp'][-1]:.3f} ms, "
                  f"benchmark_app p50 {m['benchmark_app'][-1]:.3f} ms")
    h = host()
    print(f"\nresnet18 batch 1, {threads} threads on cpus {cpus}, {h['cpu']}, {args.rounds} rounds of "
          f"{args.seconds:g} s each; benchmark_app {next(iter(measured.values()))['bapp']['command']}")
    status = 0
    for m in measured.values():
        ours, theirs = statistics.median(m["deploycmp"]), statistics.median(m["benchmark_app"])
        ratio = ours / theirs
        status |= ratio > GOAL
        info, bprops = m["info"], m["bapp"]["properties"]
        print(f"  {m['row']['artifact']:14} deploycmp p50 {ours:.3f} ms ({', '.join(f'{v:.3f}' for v in m['deploycmp'])})"
              f"  benchmark_app p50 {theirs:.3f} ms ({', '.join(f'{v:.3f}' for v in m['benchmark_app'])})"
              f"  ratio {ratio:.3f} ({'within' if ratio <= GOAL else 'OVER'} {GOAL}; per round "
              + ", ".join(f"{a / b:.3f}" for a, b in zip(m["deploycmp"], m["benchmark_app"])) + ")")
        differ = {k: (info["properties"].get(k), bprops.get(k)) for k in COMPARED
                  if str(info["properties"].get(k)) != str(bprops.get(k))}
        ours_props = ", ".join(f"{k}={info['properties'].get(k)}" for k in COMPARED)
        print(f"    read back: {ours_props}; compiled for "
              f"{info.get('compiled_for')}; benchmark_app api {m['bapp']['api']}"
              + (f"; DIFFERENT in benchmark_app: {differ}" if differ else "; benchmark_app: the same"))
    return status


if __name__ == "__main__":
    sys.exit(main())
