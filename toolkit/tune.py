"""bench --tune: each runtime at its best settings on the target, as a row of its own beside the untuned one.

The knobs are the ones each runtime module declares (TUNE, or tune_space(artifact, device)), plus the thread count
(never above the target's) and, for ONNX Runtime's static int8 files, the quantization recipes ONNX Runtime
documents (exporters.onnx_quantization.RECIPE_KNOBS), re-quantized from the path's fp32 file on the same
calibration split. The search changes one knob at a time from the untuned settings and keeps a change when its
trial is at least 3% faster and its drift still passes the thresholds in force (or, where the untuned settings
miss them too, is no worse than theirs); every trial is a fresh worker process with
short timing, and the winner is then measured like any row. The row records the winner (`settings`) and every
trial with its p50 and SQNR (`tuning`).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from deploycmp import runtimes
from deploycmp.cache import code_digest, digest
from deploycmp.rundir import artifact_sha256
from deploycmp.specs import export_point

SUFFIX = "-tuned"
MARGIN = 0.03  # a changed setting is kept only when its trial is at least this much faster (short trials are noisy)


def thread_counts(limit: int) -> tuple[int, ...]:
    """The target's thread count first (the untuned setting), then powers of two below it."""
    return (limit, *sorted({t for t in (1, 2, 4, 8, 16, 32, 64) if t < limit}, reverse=True))


def fp32_twin(artifact: dict, manifest: dict) -> dict | None:
    """The ok fp32 artifact of an int8 one's format, exported at the same shape point (what recipes start from)."""
    return next((a for a in manifest["artifacts"] if a["format"] == artifact["format"] and a["quantization"] == "none"
                 and a["status"] == "ok" and export_point(a) == export_point(artifact)), None)


def recipes_apply(row: dict) -> bool:
    return row["format"] == "onnx" and row["quantization"] == "int8" and row["runtime"] == "onnxruntime"


def space(row: dict, manifest: dict) -> tuple[dict, list[str]]:
    """knob -> values (the untuned value first) for this row, in the order they are tried, and notes on knobs
    that could not be tried."""
    rt, artifact, notes = runtimes.get(row["runtime"]), row["_artifact"], []
    knobs = {}
    if recipes_apply(row):
        if fp32_twin(artifact, manifest):
            from deploycmp.exporters.onnx_quantization import RECIPE_KNOBS

            used = (artifact.get("exporter") or {}).get("quantization") or {}
            for knob, values in RECIPE_KNOBS.items():
                first = used.get(knob, values[0])
                knobs[f"recipe.{knob}"] = (first, *[v for v in values if v != first])
        else:
            notes.append("quantization recipes not tried: the run has no fp32 onnx artifact at this shape "
                         "(export with --quantize none,int8)")
    declared = rt.tune_space(artifact, row["device"]) if hasattr(rt, "tune_space") else getattr(rt, "TUNE", {})
    for knob, values in declared.items():
        if knob.endswith("threads"):  # never more threads than the target has
            values = tuple(v for v in values if v <= row["threads"])
        knobs[knob] = tuple(values)
    knobs["threads"] = thread_counts(row["threads"])
    return {k: v for k, v in knobs.items() if len(v) > 1}, notes


def _recipe(settings: dict) -> dict:
    return {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("recipe.")}


def _options(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if not k.startswith("recipe.") and k != "threads"}


def variant(row: dict, manifest: dict, run_dir: Path, recipe: dict, untuned: dict, timeout: float) -> dict:
    """The row's artifact re-quantized with `recipe` (in a worker process), as an artifact dict; cached by recipe.
    The `untuned` recipe is the artifact itself."""
    artifact = row["_artifact"]
    if recipe == untuned:
        return artifact
    twin = fp32_twin(artifact, manifest)
    folder = Path("tuning") / artifact["id"]
    name = digest({"recipe": recipe, "fp32": artifact_sha256(twin), "code": code_digest()})[:12]
    main = folder / (name + Path(artifact["main_file"]).suffix)
    info_file = run_dir / folder / f"{name}.json"
    if not info_file.exists():
        from deploycmp.requantize import requantize

        info = requantize(run_dir, manifest, artifact, recipe, run_dir / main, timeout,
                          run_dir / "logs" / f"tune-{artifact['id']}-{name}.log")
        info_file.write_text(json.dumps(info))
    info = json.loads(info_file.read_text())
    exporter = {**(artifact.get("exporter") or {}), "quantization": info}
    return {**artifact, "main_file": str(main), "exporter": exporter, "files": None,
            "size_bytes": (run_dir / main).stat().st_size}


