"""TFLite (LiteRT) files: from PyTorch through litert-torch, from Keras through TF's converter on the SavedModel;
fp16, dynamic-range int8 and full-integer int8 (calibrated) through ai-edge-quantizer, the same for both sources."""
from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

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
    # converted with the example's batch size: other batch sizes need their own export
    return {"main_file": path.name, "layout": source.layout, "dynamic_batch": False, "exporter": info}
