"""Does forking a row from a prewarmed process (deploycmp.core.prewarm) change what the row measures? The same rows
measured forked, in a fresh process (DEPLOYCMP_PREWARM=off), and by a bare loop in a fresh process (the runtime
adapter's own session.run in a plain perf_counter loop), alternating in rounds so that the machine's noise hits
all three alike. Printed: p50 ratios (goal: within 5%), the cold start's parts and the peak memory of each.

    python benchmarks/prewarmed_vs_fresh.py [--rounds 3] [--runtimes torchscript,litert,executorch] [--run-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FORMATS = {"torchscript": "torchscript", "litert": "tflite", "executorch": "executorch", "torch": "eager"}

BARE = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
os.sched_setaffinity(0, spec["cpus"])
import numpy as np
from deploycmp import runtimes
from deploycmp.core.rundir import read_feed
session = runtimes.get(spec["runtime"]).load(spec["artifact"], spec["run_dir"], spec["threads"], "cpu")
feed, _, _ = read_feed(os.path.join(spec["run_dir"], spec["reference"]))
prepared = session.prepare({k: a[:1] for k, a in feed.items()})
end = time.perf_counter() + 1.0
while time.perf_counter() < end:
    session.run(prepared)
times = []
for _ in range(spec["runs"]):
    t = time.perf_counter()
    session.run(prepared)
    times.append(time.perf_counter() - t)
print(json.dumps({"p50": float(np.percentile(np.array(times) * 1e3, 50))}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--runtimes", default="torchscript,litert,executorch")
    ap.add_argument("--run-dir", type=Path, default=None, help="reuse a run directory that has the artifacts")
    args = ap.parse_args()

    from deploycmp.core import prewarm
    from deploycmp.core.environment import environment
    from deploycmp.core.rundir import load_manifest, reference_for
    from deploycmp.measure.bench import plan
    from deploycmp.measure.row import Settings, finish_row, measure_once
    from deploycmp.measure.targets import BUILTIN, worker_env

    wanted = args.runtimes.split(",")
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="deploycmp-prewarm-")) / "run"
    if not (run_dir / "manifest.json").is_file():
        formats = ",".join(sorted({FORMATS[r] for r in wanted} - {"eager"}))
        subprocess.run([sys.executable, "-m", "deploycmp.cli", "export", "--model", "resnet18", "--weights", "random",
                        "--formats", formats, "--out", str(run_dir), "--no-cache"], cwd=REPO, check=True)
    manifest = load_manifest(run_dir)
    target = BUILTIN["server-cpu"]
    rows = [r for r in plan(manifest, [target], [1], None) if r["runtime"] in wanted]
    settings = Settings(min_runs=args.runs, min_time_s=0.0, warmup_runs=5, warmup_s=1.0)
    env = environment()
    found: dict = {r["id"]: {"forked": [], "fresh": [], "bare": []} for r in rows}
    failed = 0
    for i in range(args.rounds):
        for row in rows:
            for how in ("forked", "fresh"):
                os.environ["DEPLOYCMP_PREWARM"] = "on" if how == "forked" else "off"
                result = finish_row(row, None, [measure_once(row, run_dir, manifest, settings)], run_dir, env, None)
                if result["status"] != "ok":
                    print(f"{row['id']} {how}: {result['status']}: {result['error']}")
                    failed += 1
                    continue
                found[row["id"]][how].append(result)
            prewarm.close_all()
            spec = {"runtime": row["runtime"], "artifact": {**row["_artifact"], "model": manifest["model"]},
                    "run_dir": str(run_dir), "threads": row["threads"], "cpus": target.resolved_cpus(),
                    "reference": reference_for(manifest, row["shape"])["file"], "runs": args.runs}
            out = subprocess.run([sys.executable, "-c", BARE, json.dumps(spec)], cwd=REPO, capture_output=True,
                                 text=True, env={**os.environ, **worker_env(row["threads"])})
            if out.returncode != 0:
                print(f"{row['id']} bare loop failed: {out.stderr.strip().splitlines()[-1:]}")
                failed += 1
                continue
            found[row["id"]]["bare"].append(json.loads(out.stdout.strip().splitlines()[-1])["p50"])
        print(f"round {i + 1} of {args.rounds} done", flush=True)

    worst = 0.0
    for row_id, got in found.items():
        if not (got["forked"] and got["fresh"] and got["bare"]):
            continue
        p50 = {how: statistics.median(r["latency_ms"]["p50"] for r in got[how]) for how in ("forked", "fresh")}
        bare = statistics.median(got["bare"])
        print(f"\n{row_id}: p50 forked {p50['forked']:.3f} ms, fresh {p50['fresh']:.3f} ms, bare loop {bare:.3f} ms; "
              f"forked/fresh {p50['forked'] / p50['fresh']:.3f}, forked/bare {p50['forked'] / bare:.3f}, "
              f"fresh/bare {p50['fresh'] / bare:.3f}")
        for how in ("forked", "fresh"):
            cold = {k: statistics.median(r["cold_start_ms"][k] for r in got[how]) for k in ("import", "load", "first_inference")}
            peak = statistics.median(r["peak_rss_mb"] for r in got[how])
            model = statistics.median(r["model_memory_mb"] for r in got[how])
            print(f"  {how:6s} cold start import {cold['import']:.0f} ms, load {cold['load']:.0f} ms, first "
                  f"{cold['first_inference']:.0f} ms; peak RSS {peak:.0f} MB, model memory {model:.0f} MB")
        worst = max(worst, abs(p50["forked"] / bare - 1), abs(p50["forked"] / p50["fresh"] - 1))
    print(f"\nlargest p50 difference of a forked row: {100 * worst:.1f}% ({'within' if worst <= 0.05 else 'OVER'} the 5% goal)")
    return 0 if worst <= 0.05 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
