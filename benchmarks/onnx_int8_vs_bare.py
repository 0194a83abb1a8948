"""Is deploycmp's ONNX int8 row as fast as ONNX Runtime can be? Its p50 against a bare loop over a U8S8 QDQ file.

deploycmp exports resnet18 (random weights) to ONNX fp32 and int8 and measures them on ONNX Runtime (its own
worker process, the target's threads, its recipe for this CPU). This script then quantizes the same fp32 file
itself, with onnxruntime.quantization.quantize_static called directly (QDQ, uint8 activations, int8 per-channel
weights: ONNX Runtime's recommendation for x86-64) on the same calibration split, and times `session.run` in a bare
loop with the same thread count. Rounds alternate `deploycmp bench --force` and the bare loop, so a slow spell of
the shared machine touches both. Goal (issue 16): deploycmp's int8 p50 <= 1.5x the bare loop's.

    python benchmarks/onnx_int8_vs_bare.py [--rounds 3] [--runs 200] [--threads 2] [--model resnet18]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.5


def deploycmp(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "deploycmp.cli", *args], cwd=REPO, check=True, capture_output=True)


def bare_p50(path: Path, feed: dict, threads: int, runs: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    x = dict(zip(names, feed.values()))
    for _ in range(20):
        sess.run(None, x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, x)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200, help="timed calls of the bare loop per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="resnet18")
    args = ap.parse_args()

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from deploycmp.core.environment import host
    from deploycmp.core.rundir import read_feed

    with tempfile.TemporaryDirectory(prefix="deploycmp-bare-") as tmp:
        tmp = Path(tmp)
        run, targets = tmp / "run", tmp / "targets.toml"
        targets.write_text(f'[targets.ort]\nthreads = {args.threads}\nruntimes = ["onnxruntime"]\n')
        target = ["--target", "ort", "--targets-file", str(targets)]
        deploycmp("run", "--model", args.model, "--weights", "random", "--formats", "onnx", "--quantize", "none,int8",
                  "--out", str(run), *target)
        recipe = json.loads((run / "manifest.json").read_text())
        recipe = next(a for a in recipe["artifacts"] if a["id"] == "onnx-int8")["exporter"]["quantization"]

        # the bare file: ONNX Runtime's own pre-processing and quantize_static, nothing from deploycmp
        calibration, _, _ = read_feed(run / "calibration.npz")
        n = len(next(iter(calibration.values())))
        names = [i.name for i in onnx.load(str(run / "artifacts/onnx-none/model.onnx")).graph.input]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{nm: a[i:i + 1] for nm, a in zip(names, calibration.values())} for i in range(n)])

            def get_next(self):
                return next(self.it, None)

        single, prepped, bare = tmp / "fp32.onnx", tmp / "prepped.onnx", tmp / "bare_u8s8.onnx"
        onnx.save(onnx.load(str(run / "artifacts/onnx-none/model.onnx")), str(single))
        quant_pre_process(str(single), str(prepped))
        quantize_static(str(prepped), str(bare), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        feed = {k: a[:1] for k, a in read_feed(run / "reference.npz")[0].items()}

        rows, bares = {"onnx-none": [], "onnx-int8": []}, []
        for r in range(args.rounds):
            if r:
                deploycmp("bench", str(run), "--force", *target)
            for row in json.loads((run / "results.json").read_text())["rows"]:
                rows[row["artifact"]].append(row["latency_ms"]["p50"])
            bares.append(bare_p50(bare, feed, args.threads, args.runs))
    ours, theirs = statistics.median(rows["onnx-int8"]), statistics.median(bares)
    h = host()
    print(f"{args.model} batch 1, {args.threads} threads, {h['cpu']} ({' '.join(h['isa'])}), {args.rounds} rounds")
    print(f"  deploycmp onnx fp32 row   p50 {statistics.median(rows['onnx-none']):7.2f} ms  (per round: "
          + ", ".join(f"{v:.2f}" for v in rows["onnx-none"]) + ")")
    print(f"  deploycmp onnx int8 row   p50 {ours:7.2f} ms  (per round: " + ", ".join(f"{v:.2f}" for v in rows["onnx-int8"])
          + f"; recipe {recipe.get('recipe')} {recipe.get('format')}, reduce_range {recipe.get('reduce_range')})")
    print(f"  bare ORT loop, U8S8 QDQ   p50 {theirs:7.2f} ms  (per round: " + ", ".join(f"{v:.2f}" for v in bares) + ")")
    ratio = ours / theirs
    print(f"deploycmp int8 / bare U8S8 = {ratio:.2f} ({'goal met' if ratio <= GOAL else 'GOAL MISSED'}: <= {GOAL})")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
