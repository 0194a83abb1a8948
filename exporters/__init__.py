"""Exporters, registered by format name: each turns a loaded source model into an artifact.

An exporter module declares what Exporter names (FORMAT, SOURCES, QUANTIZATIONS, REQUIRES and export(source, out_dir,
quantization) -> dict of details: main_file, layout, dynamic_dims, the artifact's own inputs, exporter info), and
may declare what OPTIONAL names. Adding a format = one module + one line here, or, from another package, an entry
point in the group `deploycmp.exporters`.
"""
from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Protocol

from deploycmp.runtimes import plugins

BUILTIN = {
    "torchscript": "deploycmp.exporters.torchscript",
    "torch-export": "deploycmp.exporters.torch_export",
    "onnx": "deploycmp.exporters.onnx",
    "onnx-fused": "deploycmp.exporters.onnx_fused",
    "savedmodel": "deploycmp.exporters.savedmodel",
    "tflite": "deploycmp.exporters.tflite",
    "executorch": "deploycmp.exporters.executorch",
    "aoti": "deploycmp.exporters.aoti",
    "openvino": "deploycmp.exporters.openvino",
}
EXPORTERS = {**BUILTIN, **plugins("deploycmp.exporters")}

QUANTIZATIONS = ("none", "bf16", "fp16", "dynamic", "int8")
SOURCE_NAMES = {"torch": "a PyTorch model", "keras": "a Keras model", "onnx": "an ONNX file"}


class Exporter(Protocol):
    """What an exporter module declares. OPTIONAL: what it may also declare, with the value its absence means."""

    FORMAT: str
    SOURCES: tuple[str, ...]  # source frameworks it takes
    QUANTIZATIONS: tuple[str, ...]  # among QUANTIZATIONS
    REQUIRES: tuple[str, ...] | dict  # import names it needs, or a dict of them per source framework

    def export(self, source, out_dir: Path, quantization: str) -> dict:
        """source: deploycmp.export.export_worker.Source (model, inputs, example feed, calibration feeds)."""


OPTIONAL = {
    "UNSUPPORTED": {},  # quantization -> why this format cannot make it (shown in the row)
    "INSTALL_HINT": {},  # import name -> how to install it
    "QUANTIZER": (),  # import names the quantized modes also need
    "DEPRECATED": None,  # what upstream says instead (shown by deploycmp list)
}


def get(name: str):
    return importlib.import_module(EXPORTERS[name])


def unsupported_reason(fmt: str, framework: str, quantization: str) -> str | None:
    """Why this format cannot make this (source framework, quantization), or None when it can."""
    mod = get(fmt)
    if framework not in mod.SOURCES:
        return f"{fmt}: no maintained converter from {SOURCE_NAMES.get(framework, framework)}"
    if quantization not in mod.QUANTIZATIONS:
        return getattr(mod, "UNSUPPORTED", {}).get(quantization) or f"{fmt}: no {quantization} export in this version"
    return None


def requirements(fmt: str, framework: str, quantization: str) -> tuple[str, ...]:
    mod = get(fmt)
    req = mod.REQUIRES.get(framework, ()) if isinstance(mod.REQUIRES, dict) else mod.REQUIRES
    return tuple(req) + (tuple(getattr(mod, "QUANTIZER", ())) if quantization != "none" else ())


def install_hint(fmt: str, missing: list[str]) -> str:
    hints = getattr(get(fmt), "INSTALL_HINT", {})
    return "; ".join(hints.get(m, f"pip install 'deploycmp[all]' for {m}") for m in missing)


def convert_then_quantize(source, path: Path, quantization: str, convert, quantize) -> dict:
    """convert(source, path) for fp32; otherwise convert to a temporary fp32 file and quantize(fp32, path, mode)
    into `path`. Returns the converter's details with what the quantizer did under 'quantization'."""
    if quantization == "none":
        return convert(source, path)
    with tempfile.TemporaryDirectory(prefix="deploycmp-fp32-") as tmp:
        fp32 = Path(tmp) / path.name
        info = convert(source, fp32)
        info["quantization"] = quantize(fp32, path, quantization)
    return info
