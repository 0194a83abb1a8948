"""bench --tune: each runtime at its best settings on the target, as a row of its own beside the untuned one.

The knobs are the ones each runtime module declares (TUNE, or tune_space(artifact, device)), plus the thread count
(never above the target's) and, for ONNX Runtime's static int8 files, the quantization recipes ONNX Runtime
documents (exporters.onnx_quantization.RECIPE_KNOBS), re-quantized from the path's fp32 file on the same
calibration split. The search tries every value of every knob, each changed alone from the untuned settings, in
fresh workers with short timing: what is tried never depends on a noisy trial. Each knob whose fastest value passed
the thresholds (or, where the untuned settings miss them too, is no worse) and beat the untuned trial by MARGIN is a
finalist, and so are those knobs together (one more trial). The finalists and the untuned settings are then measured
with full timing, interleaved, FINAL_ROUNDS worker processes each. A finalist counts only where its p50's 95% CI
(two-level bootstrap over processes and calls) lies wholly below the untuned one's and its drift still passes; the
fastest such knob wins, the knobs together only where each counted alone and together they are faster beyond noise.
Otherwise the untuned settings are kept and the row says why, with the numbers. The row records the decision
(`settings`), every trial with its p50 and SQNR (`tuning.tried`; `full`, `finalist`, `beyond_noise` on the finalists
and the untuned trial) and the reason (the last of `tuning.notes`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from deploycmp import runtimes
from deploycmp.core.cache import code_digest, digest
from deploycmp.core.rundir import artifact_sha256, fp32_twin

SUFFIX = "-tuned"
MARGIN = 0.03  # a trial this much faster than the untuned one makes its knob part of the finalist
FINAL_ROUNDS = 2  # worker processes per side when the finalist and the untuned settings are measured in full
BOOTSTRAP_CALLS = 5000
METHOD = ("every value of every knob tried alone from the untuned settings (short trials); each knob whose best value "
          f"passed and was at least {MARGIN:.0%} faster in its trial, and those knobs together, measured in full against "
          f"the untuned settings, interleaved, {FINAL_ROUNDS}+ processes each; a setting replaces the untuned one only "
          "where its p50's 95% CI lies below the untuned one's and its drift still passes (within the thresholds in "
          "force, or no worse than the untuned drift)")


def thread_counts(limit: int) -> tuple[int, ...]:
    """The target's thread count first (the untuned setting), then powers of two below it."""
    return (limit, *sorted({t for t in (1, 2, 4, 8, 16, 32, 64) if t < limit}, reverse=True))


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


def runtime_options(settings: dict) -> dict:
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
        from deploycmp.export.requantize_worker import requantize

        info = requantize(run_dir, manifest, artifact, recipe, run_dir / main, timeout,
                          run_dir / "logs" / f"tune-{artifact['id']}-{name}.log")
        info_file.write_text(json.dumps(info))
    info = json.loads(info_file.read_text())
    exporter = {**(artifact.get("exporter") or {}), "quantization": info}
    return {**artifact, "main_file": str(main), "exporter": exporter, "files": None,
            "size_bytes": (run_dir / main).stat().st_size}


