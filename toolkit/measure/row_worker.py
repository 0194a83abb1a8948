"""Worker process for one measured row: affinity first, then import, load, first inference, drift, timed runs.

Nothing heavy is imported at module level: the CPU affinity and thread variables must be in place before numpy
or any framework starts its thread pools.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal, TypedDict

from deploycmp.core.child import child_main
from deploycmp.core.worker_memory import own_memory_mb


class RowJob(TypedDict):
    """What this worker is given to measure one row (measure.row.measure_once writes it), as JSON."""
    job: Literal["row"]
    run_dir: str            # the run directory; artifact and reference paths are relative to it
    artifact: dict          # the manifest's artifact entry (a tuning trial's variant instead), with the model record
    runtime: str
    batch: int
    threads: int
    cpus: list[int]         # the CPUs the worker pins itself to, before it imports anything
    device: str             # cpu, or the GPU the row runs on
    inputs: list[dict]      # the model's input specs (core.specs.to_dicts)
    outputs: list[dict]     # its output specs, with their kinds (logits, embeddings ...)
    reference: str          # the reference inputs and golden outputs of the row's shape point
    degenerate: dict        # which golden outputs say little (constant, saturated), to mark in the drift
    samples_file: str       # where the worker writes per-sample outputs to look at
    options: dict           # bench --tune's runtime settings for a trial; {} for the row's own
    min_runs: int
    min_time_s: float
    max_time_s: float       # past the minimums: until the median's 95% CI is within ci_width, this long at most
    ci_width: float
    warmup_runs: int
    warmup_s: float


class PeakJob(TypedDict):
    """What this worker is given to measure a target's fp32 matmul peak."""
    job: Literal["peak"]
    cpus: list[int]
    threads: int


def outputs_to_layout(got: dict, golden: dict, source_layouts: set, layout: str | None) -> tuple[dict, dict]:
    """An artifact made channels last from an NCHW source (onnx2tf) returns its 4-D outputs channels last too: each
    such output whose shape is the reference's transposed is turned back. Returns (outputs, name -> layout)."""
    if len(source_layouts) != 1 or not layout or layout in source_layouts:
        return got, {}
    from deploycmp.core.specs import to_layout

    (source,) = source_layouts
    out, turned = dict(got), {}
    for n, a in got.items():
        ref = golden.get(n)
        if ref is not None and a.ndim == 4 and a.shape != ref.shape and to_layout(a, layout, source).shape == ref.shape:
            out[n], turned[n] = to_layout(a, layout, source), source
    return out, turned


def padded_batches(feed: dict, batch: int):
    """Split a feed into feeds of exactly `batch` samples, every input together; the last one is padded by
    repeating its samples. Yields (feed, real samples in it)."""
    import numpy as np

    n = len(next(iter(feed.values())))
    for i in range(0, n, batch):
        chunk = {k: a[i:i + batch] for k, a in feed.items()}
        real = len(next(iter(chunk.values())))
        if real < batch:
            chunk = {k: np.concatenate([a, np.resize(a, (batch - real, *a.shape[1:]))]) for k, a in chunk.items()}
        yield chunk, real


def timer(session):
    """call(prepared) -> seconds for one run. CPU: perf_counter around the call. GPU: CUDA events around it when
    the runtime has them, else perf_counter around the call and a device synchronize."""
    perf, run = time.perf_counter, session.run
    if session.device == "cpu":
        def timed(prepared):
            t0 = perf()
            run(prepared)
            return perf() - t0
        return timed, "perf_counter"
    events = session.cuda_events()
    if events:
        start, end = events

        def timed(prepared):
            start.record()
            run(prepared)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return timed, "CUDA events"
    sync = session.synchronize

    def timed(prepared):
        t0 = perf()
        run(prepared)
        sync()
        return perf() - t0
    return timed, "perf_counter + device synchronize"


