"""deploycmp bench: plan the rows of the matrix and measure each in its own worker process."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import runtimes
from toolkit import SCHEMA
from toolkit.environment import environment
from toolkit.errors import UsageError
from toolkit.isolation import run_isolated
from toolkit.rundir import RESULTS, artifact_sha256, changed_files, load_manifest, load_rows, read_json, result_path, write_json
from toolkit.targets import Target, worker_env

FAILED = ("failed", "crashed", "timeout", "export_failed")


@dataclass
class Settings:
    threads: int | None = None
    min_runs: int = 50
    min_time_s: float = 3.0
    warmup_runs: int = 5
    warmup_s: float = 1.0
    timeout: float = 300.0
    repeats: int = 1                         # worker processes per row (bench --repeat)


def parse_batches(spec: str) -> list[int]:
    try:
        sizes = [int(s) for s in str(spec).split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--batch {spec!r}: expected comma-separated positive integers, e.g. 1,8") from None
    if not sizes or any(b <= 0 for b in sizes):
        raise UsageError(f"--batch {spec!r}: batch sizes must be positive integers")
    return list(dict.fromkeys(sizes))


def row_id(path: str, runtime: str, target: str, batch: int) -> str:
    return f"{path}-{runtime}-{target}-b{batch}"


def artifact_for(candidates: list[dict], batch: int) -> dict:
    """The artifact of one path (format x quantization) that serves `batch`: the one exported at that batch, else
    one with a dynamic batch axis, else the first (whose row then says that batch needs its own export)."""
    exact = [a for a in candidates if a.get("export_batch") == batch and a["status"] == "ok"]
    dynamic = [a for a in candidates if a["status"] == "ok" and a.get("dynamic_batch")]
    return (exact or dynamic or candidates)[0]


def plan(manifest: dict, targets: list[Target], batch_sizes: list[int], threads: int | None) -> list[dict]:
    """Every (path, runtime, target, batch) as a row skeleton with all result keys present."""
    model = manifest["model"]
    paths: dict[str, list[dict]] = {}
    for artifact in manifest["artifacts"]:
        paths.setdefault(artifact.get("path", artifact["id"]), []).append(artifact)
    gflops = model.get("gflops_per_sample")
    rows = []
    for path, candidates in paths.items():
        fmt = candidates[0]["format"]
        for runtime in runtimes.for_format(fmt, model["framework"]):
            for target in targets:
                if not target.runs(runtime):
                    continue
                for batch in batch_sizes:
                    artifact = artifact_for(candidates, batch)
                    rows.append({
                        "id": row_id(path, runtime, target.name, batch), "model": model["name"],
                        "format": fmt, "quantization": artifact["quantization"], "runtime": runtime,
                        "target": target.name, "target_description": target.describe(threads),
                        "device": target.device, "batch": batch, "threads": target.resolved_threads(threads),
                        "status": None, "error": None, "size_bytes": artifact.get("size_bytes"),
                        "size_gzip_bytes": artifact.get("size_gzip_bytes"), "latency_ms": None,
                        "latency_per_item_ms": None, "throughput_per_s": None, "cold_start_ms": None,
                        "peak_rss_mb": None, "drift": None, "gflops": gflops * batch if gflops else None,
                        "peak_fraction": None, "artifact": artifact["id"],
                        "artifact_sha256": artifact_sha256(artifact),
                        "batch_strategy": artifact.get("batch_strategy"), "warnings": [],
                        "_artifact": artifact, "_target": target,
                    })
    return rows


def precheck(row: dict, run_dir: Path) -> tuple[str, str] | None:
    """(status, reason) when a row cannot or must not be measured; None when a worker should run it."""
    artifact, target = row["_artifact"], row["_target"]
    if artifact["status"] != "ok":
        return artifact["status"], artifact.get("error") or "no artifact"
    if (reason := target.unavailable_reason()):
        return "unavailable", reason
    if target.device not in runtimes.devices(row["runtime"]):
        return "unavailable", f"runtime {row['runtime']} does not run on {target.device}"
    absent = runtimes.missing(runtimes.get(row["runtime"]).REQUIRES)
    if absent:
        return "unavailable", f"runtime {row['runtime']} needs {', '.join(absent)} (not installed)"
    export_batch = artifact.get("export_batch")
    if not artifact.get("dynamic_batch", True) and export_batch and row["batch"] != export_batch:
        return "unavailable", (f"artifact has a static batch of {export_batch}; batch {row['batch']} needs its own "
                               f"export (deploycmp export --batch {row['batch']})")
    bad = changed_files(run_dir, artifact)
    if bad:
        return "failed", f"artifact changed or missing since export (sha256): {bad[0]}"
    return None


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def measure_peaks(run_dir: Path, targets: list[Target], threads: int | None, timeout: float) -> dict:
    """The fp32 matmul peak per target, measured in a worker with that target's threads and cores."""
    peaks = {}
    for target in targets:
        if target.unavailable_reason() or target.device != "cpu":  # a CPU matmul peak says nothing of a GPU
            continue
        n = target.resolved_threads(threads)
        outcome = run_isolated("toolkit.worker", {"job": "peak", "cpus": target.resolved_cpus()}, timeout,
                               run_dir / "logs" / f"peak-{target.name}.log", env=worker_env(n))
        peaks[target.name] = outcome.result["peak_gflops"] if outcome.status == "ok" else None
    return peaks


