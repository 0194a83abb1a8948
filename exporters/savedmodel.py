"""TensorFlow SavedModels: from Keras through model.export; from PyTorch through ONNX and onnx2tf, from an ONNX file
through onnx2tf (NHWC image inputs)."""
from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from deploycmp.environment import versions

FORMAT = "savedmodel"
SOURCES = ("torch", "keras", "onnx")
QUANTIZATIONS = ("none",)
REQUIRES = {"torch": ("tensorflow", "onnx", "onnx2tf"), "keras": ("tensorflow",), "onnx": ("tensorflow", "onnx", "onnx2tf")}
INSTALL_HINT = {"onnx2tf": "pip install --no-deps onnx2tf==1.29.24 tf-keras==2.21.0 (its own pins would downgrade TensorFlow)"}
UNSUPPORTED = {q: f"savedmodel: no {q} export in this version (use tflite or onnx for quantized models)"
               for q in ("fp16", "dynamic", "int8")}
SAVEDMODEL_PARTS = ("saved_model.pb", "variables", "assets", "fingerprint.pb")


def _batch_is_free(path: Path) -> bool:
    import tensorflow as tf

    spec = next(iter(tf.saved_model.load(str(path)).signatures["serving_default"].structured_input_signature[1].values()))
    return spec.shape.rank is not None and spec.shape[0] is None


def onnx2tf_reason(log: str) -> str:
    """The ONNX node onnx2tf stopped at and its exception, not the generic advice it prints last."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines() if ln.strip()]
    node = next((ln.split("onnx_op_name:", 1)[1].strip() for ln in lines if ln.startswith("ERROR: onnx_op_name:")), None)
    errors = [i for i, ln in enumerate(lines) if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", ln)]
    if not errors:
        return lines[-1][:300] if lines else ""
    first = errors[0]  # the exception, then its message's next line (the reason TensorFlow gives)
    detail = " ".join(lines[first:first + 2]) if first + 1 < len(lines) and not lines[first + 1].startswith(
        ("ERROR:", "Call arguments", "File ")) else lines[first]
    return (f"at ONNX node {node}: " if node else "") + detail[:400]


def onnx2tf(onnx_path: Path, tf_dir: Path) -> dict:
    """onnx2tf on an ONNX file in a folder of its own (onnx2tf rewrites its input file): a SavedModel with
    signatures, and its .tflite side files (model_float32.tflite ...), in `tf_dir`."""
    proc = subprocess.run([sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(tf_dir), "-osd", "-n"],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not (tf_dir / "saved_model.pb").is_file():
        raise RuntimeError(f"onnx2tf failed: {onnx2tf_reason(proc.stdout + proc.stderr) or proc.returncode}")
    return {"onnx2tf": md.version("onnx2tf")}


def _copy_savedmodel(tf_dir: Path, out: Path) -> None:
    """The SavedModel's own parts (onnx2tf's .tflite side files left behind)."""
    out.mkdir()
    for part in SAVEDMODEL_PARTS:
        if (tf_dir / part).is_dir():
            shutil.copytree(tf_dir / part, out / part)
        elif (tf_dir / part).is_file():
            shutil.copy2(tf_dir / part, out / part)


def _from_torch(source, out: Path) -> dict:
    """ONNX (as the onnx exporter makes it), then onnx2tf's SavedModel with signatures."""
    from deploycmp.exporters.onnx import _from_torch as to_onnx

    with tempfile.TemporaryDirectory(prefix="deploycmp-onnx2tf-") as tmp:
        onnx_dir, tf_dir = Path(tmp) / "onnx", Path(tmp) / "tf"
        onnx_dir.mkdir()
        onnx_info = to_onnx(source, onnx_dir / "model.onnx")
        info = onnx2tf(onnx_dir / "model.onnx", tf_dir)
        _copy_savedmodel(tf_dir, out)
    return {"name": "onnx2tf (from the ONNX export)", **info, "onnx": onnx_info}


def _from_onnx(source, out: Path) -> dict:
    """onnx2tf's SavedModel from a copy of the source file (and its external data)."""
    with tempfile.TemporaryDirectory(prefix="deploycmp-onnx2tf-") as tmp:
        tf_dir = Path(tmp) / "tf"
        info = onnx2tf(source.model.copy_to(Path(tmp) / "onnx"), tf_dir)
        _copy_savedmodel(tf_dir, out)
    return {"name": "onnx2tf (from the source ONNX file)", **info}


def export(source, out_dir, quantization: str) -> dict:
    out = out_dir / "savedmodel"
    if source.framework in ("torch", "onnx"):
        convert = _from_torch if source.framework == "torch" else _from_onnx
        info, layout = convert(source, out), ("NHWC" if source.layout == "NCHW" else source.layout)
    else:
        from deploycmp.keras_source import export_savedmodel

        export_savedmodel(source.model, out)
        info, layout = {"name": "keras model.export (tf_saved_model)", "keras": md.version("keras")}, source.layout
    installed = versions()
    info["tensorflow"] = installed.get("tensorflow") or installed.get("tensorflow-cpu")
    return {"main_file": "savedmodel", "layout": layout, "dynamic_batch": _batch_is_free(out), "exporter": info}