def ci_fraction(times: list[float]) -> float:
    """The width of the median's 95% confidence interval as a fraction of the median."""
    from deploycmp.measure.latency import median_ci95

    ordered = sorted(times)
    lo, hi = median_ci95(ordered)
    median = ordered[len(ordered) // 2]
    return (hi - lo) / median if median > 0 else float("inf")


def time_calls(timed, prepared, warmup_runs: int, warmup_s: float, min_runs: int, min_time_s: float,
               max_time_s: float = 0.0, ci_width: float = 0.0) -> tuple[list[float], int, float, str]:
    """Warm up (count and seconds), then time single calls until both min_runs and min_time_s are reached; past them,
    on until the median's 95% CI is at most `ci_width` of it, for max_time_s seconds in all at most. Returns (the
    timed calls' seconds, warm-up calls, warm-up seconds, why the timing stopped)."""
    perf = time.perf_counter
    warm0 = perf()
    end, n_warm = warm0 + warmup_s, 0
    while n_warm < warmup_runs or perf() < end:
        timed(prepared)
        n_warm += 1
    times = []
    start = perf()
    while len(times) < min_runs or perf() - start < min_time_s:
        times.append(timed(prepared))
    warm_s, stopped, check = start - warm0, "minimums", len(times)
    while perf() - start < max_time_s:
        if len(times) >= check:  # the CI is read again after a tenth more calls: sorting is not free
            if ci_fraction(times) <= ci_width:
                return times, n_warm, warm_s, "confidence interval"
            check = len(times) + max(5, len(times) // 10)
        times.append(timed(prepared))
        stopped = "max time"
    return times, n_warm, warm_s, stopped


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def observed(session, wall_s: float, cpu_s: float) -> dict:
    """What the process really got, read from inside it: cores it may run on, OS threads, and how many cores'
    worth of CPU time the timed runs used (CPU seconds / wall seconds)."""
    out = {"affinity": sorted(os.sched_getaffinity(0)), "os_threads": len(os.listdir("/proc/self/task")),
           "cores_busy": cpu_s / wall_s if wall_s > 0 else None}
    if session.device == "cuda":
        from deploycmp.core import gpu

        out["gpu"] = (gpu.devices() or [None])[0]
    return out


def save_samples(spec: dict, feed: dict, golden: dict, got: dict, labels, kinds: dict) -> dict:
    """The flipped and most-drifted samples: indices in the row; their inputs (input/NAME), the source's outputs
    (reference/NAME) and the artifact's (output/NAME) in an .npz beside it."""
    import numpy as np

    from deploycmp.measure.drift import samples_to_look_at

    found = samples_to_look_at(golden, got, labels, kinds)
    idx = sorted({e["index"] for e in found["flipped"] + found["largest_drift"]})
    path = Path(spec["samples_file"])
    tmp = path.with_name(path.name + ".tmp")
    arrays = {"index": np.array(idx, dtype=np.int64), **{f"input/{k}": a[idx] for k, a in feed.items()},
              **{f"reference/{k}": a[idx] for k, a in golden.items()}, **{f"output/{k}": a[idx] for k, a in got.items()}}
    if labels is not None:
        arrays["labels"] = labels[idx]
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    found["flipped_count"] = len(found["flipped"])
    found["flipped"] = found["flipped"][:50]
    found["file"] = f"results/{path.name}"
    return found


def device_memory(session) -> dict:
    """GPU rows: the device memory the row used, and how it was read."""
    if session.device == "cpu":
        return {}
    from deploycmp.core import gpu

    mb = session.device_memory_mb()
    if mb is not None:
        return {"device_memory_mb": mb, "device_memory_method": "peak allocated by the runtime"}
    return {"device_memory_mb": gpu.process_memory_mb(os.getpid()),
            "device_memory_method": "held by this process after the timed runs (nvidia-smi)"}


def imports_of(rt) -> str:
    """The frameworks a runtime's rows import before loading (its IMPORTS, else what it REQUIRES), comma-separated:
    rows of runtimes with the same ones can fork from one prewarmed process."""
    return ",".join(getattr(rt, "IMPORTS", rt.REQUIRES))


def prewarm(modules: str) -> None:
    """The import phase of a row: what this worker imports before it loads the artifact, with `modules` (imports_of
    its runtime). A prewarmed process runs it once (core.prewarm); import time and memory belong to this phase."""
    import importlib

    # what measure_row imports, then the runtime's frameworks
    for module in ("numpy", "deploycmp.runtimes", "deploycmp.core.degenerate", "deploycmp.core.outputs",
                   "deploycmp.core.rundir", "deploycmp.core.specs", "deploycmp.measure.drift",
                   "deploycmp.measure.latency", "deploycmp.measure.precision", *filter(None, modules.split(","))):
        importlib.import_module(module)


def process_start() -> tuple[float, float, dict]:
    """(when this row's cold start began, when this process began: its start or its fork (monotonic), how the
    process was started): fresh, or forked from a prewarmed process, whose own fresh start and imports are then this
    row's import phase."""
    from deploycmp.core.prewarm import forked_from

    forked = forked_from()
    if forked:
        return forked["fork_t"] - forked["import_s"], forked["fork_t"], {
            "start": "forked from a prewarmed process", "prewarmed_pid": forked["from_pid"],
            "import": "measured in that process, started fresh with this row's threads, cores and environment"}
    spawn_t = float(os.environ.get("DEPLOYCMP_SPAWN_T", time.monotonic()))
    return spawn_t, spawn_t, {"start": "fresh process"}


def measure_row(spec: RowJob) -> dict:
    spawn_t, began, process = process_start()
    import numpy as np

    from deploycmp.core.degenerate import mark
    from deploycmp.core.outputs import match
    from deploycmp.core.rundir import read_feed
    from deploycmp.core.specs import to_layout
    from deploycmp.measure.drift import drift
    from deploycmp.measure.latency import summarize
    from deploycmp.measure.precision import computes_in

    from deploycmp import runtimes

    rt = runtimes.get(spec["runtime"])
    prewarm(imports_of(rt))
    t_import = time.monotonic()
    rss_before_load = own_memory_mb("VmRSS")
    run_dir, artifact, batch = Path(spec["run_dir"]), spec["artifact"], spec["batch"]
    options = {"options": spec["options"]} if spec.get("options") else {}  # bench --tune's settings for this runtime
    session = rt.load(artifact, run_dir, spec["threads"], spec.get("device", "cpu"), **options)
    t_load = time.monotonic()

    inputs = {i["name"]: i for i in spec["inputs"]}
    feed, golden, labels = read_feed(run_dir / spec["reference"])
    feed = {k: to_layout(a, inputs[k].get("layout"), artifact.get("layout")) for k, a in feed.items()}
    names, kinds = [o["name"] for o in spec["outputs"]], {o["name"]: o["kind"] for o in spec["outputs"]}
    chunks = list(padded_batches(feed, batch))
    first = session.prepare(chunks[0][0])
    outputs = [match(session.to_numpy(session.run(first)), names)]
    t_first = time.monotonic()

    for chunk, _ in chunks[1:]:
        outputs.append(match(session.to_numpy(session.run(session.prepare(chunk))), names))
    for outs in outputs:
        if any(o.shape[0] != batch for o in outs.values()):
            raise RuntimeError(f"runtime returned {next(iter(outs.values())).shape[0]} samples for a batch of {batch}")
    got = {n: np.concatenate([outs[n][:real] for outs, (_, real) in zip(outputs, chunks)]) for n in names}
    got, turned = outputs_to_layout(got, golden, {i.get("layout") for i in inputs.values()} - {None},
                                    artifact.get("layout"))
    mask = next((feed[k] for k, i in inputs.items() if i["dtype"] not in ("float32", "float16", "bfloat16")
                 and "mask" in k.lower()), None)
    row = {"drift": mark(drift(golden, got, labels, kinds, mask), spec.get("degenerate", {})),
           "samples_to_look_at": save_samples(spec, feed, golden, got, labels, kinds),
           "conversions": dict(getattr(session, "conversions", {}))}
    for k, i in inputs.items():
        if i.get("layout") and artifact.get("layout") and i["layout"] != artifact["layout"] and feed[k].ndim == 4:
            row["conversions"][f"{k} layout"] = f"{i['layout']} -> {artifact['layout']} (the artifact's layout)"
    for n in turned:
        row["conversions"][f"output {n} layout"] = (f"{artifact['layout']} -> {turned[n]} (the artifact returns it "
                                                    "channels last, as its input; compared as the source gives it)")

    t_drift = time.monotonic()
    timed, clock = timer(session)
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    times, n_warm, warm_s, stopped = time_calls(timed, first, spec["warmup_runs"], spec["warmup_s"], spec["min_runs"],
                                                spec["min_time_s"], spec["max_time_s"], spec["ci_width"])
    wall_s, cpu_s = time.perf_counter() - wall0, cpu_seconds() - cpu0
    row.update(summarize(times, batch))
    row["latency_per_item_ms"] = row["latency_ms"]["p50"] / batch
    row["cold_start_ms"] = {
        "import": (t_import - spawn_t) * 1e3,
        "load": (t_load - t_import) * 1e3,
        "first_inference": (t_first - t_load) * 1e3,
        "total": (t_first - spawn_t) * 1e3,
    }
    row["peak_rss_mb"] = own_memory_mb("VmHWM")
    if row["peak_rss_mb"] is not None and rss_before_load is not None:
        row["model_memory_mb"] = row["peak_rss_mb"] - rss_before_load
    row.update(device_memory(session))
    row["runtime_info"] = session.info()
    row["computes_in"] = computes_in(row["runtime_info"], artifact.get("quantization"))
    row["observed"] = {**observed(session, wall_s, cpu_s), "process": process}
    row["timing"] = {"warmup_runs": n_warm, "timed_runs": len(times), "timed_seconds": sum(times),
                     "what": "session.run on a prepared batch (inputs already in the runtime's format)", "clock": clock,
                     "stopped": stopped, "ci_width": ci_fraction(times), "ci_width_goal": spec["ci_width"],
                     # where the worker's own time went (benchmarks/where_time_goes.py adds these up)
                     "phases_s": {"start_and_import": t_import - began, "load": t_load - t_import,
                                  "first_inference": t_first - t_load, "drift": t_drift - t_first,
                                  "warmup": warm_s, "timed_loop": wall_s - warm_s}}
    return row


def measure_peak(spec: PeakJob) -> dict:
    from deploycmp.core.environment import matmul_peak

    return {**matmul_peak(spec["threads"]), "affinity": sorted(os.sched_getaffinity(0))}


def job(spec: dict) -> dict:
    os.sched_setaffinity(0, spec["cpus"])
    return {"row": measure_row, "peak": measure_peak}[spec["job"]](spec)


if __name__ == "__main__":
    child_main(job)
