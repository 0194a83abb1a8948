"""TFLite files on the LiteRT interpreter (ai_edge_litert) with XNNPACK; int8 inputs/outputs are quantized and
dequantized outside the timed call, with each tensor's scale and zero point, so drift is measured in float."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.base import Session

NAME = "litert"
FORMATS = ("tflite",)
REQUIRES = ("ai_edge_litert",)
IMPORTS = ("ai_edge_litert.interpreter",)


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    scale, zero = detail["quantization"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if not np.issubdtype(q.dtype, np.integer) or scale == 0:
        return q.astype(np.float32)
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


def resizable(detail: dict, shape) -> bool:
    """Whether an input whose shape signature leaves the batch axis free (-1) can take `shape`."""
    signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    return len(signature) == len(shape) and signature[0] == -1 and list(signature[1:]) == list(shape[1:])


class LiteRTSession(Session):
    def __init__(self, interpreter, threads: int, version: str):
        self.it, self._threads, self._version = interpreter, threads, version
        self.inputs = interpreter.get_input_details()
        self.outputs = interpreter.get_output_details()
        if len(self.inputs) != 1:
            raise ValueError(f"model has {len(self.inputs)} inputs; deploycmp measures single-input models")
        self._in = self.inputs[0]["index"]
        self._out = [o["index"] for o in self.outputs]
        self.resized = False

    def info(self) -> dict:
        return {"runtime": NAME, "version": self._version, "threads": self._threads, "device": "cpu",
                "delegate": "XNNPACK (default)", "input_dtype": np.dtype(self.inputs[0]["dtype"]).name,
                "input_shape": [int(d) for d in self.inputs[0]["shape"]], "resized_at_load": self.resized}

    def prepare(self, x: np.ndarray):
        want = tuple(int(d) for d in self.inputs[0]["shape"])
        if tuple(x.shape) != want:
            if not resizable(self.inputs[0], x.shape):
                raise ValueError(f"the .tflite file takes input of shape {want}, got {tuple(x.shape)}")
            self.it.resize_tensor_input(self._in, list(x.shape))  # its batch axis is free (-1): size it once
            self.it.allocate_tensors()
            self.inputs, self.outputs, self.resized = self.it.get_input_details(), self.it.get_output_details(), True
        return quantize(np.ascontiguousarray(x), self.inputs[0])

    def run(self, prepared):
        it = self.it
        it.set_tensor(self._in, prepared)
        it.invoke()
        return [it.get_tensor(i) for i in self._out]

    def to_numpy(self, raw) -> list[np.ndarray]:
        return [dequantize(q, d) for q, d in zip(raw, self.outputs)]


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> LiteRTSession:
    import importlib.metadata as md

    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(Path(run_dir) / artifact["main_file"]), num_threads=threads)
    it.allocate_tensors()
    return LiteRTSession(it, threads, md.version("ai-edge-litert"))
