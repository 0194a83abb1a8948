"""deploycmp repair: make an int8 row that misses the thresholds in force pass, at the least float it takes.

Candidates in order of cost, each re-quantized from the path's fp32 file on the run's calibration split (a worker
process), added to the run as an artifact of its own (`<artifact>-r1`, `-r2` ...) and measured on the row's
runtime, target and batch like any row (a fresh worker): first the quantizer's other calibration methods
(`CALIBRATION_METHODS` of its module), then, from the best calibration so far, the tensors where explain found
the error entering kept in float, one more each step (the ops that make and read each). The first candidate that
passes ends it; `max_steps` candidates at most, all kept as rows so the report shows the price of each step.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from deploycmp.core.errors import UsageError
from deploycmp.core.rundir import MANIFEST, describe_files, read_json, result_path, write_json

def _metrics(row: dict) -> dict:
    drift = row.get("drift") or {}
    return {"row": row["id"], "status": row["status"], "error": row.get("error"), "sqnr_db": drift.get("sqnr_db"),
            "cosine_min": drift.get("cosine_min"), "accuracy_delta_pp": drift.get("accuracy_delta_pp"),
            "size_bytes": row.get("size_bytes"), "p50_ms": (row.get("latency_ms") or {}).get("p50")}


def _drop_earlier(run_dir: Path, manifest: dict, artifact_id: str) -> dict:
    """Candidates of an earlier repair of this artifact go: their folders, rows and manifest entries."""
    old = [a for a in manifest["artifacts"] if (a.get("repair") or {}).get("of_artifact") == artifact_id]
    for a in old:
        shutil.rmtree(run_dir / "artifacts" / a["id"], ignore_errors=True)
        for f in (run_dir / "results").glob(f"{a['id']}-*"):
            f.unlink()
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a not in old]
    return manifest


def _candidate(run_dir: Path, manifest: dict, artifact: dict, k: int, recipe: dict, change: str, row_id: str,
               timeout: float) -> dict:
    """Step k's artifact: re-quantized with `recipe`, recorded in the manifest."""
    from deploycmp.export.requantize_worker import requantize

    new_id = f"{artifact['id']}-r{k}"
    folder = run_dir / "artifacts" / new_id
    shutil.rmtree(folder, ignore_errors=True)
    main = folder / Path(artifact["main_file"]).name
    entry = {**{k_: v for k_, v in artifact.items() if k_ not in ("key", "reused")}, "id": new_id, "path": new_id,
             "main_file": str(main.relative_to(run_dir)),
             "repair": {"of_artifact": artifact["id"], "of_row": row_id, "step": k, "change": change, "recipe": recipe}}
    try:
        info = requantize(run_dir, manifest, artifact, recipe, main, timeout, run_dir / "logs" / f"repair-{new_id}.log")
    except RuntimeError as e:
        entry.update(status="export_failed", error=str(e), files=[], size_bytes=None, size_gzip_bytes=None)
    else:
        entry["exporter"] = {**(artifact.get("exporter") or {}), "quantization": info}
        entry.update(describe_files(run_dir, folder))
    manifest["artifacts"].append(entry)
    write_json(run_dir / MANIFEST, manifest)
    return entry


def _measure(run_dir: Path, manifest: dict, row: dict, entry: dict, settings, targets_file) -> dict:
    """The candidate's row on the original row's runtime, target, threads and shape point: one fresh worker."""
    from deploycmp.core.environment import environment, versions
    from deploycmp.measure.bench import plan, row_key
    from deploycmp.measure.row import finish_row, measure_once, precheck
    from deploycmp.measure.targets import parse_targets

    target = parse_targets(row["target"], targets_file)[0]
    planned = [r for r in plan({**manifest, "artifacts": [entry]}, [target], [row["batch"]], row["threads"],
                               only=(row["runtime"],)) if r["shape"] == row["shape"]]
    new = {**planned[0], "repair": {k: entry["repair"][k] for k in ("of_row", "step", "change")}}
    new["key"] = row_key(new, manifest, settings, versions())
    verdict = precheck(new, run_dir)
    outcomes = [] if verdict else [measure_once(new, run_dir, manifest, settings)]
    return finish_row(new, verdict, outcomes, run_dir, environment(), None)


