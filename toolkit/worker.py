"""Worker process for one measured row: affinity first, then import, load, first inference, drift, timed runs.

Nothing heavy is imported at module level: the CPU affinity and thread variables must be in place before numpy
or any framework starts its thread pools.
"""
from __future__ import annotations

import os
import time

from toolkit.isolation import child_main


def to_layout(x, src: str | None, dst: str | None):
    """Transpose a batch between NCHW and NHWC when the artifact's layout differs from the reference's."""
    if not src or not dst or src == dst or x.ndim != 4:
        return x
    if (src, dst) == ("NCHW", "NHWC"):
        return x.transpose(0, 2, 3, 1)
    if (src, dst) == ("NHWC", "NCHW"):
        return x.transpose(0, 3, 1, 2)
    raise ValueError(f"cannot convert layout {src} to {dst}")


def batches(x, batch: int):
    """Split samples into batches of exactly `batch`; the last one is padded by repeating samples."""
    import numpy as np

    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.resize(chunk, (batch - real, *chunk.shape[1:]))])
        yield chunk, real


def time_calls(run, prepared, warmup_runs: int, warmup_s: float, min_runs: int, min_time_s: float) -> tuple[list[float], int]:
    """Warm up (count and seconds), then time single calls until both min_runs and min_time_s are reached."""
    perf = time.perf_counter
    end, n_warm = perf() + warmup_s, 0
    while n_warm < warmup_runs or perf() < end:
        run(prepared)
        n_warm += 1
    times = []
    start = perf()
    while len(times) < min_runs or perf() - start < min_time_s:
        t0 = perf()
        run(prepared)
        times.append(perf() - t0)
    return times, n_warm


def peak_rss_mb() -> float | None:
    """This process's peak resident memory. Read from VmHWM, which starts afresh at exec: getrusage's
    ru_maxrss carries the parent's peak across fork+exec, so it would charge every row the harness's memory."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure_row(spec: dict) -> dict:
    import importlib
    from pathlib import Path

    spawn_t = float(os.environ.get("DEPLOYCMP_SPAWN_T", time.monotonic()))
    import numpy as np

    import runtimes
    from toolkit.drift import drift
    from toolkit.latency import summarize

    rt = runtimes.get(spec["runtime"])
    for module in rt.REQUIRES:
        importlib.import_module(module)
    t_import = time.monotonic()
    run_dir, artifact, batch = Path(spec["run_dir"]), spec["artifact"], spec["batch"]
    session = rt.load(artifact, run_dir, spec["threads"])
    t_load = time.monotonic()

    with np.load(run_dir / "reference.npz") as ref:
        x = ref["x"]
        golden = [ref[f"y{i}"] for i in range(sum(1 for k in ref.files if k.startswith("y")))]
    src_layout, dst_layout = spec.get("reference_layout"), artifact.get("layout")
    chunks = list(batches(x, batch))
    first = session.prepare(to_layout(chunks[0][0], src_layout, dst_layout))
    outputs = [session.to_numpy(session.run(first))]
    t_first = time.monotonic()

    for chunk, _ in chunks[1:]:
        outputs.append(session.to_numpy(session.run(session.prepare(to_layout(chunk, src_layout, dst_layout)))))
    for outs in outputs:
        if any(o.shape[0] != batch for o in outs):
            raise RuntimeError(f"runtime returned {outs[0].shape[0]} samples for a batch of {batch}")
    got = [np.concatenate([outs[i][:real] for outs, (_, real) in zip(outputs, chunks)]) for i in range(len(golden))]
    row = {"drift": drift(golden, got)}

    times, n_warm = time_calls(session.run, first, spec["warmup_runs"], spec["warmup_s"], spec["min_runs"], spec["min_time_s"])
    row.update(summarize(times, batch))
    row["cold_start_ms"] = {
        "import": (t_import - spawn_t) * 1e3,
        "load": (t_load - t_import) * 1e3,
        "first_inference": (t_first - t_load) * 1e3,
        "total": (t_first - spawn_t) * 1e3,
    }
    row["peak_rss_mb"] = peak_rss_mb()
    row["runtime_info"] = session.info()
    row["affinity"] = sorted(os.sched_getaffinity(0))
    row["timing"] = {"warmup_runs": n_warm, "timed_runs": len(times), "timed_seconds": sum(times),
                     "what": "session.run on a prepared batch (inputs already in the runtime's format)", "clock": "perf_counter"}
    return row


def measure_peak(spec: dict) -> dict:
    from toolkit.environment import matmul_peak_gflops

    return {"peak_gflops": matmul_peak_gflops(), "affinity": sorted(os.sched_getaffinity(0))}


def job(spec: dict) -> dict:
    os.sched_setaffinity(0, spec["cpus"])
    return {"row": measure_row, "peak": measure_peak}[spec["job"]](spec)


if __name__ == "__main__":
    child_main(job)