def trial(row: dict, manifest: dict, run_dir: Path, settings, chosen: dict, untuned: dict, n: int, measure_once):
    """One fresh worker measuring the row with `chosen` settings and short timing: (summary, outcome)."""
    light = replace(settings, min_runs=max(10, settings.min_runs // 5), min_time_s=min(1.0, settings.min_time_s),
                    warmup_runs=min(2, settings.warmup_runs), warmup_s=min(0.2, settings.warmup_s), repeats=1)
    try:
        artifact = variant(row, manifest, run_dir, _recipe(chosen), _recipe(untuned), settings.timeout)
    except RuntimeError as e:
        return {"settings": chosen, "status": "failed", "error": str(e)}, None, None
    outcome = measure_once(row, run_dir, manifest, light, trial={
        "artifact": artifact, "options": _options(chosen), "threads": chosen.get("threads", row["threads"]),
        "name": f"trial-{n}"})
    summary = {"settings": chosen, "status": outcome.status}
    if outcome.status != "ok":
        return {**summary, "error": outcome.error}, outcome, artifact
    drift = outcome.result.get("drift") or {}
    return {**summary, "p50_ms": outcome.result["latency_ms"]["p50"], "sqnr_db": drift.get("sqnr_db"),
            "cosine_min": drift.get("cosine_min"), "size_bytes": artifact.get("size_bytes"),
            **({"recipe": artifact["exporter"]["quantization"]} if _recipe(chosen) else {})}, outcome, artifact


def no_worse(result: dict, untuned: dict) -> bool:
    """A trial whose drift is no worse than the untuned settings' (SQNR within 0.5 dB, worst cosine within 1e-3):
    where the untuned row itself misses the thresholds (an int8 row of random weights), tuning may still make it
    faster, never less accurate."""
    pairs = [(result.get(k), untuned.get(k), tol) for k, tol in (("sqnr_db", 0.5), ("cosine_min", 1e-3))]
    pairs = [(a, b, tol) for a, b, tol in pairs if b is not None]
    return bool(pairs) and all(a is not None and a >= b - tol for a, b, tol in pairs)


def search(row: dict, manifest: dict, run_dir: Path, settings, passes, measure_once) -> dict:
    """One knob at a time from the untuned settings: keep a value whose trial is faster and passes. Returns the
    winner's `settings` and `artifact`, every trial (`tried`) and `notes`; `failed` when the untuned trial failed."""
    knobs, notes = space(row, manifest)
    untuned = best = {k: v[0] for k, v in knobs.items()}
    first, _, best_artifact = trial(row, manifest, run_dir, settings, best, untuned, 0, measure_once)
    tried = [first]
    if first["status"] != "ok":
        return {"settings": best, "artifact": row["_artifact"], "tried": tried, "notes": notes,
                "failed": first.get("error")}
    first["passes"] = True  # the untuned settings are the baseline, whatever their drift
    best_p50 = first["p50_ms"]
    for knob, values in knobs.items():
        for value in values[1:]:
            chosen = {**best, knob: value}
            result, outcome, artifact = trial(row, manifest, run_dir, settings, chosen, untuned, len(tried), measure_once)
            result["passes"] = result["status"] == "ok" and (passes({**outcome.result, "status": "ok"})
                                                             or no_worse(result, first))
            tried.append(result)
            if result["passes"] and result["p50_ms"] < best_p50 * (1 - MARGIN):
                best, best_p50, best_artifact = chosen, result["p50_ms"], artifact
    next(t for t in tried if t["settings"] == best)["winner"] = True
    return {"settings": best, "artifact": best_artifact, "tried": tried, "notes": notes}


def tuned_row(row: dict, key: str) -> dict:
    """The skeleton of a row's tuned twin: same path, runtime, target and shape; its own id and key."""
    return {**row, "id": row["id"] + SUFFIX, "key": key, "tuned": True, "warnings": []}


def keep_winner_only(run_dir: Path, artifact_id: str, winner: dict) -> None:
    """Re-quantized files that lost are removed; the winner's stays (the tuned row ran it)."""
    folder = run_dir / "tuning" / artifact_id
    if folder.is_dir():
        for f in folder.iterdir():
            if f.stem != Path(winner["main_file"]).stem:
                f.unlink()
