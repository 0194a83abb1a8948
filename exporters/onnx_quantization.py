"""ONNX Runtime's post-training quantization of an fp32 ONNX file: dynamic, or static QDQ calibrated on data,
with the activation/weight types ONNX Runtime documents for the host's CPU; and its fp16 conversion."""
from __future__ import annotations

import platform
import tempfile
from pathlib import Path


RECIPES = {"U8S8": {"activations": "uint8", "weights": "int8"}, "S8S8": {"activations": "int8", "weights": "int8"}}
# the documented alternatives `bench --tune` tries on a static int8 file, one change at a time from the recipe used
# (first value: this exporter's own choice where static_recipe does not set it)
CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")
RECIPE_KNOBS = {"activations": ("uint8", "int8"), "format": ("QDQ", "QOperator"), "per_channel": (True, False),
                "calibration_method": CALIBRATION_METHODS}


def float_nodes(graph, tensors: list[str]) -> list[str]:
    """The nodes to leave unquantized so that each of `tensors` (activations, as explain names them) stays float:
    the nodes that make it (its producer and the single-input ops before it back to the last weighted op, a Conv
    before its ReLU) and every node that reads it."""
    producer = {o: node for node in graph.node for o in node.output}
    weights = {t.name for t in graph.initializer}
    out: list[str] = []
    for name in tensors:
        node = producer.get(name)
        while node is not None:
            out.append(node.name)
            ins = [i for i in node.input if i and i not in weights]
            if len(ins) != 1 or len(ins) < len([i for i in node.input if i]) or ins[0] not in producer:
                break  # a weighted op, or one with several inputs: where the segment starts
            node = producer[ins[0]]
        out.extend(n.name for n in graph.node if name in n.input)
    return list(dict.fromkeys(out))


def first_non_finite(model_path: Path, feeds: list[dict]) -> str | None:
    """Where NaN or inf first appears when the ONNX file at model_path runs on `feeds` (graph input name -> batch):
    'input X', or 'tensor T (OP node NAME)' for the first node in graph order that makes one; None when nowhere (or when
    that cannot be found out: a model too large to serialize, a runtime error)."""
    import numpy as np
    import onnx
    import onnxruntime

    for feed in feeds:
        for name, a in feed.items():
            if np.issubdtype(np.asarray(a).dtype, np.floating) and not np.all(np.isfinite(a)):
                return f"input {name!r}"
    try:
        model = onnx.load(str(model_path))
        produced = [(out, node) for node in model.graph.node for out in node.output if out]
        have = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=out) for out, _ in produced if out not in have)
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        for feed in feeds:
            values = dict(zip(names, session.run(names, feed)))
            for out, node in produced:
                a = np.asarray(values.get(out))
                if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
                    return f"tensor {out[:40]!r} ({node.op_type[:20]} node{f' {node.name[:40]}' if node.name else ''})"
    except Exception:  # only a diagnosis: the caller says what it knows without it
        return None
    return None


def calibration_failure(error: BaseException, model_path: Path, feeds: list[dict]) -> str | None:
    """ONNX Runtime's static quantization in words, when calibration met NaN or inf activations: its calibrator then
    stops on `assert scale >= 0, "scale issue"` (a NaN range) or fails converting an infinite range. None when the
    error has another cause."""
    scale_issue = isinstance(error, AssertionError) and "scale issue" in str(error)
    where = first_non_finite(model_path, feeds) if scale_issue or not isinstance(error, AssertionError) else None
    if where is None and not scale_issue:
        return None
    quoted = f" ({str(error).strip()[:40]!r})" if str(error).strip() else ""
    if where and where.startswith("input "):
        return (f"ONNX Runtime's int8 calibration met NaN or inf values{quoted}: the calibration data holds them "
                f"({where})")
    return (f"ONNX Runtime's int8 calibration met NaN or inf activations{quoted}: the model computes non-finite "
            f"values on the calibration inputs" + (f", first at {where}" if where else ""))


