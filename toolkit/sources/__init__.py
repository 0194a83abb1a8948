"""Which framework a --model value belongs to, and that framework's source module (build, save, load, run)."""
from __future__ import annotations

import importlib
from pathlib import Path

from deploycmp.core.errors import UsageError
from deploycmp.core.schema import FRAMEWORKS

SOURCES = {framework: f"deploycmp.sources.{framework}" for framework in FRAMEWORKS}

# deployment formats deploycmp makes, not models it makes them from (an ONNX file is both: a source too)
NOT_SOURCES = {".tflite": "a TFLite file", ".pte": "an ExecuTorch program", ".mlmodel": "a Core ML file",
               ".engine": "a TensorRT engine"}


def framework_of(spec: str) -> str:
    """Decided from the text and the file system alone, without importing any framework. Refuses a file that is
    no source model (a .tflite, .pte ...) and a SavedModel directory with a link to a file outside it."""
    p = Path(spec)
    what = NOT_SOURCES.get(p.suffix.lower())
    if what and not spec.startswith(("keras:", "keras-hub:")):
        raise UsageError(f"--model {spec} is {what}: not a model deploycmp can export from; give the PyTorch model "
                         "(a factory, TorchScript or .pt2 file), Keras model (.keras, SavedModel) or ONNX file it was "
                         "made from")
    if p.suffix.lower() == ".onnx" and not p.is_dir() and not spec.startswith(("keras:", "keras-hub:", "hf:")):
        return "onnx"
    savedmodel = p.is_dir() and (p / "saved_model.pb").is_file()
    if spec.startswith(("keras:", "keras-hub:")) or spec.endswith(".keras") or savedmodel:
        if p.is_dir():
            _check_links(p)
        return "keras"
    return "torch"


def _check_links(folder: Path) -> None:
    """A SavedModel directory is copied into the run directory: a link in it must not reach outside it."""
    inside = folder.resolve()
    for q in sorted(folder.rglob("*")):
        if q.is_symlink() and not q.resolve().is_relative_to(inside):
            raise UsageError(f"--model {folder}: {q.relative_to(folder)} is a link to {q.resolve()}, outside the "
                             "SavedModel directory; copy the file into the directory instead")


def get(framework: str):
    return importlib.import_module(SOURCES[framework])
