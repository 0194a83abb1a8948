"""ONNX through torch.onnx's dynamo exporter with a dynamic batch axis; the legacy TorchScript exporter if it fails."""
from __future__ import annotations

import warnings

FORMAT = "onnx"
SOURCES = ("torch",)
QUANTIZATIONS = ("none",)
REQUIRES = ("torch", "onnx", "onnxscript")
UNSUPPORTED = {"dynamic": "onnx: dynamic quantization arrives with onnxruntime.quantization support (not in this version)",
               "int8": "onnx: static int8 arrives with onnxruntime.quantization support (not in this version)",
               "fp16": "onnx: no fp16 export in this version"}


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


def inspect(path) -> dict:
    """Opset and whether the first input's batch axis is symbolic, read from the graph (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return {"opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "dynamic_batch": bool(batch_dim.dim_param) or not batch_dim.HasField("dim_value")}


def export(source, out_dir, quantization: str) -> dict:
    import torch

    path = out_dir / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            info = _dynamo(source, path)
        except Exception as e:
            for f in out_dir.iterdir():
                f.unlink()
            info = _legacy(source, path)
            info["dynamo_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    info["torch"] = torch.__version__
    graph = inspect(path)
    info["opset"] = graph["opset"]
    return {"main_file": path.name, "layout": source.layout, "dynamic_batch": graph["dynamic_batch"], "exporter": info}
