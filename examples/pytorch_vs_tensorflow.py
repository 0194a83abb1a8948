"""Is PyTorch faster than TensorFlow/Keras here? The same architecture, MobileNetV2 (torchvision's and
keras.applications'), measured the way each framework is really called, at several batch sizes.

    python -m examples.pytorch_vs_tensorflow [--batch 1,8,32] [--out runs/pytorch-vs-tensorflow]   # from the repo root

Write-ups claim PyTorch is up to 3x faster than Keras at small batch and that the advantage shrinks as the batch
grows. This runs the real `deploycmp run` twice, in subprocesses (TensorFlow and the PyTorch converters never share
a process): once on torchvision's `mobilenet_v2` (PyTorch eager, TorchScript, ONNX Runtime) and once on
`keras:MobileNetV2` (Keras eager call `model(x, training=False)`, Keras `model.predict`, `tf.function`, SavedModel,
LiteRT), both with random weights, on one target (examples/pytorch_vs_tensorflow_targets.toml: the host CPU like
server-cpu, plus the opt-in keras-predict and tf-function runtimes). So every mode gets the same worker isolation,
thread settings, warm-up and timing. Then it prints p50 and ms/item per mode and batch size, the ratio
Keras-eager-call / PyTorch-eager per batch, the fastest PyTorch-side path against the fastest TF-side path, and
whether the claim holds on this machine; and it plots ms/item against batch size (PNG in --out).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS_FILE = HERE / "pytorch_vs_tensorflow_targets.toml"
TARGET = "server-cpu-modes"
CLAIM = "PyTorch is up to 3x faster than Keras at small batch, and the advantage shrinks as the batch grows"

# mode label, side (the source framework), source run, artifact format, runtime
MODES = [
    ("PyTorch eager", "PyTorch", "pytorch", "eager", "torch"),
    ("TorchScript", "PyTorch", "pytorch", "torchscript", "torchscript"),
    ("ONNX Runtime", "PyTorch", "pytorch", "onnx", "onnxruntime"),
    ("Keras eager call", "TF", "keras", "eager", "keras"),
    ("Keras predict", "TF", "keras", "eager", "keras-predict"),
    ("tf.function", "TF", "keras", "eager", "tf-function"),
    ("SavedModel", "TF", "keras", "savedmodel", "tensorflow"),
    ("LiteRT", "TF", "keras", "tflite", "litert"),
]
# the frameworks' own runtimes (ONNX Runtime and LiteRT are neither framework's, only fed from one of them)
OWN_RUNTIME = {"PyTorch eager", "TorchScript", "Keras eager call", "Keras predict", "tf.function", "SavedModel"}
SOURCES = {
    "pytorch": {"model": "mobilenet_v2", "formats": "torchscript,onnx", "shape": lambda s: f"1,3,{s},{s}"},
    "keras": {"model": "keras:MobileNetV2", "formats": "savedmodel,tflite", "shape": lambda s: f"1,{s},{s},3"},
}
QUICK_TIMING = ["--min-runs", "5", "--min-time", "0.05", "--max-time", "0", "--warmup-runs", "1", "--warmup-time", "0"]


class Failure(Exception):
    """One line for the user, and the exit status."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, as /proc/stat counts them, steal included; CPU seconds of this
    process and its finished children): their difference over a run is what other processes took."""
    import resource

    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    own = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for field in ("ru_utime", "ru_stime"))
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), own


def deploycmp(*args) -> int:
    print("$ deploycmp " + " ".join(map(str, args)), flush=True)
    return subprocess.run([sys.executable, "-m", "deploycmp.cli", *map(str, args)]).returncode


def run_source(name: str, args, out: Path) -> list[dict]:
    """`deploycmp run` on one source; its rows (status 1, a row that failed, still gives rows to show)."""
    src = SOURCES[name]
    run_dir = out / name
    results = run_dir / "results.json"
    if args.reuse:
        if not results.is_file():
            raise Failure(f"--reuse: {results} does not exist; run without --reuse first", 2)
        print(f"reading {results}", flush=True)
        return json.loads(results.read_text())["rows"]
    results.unlink(missing_ok=True)  # never read an older run's results
    extra = ["--input-shape", src["shape"](args.image_size)] if args.image_size else []
    if args.quick:
        extra += ["--samples", "4", "--calibration-samples", "4", *QUICK_TIMING]
    if args.min_runs is not None:
        extra += ["--min-runs", args.min_runs]
    if args.min_time is not None:
        extra += ["--min-time", args.min_time]
    status = deploycmp("run", "--model", src["model"], "--weights", args.weights, "--formats", src["formats"],
                       "--batch", args.batch, "--targets-file", TARGETS_FILE, "--target", TARGET, "--out", run_dir,
                       "--force", *extra)
    if status not in (0, 1) or not results.is_file():
        raise Failure(f"deploycmp run on {src['model']} exited {status} without results (see its message above)",
                      status or 1)
    return json.loads(results.read_text())["rows"]


def model_of(out: Path) -> tuple[str, str]:
    """The input size (HxW) and weights both runs used, from their manifests ('?' where they disagree)."""
    seen = set()
    for name in SOURCES:
        model = json.loads((out / name / "manifest.json").read_text())["model"]
        shape = model["input_shape"]
        hw = shape[2:4] if model.get("layout") == "NCHW" else shape[1:3]
        seen.add(("x".join(map(str, hw)), str(model.get("weights")).split(" (")[0]))  # random (BatchNorm ...) -> random
    return next(iter(seen)) if len(seen) == 1 else ("?", "?")


def collect(rows_by_source: dict, batches: list[int]) -> dict:
    """{mode label: {batch: row or None}} for the fp32 rows on our target."""
    table = {}
    for label, _, source, fmt, runtime in MODES:
        cells = {}
        for b in batches:
            found = [r for r in rows_by_source[source] if r["format"] == fmt and r["runtime"] == runtime
                     and r["target"] == TARGET and r["batch"] == b and r["quantization"] == "none"]
            cells[b] = found[0] if found else None
        table[label] = cells
    return table


def p50(row) -> float | None:
    return row["latency_ms"]["p50"] if row and row.get("status") == "ok" and row.get("latency_ms") else None


def fmt_ms(v: float) -> str:
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"


def print_table(table: dict, batches: list[int], problems: list[str]) -> None:
    width = max(len(label) for label in table) + 2
    head = "".join(f"{f'batch {b}':>21}" for b in batches)
    print(f"{'mode':{width}}{'side':8}{head}")
    print(f"{'':{width}}{'':8}" + "".join(f"{'p50 ms':>11}{'ms/item':>10}" for _ in batches))
    for label, side, *_ in MODES:
        cells = []
        for b in batches:
            row = table[label][b]
            if p50(row) is not None:
                cells.append(f"{fmt_ms(p50(row)):>11}{fmt_ms(p50(row) / b):>10}")
            else:
                status = row["status"] if row else "missing"
                cells.append(f"{status:>21}")
                reason = (row or {}).get("error") or "no such row in results.json"
                problems.append(f"{label} at batch {b}: {status}: {reason}")
        print(f"{label:{width}}{side:8}" + "".join(cells))
    for line in problems:
        print(f"  {line}")


def ratio_line(table: dict, num: str, den: str, b: int) -> tuple[str, float | None]:
    a, c = p50(table[num][b]), p50(table[den][b])
    if a is None or c is None:
        return f"  batch {b:>3}: n/a ({num if a is None else den} has no ok row)", None
    r = a / c
    who = f"{den} {r:.2f}x faster" if r > 1 else f"{num} {1 / r:.2f}x faster"
    return f"  batch {b:>3}: {r:5.2f}  ({num} {fmt_ms(a)} ms, {den} {fmt_ms(c)} ms: {who})", r


def fastest(table: dict, labels, b: int):
    timed = [(p50(table[label][b]), label) for label in labels if p50(table[label][b]) is not None]
    return min(timed) if timed else None


def side_lines(table: dict, batches: list[int], own_only: bool) -> list[str]:
    lines = []
    for b in batches:
        best = {}
        for side in ("PyTorch", "TF"):
            labels = [m[0] for m in MODES if m[1] == side and (not own_only or m[0] in OWN_RUNTIME)]
            best[side] = fastest(table, labels, b)
        if not best["PyTorch"] or not best["TF"]:
            lines.append(f"  batch {b:>3}: n/a (no ok row on the {'PyTorch' if not best['PyTorch'] else 'TF'} side)")
            continue
        (pt, pt_label), (tf, tf_label) = best["PyTorch"], best["TF"]
        winner = f"PyTorch side {tf / pt:.2f}x faster" if pt < tf else f"TF side {pt / tf:.2f}x faster"
        lines.append(f"  batch {b:>3}: PyTorch side {pt_label} {fmt_ms(pt)} ms, TF side {tf_label} {fmt_ms(tf)} ms"
                     f" -> {winner}")
    return lines


def verdict(ratios: dict) -> str:
    """Does the claim hold? From the Keras-eager-call / PyTorch-eager ratios at the smallest and largest batch."""
    known = {b: r for b, r in ratios.items() if r is not None}
    if not known:
        return "cannot tell: no batch size has both a Keras eager call row and a PyTorch eager row"
    small, large = min(known), max(known)
    rs, rl = known[small], known[large]
    if rs <= 1:
        return (f"does NOT hold on this machine: at batch {small} the Keras eager call was not slower than PyTorch "
                f"eager (ratio {rs:.2f})")
    size = "about the claimed 3x" if 2.5 <= rs <= 3.5 else ("more than the claimed 3x" if rs > 3.5 else "less than 3x")
    head = f"at batch {small} PyTorch eager was {rs:.2f}x faster than the Keras eager call ({size})"
    if large == small:
        return f"cannot tell whether the advantage shrinks (one batch size only); {head}"
    if rl < rs:
        tail = (f"and the advantage shrank to {rl:.2f}x at batch {large}" if rl > 1
                else f"and at batch {large} it was gone (ratio {rl:.2f})")
        return f"HOLDS on this machine: {head}, {tail}"
    return f"holds only in part on this machine: {head}, but it did not shrink ({rl:.2f}x at batch {large})"


def plot(table: dict, batches: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    colors = {"PyTorch": iter(plt.cm.Blues([0.95, 0.75, 0.55])), "TF": iter(plt.cm.Oranges([0.95, 0.8, 0.65, 0.5, 0.35]))}
    markers = iter("osD^vPX*")
    for label, side, *_ in MODES:
        ys = [p50(table[label][b]) / b if p50(table[label][b]) is not None else math.nan for b in batches]
        ax.plot(batches, ys, marker=next(markers), linestyle="-" if side == "PyTorch" else "--",
                color=next(colors[side]), label=f"{label} ({side})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per item (p50 / batch), log scale; lower is faster")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pytorch-vs-tensorflow"))
    parser.add_argument("--batch", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side in pixels (default: the models' own, 224; --quick: 32)")
    parser.add_argument("--weights", default="random", help="random | auto | imagenet, for both models")
    parser.add_argument("--min-runs", type=int, default=None, help="timed runs per row, at least (deploycmp's default)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds of timed runs per row, at least")
    parser.add_argument("--quick", action="store_true", help="32x32 inputs, 4 samples, short timing (for tests)")
    parser.add_argument("--reuse", action="store_true",
                        help="compare and plot the results already in --out instead of running deploycmp again")
    args = parser.parse_args(argv)
    try:
        return compare(args)
    except Failure as e:
        print(f"pytorch_vs_tensorflow: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("pytorch_vs_tensorflow: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, never a traceback
        print(f"pytorch_vs_tensorflow: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def compare(args) -> int:
    try:
        batches = list(dict.fromkeys(int(b) for b in args.batch.split(",") if b.strip()))
    except ValueError:
        raise Failure(f"--batch {args.batch!r}: expected comma-separated positive integers, e.g. 1,8,32", 2) from None
    if not batches or min(batches) <= 0:
        raise Failure(f"--batch {args.batch!r}: expected comma-separated positive integers, e.g. 1,8,32", 2)
    batches.sort()
    args.batch = ",".join(map(str, batches))
    if args.quick and args.image_size is None:
        args.image_size = 32
    if not args.reuse:
        args.out.mkdir(parents=True, exist_ok=True)

    start, cpu0 = time.monotonic(), cpu_seconds()
    rows = {name: run_source(name, args, args.out) for name in SOURCES}
    cpu1, wall = cpu_seconds(), time.monotonic() - start
    others = None  # cores' worth of CPU other processes used while deploycmp measured (None: not known)
    if cpu0 and cpu1 and not args.reuse and wall > 0:
        others = max(0.0, ((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / wall)
    table = collect(rows, batches)
    any_row = next((r for cells in table.values() for r in cells.values() if r), None)
    threads = any_row.get("threads") if any_row else None
    desc = any_row.get("target_description", "") if any_row else ""
    size, weights = model_of(args.out)
    print()
    took = "" if args.reuse else f"; {time.monotonic() - start:.0f} s for both runs"
    print(f"MobileNetV2 ({weights} weights, {size}) on {TARGET}: {desc}{took}")
    print("p50 latency and ms per item (p50 / batch); PyTorch side = torchvision mobilenet_v2 in PyTorch eager, "
          "TorchScript and ONNX Runtime; TF side = keras.applications MobileNetV2 called eagerly, through predict, "
          "in tf.function, as a SavedModel and in LiteRT")
    problems: list[str] = []
    print_table(table, batches, problems)

    print()
    print("Keras eager call / PyTorch eager (p50 ratio at the same batch; above 1: PyTorch faster):")
    ratios = {}
    for b in batches:
        line, ratios[b] = ratio_line(table, "Keras eager call", "PyTorch eager", b)
        print(line)
    for other in ("Keras predict", "tf.function"):
        print(f"{other} / PyTorch eager:")
        for b in batches:
            print(ratio_line(table, other, "PyTorch eager", b)[0])
    print("Fastest PyTorch-side path vs fastest TF-side path (by source: ONNX Runtime runs the ONNX exported from "
          "PyTorch, LiteRT the .tflite converted from Keras):")
    print("\n".join(side_lines(table, batches, own_only=False)))
    print("The same within the frameworks' own runtimes only (no ONNX Runtime, no LiteRT):")
    print("\n".join(side_lines(table, batches, own_only=True)))
    print("Fastest mode at each batch size:")
    for b in batches:
        best = fastest(table, [m[0] for m in MODES], b)
        print(f"  batch {b:>3}: " + (f"{best[1]} ({fmt_ms(best[0])} ms, {fmt_ms(best[0] / b)} ms/item)" if best else "n/a"))
    print(f"Claim: \"{CLAIM}\".")
    print(f"Verdict: {verdict(ratios)}.")
    if others is not None:
        busy = (f"Other processes on this machine used {others:.2f} cores' worth of CPU on average during the runs "
                f"(this machine has {os.cpu_count()})")
        print(busy + (": the timings are disturbed; rerun on a quiet machine before trusting the ratios."
                      if others >= 0.25 else "."))
    if threads:
        print(f"One run each on this machine, {threads} thread(s) per row; repeat it before trusting small differences.")

    png = args.out / "pytorch_vs_tensorflow.png"
    cpu = (any_row.get("host") or {}).get("cpu") if any_row else None
    title = f"MobileNetV2 {size}, {weights} weights: {desc}" + (f"\n{cpu}" if cpu else "")
    plot(table, batches, png, title)
    print(f"wrote {png}")
    summary = {"target": TARGET, "batches": batches, "input": size, "weights": weights, "claim": CLAIM,
               "verdict": verdict(ratios), "keras_eager_over_pytorch_eager": {str(b): r for b, r in ratios.items()},
               "modes": {label: {str(b): ({"status": r["status"], "error": r.get("error"), "p50_ms": p50(r),
                                           "ms_per_item": p50(r) / b if p50(r) is not None else None, "row": r["id"]}
                                          if r else None) for b, r in cells.items()} for label, cells in table.items()},
               "other_processes_cores": others, "run_dirs": {name: str(args.out / name) for name in SOURCES}}
    (args.out / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out / 'comparison.json'}")
    if problems:
        raise Failure(f"{len(problems)} of {len(MODES) * len(batches)} mode/batch cells have no ok row (listed "
                      "under the table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
