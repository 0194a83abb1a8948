"""deploycmp explain: where the error of an int8 row enters, layer by layer, against its fp32 counterpart.

The row's int8 file and the path's fp32 file run on the row's evaluation inputs with their intermediate tensors
exposed, in a worker process (one module per path, EXPLAINERS). Per quantized activation, in execution order:

- its own error, everything before it float (`own_sqnr_db`, `own_channel_mean_sqnr_db`, `own_channel_sqnr_db`):
  the fp32 model's tensor rounded to the int8 file's scale and zero point for it, against itself: one quantizer at
  a time, as AIMET's per-layer analysis and TFLite's quantization debugger look at it. This is where error enters,
  and the ranking (the lower of the whole-tensor and channel-mean SQNR, worst first): a per-tensor scale stretched
  by one outlier channel crushes the others while the whole tensor, dominated by the outlier, still looks fine, so
  the channels count, each relative to its own signal;
- the error accumulated up to it (`sqnr_db`, `cosine`, `channel_sqnr_db`: the int8 model's tensor against the
  fp32 model's), and the SQNR lost since the tensor before (`drop_db`, `channel_drop_db`): where the error shows.
  A layer after the cause can lose most (its input's crushed channels, hidden in the whole-tensor SQNR before it,
  now make its output): the symptom, which the ranking by own error does not take for the cause;
- the scale and zero point with the range they cover (what calibration saw) beside the range fp32 reached.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path

from deploycmp.core.errors import DeployError, UsageError
from deploycmp.core.isolation import run_isolated
from deploycmp.core.rundir import load_manifest, read_json, result_path, write_json

TOP = 10
# (format, runtime) -> the worker module that exposes that path's intermediate tensors
EXPLAINERS = {("onnx", "onnxruntime"): "deploycmp.gate.explain_onnx_worker", ("tflite", "litert"): "deploycmp.gate.explain_tflite_worker",
              ("executorch", "executorch"): "deploycmp.gate.explain_executorch_worker"}


def take_row(run_dir: Path, row_id: str, command: str = "explain") -> tuple[dict, dict, dict, dict]:
    """(manifest, row, its artifact, the fp32 artifact to compare with); one line for a row that cannot be taken."""
    from deploycmp.core.rundir import fp32_twin
    from deploycmp.core.schema import Invalid, check_row as check_fields, name_problem
    from deploycmp.measure.bench import check_references

    manifest = load_manifest(run_dir)
    if name_problem(row_id) is not None:
        raise UsageError(f"{command}: --row {row_id!r} is no row id (see report.csv's id column)")
    try:
        row = read_json(result_path(run_dir, row_id))
        check_fields(row)
    except Invalid as e:
        raise UsageError(f"{command}: {result_path(run_dir, row_id)}: {e.field} {e.why}") from None
    except (OSError, ValueError):
        raise UsageError(f"{command}: {run_dir} has no measured row {row_id!r} (see report.csv's id column)") from None
    check_references(run_dir, manifest)
    if row.get("quantization") != "int8":
        raise UsageError(f"{command}: row {row_id} is {row.get('quantization')}, not int8: nothing was quantized")
    if (row.get("format"), row.get("runtime")) not in EXPLAINERS:
        paths = ", ".join(f"{f} on {r}" for f, r in EXPLAINERS)
        raise UsageError(f"{command}: row {row_id} runs {row['format']} on {row['runtime']}, whose intermediate "
                         f"tensors deploycmp cannot expose (it can: {paths})")
    artifact = next((a for a in manifest["artifacts"] if a["id"] == row.get("artifact")), None)
    if artifact is None:
        raise UsageError(f"{command}: row {row_id} ran artifact {row.get('artifact')!r}, which the manifest does not hold")
    twin = fp32_twin(artifact, manifest)
    if twin is None:
        raise UsageError(f"{command}: the run has no fp32 {row['format']} artifact to compare {row_id} with "
                         "(export with --quantize none,int8)")
    return manifest, row, artifact, twin


def tensor_metrics(ref: list, got: list, channel_axis: int | None) -> dict:
    """One tensor of the int8 model (`got`) against the fp32 model's (`ref`), each a list of arrays, one per call:
    SQNR over all values; along `channel_axis`, the SQNR of the worst channel and the channel-mean SQNR (each
    channel's SQNR in dB, averaged over the channels: one stretched scale crushing most channels brings it down,
    one weak channel among many does not), channels fp32 leaves all zero or int8 leaves exact skipped; mean cosine
    per call (1 where both are all zeros), and the fp32 range seen. None where the int8 values are exact."""
    import numpy as np

    ref = [np.asarray(a, np.float64) for a in ref]
    # values fp32 itself leaves non-finite (a max-pool's -inf padding) are compared as equal, not as errors
    got = [np.where(np.isfinite(a), np.asarray(b, np.float64), 0.0) for a, b in zip(ref, got)]
    ref = [np.where(np.isfinite(a), a, 0.0) for a in ref]

    def sqnr(signal, noise):
        return float(10 * np.log10(signal / noise)) if noise > 0 and signal > 0 else None

    r = np.concatenate([a.reshape(-1) for a in ref])
    g = np.concatenate([a.reshape(-1) for a in got])
    cos = [1.0 if not (np.any(a) or np.any(b)) else
           float(a.reshape(-1) @ b.reshape(-1)) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30)
           for a, b in zip(ref, got)]
    out = {"shape": list(ref[0].shape), "sqnr_db": sqnr(float(r @ r), float((r - g) @ (r - g))),
           "cosine": float(np.mean(cos)), "channel_sqnr_db": None, "worst_channel": None,
           "channel_mean_sqnr_db": None, "fp32_seen": [float(r.min()), float(r.max())]}
    if channel_axis is not None and ref[0].ndim >= 2:
        def by_channel(arrays):
            return np.concatenate([np.moveaxis(a, channel_axis, -1).reshape(-1, a.shape[channel_axis]) for a in arrays])

        R, G = by_channel(ref), by_channel(got)
        signal, noise = (R * R).sum(0), ((R - G) ** 2).sum(0)
        per = [(sqnr(s, n), c) for c, (s, n) in enumerate(zip(signal, noise)) if s > 0 and n > 0]
        if per:
            out["channel_sqnr_db"], out["worst_channel"] = min(per)
            out["channel_mean_sqnr_db"] = float(np.mean([db for db, _ in per]))
    return out


def whole_batches(spec: dict, names: list[str]) -> list[dict]:
    """The row's evaluation inputs in calls of its batch size, keyed by the file's input names in feed order."""
    from deploycmp.core.rundir import read_feed

    feed, _, _ = read_feed(Path(spec["reference"]))
    b, n = spec["batch"], len(next(iter(feed.values())))
    return [dict(zip(names, (a[i:i + b] for a in feed.values()))) for i in range(0, n - b + 1, b)]


def own_error(ref: list, quantization: dict, channel_axis: int | None) -> dict:
    """One tensor's own int8 error, everything before it float: the fp32 values (`ref`, one array per call) rounded to
    the int8 grid of `quantization` (its scale and the range its zero point and integer type cover), against
    themselves. None where the tensor is not quantized (left float) or the rounding is exact."""
    import numpy as np

    scale, (lo, hi) = quantization.get("scale"), quantization.get("range") or (None, None)
    keys = {"sqnr_db": "own_sqnr_db", "channel_mean_sqnr_db": "own_channel_mean_sqnr_db",
            "channel_sqnr_db": "own_channel_sqnr_db", "worst_channel": "own_worst_channel"}
    if not scale:
        return dict.fromkeys(keys.values())
    # (clip(round(x / s) + z, qmin, qmax) - z) * s, z an integer: the same as clipping round(x / s) * s to the range
    rounded = [np.clip(np.round(np.asarray(a, np.float64) / scale) * scale, lo, hi) for a in ref]
    m = tensor_metrics(ref, rounded, channel_axis)
    return {mine: m[theirs] for theirs, mine in keys.items()}


def own_db(layer: dict) -> float | None:
    """The ranking: the lower of a tensor's own whole-tensor and channel-mean SQNR (None: no own error). Not the
    worst channel: in a trained network some channel is always weak, and ranking by it keeps layers in float that
    buy nothing."""
    values = [v for v in (layer.get("own_sqnr_db"), layer.get("own_channel_mean_sqnr_db")) if v is not None]
    return min(values) if values else None


def with_drops(layers: list[dict]) -> list[dict]:
    """Each layer's accumulated SQNR lost since the one before (whole tensor and worst channel)."""
    before = {"sqnr_db": None, "channel_sqnr_db": None}
    for x in layers:
        for key, drop in (("sqnr_db", "drop_db"), ("channel_sqnr_db", "channel_drop_db")):
            x[drop] = None if before[key] is None or x[key] is None else before[key] - x[key]
            if x[key] is not None:
                before[key] = x[key]
    return layers


