"""Does deploycmp's timing add overhead? Its p50 for ONNX Runtime resnet18 batch 1 vs a bare perf_counter loop.

Both sides run in fresh processes with the same threads and CPU affinity, over the same ONNX Runtime session
options, alternating several times so that the machine's noise hits both alike. Goal: ratio <= 1.05.

    python benchmarks/harness_overhead.py [--rounds 3] [--runs 300] [--run-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BARE = r"""
import os, sys, json, time
os.sched_setaffinity(0, json.loads(sys.argv[3]))
import numpy as np
from deploycmp.runtimes.onnxruntime import load
threads, runs = int(sys.argv[2]), int(sys.argv[4])
artifact = json.loads(sys.argv[1])
session = load(artifact, artifact["run_dir"], threads)
x = np.load(os.path.join(artifact["run_dir"], "reference.npz"))["input/x"][:1]
sess, names, feed = session.sess, session.output_names, {session.input_metadata()[0].name: x}
end = time.perf_counter() + 1.0
while time.perf_counter() < end:
    sess.run(names, feed)
times = []
for _ in range(runs):
    t = time.perf_counter()
    sess.run(names, feed)
    times.append(time.perf_counter() - t)
print(json.dumps({"p50": float(np.percentile(np.array(times) * 1e3, 50))}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--run-dir", type=Path, default=None, help="reuse a run directory that has an onnx artifact")
    args = ap.parse_args()

    from deploycmp.core.environment import environment
    from deploycmp.core.rundir import load_manifest
    from deploycmp.measure.bench import plan
    from deploycmp.measure.row import Settings, finish_row, measure_once
    from deploycmp.measure.targets import BUILTIN, worker_env

    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="deploycmp-overhead-")) / "run"
    if not (run_dir / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "deploycmp.cli", "export", "--model", "resnet18", "--weights", "random",
                        "--formats", "onnx", "--out", str(run_dir)], cwd=REPO, check=True)
    manifest = load_manifest(run_dir)
    target = BUILTIN["server-cpu"]
    row = next(r for r in plan(manifest, [target], [1], None) if r["runtime"] == "onnxruntime")
    threads, cpus = row["threads"], target.resolved_cpus()
    settings = Settings(min_runs=args.runs, min_time_s=0.0, warmup_runs=5, warmup_s=1.0)
    artifact = {**row["_artifact"], "run_dir": str(run_dir)}
    env = environment()

    harness, bare = [], []
    for i in range(args.rounds):
        result = finish_row(row, None, [measure_once(row, run_dir, manifest, settings)], run_dir, env, None)
        if result["status"] != "ok":
            print(f"harness row {result['status']}: {result['error']}")
            return 1
        harness.append(result["latency_ms"]["p50"])
        out = subprocess.run([sys.executable, "-c", BARE, json.dumps(artifact), str(threads), json.dumps(cpus),
                              str(args.runs)], cwd=REPO, capture_output=True, text=True,
                             env={**__import__("os").environ, **worker_env(threads)}, check=True)
        bare.append(json.loads(out.stdout.strip().splitlines()[-1])["p50"])
        print(f"round {i + 1}: deploycmp p50 {harness[-1]:.3f} ms, bare loop p50 {bare[-1]:.3f} ms")
    ratio = statistics.median(harness) / statistics.median(bare)
    print(f"onnxruntime resnet18 batch 1, {threads} threads, {args.runs} timed runs x {args.rounds} rounds: "
          f"deploycmp p50 {statistics.median(harness):.3f} ms / bare p50 {statistics.median(bare):.3f} ms = ratio {ratio:.3f} "
          f"({'within' if ratio <= 1.05 else 'OVER'} the 1.05 goal)")
    return 0 if ratio <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
