"""OpenVINO IR (model.xml + model.bin): from PyTorch through openvino.convert_model on the module (its TorchScript
trace, with every named dimension free; the ONNX export when that fails), from Keras through convert_model on a
SavedModel, from an ONNX file through convert_model on the file. Weights are saved in float32 (save_model would
compress them to fp16 by default). bf16 is the same fp32 IR compiled with INFERENCE_PRECISION_HINT=bf16 (recorded in
the exporter info, which the openvino runtime reads); int8 is NNCF's post-training quantization (nncf.quantize) on
the calibration split."""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import tempfile
import warnings
from pathlib import Path

FORMAT = "openvino"
SOURCES = ("torch", "keras", "onnx")
REQUIRES = {"torch": ("openvino", "torch"), "keras": ("openvino", "tensorflow"), "onnx": ("openvino",)}
INSTALL_HINT = {"openvino": "pip install 'deploycmp[openvino]'", "nncf": "pip install 'deploycmp[openvino]'"}

# the CPU features OpenVINO's CPU plugin computes bf16 with (AVX-512 BF16, AMX, AVX-NE-CONVERT): read from
# /proc/cpuinfo without importing openvino; the export and the runtime ask OpenVINO itself (OPTIMIZATION_CAPABILITIES)
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")


def _modes() -> tuple[tuple[str, ...], dict[str, str]]:
    from deploycmp.core.environment import cpu_flags

    modes, unsupported = ["none"], {
        "fp16": "openvino: no fp16 export in this version (OpenVINO's CPU plugin computes fp16 IR weights in f32 or bf16)",
        "dynamic": "openvino: no dynamic int8 export in this version (NNCF's post-training int8 is static: use int8)",
    }
    if cpu_flags() & set(BF16_FLAGS):
        modes.append("bf16")
    else:
        unsupported["bf16"] = ("openvino: bf16 needs a CPU with AVX-512 BF16, AMX or AVX-NE-CONVERT; this one has "
                               "none (OpenVINO would compute in f32)")
    if importlib.util.find_spec("nncf") is not None:
        modes.append("int8")
    else:
        unsupported["int8"] = "openvino: int8 needs nncf (not installed; pip install 'deploycmp[openvino]')"
    return tuple(modes), unsupported


QUANTIZATIONS, UNSUPPORTED = _modes()

OV_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "int64": "i64", "int32": "i32", "bool": "boolean",
            "uint8": "u8", "int8": "i8"}


def _input_shapes(source):
    """One (PartialShape, type) per input: every named dimension free (-1), the others fixed."""
    import openvino as ov

    out = []
    for s in source.inputs:
        shape = ov.PartialShape([-1 if isinstance(d, str) else int(d) for d in s.shape])
        out.append((shape, getattr(ov.Type, OV_TYPES[s.dtype])) if s.dtype in OV_TYPES else shape)
    return out


