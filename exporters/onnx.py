"""ONNX: from PyTorch through torch.onnx's dynamo exporter (the legacy exporter if it fails), from Keras through
tf2onnx on the SavedModel, from an ONNX file the file itself (checked and saved again); dynamic and static int8
through onnxruntime.quantization, fp16 (float32 I/O) through ONNX Runtime's float16 conversion."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

from deploycmp.core.errors import first_line

FORMAT = "onnx"
SOURCES = ("torch", "keras", "onnx")
QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
# checked with onnxruntime 1.32: a bfloat16 MatMul has no CPU kernel (NOT_IMPLEMENTED) and Conv does not take bfloat16
UNSUPPORTED = {"bf16": "onnx: no bf16 export: ONNX Runtime's CPU provider has no bfloat16 MatMul kernel and its Conv "
                       "takes no bfloat16 (for bf16 on this CPU: openvino bf16 or aoti bf16)"}
REQUIRES = {"torch": ("torch", "onnx", "onnxscript", "onnxruntime"), "keras": ("tensorflow", "tf2onnx", "onnx", "onnxruntime"),
            "onnx": ("onnx", "onnxruntime")}


def _dynamo(source, path):
    import torch

    from deploycmp.exporters.torch_export import dynamic_shapes

    # an argument passed as a Python number has no shape to make dynamic (torch.export specialises the graph to it)
    shapes = tuple(None if s.passed_as else d for s, d in zip(source.inputs, dynamic_shapes(source)))
    program = torch.onnx.export(source.model, source.dynamic_example(), dynamo=True, dynamic_shapes=shapes,
                                input_names=_graph_inputs(source), output_names=source.outputs or None,
                                external_data=True, verbose=False)
    program.save(str(path), external_data=True)
    return {"name": "torch.onnx.export", "dynamo": True}


def _legacy(source, path):
    import torch

    # a 0-d input has no axis to make dynamic (an axis named there is what fails "Dynamic shape axis should be no
    # more than the shape dimension")
    axes = {s.name: {axis: d for axis, d in enumerate(s.shape) if isinstance(d, str)} for s in source.inputs if s.shape}
    torch.onnx.export(source.model, source.example, str(path), dynamo=False, input_names=_graph_inputs(source),
                      output_names=source.outputs or None,
                      dynamic_axes={**axes, **{o: {0: "batch"} for o in source.outputs}}, opset_version=17)
    return {"name": "torch.onnx.export", "dynamo": False}


def _graph_inputs(source) -> list[str]:
    """The names of the inputs the graph will have: a Python number passed to an nn.Module is no graph input (both
    exporters specialise the graph to it); a ScriptModule's int or float argument is one (the legacy exporter keeps
    it as a 0-d tensor)."""
    import torch

    scripted = isinstance(source.model, torch.jit.ScriptModule)
    return [s.name for s in source.inputs if scripted or not s.passed_as]


def torch_to_onnx(source, path: Path, prefer: str = "dynamo") -> dict:
    """The `prefer`red torch.onnx exporter ("dynamo" or "legacy", the TorchScript-based one), the other if it fails
    (its error kept as `{prefer}_error`). A ScriptModule (a TorchScript file) goes to the legacy exporter only: the
    dynamo exporter does not take one. Constants the graph does not take as inputs are said in `baked_in`."""
    import torch

    scripted = isinstance(source.model, torch.jit.ScriptModule)
    first, then = (_legacy, None) if scripted else (_dynamo, _legacy) if prefer == "dynamo" else (_legacy, _dynamo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            info = first(source, path)
        except Exception as e:
            if then is None:
                raise RuntimeError(f"the TorchScript-based exporter (torch.onnx.export dynamo=False; the dynamo "
                                   f"exporter takes no ScriptModule) failed: {first_line(e)}") from e
            for f in path.parent.iterdir():
                f.unlink()
            info = then(source, path)
            info[f"{prefer}_error"] = f"{type(e).__name__}: {first_line(e)}"
    if scripted:
        info["dynamo_skipped"] = "the source is a ScriptModule, which the dynamo exporter does not take"
    baked = _baked_in(source, path)
    if baked:
        info["baked_in"] = baked
    info["torch"] = torch.__version__
    return info


def _baked_in(source, path: Path) -> dict:
    """The constants (--const, 0-d inputs) the exported graph does not take: their value is part of the graph (an
    exporter specialises it to a Python number), so the file computes with that value only."""
    import onnx

    names = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
    return {s.name: s.value for s in source.inputs if s.is_constant() and s.name not in names}


def keras_to_onnx(source, path: Path) -> dict:
    """tf2onnx on a SavedModel (its Keras-object converter has open bugs with Keras 3), run as its own CLI."""
    import importlib.metadata as md

    from deploycmp.sources.keras import temporary_savedmodel

    with temporary_savedmodel(source.model) as savedmodel:
        proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(savedmodel),
                               "--output", str(path), "--opset", "17"], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise RuntimeError(f"tf2onnx failed: {lines[-1][:200] if lines else proc.returncode}")
    return {"name": "tf2onnx (from a SavedModel made by keras model.export)", "tf2onnx": md.version("tf2onnx")}


def _from_onnx(source, path: Path) -> dict:
    """The source file, checked by onnx.checker (its external data included) and saved again, its weights in one
    external data file beside it when the source kept them outside."""
    import onnx

    src = source.model.path
    onnx.checker.check_model(str(src))  # by path: reads the external data too, and models over 2 GB
    model = onnx.load(str(src))
    external = bool(source.model.data_files())
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{path.name}.data")
    return {"name": "the source ONNX file (onnx.checker, saved again)", "onnx": onnx.__version__,
            "external_data": external}


CONVERTERS = {"torch": torch_to_onnx, "keras": keras_to_onnx, "onnx": _from_onnx}

ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32", 9: "bool", 2: "uint8", 3: "int8"}


def inspect(path, source) -> dict:
    """Opset, the graph's own inputs (names, dtypes, shapes with free axes by name) and which of the source's
    named dimensions every input leaves free, read from the graph (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inputs = []
    weights = {t.name for t in model.graph.initializer}  # an old file (IR < 4) lists its weights as inputs too
    for i in [i for i in model.graph.input if i.name not in weights]:
        t = i.type.tensor_type
        inputs.append({"name": i.name, "dtype": ONNX_DTYPES.get(t.elem_type, str(t.elem_type)),
                       "shape": [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]})
    free = []
    for d in dict.fromkeys(x for s in source.inputs for x in s.dims()):
        axes = [(i, axis) for i, s in enumerate(source.inputs) for axis, x in enumerate(s.shape) if x == d]
        if all(i < len(inputs) and not isinstance(inputs[i]["shape"][axis], int) for i, axis in axes):
            free.append(d)
    from deploycmp.sources.onnx import default_opset

    return {"opset": default_opset(model),
            "inputs": inputs, "dynamic_dims": free}


def export(source, out_dir, quantization: str) -> dict:
    from deploycmp.exporters import convert_then_quantize
    from deploycmp.exporters.onnx_check import check
    from deploycmp.exporters.onnx_quantization import quantize, to_fp16

    path = out_dir / "model.onnx"
    info = convert_then_quantize(source, path, quantization, CONVERTERS[source.framework],
                                 lambda fp32, out, mode: to_fp16(fp32, out) if mode == "fp16" else
                                 quantize(fp32, out, mode, source.calibration_feeds()))
    info["checked"] = check(path, f"the {quantization} ONNX file" if quantization != "none" else "the ONNX export")
    graph = inspect(path, source)
    info["opset"] = graph["opset"]
    return {"main_file": path.name, "layout": source.layout, "dynamic_dims": graph["dynamic_dims"],
            "inputs": graph["inputs"], "exporter": info}
