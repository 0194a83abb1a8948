"""deploycmp explain: where the error of an int8 row enters, layer by layer, against its fp32 counterpart.

ONNX Runtime QDQ rows for now: the int8 file and the path's fp32 file (pre-processed as the quantizer saw it, so
tensor names match) are run with every intermediate tensor exposed (onnxruntime.quantization.qdq_loss_debug), on
the row's evaluation inputs, in a worker process. Per quantized activation: SQNR and cosine of the int8 model's
tensor against the fp32 model's (`sqnr_db`, `cosine`), the SQNR lost since the tensor before it in the graph
(`drop_db`: where the error enters rather than where it accumulates), and the range its scale and zero point
cover (what calibration saw). The error of a tensor's own QDQ pair is not shown: where the quantizer folded a ReLU
into the QuantizeLinear (uint8 clips the negatives), that pair's input is the pre-ReLU tensor.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from deploycmp.errors import DeployError, UsageError
from deploycmp.isolation import child_main, run_isolated
from deploycmp.rundir import load_manifest, read_json, result_path, write_json

TOP = 10


def check_row(run_dir: Path, row_id: str) -> tuple[dict, dict, dict, dict]:
    """(manifest, row, its artifact, the fp32 artifact to compare with); one line for a row explain cannot take."""
    from deploycmp.tune import fp32_twin

    manifest = load_manifest(run_dir)
    try:
        row = read_json(result_path(run_dir, row_id))
    except (OSError, ValueError):
        raise UsageError(f"explain: {run_dir} has no measured row {row_id!r} (see report.csv's id column)") from None
    if row["quantization"] != "int8":
        raise UsageError(f"explain: row {row_id} is {row['quantization']}, not int8: nothing was quantized to explain")
    if row["format"] != "onnx" or row["runtime"] != "onnxruntime":
        raise UsageError(f"explain: row {row_id} runs {row['format']} on {row['runtime']}; explain exposes "
                         "intermediate tensors of ONNX Runtime int8 rows only in this version")
    artifact = next(a for a in manifest["artifacts"] if a["id"] == row["artifact"])
    twin = fp32_twin(artifact, manifest)
    if twin is None:
        raise UsageError(f"explain: the run has no fp32 onnx artifact to compare {row_id} with (export with "
                         "--quantize none,int8)")
    return manifest, row, artifact, twin


def explain(run_dir: Path, row_id: str, timeout: float = 600.0) -> dict:
    """Every quantized activation of the row's int8 model against fp32, written to results/<row>.layers.json."""
    from deploycmp.bench import reference_for

    run_dir = Path(run_dir)
    manifest, row, artifact, twin = check_row(run_dir, row_id)
    spec = {"int8": str(run_dir / artifact["main_file"]), "fp32": str(run_dir / twin["main_file"]),
            "reference": str(run_dir / reference_for(manifest, row["shape"])["file"]), "batch": row["batch"]}
    outcome = run_isolated("deploycmp.explain", spec, timeout, run_dir / "logs" / f"{row_id}.explain.log")
    if outcome.status != "ok":
        raise DeployError(f"explain: {outcome.status}: {outcome.error} (log: logs/{row_id}.explain.log)")
    layers = outcome.result
    ranked = sorted((x for x in layers if x["drop_db"] is not None), key=lambda x: -x["drop_db"])
    out = {"row": row_id, "artifact": artifact["id"], "compared_with": twin["id"], "runtime": "onnxruntime",
           "what": "per quantized activation, in graph order: the int8 model's tensor against the fp32 model's",
           "layers": layers, "top": [x["tensor"] for x in ranked[:TOP]]}
    write_json(result_path(run_dir, row_id).with_suffix(".layers.json"), out)
    return out


