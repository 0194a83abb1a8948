"""Does --weights random give a model whose drift means something? Every torchvision (and keras.applications)
classification model, built with the plain init (--weights random-raw) and the well-conditioned one
(--weights random), on 32 random samples at its default input size: are the reference outputs degenerate (all 0,
constant, tiny, NaN), and how many distinct top-1 classes do the 32 samples get?

Each model runs in its own process with a time limit (a model that does not build and run within it is listed as
skipped). Goal: no well-conditioned model degenerate, and several distinct top-1 classes for each.

    python benchmarks/random_weights_sweep.py [--framework torch|keras|both] [--timeout 120] [--only NAME,...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = 32

ONE = r"""
import json, sys, time
from deploycmp import sources as models
from deploycmp.core.degenerate import check
from deploycmp.core.specs import inputs_from_dicts
from deploycmp.sources import data

spec, samples = sys.argv[1], int(sys.argv[2])
out = {}
for weights in ("random-raw", "random"):
    t = time.perf_counter()
    src = models.get(models.framework_of(spec))
    model, record, _ = src.build(spec, weights, [])
    inputs = inputs_from_dicts(record["inputs"])
    calibration, feed, _, _ = data.split(*data.load("random", inputs, {}, 2 * samples)[:2], samples)
    src.condition(model, record, calibration, inputs)
    ref = next(iter(src.reference_outputs(model, feed, inputs).values()))
    found = check(ref, "logits" if ref.ndim == 2 and ref.shape[1] > 1 else "other")
    out[weights] = {"degenerate": found["reason"] if found else None, "classes": int(len(set(ref.argmax(1)))),
                    "max_abs": float(abs(ref).max()), "seconds": round(time.perf_counter() - t, 1),
                    "weights": record["weights"]}
print(json.dumps(out))
"""


def names(framework: str) -> list[str]:
    code = ("from deploycmp.sources.torch import torchvision_names as n; print('\\n'.join(n()))" if framework == "torch"
            else "from deploycmp.sources.keras import application_names as n; print('\\n'.join('keras:' + x for x in n()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return proc.stdout.split()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--framework", choices=("torch", "keras", "both"), default="both")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per model (both inits)")
    ap.add_argument("--only", default=None, help="comma-separated model names")
    args = ap.parse_args()
    specs = args.only.split(",") if args.only else [n for fw in (("torch", "keras") if args.framework == "both"
                                                                   else (args.framework,)) for n in names(fw)]
    start, bad, skipped = time.perf_counter(), [], []
    print(f"{'model':28} {'random-raw':44} {'random (well-conditioned)':44}")
    for spec in specs:
        try:
            proc = subprocess.run([sys.executable, "-c", ONE, spec, str(SAMPLES)], capture_output=True, text=True,
                                  timeout=args.timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            skipped.append(f"{spec} (over {args.timeout:g} s)")
            continue
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            skipped.append(f"{spec} ({lines[-1][:100] if lines else proc.returncode})")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])

        def cell(x):
            return f"{x['degenerate'] or 'ok'}, {x['classes']} classes"[:44]

        print(f"{spec:28} {cell(r['random-raw']):44} {cell(r['random']):44}", flush=True)
        if r["random"]["degenerate"] or r["random"]["classes"] < 3:
            bad.append(spec)
    print(f"\n{len(specs) - len(skipped)} models checked in {time.perf_counter() - start:.0f} s; "
          f"well-conditioned but degenerate or under 3 classes: {', '.join(bad) or 'none'}")
    if skipped:
        print("skipped: " + "; ".join(skipped))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
