"""ONNX Runtime's post-training quantization of an fp32 ONNX file: dynamic, or static QDQ calibrated on data."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def quantize(fp32_path: Path, out_path: Path, mode: str, calibration: list[np.ndarray]) -> dict:
    """Quantize fp32_path into out_path (static int8: calibrated on `calibration`, a list of input batches);
    returns what was done, for the manifest."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnx

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

        input_name = onnxruntime.InferenceSession(str(prepped), providers=["CPUExecutionProvider"]).get_inputs()[0].name

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter([{input_name: batch} for batch in calibration])

            def get_next(self):
                return next(self._it, None)

        quantize_static(str(prepped), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "per_channel": True,
                "weights": "int8 symmetric", "activations": "int8", "calibration_method": "MinMax",
                "calibration_samples": sum(len(b) for b in calibration), "pre_process": True}