def lines(result: dict) -> list[str]:
    """The terminal's top 10: where the SQNR drops most."""
    by = {x["tensor"]: x for x in result["layers"]}
    out = [f"{result['row']}: {len(result['layers'])} quantized activations against {result['compared_with']}; "
           f"where the error enters (largest SQNR drop since the tensor before):"]
    for i, name in enumerate(result["top"], 1):
        x = by[name]
        out.append(f"{i:3}. {x['node'] or name:40} {x['op']:12} SQNR {x['sqnr_db']:6.1f} dB (drop {x['drop_db']:+5.1f}), "
                   f"cosine {x['cosine']:.4f}, range [{x['range'][0]:.3g}, {x['range'][1]:.3g}]")
    return out


def _qparams(model) -> dict:
    """tensor -> (scale, zero point, dtype) of each QuantizeLinear's input."""
    import numpy as np
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in init and len(node.input) > 2 and node.input[2] in init:
            scale, zero = init[node.input[1]], init[node.input[2]]
            if scale.size == 1:
                info = np.iinfo(zero.dtype)
                s, z = float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0])
                out[node.input[0]] = {"scale": s, "zero_point": z, "dtype": str(zero.dtype),
                                      "range": [(info.min - z) * s, (info.max - z) * s]}
    return out


def job(spec: dict) -> list[dict]:
    """Worker: both models with their intermediate tensors as outputs, run on the row's inputs; matched by name."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)
    from onnxruntime.quantization.quant_utils import QUANT_INPUT_SUFFIX
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from deploycmp.rundir import read_feed

    feed, _, _ = read_feed(Path(spec["reference"]))
    b, n = spec["batch"], len(next(iter(feed.values())))
    int8 = onnx.load(spec["int8"])
    names = [i.name for i in int8.graph.input]
    batches = [dict(zip(names, (a[i:i + b] for a in feed.values()))) for i in range(0, n - b + 1, b)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory(prefix="deploycmp-explain-") as tmp:
        tmp = Path(tmp)
        single, fp32 = tmp / "fp32.onnx", tmp / "fp32-pre.onnx"
        onnx.save(onnx.load(spec["fp32"]), str(single))
        quant_pre_process(str(single), str(fp32), skip_symbolic_shape=True)  # as the quantizer saw it
        acts = {}
        for key, path in (("float", fp32), ("int8", Path(spec["int8"]))):
            augmented = tmp / f"{key}-augmented.onnx"
            modify_model_output_intermediate_tensors(str(path), str(augmented))
            acts[key] = collect_activations(str(augmented), Reader(), execution_providers=["CPUExecutionProvider"])
        matched = create_activation_matching(acts["int8"], acts["float"])
        errors = compute_activation_error(matched)
        graph = onnx.load(str(fp32)).graph
    qparams = _qparams(int8)
    producer = {o: node for node in graph.node for o in node.output}
    layers, before = [], None
    for name in [o for node in graph.node for o in node.output if o in errors and "xmodel_err" in errors[o]]:
        # one flattened tensor per call (a batch): the cosine per call, 1 where both are all zeros
        ref = [np.asarray(a, np.float64).ravel() for a in matched[name]["float"]]
        got = [np.asarray(a, np.float64).ravel() for a in matched[name]["post_qdq"]]
        cos = float(np.mean([1.0 if not (np.any(r) or np.any(g)) else
                             float(r @ g) / max(float(np.linalg.norm(r) * np.linalg.norm(g)), 1e-30)
                             for r, g in zip(ref, got)]))
        lo, hi = float(min(r.min() for r in ref)), float(max(r.max() for r in ref))
        sqnr = float(errors[name]["xmodel_err"])
        q = qparams.get(name + QUANT_INPUT_SUFFIX) or qparams.get(name) or {}
        layers.append({"tensor": name, "node": producer[name].name, "op": producer[name].op_type, "sqnr_db": sqnr,
                       "cosine": cos, "drop_db": None if before is None else before - sqnr,
                       "scale": q.get("scale"), "zero_point": q.get("zero_point"), "range": q.get("range") or [lo, hi],
                       "range_from": "scale and zero point" if q else "fp32 values seen", "fp32_seen": [lo, hi]})
        before = sqnr
    return layers


if __name__ == "__main__":
    child_main(job)
