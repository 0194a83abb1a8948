"""Runtime adapters, registered by name: each loads an artifact for a target and runs batches.

A runtime module defines NAME, FORMATS (the artifact formats it runs), REQUIRES (import names it needs)
and load(artifact, run_dir, threads) -> a Session (see runtimes.base). Adding a runtime = one module + one line here.
"""
from __future__ import annotations

import importlib
import importlib.util

RUNTIMES = {
    "torch": "runtimes.torch_eager",
    "torchscript": "runtimes.torchscript",
    "torch-export": "runtimes.torch_export",
    "onnxruntime": "runtimes.onnxruntime",
}


def get(name: str):
    return importlib.import_module(RUNTIMES[name])


def for_format(fmt: str) -> list[str]:
    return [name for name in RUNTIMES if fmt in get(name).FORMATS]


def missing(requires) -> list[str]:
    """Import names among `requires` that are not installed (checked without importing them)."""
    return [m for m in requires if importlib.util.find_spec(m) is None]
