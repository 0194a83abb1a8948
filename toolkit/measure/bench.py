"""deploycmp bench: plan the rows of the matrix and measure each in its own worker process."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from deploycmp import runtimes
from deploycmp.core import seal
from deploycmp.core.cache import code_digest, digest
from deploycmp.core.environment import environment, versions
from deploycmp.core.errors import UsageError
from deploycmp.core.results import write_results
from deploycmp.core.rundir import (artifact_sha256, inside, load_manifest, load_rows, reference_for,
                                   result_path)
from deploycmp.core.specs import BATCH, export_point, parse_sweeps, point_id, served_by
from deploycmp.measure.row import Settings, finish_row, kept, measure_once, measure_peaks, precheck
from deploycmp.measure.targets import Target


def parse_batches(spec: str) -> list[int]:
    return parse_sweeps((), spec)[BATCH]


def row_id(path: str, runtime: str, target: str, dims: dict) -> str:
    return f"{path}-{runtime}-{target}-{point_id(dims)}"


def artifact_for(candidates: list[dict], dims: dict) -> dict:
    """The artifact of one path (format x quantization) that serves the shape point `dims`: the one exported at
    it, else one whose free dimensions cover the difference, else the first (whose row then says that shape needs
    its own export)."""
    ok = [a for a in candidates if a["status"] == "ok"]
    exact = [a for a in ok if export_point(a) == dims]
    return (exact or [a for a in ok if served_by(a, dims)] or candidates)[0]


def shape_points_of(manifest: dict, batch_sizes: list[int]) -> list[dict]:
    """Every (batch, named dimensions) a row is measured at: the bench's batch sizes x the export's shape points."""
    points = [r["dims"] for r in manifest.get("references") or [{"dims": {}}]]
    return [{BATCH: b, **p} for p in points for b in batch_sizes]


def check_references(run_dir: Path, manifest: dict) -> None:
    """Every reference and calibration file the manifest names, unchanged since export (the content digest it
    recorded): golden outputs edited or replaced would make every row's drift a lie. One line when one is not."""
    from deploycmp.sources.data import feed_sha256

    for ref in manifest.get("references", []):
        for key, digest_key, prefix in (("file", "sha256", ""), ("calibration", "calibration_sha256", "input/")):
            if not ref.get(key) or not ref.get(digest_key):
                continue
            path = inside(run_dir, ref[key])
            try:
                with np.load(path, allow_pickle=False) as f:
                    found = feed_sha256({k[len(prefix):]: f[k] for k in f.files})
            except FileNotFoundError:
                raise UsageError(f"{path} is missing: the run's {key.replace('file', 'reference')} inputs and outputs "
                                 "are gone; export the run again") from None
            except (OSError, ValueError, KeyError) as e:
                raise UsageError(f"{path} is not readable: {e}; export the run again") from None
            if found != ref[digest_key]:
                raise UsageError(f"{path} changed since export (sha256 differs from the manifest's): its "
                                 f"{'golden outputs' if key == 'file' else 'calibration inputs'} are not the ones the "
                                 "artifacts were exported and checked with; export the run again")


def plan(manifest: dict, targets: list[Target], batch_sizes: list[int], threads: int | None,
         only: tuple[str, ...] | None = None) -> list[dict]:
    """Every (path, runtime, target, shape point) as a row skeleton with all result keys present; `only`: the
    runtimes to plan (bench --runtimes), among those each target runs."""
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
                if not target.runs(runtime) or (only is not None and runtime not in only):
                    continue
                for dims in shape_points_of(manifest, batch_sizes):
                    artifact, batch = artifact_for(candidates, dims), dims[BATCH]
                    rows.append({
                        "id": row_id(path, runtime, target.name, dims), "model": model["name"],
                        "format": fmt, "quantization": artifact["quantization"], "runtime": runtime,
                        "target": target.name, "target_description": target.describe(threads),
                        "device": target.device, "batch": batch, "shape": dims,
                        "threads": target.resolved_threads(threads),
                        "status": None, "error": None, "size_bytes": artifact.get("size_bytes"),
                        "size_gzip_bytes": artifact.get("size_gzip_bytes"), "latency_ms": None,
                        "latency_per_item_ms": None, "throughput_per_s": None, "cold_start_ms": None,
                        "peak_rss_mb": None, "drift": None, "gflops": gflops * batch if gflops else None,
                        "peak_fraction": None, "artifact": artifact["id"],
                        "artifact_sha256": artifact_sha256(artifact),
                        "batch_strategy": artifact.get("batch_strategy"), "warnings": [],
                        "_artifact": artifact, "_target": target, "_model": model,
                    })
    return rows


