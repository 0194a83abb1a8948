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

from deploycmp.core.environment import versions
from deploycmp.core.specs import BATCH

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
    # TensorFlow's "ValueError: in user code:" wraps the layer's own error, a few lines on
    errors = [i for i in errors if not lines[i].endswith("in user code:")] or errors
    if not errors:
        return lines[-1][:300] if lines else ""
    first = errors[0]  # the exception, then its message's next line (the reason TensorFlow gives)
    detail = " ".join(lines[first:first + 2]) if first + 1 < len(lines) and not lines[first + 1].startswith(
        ("ERROR:", "Call arguments", "File ")) else lines[first]
    if node is None:  # the failing layer's call arguments name its ONNX node
        node = next((m.group(1) for ln in lines[first:first + 40] if (m := re.match(r"^\W*name='([^']+)'$", ln))), None)
    detail = re.sub(r" for '\{\{node [^}]*\}\}[^']*'", "", detail)  # TensorFlow's own node text
    return (f"at ONNX node {node}: " if node else "") + detail[:400]


# onnx2tf checks its conversion on this file from its working directory, or downloads it from GitHub when every
# input is a static-batch 4-D image (common_functions.download_test_image_data); the name is onnx2tf's own
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
ONNX2TF_SAMPLES = 20
# TensorFlow's scope names (tf.Graph.name_scope)
SCOPE_NAME = re.compile(r"[A-Za-z0-9_.\\/>-]*")
# no download at run time: requests in onnx2tf's process goes through a proxy that is not there
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