def repair(run_dir: Path, row_id: str, policy, flags, settings, max_steps: int, targets_file=None,
           progress=None) -> dict:
    """Candidates until one passes the thresholds in force for the row (policy < flags); every step with its
    change, drift, size and latency in results/<row>.repair.json. `passed`: the id of the row that passes, None."""
    from deploycmp.core.results import write_results
    from deploycmp.export.requantize_worker import QUANTIZERS, quantizer
    from deploycmp.gate.explain import explain, take_row
    from deploycmp.gate.validate import check, resolve

    run_dir = Path(run_dir)
    manifest, row, artifact, _ = take_row(run_dir, row_id, "repair")
    if row["format"] not in QUANTIZERS:
        raise UsageError(f"repair: deploycmp cannot re-quantize {row['format']} files (it can: {', '.join(QUANTIZERS)})")
    thresholds = resolve(row, policy, flags)
    if not thresholds.any():
        raise UsageError(f"repair: no threshold applies to {row_id}: give --min-sqnr, --max-accuracy-drop, "
                         "--min-cosine ... or --thresholds FILE")
    order = [r["id"] for r in read_json(run_dir / "results.json")["rows"]]
    verdict = check(row, thresholds)
    steps = [{"step": 0, "change": "none: the int8 row as exported", **_metrics(row), "verdict": verdict.verdict,
              "reasons": verdict.reasons}]
    out = {"row": row_id, "thresholds": {k: v for k, v in vars(thresholds).items() if v is not None},
           "steps": steps, "passed": row_id if verdict.verdict == "pass" else None}
    if out["passed"]:
        write_json(result_path(run_dir, row_id).with_suffix(".repair.json"), out)
        return out
    manifest = _drop_earlier(run_dir, manifest, artifact["id"])
    layers = explain(run_dir, row_id)
    by = {x["tensor"]: x for x in layers["layers"]}
    worst = layers["top"]  # where explain found the error entering, worst first
    used = (artifact.get("exporter") or {}).get("quantization", {}).get("calibration_method")
    methods = [m for m in quantizer(row["format"]).CALIBRATION_METHODS if m != used]
    plans = [({"calibration_method": m}, f"calibration {m}") for m in methods]
    plans += [(None, worst[:j]) for j in range(1, len(worst) + 1)]  # from the best calibration, found on the way
    best = (steps[0]["sqnr_db"] or float("-inf"), {}, f"calibration {used}")
    for k, (recipe, change) in enumerate(plans[:max_steps], 1):
        if recipe is None:
            recipe = {**best[1], "keep_float": change}
            change = (f"{best[2]}; " if best[1] else "") + "float: " + ", ".join(
                dict.fromkeys(by[t]["layer"] for t in change))
        if progress:
            progress(k - 1, min(len(plans), max_steps), change)
        entry = _candidate(run_dir, manifest, artifact, k, recipe, change, row_id, settings.timeout)
        new = _measure(run_dir, manifest, row, entry, settings, targets_file)
        verdict = check(new, thresholds)
        steps.append({"step": k, "change": change, "recipe": recipe, **_metrics(new), "verdict": verdict.verdict,
                      "reasons": verdict.reasons})
        sqnr = steps[-1]["sqnr_db"]
        if "keep_float" not in recipe and sqnr is not None and sqnr > best[0]:
            best = (sqnr, recipe, change)
        if verdict.verdict == "pass":
            out["passed"] = new["id"]
            break
    out["tried"] = len(steps) - 1
    out["left"] = max(0, len(plans) - max_steps)
    write_json(result_path(run_dir, row_id).with_suffix(".repair.json"), out)
    write_results(run_dir, order + [s["row"] for s in steps[1:]])
    return out


def repair_lines(result: dict) -> list[str]:
    """The table of steps: what changed, and its price."""
    def num(v, fmt):
        width = int(fmt.lstrip("+").split(".")[0])
        return "n/a".rjust(width) if v is None else format(v, fmt)

    out = [f"{'step':>4}  {'row':44} {'SQNR dB':>8} {'cos min':>8} {'acc Δpp':>8} {'MB':>7} {'p50 ms':>8}  verdict  change"]
    for s in result["steps"]:
        out.append(f"{s['step']:>4}  {s['row']:44.44} {num(s['sqnr_db'], '8.1f')} {num(s['cosine_min'], '8.4f')} "
                   f"{num(s['accuracy_delta_pp'], '+8.1f')} {num(s['size_bytes'] and s['size_bytes'] / 1e6, '7.3g')} "
                   f"{num(s['p50_ms'], '8.3f')}  {s['verdict']:7}  {s['change']}")
    return out