def row_key(row: dict, manifest: dict, settings: Settings, installed: dict) -> str:
    """Everything a row's measurement depends on (`installed`: the framework versions, read once per bench): a row
    file with this key is kept when a run is resumed."""
    target = row["_target"]
    return digest({"artifact": row["artifact_sha256"], "artifact_id": row["artifact"], "runtime": row["runtime"],
                   "target": asdict(target), "cpus": target.resolved_cpus(), "threads": row["threads"],
                   "shape": row["shape"], "reference": reference_for(manifest, row["shape"]).get("sha256"),
                   "settings": {k: v for k, v in asdict(settings).items() if k != "timeout"},
                   "code": code_digest(), "versions": installed})


def bench_run(run_dir, targets: list[Target], batch_sizes: list[int], settings: Settings, force: bool,
              progress=None, tune=None, fleet=None, only: tuple[str, ...] | None = None, source: str | None = None) -> dict:
    """Measure every planned row that the run directory does not hold yet with the same key (all with force);
    the results carry how many rows were `measured` now and how many `kept`. `tune`: bench --tune's hook (a
    gate.tune.Tuner): every row also gets a tuned twin whose settings it searches. `fleet`: a fleet.Fleet; the rows are measured on the nodes of that Ray cluster instead of here (bench --ray). `only`: the
    runtimes to measure (bench --runtimes); rows of others measured before stay in the results. `source`: the
    --model the user gave again, which allows rebuilding a factory source that this machine did not seal."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir, for_measuring=True)
    if manifest.get("generation"):  # a model that generates: rows of its own (deploycmp.measure.generation_bench)
        from deploycmp.measure.generation_bench import bench_generation

        return bench_generation(run_dir, manifest, targets, settings, force, progress, only)
    check_references(run_dir, manifest)
    load_rows(run_dir)  # rows a received run directory holds are checked before any is kept or written beside
    rows = plan(manifest, targets, batch_sizes, settings.threads, only)
    allowed = seal.allowed_source(manifest, source)
    for row in rows:
        row["_source"] = allowed  # the factory its workers may import (deploycmp.core.seal), None: none
    installed = versions()
    for row in rows:
        row["key"] = row_key(row, manifest, settings, installed)
        if fleet is not None:
            from deploycmp.measure.fleet import fleet_key

            row["key"] = fleet_key(row["key"])
    if tune is not None:
        rows = [x for r in rows for x in (r, tune.twin(r))]
    todo = [r for r in rows if force or not kept(r, run_dir)]
    env = environment()
    from deploycmp.core import prewarm

    try:
        with seal.allowing(allowed):
            measured = _measure(run_dir, rows, todo, manifest, settings, env, targets, progress, tune, fleet)
    finally:  # the prewarmed processes the rows were forked from end with the measuring
        prewarm.close_all()
    return {**measured, "measured": len(todo), "kept": len(rows) - len(todo),
            "source_refused": seal.runs_code(manifest["model"]) and allowed is None}


def _measure(run_dir: Path, rows: list, todo: list, manifest: dict, settings: Settings, env: dict, targets: list,
             progress, tune, fleet) -> dict:
    """Measure the rows to do (here or on the fleet); the results of all rows."""
    if fleet is not None:
        from deploycmp.measure.fleet import bench_on_fleet

        bench_on_fleet(fleet, run_dir, todo, manifest, settings, env, progress)
        return write_results(run_dir, [r["id"] for r in rows], env)
    # the fp32 matmul peak is what a row's GFLOPs are set against: not probed when no row to measure has a count
    # (a Keras or ONNX source)
    peaks = measure_peaks(run_dir, targets, settings.threads, settings.timeout) if any(r["gflops"] for r in todo) else {}
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
            if row.get("tuned") and round_ == 0 and not verdicts[row["id"]]:
                verdicts[row["id"]] = tune.first(row, run_dir, manifest, settings)
            if not verdicts[row["id"]] and all(o.status == "ok" for o in done):  # a row that failed is not retried
                done.append(measure_once(row, run_dir, manifest, settings, round_, row.get("_trial")))
            if round_ == rounds - 1:
                finish_row(row, verdicts[row["id"]], done, run_dir, env, peaks.get(row["target"]))
    if progress:
        progress(len(todo) * rounds, len(todo) * rounds, "done")
    return write_results(run_dir, [r["id"] for r in rows], env)