def trial(row: dict, manifest: dict, run_dir: Path, settings, chosen: dict, untuned: dict, n: int, measure_once):
    """One fresh worker measuring the row with `chosen` settings and short timing: (summary, outcome, artifact);
    outcome and artifact are None where the variant could not be made, artifact is the one measured otherwise."""
    light = replace(settings, min_runs=max(10, settings.min_runs // 5), min_time_s=min(1.0, settings.min_time_s),
                    warmup_runs=min(2, settings.warmup_runs), warmup_s=min(0.2, settings.warmup_s), repeats=1)
    try:
        artifact = variant(row, manifest, run_dir, _recipe(chosen), _recipe(untuned), settings.timeout)
    except RuntimeError as e:
        return {"settings": chosen, "status": "failed", "error": str(e)}, None, None
    outcome = measure_once(row, run_dir, manifest, light, trial={
        "artifact": artifact, "options": runtime_options(chosen), "threads": chosen.get("threads", row["threads"]),
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


def _changed(settings: dict, untuned: dict) -> list[str]:
    return [k for k, v in settings.items() if untuned.get(k) != v]


def finalists(tried: list[dict], untuned: dict) -> dict[str, int]:
    """knob -> the index of its fastest passing trial, for the knobs whose trial beat the untuned one by MARGIN."""
    base, best = tried[0]["p50_ms"], {}
    for i, t in enumerate(tried[1:], 1):
        changed = _changed(t["settings"], untuned)
        if len(changed) == 1 and t.get("passes") and t["p50_ms"] < base * (1 - MARGIN):
            if changed[0] not in best or t["p50_ms"] < tried[best[changed[0]]]["p50_ms"]:
                best[changed[0]] = i
    return best


def _full(outcomes: list) -> dict:
    """One side's full measurements: the p50 of all its calls and its 95% CI, from the two-level bootstrap over its
    processes (as --repeat combines them), so that the scatter between processes widens it."""
    import numpy as np

    from deploycmp.measure.latency import median_ci95
    from deploycmp.measure.repeats import bootstrap_ci95

    per = [np.asarray(o.result["latency_ms"]["per_call"], dtype=np.float64) for o in outcomes]
    pooled = np.concatenate(per)
    # a 10 µs model times 300k calls in 3 s: the bootstrap resamples at most BOOTSTRAP_CALLS of each process's calls
    # (drawn at random: a CI a little wider, never narrower than it should be), seconds less per side
    rng = np.random.default_rng(0)
    few = [c if len(c) <= BOOTSTRAP_CALLS else rng.choice(c, BOOTSTRAP_CALLS, replace=False) for c in per]
    ci = bootstrap_ci95(few, 0.5) if len(per) > 1 else median_ci95(np.sort(pooled))
    return {"p50_ms": float(np.percentile(pooled, 50)), "ci95_p50": ci, "processes": len(per),
            "p50_per_process": [o.result["latency_ms"]["p50"] for o in outcomes]}


def _below(a: dict, b: dict) -> bool:
    """a's p50 is below b's beyond noise: their 95% CIs do not overlap."""
    return a["ci95_p50"][1] < b["ci95_p50"][0]


def _numbers(t: dict, untuned: dict) -> str:
    f, change = t["full"], ", ".join(f"{k}={t['settings'][k]}" for k in _changed(t["settings"], untuned))
    return f"{change}: p50 {f['p50_ms']:.4g} ms (95% CI {f['ci95_p50'][0]:.4g}-{f['ci95_p50'][1]:.4g})"


def decide(row, manifest, run_dir, settings, tried: list[dict], measured: list[int], artifacts: dict, passes,
           measure_once) -> dict:
    """Measure the untuned settings (tried[0]) and the finalists (tried[i] for i in `measured`) in full, interleaved,
    FINAL_ROUNDS processes each (more with --repeat). A finalist counts only where its p50's CI lies below the
    untuned one's and its drift passes; the knobs together win only where each knob counted alone and the
    combination is below the best single knob beyond noise. `winner`: the index in tried (0: untuned)."""
    full, untuned = replace(settings, repeats=1), tried[0]["settings"]
    order = [0, *measured]
    outcomes = {i: [] for i in order}
    for r in range(max(FINAL_ROUNDS, settings.repeats)):
        for i in (order if r % 2 == 0 else order[::-1]):  # interleaved: a slow spell touches every side
            t = tried[i]
            outcome = measure_once(row, run_dir, manifest, full, trial={
                "artifact": artifacts.get(i, row["_artifact"]), "options": runtime_options(t["settings"]),
                "threads": t["settings"].get("threads", row["threads"]), "name": f"full-{i}-{r + 1}"})
            if outcome.status != "ok":
                return {"winner": 0, "why": f"the untuned settings were kept: the full measurement of trial {i} "
                        f"{outcome.status} ({outcome.error})"}
            outcomes[i].append(outcome)
    for i in order:
        tried[i]["full"] = _full(outcomes[i])
        if i:
            tried[i]["finalist"] = True
    base = tried[0]["full"]
    counted, verdict = [], {}
    for i in measured:
        result = outcomes[i][0].result
        drift = result.get("drift") or {}
        ok = passes({**result, "status": "ok"}) or no_worse(
            {"sqnr_db": drift.get("sqnr_db"), "cosine_min": drift.get("cosine_min")}, tried[0])
        tried[i]["beyond_noise"] = _below(tried[i]["full"], base)
        verdict[i] = ("not faster beyond noise" if not tried[i]["beyond_noise"] else
                      "beyond noise, but its drift did not pass in full" if not ok else "beyond noise")
        if tried[i]["beyond_noise"] and ok:
            counted.append(i)
    singles = [i for i in counted if not tried[i].get("combined")]
    winner = min(singles, key=lambda i: tried[i]["full"]["p50_ms"]) if singles else 0
    both = next((i for i in counted if tried[i].get("combined")), None)
    if both is not None:
        if len(singles) < len(measured) - 1:
            verdict[both] = "beyond noise, but not each of its knobs alone"
        elif _below(tried[both]["full"], tried[winner]["full"]):
            winner = both
        else:
            verdict[both] = "beyond noise, but not faster beyond noise than its fastest knob alone"
    against = f"the untuned {base['p50_ms']:.4g} ms ({base['ci95_p50'][0]:.4g}-{base['ci95_p50'][1]:.4g})"
    rest = "; ".join(f"{_numbers(tried[i], untuned)}, {verdict[i]}" for i in measured if i != winner)
    each = f"{base['processes']} processes each"
    if winner:
        why = (f"tuned: {_numbers(tried[winner], untuned)} against {against}, {each}"
               + (f"; also measured: {rest}" if rest else ""))
    else:
        why = (f"the untuned settings were kept, as no setting was faster beyond noise and within the thresholds: "
               f"{rest}; against {against}, {each} (a setting wins only where its p50's 95% CI lies below the "
               "untuned one's)")
    return {"winner": winner, "why": why}


def search(row: dict, manifest: dict, run_dir: Path, settings, passes, measure_once) -> dict:
    """Every value of every knob alone from the untuned settings (short trials), then the finalists against the
    untuned settings in full (decide). Returns the decided `settings` and `artifact`, every trial (`tried`),
    `notes` and the `decision`; `failed` when the untuned trial failed."""
    knobs, notes = space(row, manifest)
    untuned = {k: v[0] for k, v in knobs.items()}
    first, _, untuned_artifact = trial(row, manifest, run_dir, settings, untuned, untuned, 0, measure_once)
    tried, artifacts = [first], {}
    if first["status"] != "ok":
        return {"settings": untuned, "artifact": row["_artifact"], "tried": tried, "notes": notes,
                "failed": first.get("error")}
    first["passes"] = True  # the untuned settings are the baseline, whatever their drift

    def attempt(chosen: dict) -> dict:
        result, outcome, artifact = trial(row, manifest, run_dir, settings, chosen, untuned, len(tried), measure_once)
        result["passes"] = result["status"] == "ok" and (passes({**outcome.result, "status": "ok"})
                                                         or no_worse(result, first))
        tried.append(result)
        artifacts[len(tried) - 1] = artifact
        return result

    for knob, values in knobs.items():  # what is tried depends on no trial's timing
        for value in values[1:]:
            attempt({**untuned, knob: value})
    best = finalists(tried, untuned)
    measured = list(best.values())
    if len(best) > 1:  # knobs that won their trials alone: together, in one more trial, measured in full too
        combined = attempt({**untuned, **{k: tried[i]["settings"][k] for k, i in best.items()}})
        combined["combined"] = True
        if combined["passes"]:
            measured.append(len(tried) - 1)
    if measured:
        decision = decide(row, manifest, run_dir, settings, tried, measured, artifacts, passes, measure_once)
    else:
        decision = {"winner": 0, "why": f"the untuned settings were kept: no trial passed and was {MARGIN:.0%} "
                    f"faster than the untuned one ({first['p50_ms']:.4g} ms)"}
    won = tried[decision["winner"]]
    won["winner"] = True
    notes.append(decision["why"])
    if not decision["winner"] and measured:  # a trial looked faster: the row says why it did not win
        row.setdefault("warnings", []).append(f"bench --tune: {decision['why']}")
    return {"settings": won["settings"], "artifact": artifacts.get(decision["winner"], untuned_artifact),
            "tried": tried, "notes": notes, "decision": decision}


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


@dataclass(frozen=True)
class Tuner:
    """bench --tune's hook into bench: every row gets a tuned twin whose settings must keep its drift within
    `policy` (a validate.Policy)."""
    policy: object

    def twin(self, row: dict) -> dict:
        return tuned_row(row, digest({"untuned": row["key"], "policy": repr(self.policy)}))

    def first(self, row: dict, run_dir: Path, manifest: dict, settings) -> tuple[str, str] | None:
        """Search the row's settings (its trials), then make the row the winner's: artifact, options, threads, and
        the record of every trial. A verdict when even the untuned settings failed."""
        from deploycmp.core.rundir import sha256_file
        from deploycmp.gate.validate import check, resolve
        from deploycmp.measure.row import measure_once, public_fields

        def passes(result: dict) -> bool:
            return check({**public_fields(row), **result}, resolve(row, self.policy),
                         allow_degenerate=True).verdict == "pass"

        found = search(row, manifest, run_dir, settings, passes, measure_once)
        row["tuning"] = {"method": METHOD, "tried": found["tried"], "notes": found["notes"],
                         "decision": found["decision"]}
        if found.get("failed"):
            return "failed", f"bench --tune: the untuned trial failed: {found['failed']}"
        row["settings"] = found["settings"]
        row["threads"] = found["settings"].get("threads", row["threads"])
        if found["artifact"] is not row["_artifact"]:  # a re-quantized file won
            row["_artifact"], row["size_bytes"] = found["artifact"], found["artifact"]["size_bytes"]
            row["tuned_file"] = found["artifact"]["main_file"]
            row["artifact_sha256"] = sha256_file(run_dir / row["tuned_file"])
        row["_trial"] = {"artifact": found["artifact"], "options": runtime_options(found["settings"]),
                         "threads": row["threads"]}
        keep_winner_only(run_dir, row["artifact"], found["artifact"])
        return None