def static_recipe(isa: list[str], machine: str) -> dict:
    """ONNX Runtime's quantization guide: on x86-64, U8S8 (uint8 activations, int8 weights) is what its VNNI/AVX2
    kernels are built for (VPMADDUBSW / VPDPBUSD take unsigned x signed bytes), with reduce_range on CPUs without
    VNNI to avoid saturating 16-bit accumulators; elsewhere (ARM) S8S8."""
    if machine in ("x86_64", "AMD64", "i686"):
        vnni = any(f in isa for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
        return {**RECIPES["U8S8"], "name": "U8S8", "reduce_range": not vnni,
                "why": "ONNX Runtime's recommendation for x86-64" + ("" if vnni else "; reduce_range: no VNNI on this CPU")}
    return {**RECIPES["S8S8"], "name": "S8S8", "reduce_range": False, "why": f"ONNX Runtime's default QDQ recipe on {machine}"}


# per-axis (per-channel) QuantizeLinear/DequantizeLinear, the QDQ format's per-channel weights, came in opset 13
PER_AXIS_OPSET = 13


def _opset_for(model_path: Path, fmt: str, per_channel: bool) -> dict:
    """A QDQ per-channel recipe on a graph older than opset 13 (paddle2onnx writes 11 and 12): the graph upgraded
    in place by onnx.version_converter, or, where the converter cannot upgrade it, per-tensor weights, which its
    own opset allows. Returns what was done, for the manifest (nothing when nothing was needed)."""
    import onnx
    from onnx import version_converter

    from deploycmp.exporters.onnx_check import first_line
    from deploycmp.sources.onnx import default_opset

    model = onnx.load(str(model_path))
    opset = default_opset(model)
    if fmt != "QDQ" or not per_channel or opset is None or opset >= PER_AXIS_OPSET:
        return {}
    try:
        upgraded = version_converter.convert_version(model, PER_AXIS_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as e:
        return {"per_channel_off": f"the graph is opset {opset}, per-channel QDQ needs {PER_AXIS_OPSET}, and "
                                   f"onnx.version_converter could not upgrade it ({first_line(e, 200)}): "
                                   "weights per-tensor"}
    onnx.save(upgraded, str(model_path))
    return {"opset_upgraded": f"{opset} -> {PER_AXIS_OPSET} (per-channel QuantizeLinear/DequantizeLinear need opset "
                              f"{PER_AXIS_OPSET}; onnx.version_converter)"}


def quantize(fp32_path: Path, out_path: Path, mode: str, calibration: list[dict], recipe: dict | None = None) -> dict:
    """Quantize fp32_path into out_path (static int8: calibrated on `calibration`, a list of feeds, name -> batch,
    with `recipe`, default the host's: static_recipe); returns what was done, for the manifest. Integer inputs
    (token ids, masks) are never quantized."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnx

    from deploycmp.core.environment import isa_flags

    with tempfile.TemporaryDirectory(prefix="deploycmp-ortq-") as tmp:
        # one self-contained file: the pre-processor loses external data (.onnx.data) kept beside the input
        single, prepped = Path(tmp) / "fp32.onnx", Path(tmp) / "preprocessed.onnx"
        onnx.save(onnx.load(str(fp32_path)), str(single))
        quant_pre_process(str(single), str(prepped), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepped), str(out_path), weight_type=QuantType.QInt8, per_channel=False)
            return {"tool": "onnxruntime.quantization.quantize_dynamic", "weights": "int8 per-tensor",
                    "activations": "quantized at run time", "pre_process": True}
        import onnxruntime

        names = [i.name for i in onnxruntime.InferenceSession(str(prepped), providers=["CPUExecutionProvider"]).get_inputs()]

        def by_graph_name(feed: dict) -> dict:
            return {n: feed[n] for n in names} if set(names) <= set(feed) else dict(zip(names, feed.values()))

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter([by_graph_name(feed) for feed in calibration])

            def get_next(self):
                return next(self._it, None)

        host = static_recipe(isa_flags(), platform.machine())
        recipe = {**host, **{k: v[0] for k, v in RECIPE_KNOBS.items() if k not in host}, **(recipe or {})}
        changed = sorted(k for k in recipe if k in RECIPE_KNOBS and recipe[k] != host.get(k, RECIPE_KNOBS[k][0]))
        short = {"uint8": "U8", "int8": "S8"}
        name = short[recipe["activations"]] + short[recipe["weights"]]
        types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        per_channel = recipe["per_channel"]
        opset = _opset_for(prepped, recipe["format"], per_channel)
        if opset.get("per_channel_off"):
            per_channel = False
        kept = recipe.get("keep_float") or []
        excluded = float_nodes(onnx.load(str(prepped)).graph, kept)
        try:
            quantize_static(str(prepped), str(out_path), Reader(), quant_format=getattr(QuantFormat, recipe["format"]),
                            per_channel=per_channel, reduce_range=recipe["reduce_range"], nodes_to_exclude=excluded,
                            activation_type=types[recipe["activations"]], weight_type=types[recipe["weights"]],
                            calibrate_method=getattr(CalibrationMethod, recipe["calibration_method"]))
        except (AssertionError, ValueError, OverflowError) as e:
            why = calibration_failure(e, prepped, [by_graph_name(feed) for feed in calibration])
            if why is None:
                raise
            raise RuntimeError(why) from e
        return {"tool": "onnxruntime.quantization.quantize_static", "format": recipe["format"],
                "per_channel": per_channel, "recipe": name,
                "why": recipe["why"] if not changed else f"changed from that recommendation: {', '.join(changed)}",
                "reduce_range": recipe["reduce_range"],
                "weights": f"{recipe['weights']} {'per-channel' if per_channel else 'per-tensor'}",
                "activations": recipe["activations"], "calibration_method": recipe["calibration_method"],
                "pre_process": True, "calibration_samples": sum(len(next(iter(f.values()))) for f in calibration),
                **opset,
                **({"kept_float": kept, "nodes_excluded": excluded} if kept else {})}


def to_fp16(fp32_path: Path, out_path: Path) -> dict:
    """fp16 weights and activations with float32 inputs and outputs (ONNX Runtime's
    OnnxModel.convert_float_to_float16, keep_io_types), saved with external data when the fp32 file had it."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(fp32_path)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out_path), use_external_data_format=any(
        p != fp32_path for p in fp32_path.parent.iterdir()))
    return {"tool": "onnxruntime.transformers OnnxModel.convert_float_to_float16", "keep_io_types": True,
            "weights": "float16", "activations": "float16 (float32 inputs and outputs)",
            "note": "ONNX Runtime documents fp16 graphs for GPU; on CPU, ops without an fp16 kernel run between Casts"}
