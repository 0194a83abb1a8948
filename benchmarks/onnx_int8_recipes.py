"""Which ONNX Runtime static int8 recipe pays on this CPU? fp32 vs QDQ U8S8 vs QDQ S8S8, resnet18 batch 1.

deploycmp's ONNX int8 export picks the recipe ONNX Runtime documents for the host (U8S8 on x86-64). This script
measures that choice: it exports resnet18 (random weights) to ONNX with deploycmp, quantizes the same fp32 file
with both recipes on the same calibration data, and times the three files in one process, round-robin, with the
session options deploycmp's onnxruntime runtime uses. It prints p50 per file and the ratios to fp32.
Goal: the recipe deploycmp picks is not slower than the other one.

    python benchmarks/onnx_int8_recipes.py [--rounds 5] [--runs 100] [--threads 2] [--model resnet18]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100, help="timed calls per file per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="resnet18")
    args = ap.parse_args()

    from deploycmp.core.environment import host
    from deploycmp.core.rundir import read_feed
    from deploycmp.exporters.onnx_quantization import RECIPES, quantize, static_recipe
    from deploycmp.runtimes.onnxruntime import load

    with tempfile.TemporaryDirectory(prefix="deploycmp-recipes-") as tmp:
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "deploycmp.cli", "export", "--model", args.model, "--weights", "random",
                        "--formats", "onnx", "--out", str(run)], cwd=REPO, check=True, capture_output=True)
        fp32 = run / "artifacts" / "onnx-none" / "model.onnx"
        calibration, _, _ = read_feed(run / "calibration.npz")
        feeds = [{k: a[i:i + 1] for k, a in calibration.items()} for i in range(len(next(iter(calibration.values()))))]
        files = {"fp32": fp32}
        for name, recipe in RECIPES.items():
            files[name] = Path(tmp) / f"{name}.onnx"
            quantize(fp32, files[name], "int8", feeds, {**recipe, "name": name, "reduce_range": False, "why": "benchmark"})
        sessions = {k: load({"main_file": str(f)}, "/", args.threads) for k, f in files.items()}
        x = {k: a[:1] for k, a in read_feed(run / "reference.npz")[0].items()}
        times = {k: [] for k in files}
        for _ in range(args.rounds):
            for name, session in sessions.items():
                prepared = session.prepare(x)
                for _ in range(10):
                    session.run(prepared)
                for _ in range(args.runs):
                    t = time.perf_counter()
                    session.run(prepared)
                    times[name].append((time.perf_counter() - t) * 1e3)
    p50 = {k: statistics.median(v) for k, v in times.items()}
    h = host()
    picked = static_recipe(h["isa"], h["machine"])["name"]
    print(f"{args.model} batch 1, {args.threads} threads, {h['cpu']} ({' '.join(h['isa'])}), "
          f"{args.rounds} rounds x {args.runs} calls per file")
    for name, ms in p50.items():
        print(f"  {name:5} p50 {ms:7.2f} ms   fp32 / {name}: {p50['fp32'] / ms:5.2f}x")
    other = next(n for n in RECIPES if n != picked)
    ratio = p50[other] / p50[picked]
    print(f"deploycmp picks {picked} here; {other} / {picked} = {ratio:.2f} "
          f"({'goal met' if ratio >= 1.0 else 'GOAL MISSED: the other recipe was faster'})")
    return 0 if ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