def static_inputs(onnx_path: Path, source, free_batch: bool = True) -> dict:
    """The ONNX file's free input axes fixed at the export's shape point (what deploycmp measures at), except the
    batch axis, which onnx2tf keeps free (-1) and LiteRT resizes at load: a graph whose height or width is free
    (paddle2onnx leaves every axis free) otherwise becomes a TensorFlow graph of -1 dimensions that onnx2tf cannot
    build or XNNPack cannot prepare. The file's static axes stay; `free_batch` False fixes the batch axis too.
    Returns name -> the shape given to onnx2tf."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    specs = {s.name: s for s in source.inputs}
    by_position = dict(zip([i.name for i in graph_inputs], source.inputs))
    fixed = {}
    for graph_input in graph_inputs:
        spec = specs.get(graph_input.name) or by_position.get(graph_input.name)
        array = source.feed.get(spec.name) if spec is not None else None
        if array is None or array.ndim != len(graph_input.type.tensor_type.shape.dim):
            continue
        shape = []
        for axis, dim in enumerate(graph_input.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:  # the file's own static axis (a batch of 1 too)
                shape.append(dim.dim_value)
            elif spec.shape[axis] == BATCH and free_batch:
                dim.Clear()
                dim.dim_param = BATCH
                shape.append(BATCH)
            else:
                dim.Clear()
                dim.dim_value = int(array.shape[axis])
                shape.append(int(array.shape[axis]))
        fixed[graph_input.name] = shape
    if fixed:  # the outputs' free axes (paddle2onnx names them too) inferred again from the fixed inputs
        for output in model.graph.output:
            for dim in output.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value"):
                    dim.Clear()
        model = onnx.shape_inference.infer_shapes(model)
    renamed = _scope_names(model.graph)
    if fixed or renamed:
        onnx.save(model, str(onnx_path))  # external data, if any, stays in its file beside it
    return fixed


def _kept_shapes(onnx_path: Path, source) -> list[str]:
    """The inputs onnx2tf must keep as they are (-kat): it transposes every 3-D to 5-D input as if channels came
    first, which deploycmp undoes only for NCHW images; an NHWC image (tf2onnx keeps TensorFlow's layout) or a
    [batch, time, features] sequence is fed as the source takes it."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    specs = {s.name: s for s in source.inputs}
    by_position = dict(zip(names, source.inputs))
    return [n for n in names if (s := specs.get(n) or by_position.get(n)) is not None and 3 <= len(s.shape) <= 5
            and s.layout != "NCHW"]


def _scope_names(graph) -> int:
    """Node names TensorFlow takes as scope names (onnx2tf names its layers after them): paddle2onnx's
    `Softmax@0` has a character TensorFlow refuses. Only node names change, never a tensor's; returns how many."""
    taken = {n.name for n in graph.node}
    count = renamed = 0
    for node in graph.node:
        if node.name and not SCOPE_NAME.fullmatch(node.name):
            name = base = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", node.name)
            while name in taken:
                name = f"{base}_{count}"
                count += 1
            taken.add(name)
            node.name = name
            renamed += 1
    return renamed


def _write_sample(folder: Path, source) -> None:
    """onnx2tf's sample file, made from deploycmp's own calibration split (channels last, as onnx2tf reads it,
    repeated to its 20 samples) when the model's single image input has 3 channels."""
    import numpy as np

    images = [a for a in source.calibration.values() if getattr(a, "ndim", 0) == 4 and a.shape[1] == 3]
    if len(images) != 1 or len(source.calibration) != 1:
        return
    nhwc = np.transpose(images[0], (0, 2, 3, 1)).astype(np.float32)
    np.save(folder / ONNX2TF_SAMPLE, np.resize(nhwc, (ONNX2TF_SAMPLES, *nhwc.shape[1:])))


def onnx2tf(onnx_path: Path, tf_dir: Path, source) -> dict:
    """onnx2tf on an ONNX file in a folder of its own (onnx2tf rewrites its input file), its inputs fixed at the
    export's shapes (static_inputs), run offline with its check data from the calibration split: a SavedModel
    with signatures, and its .tflite side files (model_float32.tflite ...), in `tf_dir`. Where onnx2tf cannot
    keep the batch axis free (a ConvTranspose needs every output size), again with the batch fixed; where its
    strict mode's accuracy correction itself fails, again without it (the row's drift says what that cost)."""
    info = {"onnx2tf": md.version("onnx2tf"), "input_shapes": static_inputs(onnx_path, source)}
    kept = _kept_shapes(onnx_path, source)
    options = ("-kat", *kept) if kept else ()
    if kept:
        info["shapes_kept"] = kept
    _write_sample(onnx_path.parent, source)
    failure, log = _run_onnx2tf(onnx_path, tf_dir, *options)
    if failure and any(BATCH in shape for shape in info["input_shapes"].values()):
        info["input_shapes"] = static_inputs(onnx_path, source, free_batch=False)
        info["batch_fixed"] = f"onnx2tf could not keep the batch axis free ({failure[:200]})"
        failure, log = _run_onnx2tf(onnx_path, tf_dir, *options)
    if failure and "correction_process_for_accuracy_errors" in log:
        info["strict_mode_off"] = f"onnx2tf's accuracy correction failed ({failure[:200]}): -dsm"
        failure, log = _run_onnx2tf(onnx_path, tf_dir, *options, "--disable_strict_mode")
    if failure:
        raise RuntimeError(f"onnx2tf failed: {failure}")
    return info


def _run_onnx2tf(onnx_path: Path, tf_dir: Path, *options: str) -> tuple[str | None, str]:
    """(None when onnx2tf wrote a SavedModel, else the reason it gives; its log)."""
    import os

    shutil.rmtree(tf_dir, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(tf_dir), "-osd", "-n",
                           *options], capture_output=True, text=True, cwd=onnx_path.parent,
                          env={**os.environ, **OFFLINE})
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not (tf_dir / "saved_model.pb").is_file():
        sys.stderr.write(f"onnx2tf {' '.join(options)} failed; the end of its output:\n{log[-20000:]}\n")  # the row's log
        return onnx2tf_reason(log) or f"exit status {proc.returncode}", log
    return None, log


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
    from deploycmp.exporters.onnx import torch_to_onnx as to_onnx

    with tempfile.TemporaryDirectory(prefix="deploycmp-onnx2tf-") as tmp:
        onnx_dir, tf_dir = Path(tmp) / "onnx", Path(tmp) / "tf"
        onnx_dir.mkdir()
        onnx_info = to_onnx(source, onnx_dir / "model.onnx")
        info = onnx2tf(onnx_dir / "model.onnx", tf_dir, source)
        _copy_savedmodel(tf_dir, out)
    return {"name": "onnx2tf (from the ONNX export)", **info, "onnx": onnx_info}


def _from_onnx(source, out: Path) -> dict:
    """onnx2tf's SavedModel from a copy of the source file (and its external data)."""
    with tempfile.TemporaryDirectory(prefix="deploycmp-onnx2tf-") as tmp:
        tf_dir = Path(tmp) / "tf"
        info = onnx2tf(source.model.copy_to(Path(tmp) / "onnx"), tf_dir, source)
        _copy_savedmodel(tf_dir, out)
    return {"name": "onnx2tf (from the source ONNX file)", **info}


def export(source, out_dir, quantization: str) -> dict:
    out = out_dir / "savedmodel"
    if source.framework in ("torch", "onnx"):
        convert = _from_torch if source.framework == "torch" else _from_onnx
        info, layout = convert(source, out), ("NHWC" if source.layout == "NCHW" else source.layout)
    else:
        from deploycmp.sources.keras import export_savedmodel

        export_savedmodel(source.model, out)
        info, layout = {"name": "keras model.export (tf_saved_model)", "keras": md.version("keras")}, source.layout
    installed = versions()
    info["tensorflow"] = installed.get("tensorflow") or installed.get("tensorflow-cpu")
    return {"main_file": "savedmodel", "layout": layout, "dynamic_batch": _batch_is_free(out), "exporter": info}