def _from_torch(source):
    """convert_model on the module (OpenVINO traces it with TorchScript) with the named dimensions free; when that
    fails, convert_model on the ONNX file that exporters/onnx makes."""
    import openvino as ov
    import torch

    info = {"torch": torch.__version__}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings
            model = ov.convert_model(source.model, example_input=source.dynamic_example(), input=_input_shapes(source))
        info["name"] = "openvino.convert_model (torch.nn.Module, TorchScript trace)"
    except Exception as e:
        from deploycmp.exporters.onnx import torch_to_onnx as to_onnx

        info["torch_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        with tempfile.TemporaryDirectory(prefix="deploycmp-ov-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            info["onnx"] = to_onnx(source, path)
            model = ov.convert_model(str(path))  # reads the weights now: the temporary file can go
        info["name"] = "openvino.convert_model (the ONNX export: the module's own conversion failed)"
    # PyTorch modules have no output names: give the IR the source's, so that they survive
    if source.outputs and len(source.outputs) == len(model.outputs):
        for port, name in zip(model.outputs, source.outputs):
            if not port.get_names():
                port.get_tensor().set_names({name})
    return model, info


def _from_keras(source):
    """convert_model on a SavedModel (keras model.export): OpenVINO reads it without TensorFlow."""
    import openvino as ov

    from deploycmp.sources.keras import temporary_savedmodel

    with temporary_savedmodel(source.model) as savedmodel:
        model = ov.convert_model(str(savedmodel))
    return model, {"name": "openvino.convert_model (SavedModel made by keras model.export)"}


def _from_onnx(source):
    """convert_model on the source file (its external data read from beside it): the graph's own names and free
    dimensions."""
    import openvino as ov

    return ov.convert_model(str(source.model.path)), {"name": "openvino.convert_model (the source ONNX file)"}


CONVERTERS = {"torch": _from_torch, "keras": _from_keras, "onnx": _from_onnx}


def _quantize(model, source) -> tuple[object, dict]:
    """NNCF post-training int8 on the calibration split (every batch of it: subset_size = the number of batches),
    its PERFORMANCE preset (symmetric weights and activations, NNCF's default for non-transformer models)."""
    import nncf
    import numpy as np

    from deploycmp.runtimes.base import feed_names

    feeds = source.calibration_feeds()
    ports = {p.get_any_name(): p for p in model.inputs}
    names = feed_names(list(feeds[0]), list(ports))

    def item(feed: dict) -> dict:
        out = {}
        for k, a in feed.items():
            want = ports[names[k]].get_element_type().to_dtype()
            out[names[k]] = a.astype(want) if a.dtype.kind in "iub" and np.dtype(want).kind in "iub" else a
        return out

    quantized = nncf.quantize(model, nncf.Dataset(feeds, item), preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=len(feeds))
    return quantized, {"tool": "nncf.quantize", "nncf": md.version("nncf"), "preset": "performance",
                       "weights": "int8 per-channel symmetric", "activations": "8-bit symmetric (static; unsigned where NNCF finds non-negative inputs)",
                       "fast_bias_correction": True, "subset_size": len(feeds),
                       "calibration_samples": sum(len(next(iter(f.values()))) for f in feeds),
                       "note": "NNCF compresses the quantized layers' weights to int8 in the IR"}


def _inputs(model, source) -> tuple[list[dict], list[str]]:
    """The IR's own inputs (a free axis as the source's name for it, or None) and the named dimensions free in every
    input that has them."""
    inputs = []
    for i, port in enumerate(model.inputs):
        spec = source.inputs[i].shape if i < len(source.inputs) else []
        shape = []
        for axis, d in enumerate(port.get_partial_shape()):
            named = spec[axis] if axis < len(spec) and isinstance(spec[axis], str) else None
            shape.append(d.get_length() if d.is_static else named)
        inputs.append({"name": port.get_any_name(), "dtype": port.get_element_type().to_dtype().name, "shape": shape})
    free = []
    for d in dict.fromkeys(x for s in source.inputs for x in s.dims()):
        axes = [(i, axis) for i, s in enumerate(source.inputs) for axis, x in enumerate(s.shape) if x == d]
        if all(i < len(inputs) and axis < len(inputs[i]["shape"]) and not isinstance(inputs[i]["shape"][axis], int)
               for i, axis in axes):
            free.append(d)
    return inputs, free


def export(source, out_dir, quantization: str) -> dict:
    import openvino as ov

    from deploycmp.core.errors import Unavailable
    from deploycmp.runtimes.openvino import bf16_support

    if quantization == "bf16" and (reason := bf16_support(ov.Core())):
        raise Unavailable(reason)
    model, info = CONVERTERS[source.framework](source)
    info["openvino"] = ov.get_version()
    if quantization == "int8":
        model, info["quantization"] = _quantize(model, source)
    if quantization == "bf16":
        # no file change: bf16 is how OpenVINO computes (weights stay float32 in the IR, converted when compiled)
        info["quantization"] = {"tool": "INFERENCE_PRECISION_HINT=bf16 at compile time", "weights": "float32 in the IR",
                                "activations": "bf16"}
        info["compile_properties"] = {"INFERENCE_PRECISION_HINT": "bf16"}
    path = Path(out_dir) / "model.xml"
    # save_model compresses float weights to fp16 unless told not to: an fp32 row must hold fp32 weights
    ov.save_model(model, str(path), compress_to_fp16=False)
    info["compress_to_fp16"] = False
    inputs, free = _inputs(model, source)
    return {"main_file": path.name, "layout": source.layout, "dynamic_dims": free, "inputs": inputs, "exporter": info}
