"""Every path deploycmp offers for each real model file of tests/real_files.py (trained files shipped inside PyPI
packages, made by other exporters), fp32 and int8: one matrix of status (ok / unavailable / failed with the first
line of the reason), drift (SQNR dB) and p50 ms at batch 1 on server-cpu.

    .venv/bin/python benchmarks/real_files.py [--only NAME,...] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deploycmp import sources as models  # noqa: E402
from deploycmp.core.environment import cpu_model, isa_flags  # noqa: E402
from deploycmp.exporters import EXPORTERS, get  # noqa: E402
from tests.real_files import CATALOG, fetch  # noqa: E402

TIMING = ["--min-runs", "20", "--min-time", "0.5", "--warmup-runs", "3", "--samples", "8", "--calibration-samples", "8"]


def offered(path: Path) -> list[str]:
    framework = models.framework_of(str(path))
    return [f for f in EXPORTERS if framework in get(f).SOURCES]


def first_line(text: str | None, width: int = 110) -> str:
    return " ".join((text or "").split())[:width]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma-separated catalog names")
    parser.add_argument("--out", default=None, help="where the run directories go (default: a temporary folder)")
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    out = Path(args.out or tempfile.mkdtemp(prefix="deploycmp-real-files-"))
    wanted = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16")
    print(f"machine: {cpu_model()}; {' '.join(f for f in isa_flags() if f in wanted)}")
    print(f"{'file':<19} {'path':<42} {'status':<12} {'SQNR dB':>8} {'p50 ms':>8}  reason")
    for entry in CATALOG:
        if only and entry.name not in only:
            continue
        model = fetch(entry)
        run_dir = out / entry.name
        proc = subprocess.run([sys.executable, "-m", "deploycmp.cli", "run", "--model", str(model), *entry.args,
                               "--formats", ",".join(offered(model)), "--quantize", "none,int8", "--target",
                               "server-cpu", "--out", str(run_dir), "--force", *TIMING], cwd=REPO,
                              capture_output=True, text=True)
        results = run_dir / "results.json"
        if not results.is_file():
            said = (proc.stderr or proc.stdout).strip().splitlines()
            why = (said[-1] if said else "").replace("deploycmp: error: ", "").replace(f"--model {model}: ", "")
            print(f"{entry.name:<19} {'(whole run)':<42} {'failed':<12} {'-':>8} {'-':>8}  {first_line(why, 300)}")
            continue
        for row in json.loads(results.read_text())["rows"]:
            if row.get("batch", 1) != 1:
                continue
            drift = row.get("drift") or {}
            sqnr = "exact" if drift.get("identical") or drift.get("max_abs") == 0 else drift.get("sqnr_db")
            p50 = (row.get("latency_ms") or {}).get("p50")
            path = f"{row['format']} {row['quantization']} {row['runtime']}"
            print(f"{entry.name:<19} {path:<42} {row['status']:<12} "
                  f"{'-' if sqnr is None else sqnr if isinstance(sqnr, str) else f'{sqnr:.1f}':>8} {'-' if p50 is None else f'{p50:.2f}':>8}  "
                  f"{first_line(row.get('error'), 220) if row['status'] != 'ok' else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