def ranked(layers: list[dict]) -> list[dict]:
    """The quantized tensors by where error enters: lowest own SQNR first (execution order among equals)."""
    return sorted((x for x in layers if own_db(x) is not None), key=own_db)


def explain(run_dir: Path, row_id: str, timeout: float = 600.0) -> dict:
    """Every quantized activation of the row's int8 model against fp32, written to results/<row>.layers.json."""
    from deploycmp.core.rundir import reference_for

    run_dir = Path(run_dir)
    manifest, row, artifact, twin = take_row(run_dir, row_id)
    spec = {"int8": str(run_dir / artifact["main_file"]), "fp32": str(run_dir / twin["main_file"]),
            "reference": str(run_dir / reference_for(manifest, row["shape"])["file"]), "batch": row["batch"],
            "layout": artifact.get("layout"), "inputs": manifest["model"]["inputs"], "run_dir": str(run_dir),
            "artifact": artifact}
    module = EXPLAINERS[row["format"], row["runtime"]]
    outcome = run_isolated(module, spec, timeout, run_dir / "logs" / f"{row_id}.explain.log")
    if outcome.status != "ok":
        raise DeployError(f"explain: {outcome.status}: {outcome.error} (log: logs/{row_id}.explain.log)")
    layers = with_drops(outcome.result)
    out = {"row": row_id, "artifact": artifact["id"], "compared_with": twin["id"], "format": row["format"],
           "runtime": row["runtime"], "sqnr_db": row.get("drift", {}).get("sqnr_db"),
           "compared": importlib.import_module(module).COMPARED,
           "what": "per quantized activation, in execution order: its own error (the fp32 tensor rounded to its int8 "
                   "scale and zero point, everything before it float) and the int8 model's tensor against the fp32 "
                   "model's (the error accumulated up to it)",
           "layers": layers, "top": [x["tensor"] for x in ranked(layers)[:TOP]]}
    write_json(result_path(run_dir, row_id).with_suffix(".layers.json"), out)
    return out


