"""TFLite files on the LiteRT interpreter (ai_edge_litert) with XNNPACK; int8 inputs/outputs are quantized and
dequantized outside the timed call, with each tensor's scale and zero point, so drift is measured in float."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deploycmp.runtimes.base import Session, TensorMeta

NAME = "litert"
FORMATS = ("tflite",)
REQUIRES = ("ai_edge_litert",)
ON_DEVICE = True
IMPORTS = ("ai_edge_litert.interpreter",)


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    scale, zero = detail["quantization"]
    if not np.issubdtype(dtype, np.integer) or not scale or np.issubdtype(x.dtype, np.integer):
        return x
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if not np.issubdtype(q.dtype, np.integer) or scale == 0:
        return q
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


def resizable(detail: dict, shape) -> bool:
    """Whether an input whose shape signature leaves axes free (-1) can take `shape`."""
    signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    return len(signature) == len(shape) and all(s in (-1, int(d)) for s, d in zip(signature, shape))


def _natural(name: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def signature_details(interpreter) -> tuple[dict, dict]:
    """(inputs, outputs) of the file's first signature: name -> tensor detail, in argument order (args_0, args_1 ...)."""
    runner = interpreter.get_signature_runner()
    ins, outs = runner.get_input_details(), runner.get_output_details()
    return ({k: ins[k] for k in sorted(ins, key=_natural)}, {k: outs[k] for k in sorted(outs, key=_natural)})


class LiteRTSession(Session):
    def __init__(self, interpreter, threads: int, version: str, xnnpack: bool = True, quantization: str | None = None):
        self.it, self._threads, self._version = interpreter, threads, version
        self.xnnpack, self.quantization = xnnpack, quantization
        self.inputs, self.outputs = signature_details(interpreter)
        self.resized = False
        self.meta = [TensorMeta(n, np.dtype(d["dtype"]).name, [None if int(x) == -1 else int(x) for x in d["shape_signature"]],
                                _quantized(d)) for n, d in self.inputs.items()]

    def info(self) -> dict:
        return {"runtime": NAME, "version": self._version, "threads": self._threads, "device": "cpu",
                "delegate": "XNNPACK (default)" if self.xnnpack else "none (LiteRT's built-in kernels)",
                "inputs": {n: {"dtype": np.dtype(d["dtype"]).name, "shape": [int(x) for x in d["shape"]]}
                           for n, d in self.inputs.items()}, "resized_at_load": self.resized,
                # a float16 .tflite keeps fp16 weights that both XNNPACK and the built-in kernels dequantize to fp32
                **({"computes_in": "fp32 (fp16 weights dequantized)"} if self.quantization == "fp16" else {})}

    def input_metadata(self):
        return self.meta

    def prepare_native(self, feed: dict):
        if any(tuple(a.shape) != tuple(int(x) for x in self.inputs[k]["shape"]) for k, a in feed.items()):
            for k, a in feed.items():  # free axes (-1): size them once, before the timed calls
                self.it.resize_tensor_input(self.inputs[k]["index"], list(a.shape))
            self.it.allocate_tensors()
            self.inputs, self.outputs = signature_details(self.it)
            self.resized = True
        return [(self.inputs[k]["index"], quantize(np.ascontiguousarray(a), self.inputs[k])) for k, a in feed.items()]

    def run(self, prepared):
        it = self.it
        for index, value in prepared:
            it.set_tensor(index, value)
        it.invoke()
        return [it.get_tensor(d["index"]) for d in self.outputs.values()]

    def to_numpy(self, raw) -> dict:
        return {name: dequantize(q, d) for q, (name, d) in zip(raw, self.outputs.items())}


def _quantized(detail: dict) -> tuple | None:
    scale, zero = detail["quantization"]
    return (float(scale), int(zero)) if scale else None


# what `bench --tune` may change (first value: what deploycmp runs untuned): the XNNPACK delegate LiteRT applies by
# default, or LiteRT's own built-in kernels without it
TUNE = {"xnnpack": (True, False)}


def load(artifact: dict, run_dir, threads: int, device: str = "cpu", options: dict | None = None) -> LiteRTSession:
    import importlib.metadata as md

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    xnnpack = (options or {}).get("xnnpack", True)
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=str(Path(run_dir) / artifact["main_file"]), num_threads=threads,
                     experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    return LiteRTSession(it, threads, md.version("ai-edge-litert"), xnnpack, artifact.get("quantization"))
