"""One row measured: whether it can be (precheck), one fresh worker process per measurement (measure_once, with
the target's cores, threads, memory limit and timeout), and the row file made from its outcomes (finish_row). bench
plans the rows and calls these; the fleet, tuning and repair call them too."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploycmp import runtimes
from deploycmp.core import seal
from deploycmp.core.isolation import run_isolated
from deploycmp.core.rundir import changed_files, read_json, reference_for, result_path, write_json
from deploycmp.core.specs import BATCH, export_point, point_id, served_by
from deploycmp.core.worker_log import log_note
from deploycmp.measure.row_worker import PeakJob, RowJob, imports_of
from deploycmp.measure.targets import Target, worker_env


@dataclass
class Settings:
    threads: int | None = None
    min_runs: int = 50
    min_time_s: float = 3.0
    warmup_runs: int = 5
    warmup_s: float = 1.0
    timeout: float = 300.0
    repeats: int = 1                         # worker processes per row (bench --repeat)
    max_time_s: float = 0.0                  # past the minimums, time until the median's CI is ci_width wide, this long at most
    ci_width: float = 0.02


def precheck(row: dict, run_dir: Path) -> tuple[str, str] | None:
    """(status, reason) when a row cannot or must not be measured; None when a worker should run it."""
    artifact, target = row["_artifact"], row["_target"]
    if artifact["status"] != "ok":
        return artifact["status"], artifact.get("error") or "no artifact"
    if artifact["format"] == "eager" and row.get("_source") is None and seal.runs_code(row["_model"]):
        return "unavailable", seal.refusal(row["_model"])
    if (reason := target.unavailable_reason()):
        return "unavailable", reason
    if target.device not in runtimes.devices(row["runtime"]):
        return "unavailable", f"runtime {row['runtime']} does not run on {target.device}"
    absent = runtimes.missing(runtimes.get(row["runtime"]).REQUIRES)
    if absent:
        return "unavailable", f"runtime {row['runtime']} needs {', '.join(absent)} (not installed)"
    if not served_by(artifact, row["shape"]):
        export = export_point(artifact)
        flags = " ".join(f"--shape {k}={v}" if k != BATCH else f"--batch {v}" for k, v in row["shape"].items()
                         if export.get(k) != v)
        return "unavailable", (f"artifact has static shapes {point_id(export)}; {point_id(row['shape'])} needs its own "
                               f"export (deploycmp export {flags})")
    bad = changed_files(run_dir, artifact)
    if bad:
        return "failed", f"artifact changed or missing since export (sha256): {bad[0]}"
    return None


def kept(row: dict, run_dir: Path) -> bool:
    """Whether the run directory holds this row's result already, measured with the same key."""
    try:
        return read_json(result_path(run_dir, row["id"])).get("key") == row["key"]
    except (OSError, ValueError, AttributeError):
        return False


