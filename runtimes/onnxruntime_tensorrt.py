"""ONNX files on ONNX Runtime's TensorRT execution provider (onnxruntime-gpu with TensorRT's libraries): what NVIDIA
documents for serving ONNX on its GPUs through ONNX Runtime. TensorRT builds an engine for the GPU in the first
session (cold start: load); fp16 files run in fp16, int8 QDQ files in int8 with their own scales (explicit
quantization); the engine is cached in the run directory. Nodes TensorRT cannot take fall back to the CUDA provider."""
from __future__ import annotations

from pathlib import Path

from deploycmp.core.errors import Unavailable
from deploycmp.runtimes.onnxruntime import OrtSession, session_options

NAME = "onnxruntime-trt"
FORMATS = ("onnx", "onnx-fused")
REQUIRES = ("onnxruntime",)
PREWARM = False  # importing it starts a thread: its rows start fresh (core.prewarm)
DEVICES = ("cuda",)
PROVIDER = "TensorrtExecutionProvider"


class TrtSession(OrtSession):
    def info(self) -> dict:
        return {**super().info(), "runtime": NAME, "provider_options": self.sess.get_provider_options().get(PROVIDER)}


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> TrtSession:
    import onnxruntime as ort

    if device != "cuda":
        raise Unavailable(f"{NAME} runs on NVIDIA GPUs only, not {device}")
    if PROVIDER not in ort.get_available_providers():
        raise Unavailable(f"onnxruntime {ort.__version__} has no {PROVIDER} (pip install onnxruntime-gpu, with "
                          "TensorRT's libraries on the library path)")
    cache = Path(run_dir) / "tuning" / "trt-engines" / artifact["id"]
    cache.mkdir(parents=True, exist_ok=True)
    quantization = artifact.get("quantization")
    trt = {"trt_fp16_enable": quantization == "fp16", "trt_int8_enable": quantization == "int8",
           "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
    sess = ort.InferenceSession(str(Path(run_dir) / artifact["main_file"]), session_options(threads),
                                providers=[(PROVIDER, trt), "CUDAExecutionProvider", "CPUExecutionProvider"])
    if sess.get_providers()[0] != PROVIDER:
        raise Unavailable(f"onnxruntime could not start TensorRT (providers: {sess.get_providers()})")
    return TrtSession(sess, threads, device)
