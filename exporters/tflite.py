"""TFLite (LiteRT) files: from PyTorch through litert-torch, from Keras through TF's converter on the SavedModel, from
an ONNX file through onnx2tf (NHWC image inputs); fp16, dynamic-range int8 and full-integer int8 (calibrated) through
ai-edge-quantizer, the same for every source."""
from __future__ import annotations

import importlib.metadata as md
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

    from deploycmp.sources.keras import temporary_savedmodel

    with temporary_savedmodel(source.model) as savedmodel:
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(savedmodel)).convert())
    return {"name": "tf.lite.TFLiteConverter.from_saved_model", "tensorflow": tf.__version__}


def _from_onnx(source, path: Path) -> dict:
    """onnx2tf (as the savedmodel exporter runs it) on a copy of the source file, then the TF converter on the
    SavedModel it writes (with its serving signature: onnx2tf's own .tflite has none when it falls back to
    converting a concrete function, as on paddle2onnx files)."""
    import tensorflow as tf

    from deploycmp.exporters.savedmodel import onnx2tf

    with tempfile.TemporaryDirectory(prefix="deploycmp-onnx2tf-") as tmp:
        onnx_path = source.model.copy_to(Path(tmp) / "onnx")
        info = onnx2tf(onnx_path, Path(tmp) / "tf", source)
        path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "tf")).convert())
    return {"name": "onnx2tf, then tf.lite.TFLiteConverter.from_saved_model (from the source ONNX file)", **info,
            "tensorflow": tf.__version__}


CONVERTERS = {"torch": _from_torch, "keras": _from_keras, "onnx": _from_onnx}


def _layout(source) -> str | None:
    """litert-torch keeps NCHW and Keras is NHWC already; onnx2tf moves an image's channels last."""
    return "NHWC" if source.framework == "onnx" and source.layout == "NCHW" else source.layout


def _in_layout(source, feed: dict, layout: str | None) -> dict:
    """A feed of the source's in the file's layout."""
    from deploycmp.core.specs import to_layout

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


# recipe["calibration_method"] -> how ai-edge-quantizer merges the min and max each calibration feed gives an activation
CALIBRATION_METHODS = {
    "min-max": "Quantizer.calibrate's own: a moving average (0.95) of each feed's min and max",
    "global-min-max": "the smallest min and largest max over all feeds (qsv_utils.min_max_update)",
}


def quantize(fp32_path: Path, out_path: Path, mode: str, calibration: list[dict], recipe: dict | None = None) -> dict:
    """Quantize fp32_path into out_path with ai-edge-quantizer (static int8: calibrated on `calibration`, a list of
    feeds, input name -> batch in the file's layout); returns what was done, for the manifest. `recipe` changes
    static int8: {"keep_float": tensor names (as deploycmp explain reports them) whose producing and consuming ops
    stay unquantized, so the tensors stay float; "calibration_method": a key of CALIBRATION_METHODS}."""
    import ai_edge_quantizer

    recipe = recipe or {}
    base, info = _recipe(mode)
    quantizer = ai_edge_quantizer.Quantizer(str(fp32_path))
    quantizer.load_quantization_recipe(base)
    if recipe.get("keep_float"):
        info.update(kept_float=list(recipe["keep_float"]), float_ops=_keep_float(quantizer, fp32_path, recipe["keep_float"]))
    calibration_result = None
    if quantizer.need_calibration:
        method = recipe.get("calibration_method", "min-max")
        calibration_result = _calibrate(quantizer, fp32_path, calibration, method)
        info.update(calibration_method=method,
                    calibration_samples=sum(len(next(iter(f.values()))) for f in calibration))
    quantizer.quantize(calibration_result).export_model(str(out_path), overwrite=True)
    info.update(tool="ai-edge-quantizer", version=md.version("ai-edge-quantizer"))
    return info


def _keep_float(quantizer, fp32: Path, tensors: list[str]) -> list[dict]:
    """Leave every op that makes or takes one of `tensors` unquantized (NO_QUANTIZE), each op matched exactly by its
    scope (ai-edge-quantizer names an op by its output tensor names, each followed by ';'; later configs win over
    the recipe's '.*'). Returns those ops: type and outputs."""
    import re

    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    model = fb.read_model(str(fp32))
    graph = model.subgraphs[0]
    names = [fb.get_tensor_name(t) for t in graph.tensors]
    missing = sorted(set(tensors) - set(names))
    if missing:
        raise ValueError(f"keep_float: {fp32} has no tensor named {', '.join(map(repr, missing))}")
    ops = [op for op in graph.operators if any(i >= 0 and names[i] in tensors for i in [*op.inputs, *op.outputs])]
    for op in ops:
        quantizer.update_quantization_recipe(regex=f"^{re.escape(fb.get_op_scope(op, graph.tensors))}$",
                                             operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                             algorithm_key=AlgorithmName.NO_QUANTIZE)
    return [{"op": fb.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode, "custom"),
             "outputs": [names[i] for i in op.outputs if i >= 0]} for op in ops]


def _calibrate(quantizer, fp32: Path, calibration: list[dict], method: str):
    """Activation ranges from the fp32 file run on `calibration` (fed through its first signature, in the file's own
    integer types: litert-torch makes int64 token ids int32; values are checked to fit at export)."""
    from ai_edge_litert.interpreter import Interpreter

    from deploycmp.runtimes.base import feed_names

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration_method {method!r}: ai-edge-quantizer offers {', '.join(CALIBRATION_METHODS)}")
    interpreter = Interpreter(model_path=str(fp32))
    key, signature = next(iter(interpreter.get_signature_list().items()))
    names = feed_names(list(calibration[0]), signature["inputs"])
    runner = interpreter.get_signature_runner(key).get_input_details()
    data = [{names[k]: batch.astype(runner[names[k]]["dtype"]) if batch.dtype.kind in "iub" else batch
             for k, batch in feed.items()} for feed in calibration]
    if method == "min-max":
        return quantizer.calibrate({key: data})
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(quantizer.get_quantization_recipe())
    calib = calibrator.Calibrator(str(fp32), qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({key: data}, manager)
    return calib.get_model_qsvs()


def export(source, out_dir, quantization: str) -> dict:
    from deploycmp.exporters import convert_then_quantize
    from deploycmp.runtimes.litert import signature_details

    path = out_dir / "model.tflite"
    layout = _layout(source)
    calibration = [_in_layout(source, feed, layout) for feed in source.calibration_feeds()]
    info = convert_then_quantize(source, path, quantization, CONVERTERS[source.framework],
                                 lambda fp32, out, mode: quantize(fp32, out, mode, calibration))
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