def _db(v: float | None) -> str:
    return "   n/a" if v is None or not math.isfinite(v) else f"{v:6.1f}"


def explain_lines(result: dict) -> list[str]:
    """The terminal's top 10: where the error enters, the accumulated error beside it."""
    by = {x["tensor"]: x for x in result["layers"]}
    out = [f"{result['row']}: {len(result['layers'])} quantized activations against {result['compared_with']}",
           f"  compared: {result['compared']}",
           "  where the error enters (each tensor alone rounded to int8, everything before it float: own SQNR of the "
           "whole tensor, its channels' mean and its worst channel; ranked by the lower of the first two); "
           "accumulated: the int8 model's tensor against fp32:"]
    for i, name in enumerate(result["top"], 1):
        x = by[name]
        out.append(f"{i:3}. {x['layer']:28.28} {x['op']:12.12} own {_db(x['own_sqnr_db'])} dB, channel mean "
                   f"{_db(x['own_channel_mean_sqnr_db'])}, worst {_db(x['own_channel_sqnr_db'])}; accumulated "
                   f"{_db(x['sqnr_db'])} dB, worst channel {_db(x['channel_sqnr_db'])}, cosine {x['cosine']:.4f}; "
                   f"range [{x['range'][0]:.3g}, {x['range'][1]:.3g}]")
    return out
