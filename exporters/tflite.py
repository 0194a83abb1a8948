"""TFLite (LiteRT) files: from PyTorch through litert-torch, from Keras through TF's converter on the SavedModel, from
an ONNX file through onnx2tf (NHWC image inputs); fp16, dynamic-range int8 and full-integer int8 (calibrated) through
ai-edge-quantizer, the same for every source."""
from __future__ import annotations

import importlib.metadata as md
import shutil
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "tflite"
SOURCES = ("torch", "keras", "onnx")
QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
REQUIRES = {"torch": ("litert_torch", "ai_edge_litert"), "keras": ("tensorflow", "ai_edge_litert"),
            "onnx": ("tensorflow", "onnx", "onnx2tf", "ai_edge_litert")}
QUANTIZER = ("ai_edge_quantizer",)
INSTALL_HINT = {"onnx2tf": "pip install --no-deps onnx2tf==1.29.24 tf-keras==2.21.0 (its own pins would downgrade "
                           "TensorFlow)"}


def _from_torch(source, path: Path) -> dict:
    import litert_torch  # before anything imports tensorflow: the other order segfaults with this stack

    litert_torch.convert(source.model, source.example).export(str(path))
    return {"name": "litert_torch.convert", "litert-torch": md.version("litert-torch")}


def _from_keras(source, path: Path) -> dict:
    import tensorflow as tf

    from deploycmp.keras_source import temporary_savedmodel

    with temporary_savedmodel(source.model) as savedmodel:
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(savedmodel)).convert())
    return {"name": "tf.lite.TFLiteConverter.from_saved_model", "tensorflow": tf.__version__}


def _from_onnx(source, path: Path) -> dict:
    """onnx2tf (as the savedmodel exporter runs it) on a copy of the source file: the float32 .tflite it writes."""
    from deploycmp.exporters.savedmodel import onnx2tf

    with tempfile.TemporaryDirectory(prefix="deploycmp-onnx2tf-") as tmp:
        onnx_path = source.model.copy_to(Path(tmp) / "onnx")
        info = onnx2tf(onnx_path, Path(tmp) / "tf")
        shutil.copyfile(Path(tmp) / "tf" / f"{onnx_path.stem}_float32.tflite", path)
    return {"name": "onnx2tf (its float32 .tflite, from the source ONNX file)", **info}


CONVERTERS = {"torch": _from_torch, "keras": _from_keras, "onnx": _from_onnx}


def _layout(source) -> str | None:
    """litert-torch keeps NCHW and Keras is NHWC already; onnx2tf moves an image's channels last."""
    return "NHWC" if source.framework == "onnx" and source.layout == "NCHW" else source.layout


def _in_layout(source, feed: dict, layout: str | None) -> dict:
    """A feed of the source's in the file's layout."""
    from deploycmp.worker import to_layout

    specs = {s.name: s for s in source.inputs}
    return {k: to_layout(a, specs[k].layout, layout) if k in specs else a for k, a in feed.items()}


def _recipe(mode: str):
    from ai_edge_quantizer import qtyping, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if mode == "dynamic":
        return recipe.dynamic_wi8_afp32(), {"recipe": "dynamic_wi8_afp32", "weights": "int8", "activations": "fp32, quantized at run time"}
    if mode == "int8":
        return recipe.static_wi8_ai8(), {"recipe": "static_wi8_ai8", "weights": "int8 per-channel",
                                         "activations": "int8", "io": "int8 (quantized by the harness)"}
    manager = recipe_manager.RecipeManager()
    manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                   algorithm_key=AlgorithmName.FLOAT_CASTING)
    return manager.get_quantization_recipe(), {"recipe": "weight-only float casting", "weights": "fp16", "activations": "fp32"}


def _quantize(fp32: Path, out: Path, mode: str, calibration) -> dict:
    import ai_edge_quantizer
    from ai_edge_litert.interpreter import Interpreter

    recipe, info = _recipe(mode)
    quantizer = ai_edge_quantizer.Quantizer(str(fp32))
    quantizer.load_quantization_recipe(recipe)
    calibration_result = None
    if quantizer.need_calibration:
        from deploycmp.runtimes.base import feed_names

        interpreter = Interpreter(model_path=str(fp32))
        key, signature = next(iter(interpreter.get_signature_list().items()))
        names = feed_names(list(calibration[0]), signature["inputs"])
        runner = interpreter.get_signature_runner(key).get_input_details()
        # the file's own integer types (litert-torch makes int64 token ids int32): values are checked to fit at export
        data = [{names[k]: batch.astype(runner[names[k]]["dtype"]) if batch.dtype.kind in "iub" else batch
                 for k, batch in feed.items()} for feed in calibration]
        calibration_result = quantizer.calibrate({key: data})
        info.update(calibration_method="min-max", calibration_samples=sum(len(next(iter(f.values()))) for f in calibration))
    quantizer.quantize(calibration_result).export_model(str(out), overwrite=True)
    info.update(tool="ai-edge-quantizer", version=md.version("ai-edge-quantizer"))
    return info


def export(source, out_dir, quantization: str) -> dict:
    from deploycmp.exporters import convert_then_quantize
    from deploycmp.runtimes.litert import signature_details

    path = out_dir / "model.tflite"
    layout = _layout(source)
    calibration = [_in_layout(source, feed, layout) for feed in source.calibration_feeds()]
    info = convert_then_quantize(source, path, quantization, CONVERTERS[source.framework],
                                 lambda fp32, out, mode: _quantize(fp32, out, mode, calibration))
    from ai_edge_litert.interpreter import Interpreter

    inputs, _ = signature_details(Interpreter(model_path=str(path)))
    free = source.free_dims_of(lambda other: _takes(path, _in_layout(source, other, layout)))
    details = {"main_file": path.name, "layout": layout, "dynamic_dims": free, "exporter": info,
               "inputs": [{"name": n, "dtype": np.dtype(d["dtype"]).name, "shape": [int(x) for x in d["shape_signature"]]}
                          for n, d in inputs.items()]}
    if "batch" in free:  # the TF converter and onnx2tf keep a free batch axis (-1); litert-torch fixes it
        details["batch_strategy"] = "free batch axis: the runtime resizes the input at load"
    return details


def _takes(path: Path, feed: dict) -> bool:
    """Resize the inputs to the feed's shapes and run once: does this file really take them?"""
    from ai_edge_litert.interpreter import Interpreter

    from deploycmp.runtimes.base import feed_names
    from deploycmp.runtimes.litert import resizable, signature_details

    interpreter = Interpreter(model_path=str(path))
    inputs, _ = signature_details(interpreter)
    names = feed_names(list(feed), list(inputs))
    try:
        for k, a in feed.items():
            detail = inputs[names[k]]
            if tuple(a.shape) != tuple(detail["shape"]):
                if not resizable(detail, a.shape):
                    return False
                interpreter.resize_tensor_input(detail["index"], list(a.shape))
        interpreter.allocate_tensors()
        for k, a in feed.items():
            detail = inputs[names[k]]
            interpreter.set_tensor(detail["index"], np.zeros(a.shape, dtype=detail["dtype"]))
        interpreter.invoke()
    except (RuntimeError, ValueError):
        return False
    return True
