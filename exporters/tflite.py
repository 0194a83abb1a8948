"""TFLite (LiteRT) files: from PyTorch through litert-torch, from Keras through TF's converter on the SavedModel;
fp16, dynamic-range int8 and full-integer int8 (calibrated) through ai-edge-quantizer, the same for both sources."""
from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import numpy as np

FORMAT = "tflite"
SOURCES = ("torch", "keras")
QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
REQUIRES = {"torch": ("litert_torch", "ai_edge_litert"), "keras": ("tensorflow", "ai_edge_litert")}
QUANTIZER = ("ai_edge_quantizer",)


def _from_torch(source, path: Path) -> dict:
    import litert_torch  # before anything imports tensorflow: the other order segfaults with this stack

    litert_torch.convert(source.model, (source.example,)).export(str(path))
    return {"name": "litert_torch.convert", "litert-torch": md.version("litert-torch")}


def _from_keras(source, path: Path) -> dict:
    import tensorflow as tf

    from toolkit.keras_source import temporary_savedmodel

    with temporary_savedmodel(source.model) as savedmodel:
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(savedmodel)).convert())
    return {"name": "tf.lite.TFLiteConverter.from_saved_model", "tensorflow": tf.__version__}


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
        interpreter = Interpreter(model_path=str(fp32))
        key, signature = next(iter(interpreter.get_signature_list().items()))
        name = signature["inputs"][0]
        data = [{name: batch} for batch in calibration]
        calibration_result = quantizer.calibrate({key: data})
        info.update(calibration_method="min-max", calibration_samples=sum(len(b) for b in calibration))
    quantizer.quantize(calibration_result).export_model(str(out), overwrite=True)
    info.update(tool="ai-edge-quantizer", version=md.version("ai-edge-quantizer"))
    return info


def export(source, out_dir, quantization: str) -> dict:
    from exporters import convert_then_quantize

    path = out_dir / "model.tflite"
    # the converters keep the source's layout (litert-torch: NCHW, Keras: NHWC), so calibration data fits as is
    info = convert_then_quantize(source, path, quantization, _from_torch if source.framework == "torch" else _from_keras,
                                 lambda fp32, out, mode: _quantize(fp32, out, mode, source.calibration_batches()))
    details = {"main_file": path.name, "layout": source.layout, "dynamic_batch": _takes_another_batch(path, source),
               "exporter": info}
    if details["dynamic_batch"]:  # the TF converter keeps a free batch axis (-1); litert-torch fixes it
        details["batch_strategy"] = "free batch axis: the runtime resizes the input at load"
    return details


def _takes_another_batch(path: Path, source) -> bool:
    """Resize the input to another batch size and run once: does this file really take it?"""
    from ai_edge_litert.interpreter import Interpreter

    from runtimes.litert import resizable
    from toolkit.export_worker import other_batch

    interpreter = Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    other = other_batch(source.x).shape
    if not resizable(detail, other):
        return False
    try:
        interpreter.resize_tensor_input(detail["index"], list(other))
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], np.zeros(other, dtype=detail["dtype"]))
        interpreter.invoke()
    except (RuntimeError, ValueError):
        return False
    return True
