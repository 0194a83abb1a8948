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

    litert_torch.convert(source.model, source.example).export(str(path))
    return {"name": "litert_torch.convert", "litert-torch": md.version("litert-torch")}


def _from_keras(source, path: Path) -> dict:
    import tensorflow as tf

    from deploycmp.keras_source import temporary_savedmodel

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
    # the converters keep the source's layout (litert-torch: NCHW, Keras: NHWC), so calibration data fits as is
    info = convert_then_quantize(source, path, quantization, _from_torch if source.framework == "torch" else _from_keras,
                                 lambda fp32, out, mode: _quantize(fp32, out, mode, source.calibration_feeds()))
    from ai_edge_litert.interpreter import Interpreter

    inputs, _ = signature_details(Interpreter(model_path=str(path)))
    free = [d for d in source.free_dims_of(lambda other: _takes(path, other))]
    details = {"main_file": path.name, "layout": source.layout, "dynamic_dims": free, "exporter": info,
               "inputs": [{"name": n, "dtype": np.dtype(d["dtype"]).name, "shape": [int(x) for x in d["shape_signature"]]}
                          for n, d in inputs.items()]}
    if "batch" in free:  # the TF converter keeps a free batch axis (-1); litert-torch fixes it
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
