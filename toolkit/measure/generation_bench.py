"""deploycmp bench for a model that generates: a row per artifact x runtime x CPU target x (prompt length, new
tokens), each measured in a fresh worker (deploycmp.measure.generation_worker) with the target's cores and threads."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from deploycmp.core.cache import code_digest, digest
from deploycmp.core.environment import environment, versions
from deploycmp.core.errors import UsageError
from deploycmp.core.isolation import run_isolated
from deploycmp.core.results import write_results
from deploycmp.core.rundir import artifact_sha256, changed_files, inside, result_path, write_json
from deploycmp.core.specs import BATCH, point_id
from deploycmp.measure.row import Settings, kept, log_path, public_fields
from deploycmp.measure.targets import Target, worker_env
from deploycmp.runtimes import llm, missing

WARMUP_REQUESTS = 1
MIN_REQUESTS = 3


def check_reference(run_dir: Path, manifest: dict) -> None:
    """The reference generations and logits unchanged since export (their content digest)."""
    import numpy as np

    from deploycmp.sources.data import feed_sha256

    entry = manifest["generation"]
    path = inside(run_dir, entry["file"])
    try:
        with np.load(path, allow_pickle=False) as f:
            found = feed_sha256({k: f[k] for k in f.files})
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} is not readable ({e}): export the run again") from None
    if found != entry["sha256"]:
        raise UsageError(f"{path} changed since export (sha256 differs from the manifest's): export the run again")


def plan(manifest: dict, targets: list[Target], threads: int | None, only: tuple[str, ...] | None) -> list[dict]:
    model, gen = manifest["model"], manifest["generation"]
    rows = []
    for artifact in manifest["artifacts"]:
        for runtime in llm.for_format(artifact["format"]) if artifact["format"] in llm_formats() else [None]:
            for target in targets:
                if only is not None and runtime not in only:
                    continue
                for prompt in gen["prompts"]:
                    for new_tokens in gen["new_tokens"]:
                        dims = {BATCH: 1, "prompt": prompt, "new_tokens": new_tokens}
                        rows.append({
                            "id": f"{artifact['path']}-{runtime or artifact['format']}-{target.name}-{point_id(dims)}",
                            "model": model["name"], "format": artifact["format"],
                            "quantization": artifact["quantization"], "runtime": runtime or artifact["format"],
                            "target": target.name, "target_description": target.describe(threads),
                            "device": target.device, "batch": 1, "shape": dims,
                            "threads": target.resolved_threads(threads), "status": None, "error": None,
                            "size_bytes": artifact.get("size_bytes"), "size_gzip_bytes": artifact.get("size_gzip_bytes"),
                            "latency_ms": None, "latency_per_item_ms": None, "throughput_per_s": None,
                            "cold_start_ms": None, "peak_rss_mb": None, "drift": None, "generation": None,
                            "gflops": None, "peak_fraction": None, "artifact": artifact["id"],
                            "artifact_sha256": artifact_sha256(artifact), "batch_strategy": None, "warnings": [],
                            "_artifact": artifact, "_target": target})
    return rows


def llm_formats() -> set[str]:
    return {f for name in llm.RUNTIMES for f in llm.get(name).FORMATS}


def precheck(row: dict, run_dir: Path) -> tuple[str, str] | None:
    artifact, target = row["_artifact"], row["_target"]
    if artifact["status"] != "ok":
        return artifact["status"], artifact.get("error") or "no artifact"
    if row["runtime"] not in llm.RUNTIMES:
        return "unavailable", f"no runtime of deploycmp runs {artifact['format']}"
    if (reason := target.unavailable_reason()):
        return "unavailable", reason
    if target.device != "cpu":
        return "unavailable", f"{row['runtime']}: deploycmp measures generation on CPU targets only so far"
    absent = missing(llm.get(row["runtime"]).REQUIRES)
    if absent:
        return "unavailable", f"runtime {row['runtime']} needs {', '.join(absent)} (not installed)"
    if (bad := changed_files(run_dir, artifact)):
        return "failed", f"artifact changed or missing since export (sha256): {bad[0]}"
    return None


def measure(row: dict, run_dir: Path, manifest: dict, settings: Settings):
    target = row["_target"]
    spec = {"run_dir": str(run_dir), "artifact": row["_artifact"], "runtime": row["runtime"], "threads": row["threads"],
            "cpus": target.resolved_cpus(), "reference": manifest["generation"]["file"],
            "prompt": row["shape"]["prompt"], "new_tokens": row["shape"]["new_tokens"],
            "warmup_runs": WARMUP_REQUESTS, "min_runs": min(MIN_REQUESTS, settings.min_runs),
            "min_time_s": settings.min_time_s}
    return run_isolated("deploycmp.measure.generation_worker", spec, settings.timeout, run_dir / log_path(row["id"]),
                        env=worker_env(row["threads"]), memory_limit_mb=target.memory_limit_mb)


def finish(row: dict, verdict, outcome, env: dict, run_dir: Path) -> dict:
    out = public_fields(row)
    out.update(host=env["host"], versions=env["versions"], command=env["command"])
    if verdict:
        out["status"], out["error"] = verdict
    elif outcome.status != "ok":
        out.update(status=outcome.status, error=outcome.error, log=str(log_path(row["id"])),
                   diagnosis=outcome.diagnosis or [])
    else:
        out.update(outcome.result, status="ok", error=None)
        if "missing" in out["drift"]:
            out["warnings"].append(out["drift"]["missing"])
    write_json(result_path(run_dir, row["id"]), out)
    return out


def bench_generation(run_dir: Path, manifest: dict, targets: list[Target], settings: Settings, force: bool,
                     progress=None, only: tuple[str, ...] | None = None) -> dict:
    check_reference(run_dir, manifest)
    rows = plan(manifest, targets, settings.threads, only)
    installed = versions()
    for row in rows:
        row["key"] = digest({"artifact": row["artifact_sha256"], "id": row["id"], "target": asdict(row["_target"]),
                             "cpus": row["_target"].resolved_cpus(), "threads": row["threads"],
                             "reference": manifest["generation"]["sha256"], "code": code_digest(), "versions": installed,
                             "settings": {k: v for k, v in asdict(settings).items() if k != "timeout"}})
    todo = [r for r in rows if force or not kept(r, run_dir)]
    env = environment()
    result_path(run_dir, "x").parent.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(todo):
        if progress:
            progress(i, len(todo), row["id"])
        verdict = precheck(row, run_dir)
        finish(row, verdict, None if verdict else measure(row, run_dir, manifest, settings), env, run_dir)
    if progress:
        progress(len(todo), len(todo), "done")
    return {**write_results(run_dir, [r["id"] for r in rows], env), "measured": len(todo), "kept": len(rows) - len(todo),
            "source_refused": False}