def measure_once(row: dict, run_dir: Path, manifest: dict, settings: Settings, round_: int = 0):
    """One fresh worker process measuring one row: its Outcome (status, error, result)."""
    result_path(run_dir, row["id"]).parent.mkdir(parents=True, exist_ok=True)
    target, artifact = row["_target"], dict(row["_artifact"])
    artifact["model"] = manifest["model"]
    spec = {"job": "row", "run_dir": str(run_dir), "artifact": artifact, "runtime": row["runtime"],
            "batch": row["batch"], "threads": row["threads"], "cpus": target.resolved_cpus(), "device": target.device,
            "reference_layout": manifest["model"].get("layout"), "min_runs": settings.min_runs,
            "samples_file": str(result_path(run_dir, row["id"]).with_suffix(".samples.npz")),
            "min_time_s": settings.min_time_s, "warmup_runs": settings.warmup_runs, "warmup_s": settings.warmup_s}
    log = run_dir / "logs" / (f"{row['id']}.log" if not round_ else f"{row['id']}.{round_ + 1}.log")
    return run_isolated("toolkit.worker", spec, settings.timeout, log, env=worker_env(row["threads"], target.device))


def finish_row(row: dict, verdict, outcomes: list, run_dir: Path, env: dict, peak: float | None) -> dict:
    """The row's result from its precheck verdict or its worker outcomes (several with --repeat), written atomically."""
    out = _public(row)
    out.update(host=env["host"], versions=env["versions"], command=env["command"])
    if verdict:
        out["status"], out["error"] = verdict
    else:
        bad = next((o for o in outcomes if o.status != "ok"), None)
        out["status"], out["error"] = (bad.status, bad.error) if bad else ("ok", None)
        if not bad:
            from toolkit.repeats import combine

            out.update(outcomes[0].result if len(outcomes) == 1 else combine([o.result for o in outcomes], row["batch"]))
            p50 = out["latency_ms"]["p50"]
            if out["gflops"] and peak and p50 > 0:
                out["peak_fraction"] = out["gflops"] / (p50 / 1e3) / peak
            check_memory_budget(out, row["_target"])
    out["peak_gflops"] = peak
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


def bench_run(run_dir, targets: list[Target], batch_sizes: list[int], settings: Settings, force: bool,
              progress=None) -> dict:
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    rows = plan(manifest, targets, batch_sizes, settings.threads)
    todo = [r for r in rows if force or not result_path(run_dir, r["id"]).is_file()]
    env = environment()
    peaks = measure_peaks(run_dir, targets, settings.threads, settings.timeout) if todo else {}
    verdicts = {r["id"]: precheck(r, run_dir) for r in todo}
    outcomes: dict[str, list] = {r["id"]: [] for r in todo}
    rounds, step = settings.repeats, 0
    # with --repeat, rounds go over every row in turn, so a slow spell of the machine touches all rows alike; each
    # row's file is written after its last round
    for round_ in range(rounds):
        for row in todo:
            if progress:
                progress(step, len(todo) * rounds, row["id"] + (f" ({round_ + 1}/{rounds})" if rounds > 1 else ""))
            step += 1
            done = outcomes[row["id"]]
            if not verdicts[row["id"]] and all(o.status == "ok" for o in done):  # a row that failed is not retried
                done.append(measure_once(row, run_dir, manifest, settings, round_))
            if round_ == rounds - 1:
                finish_row(row, verdicts[row["id"]], done, run_dir, env, peaks.get(row["target"]))
    if progress:
        progress(len(todo) * rounds, len(todo) * rounds, "done")
    return write_results(run_dir, [r["id"] for r in rows], env)


def write_results(run_dir: Path, order: list[str], env: dict | None = None) -> dict:
    """results.json: the planned rows in plan order, then any other row files in the run directory."""
    by_id = {r["id"]: r for r in load_rows(run_dir)}
    ordered = [by_id.pop(i) for i in order if i in by_id] + list(by_id.values())
    results = {"schema": SCHEMA, "rows": ordered, "environment": env or environment()}
    write_json(Path(run_dir) / RESULTS, results)
    return results


def load_results(run_dir) -> dict:
    run_dir = Path(run_dir)
    load_manifest(run_dir)
    path = run_dir / RESULTS
    if not path.is_file():
        raise UsageError(f"{run_dir} has no {RESULTS} yet: run 'deploycmp bench {run_dir}' first")
    try:
        return read_json(path)
    except ValueError as e:
        raise UsageError(f"{path} is not readable JSON: {e}") from e


def exit_status(rows: list[dict]) -> int:
    return 1 if any(r["status"] in FAILED for r in rows) else 0
