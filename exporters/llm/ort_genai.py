"""ONNX Runtime GenAI's model builder (python -m onnxruntime_genai.models.builder) for the CPU execution provider:
model.onnx with its KV cache inputs, genai_config.json and the tokenizer. int4 and int8 are its weight-only
MatMulNBits quantization with the builder's CPU defaults (block size 32, accuracy level 4: activations quantized
to int8 inside the MatMul), the recipe its CPU kernels are built for."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

FORMAT = "ort-genai"
STACK = "ONNX Runtime GenAI"
QUANTIZATIONS = ("none", "int8", "int4")
UNSUPPORTED = {"bf16": "ort-genai: the builder's bf16 model runs on CUDA, not on the CPU provider",
               "8da4w": "ort-genai: int4 on the CPU provider already computes with int8 activations (accuracy "
                        "level 4): see int4"}
REQUIRES = ("onnxruntime_genai", "torch", "transformers")
INSTALL_HINT = {"onnxruntime_genai": "pip install 'deploycmp[llm]'"}
PRECISION = {"none": "fp32", "int8": "int8", "int4": "int4"}


def export(source_dir: Path, out_dir: Path, quantization: str, threads: int) -> dict:
    import importlib.metadata as md

    with tempfile.TemporaryDirectory(prefix="deploycmp-ortgenai-") as cache:
        command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source_dir), "-o", str(out_dir),
                   "-p", PRECISION[quantization], "-e", "cpu", "-c", cache]
        done = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(done.stdout[-20000:])
    sys.stderr.write(done.stderr[-20000:])
    if done.returncode != 0:
        last = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
        raise RuntimeError(f"onnxruntime_genai model builder exited {done.returncode}: {last[0][:240]}")
    info = {"exporter": {"name": "onnxruntime_genai.models.builder", "onnxruntime_genai": md.version("onnxruntime-genai"),
                         "command": " ".join(["python", *command[1:6], "-p", PRECISION[quantization], "-e", "cpu"])},
            "main_file": "genai_config.json"}
    if quantization != "none":
        info["quantizer"] = {"what": f"MatMulNBits {quantization} weight-only, block size 32, accuracy level 4 "
                                        "(int8 activations in the MatMul): the builder's CPU defaults"}
    return info
