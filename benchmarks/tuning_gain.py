"""How much does `--tune` change each path's p50? resnet18 and a small BERT encoder, untuned and tuned rows of one run.

For each model the script runs `deploycmp run --tune` (random weights; the formats and quantization modes below,
on the server-cpu target) and prints, per path, the untuned row's p50, the tuned row's p50, the ratio
untuned / tuned, and the settings the search chose. Untuned and tuned rows are measured in the same bench, one
after the other, on the same machine: the ratio is what tuning bought here, not across machines.

    python benchmarks/tuning_gain.py [--formats onnx,openvino] [--quantize none,int8] [--models resnet18,bert]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# a BERT-base-shaped encoder scaled down to run in minutes on 2 cores: 4 layers, hidden 256, sequence 128
BERT = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
            max_position_embeddings=512, num_labels=2, architectures=["BertForSequenceClassification"])


def model_args(name: str, tmp: Path) -> list[str]:
    if name == "bert":
        import transformers

        out = tmp / "bert"
        transformers.BertConfig(**BERT).save_pretrained(out)
        return ["--model", str(out), "--shape", "sequence=128"]
    return ["--model", name]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,bert")
    ap.add_argument("--formats", default="onnx,openvino")
    ap.add_argument("--quantize", default="none,int8")
    args = ap.parse_args()
    status = 0
    with tempfile.TemporaryDirectory(prefix="deploycmp-tuning-") as tmp:
        tmp = Path(tmp)
        for name in args.models.split(","):
            run = tmp / name / "run"
            start = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "deploycmp.cli", "run", *model_args(name, tmp), "--weights",
                                   "random", "--formats", args.formats, "--quantize", args.quantize, "--tune",
                                   "--out", str(run)], cwd=REPO, capture_output=True, text=True)
            if not (run / "results.json").exists():
                print(f"{name}: deploycmp run failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
                status = 1
                continue
            rows = {r["id"]: r for r in json.loads((run / "results.json").read_text())["rows"]}
            print(f"{name}: formats {args.formats}, quantize {args.quantize}, server-cpu "
                  f"({time.monotonic() - start:.0f} s for export, bench and tuning)")
            for rid, row in rows.items():
                tuned = rows.get(rid + "-tuned")
                if row.get("tuned") or not tuned:
                    continue
                path = f"{row['format']} {row['quantization']} · {row['runtime']}"
                if row["status"] != "ok" or tuned["status"] != "ok":
                    print(f"  {path:36} untuned {row['status']}, tuned {tuned['status']}: "
                          f"{(tuned.get('error') or row.get('error') or '')[:100]}")
                    continue
                before, after = row["latency_ms"]["p50"], tuned["latency_ms"]["p50"]
                untuned = tuned["tuning"]["tried"][0]["settings"]
                changed = {k: v for k, v in tuned["settings"].items() if untuned.get(k) != v}
                print(f"  {path:36} p50 {before:8.2f} -> {after:8.2f} ms  untuned/tuned {before / after:5.2f}x  "
                      f"{len(tuned['tuning']['tried'])} trials, changed: {changed or 'nothing'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
