"""ONNX: from PyTorch through torch.onnx's dynamo exporter (the legacy exporter if it fails), from Keras through
tf2onnx on the SavedModel; dynamic and static int8 through onnxruntime.quantization."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

FORMAT = "onnx"
SOURCES = ("torch", "keras")
QUANTIZATIONS = ("none", "dynamic", "int8")
REQUIRES = {"torch": ("torch", "onnx", "onnxscript", "onnxruntime"), "keras": ("tensorflow", "tf2onnx", "onnx", "onnxruntime")}
UNSUPPORTED = {"fp16": "onnx: no fp16 export in this version"}


def _dynamo(source, path):
    import torch

    batch = torch.export.Dim("batch")
    program = torch.onnx.export(source.model, (source.dynamic_example(),), dynamo=True, dynamic_shapes=({0: batch},),
                                external_data=True, verbose=False)
    program.save(str(path), external_data=True)
    return {"name": "torch.onnx.export", "dynamo": True}


def _legacy(source, path):
    import torch

    torch.onnx.export(source.model, (source.example,), str(path), dynamo=False, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      opset_version=17)
    return {"name": "torch.onnx.export", "dynamo": False}


def _from_torch(source, path: Path) -> dict:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            info = _dynamo(source, path)
        except Exception as e:
            for f in path.parent.iterdir():
                f.unlink()
            info = _legacy(source, path)
            info["dynamo_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    info["torch"] = torch.__version__
    return info


def _from_keras(source, path: Path) -> dict:
    """tf2onnx on a SavedModel (its Keras-object converter has open bugs with Keras 3), run as its own CLI."""
    import importlib.metadata as md

    from toolkit.keras_source import temporary_savedmodel

    with temporary_savedmodel(source.model) as savedmodel:
        proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(savedmodel),
                               "--output", str(path), "--opset", "17"], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise RuntimeError(f"tf2onnx failed: {lines[-1][:200] if lines else proc.returncode}")
    return {"name": "tf2onnx (from a SavedModel made by keras model.export)", "tf2onnx": md.version("tf2onnx")}


def inspect(path) -> dict:
    """Opset and whether the first input's batch axis is symbolic, read from the graph (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return {"opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "dynamic_batch": bool(batch_dim.dim_param) or not batch_dim.HasField("dim_value")}


def export(source, out_dir, quantization: str) -> dict:
    from exporters import convert_then_quantize
    from exporters.onnx_quantization import quantize

    path = out_dir / "model.onnx"
    info = convert_then_quantize(source, path, quantization, _from_torch if source.framework == "torch" else _from_keras,
                                 lambda fp32, out, mode: quantize(fp32, out, mode, source.calibration_batches()))
    graph = inspect(path)
    info["opset"] = graph["opset"]
    return {"main_file": path.name, "layout": source.layout, "dynamic_batch": graph["dynamic_batch"], "exporter": info}
