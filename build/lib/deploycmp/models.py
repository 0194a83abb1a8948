"""Which framework a --model value belongs to, and that framework's source module (build, save, load, run)."""
from __future__ import annotations

import importlib
from pathlib import Path

SOURCES = {"torch": "deploycmp.torch_source", "keras": "deploycmp.keras_source"}


def framework_of(spec: str) -> str:
    """Decided from the text and the file system alone, without importing any framework."""
    p = Path(spec)
    if spec.startswith("keras:") or spec.endswith(".keras") or (p.is_dir() and (p / "saved_model.pb").is_file()):
        return "keras"
    return "torch"


def get(framework: str):
    return importlib.import_module(SOURCES[framework])