def public_fields(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def measure_peaks(run_dir: Path, targets: list[Target], threads: int | None, timeout: float) -> dict:
    """The fp32 matmul peak per target, measured in a worker with that target's threads and cores."""
    peaks = {}
    for target in targets:
        if target.unavailable_reason() or target.device != "cpu":  # a CPU matmul peak says nothing of a GPU
            continue
        n = target.resolved_threads(threads)
        job = PeakJob(job="peak", cpus=target.resolved_cpus(), threads=n)
        outcome = run_isolated("deploycmp.measure.row_worker", job, timeout, run_dir / "logs" / f"peak-{target.name}.log",
                               env=worker_env(n), prewarm="torch")  # the probe's imports: numpy, torch
        peaks[target.name] = outcome.result if outcome.status == "ok" else None
    return peaks


def log_path(row_id: str, round_: int = 0) -> Path:
    return Path("logs") / (f"{row_id}.log" if not round_ else f"{row_id}.{round_ + 1}.log")


def measure_once(row: dict, run_dir: Path, manifest: dict, settings: Settings, round_: int = 0,
                 trial: dict | None = None):
    """One fresh worker process measuring one row: its Outcome (status, error, result). `trial` (bench --tune):
    another `artifact`, runtime `options` and `threads` to measure the row with; a `name` for its log."""
    result_path(run_dir, row["id"]).parent.mkdir(parents=True, exist_ok=True)
    trial = trial or {}
    target, artifact = row["_target"], dict(trial.get("artifact") or row["_artifact"])
    artifact["model"] = manifest["model"]
    threads = trial.get("threads", row["threads"])
    reference = reference_for(manifest, row["shape"])
    samples = result_path(run_dir, row["id"]).with_suffix(".samples.npz")
    if trial.get("name"):
        samples = run_dir / "tuning" / f"{row['id']}.{trial['name']}.samples.npz"
        samples.parent.mkdir(parents=True, exist_ok=True)
    spec = RowJob(job="row", run_dir=str(run_dir), artifact=artifact, runtime=row["runtime"], batch=row["batch"],
                  threads=threads, cpus=target.resolved_cpus(), device=target.device,
                  inputs=manifest["model"]["inputs"], outputs=manifest["model"]["outputs"], reference=reference["file"],
                  degenerate=reference.get("degenerate", {}), samples_file=str(samples),
                  options=trial.get("options") or {}, min_runs=settings.min_runs, min_time_s=settings.min_time_s,
                  max_time_s=settings.max_time_s, ci_width=settings.ci_width, warmup_runs=settings.warmup_runs,
                  warmup_s=settings.warmup_s)
    log = run_dir / (Path("logs") / f"{row['id']}.{trial['name']}.log" if trial.get("name") else log_path(row["id"], round_))
    rt = runtimes.get(row["runtime"])
    outcome = run_isolated("deploycmp.measure.row_worker", spec, settings.timeout, log, env=worker_env(threads, target.device),
                           memory_limit_mb=target.memory_limit_mb,
                           prewarm=imports_of(rt) if target.device == "cpu" and getattr(rt, "PREWARM", True) else None)
    if trial.get("name"):
        samples.unlink(missing_ok=True)  # a trial's samples are not the row's
    return outcome


def finish_row(row: dict, verdict, outcomes: list, run_dir: Path, env: dict, peak: dict | None) -> dict:
    """The row's result from its precheck verdict or its worker outcomes (several with --repeat), written atomically."""
    out = public_fields(row)
    out.update(host=env["host"], versions=env["versions"], command=env["command"])
    if verdict:
        out["status"], out["error"] = verdict
    else:
        bad = next((o for o in outcomes if o.status != "ok"), None)
        out["status"], out["error"] = (bad.status, bad.error) if bad else ("ok", None)
        if bad:  # its log, and the native libraries' own words on what went wrong
            out["log"] = str(log_path(row["id"], outcomes.index(bad)))
            out["diagnosis"] = bad.diagnosis or []
        if not bad:
            from deploycmp.measure.repeats import combine

            out.update(outcomes[0].result if len(outcomes) == 1 else combine([o.result for o in outcomes], row["batch"]))
            p50 = out["latency_ms"]["p50"]
            if out["gflops"] and peak and p50 > 0:
                out["peak_fraction"] = out["gflops"] / (p50 / 1e3) / peak["peak_gflops"]
            check_memory_budget(out, row["_target"])
            timing = out["timing"]
            if timing.get("stopped") == "max time":  # said, not hidden: the median is less certain than asked
                out["warnings"].append(f"timing: the median's 95% CI was {100 * timing['ci_width']:.1f}% of it after "
                                       f"{timing['timed_runs']} runs in --max-time (goal {100 * timing['ci_width_goal']:g}%): "
                                       "a noisy machine or a runtime whose latency varies")
            # what the runtime did on its own (OpenVINO computing in bf16 by default ...): said in the row
            out["warnings"].extend((out.get("runtime_info") or {}).get("notes", []))
        for i, outcome in enumerate(outcomes):  # a worker that flooded its log: its log kept the head and the tail
            if (note := log_note(outcome, log_path(row["id"], i))):
                out["warnings"].append(note)
    out["peak_gflops"] = peak and peak["peak_gflops"]
    out["peak"] = peak and {k: peak[k] for k in ("probe", "probes", "matmul", "threads", "theoretical") if k in peak}
    if (out.get("peak_fraction") or 0) > 1:  # the probe was no upper bound for this runtime's kernels
        out["peak"]["exceeded"] = (
            f"{out['peak_fraction']:.2f}x the fp32 peak of {peak['probe']} matmul ({peak['peak_gflops']:.0f} GFLOP/s): "
            "the runtime's kernels do fewer operations than counted (Winograd convolutions, int8 or bf16 arithmetic) "
            "or its GEMM beats the probe's; the fraction is not an efficiency here")
    write_json(result_path(run_dir, row["id"]), out)
    return out


def check_memory_budget(row: dict, target: Target) -> None:
    """Compare what loading and running the artifact added to the worker's memory with the target's budget."""
    if target.memory_budget_mb is None or row.get("model_memory_mb") is None:
        return
    used, limit = row["model_memory_mb"], target.memory_budget_mb
    row["memory_budget"] = {"limit_mb": limit, "used_mb": used, "within": used <= limit,
                            "what": "peak RSS growth from loading the artifact to the end of the timed runs"}
    if used > limit:
        row["warnings"].append(f"load + inference added {used:.0f} MB, over the {target.name} budget of {limit:g} MB")
