"""Runtime adapters, registered by name: each loads an artifact for a target and runs batches.

A runtime module defines NAME, FORMATS (the artifact formats it runs), REQUIRES (import names it needs),
optional IMPORTS (modules the worker imports before the load clock starts; default REQUIRES), optional DEVICES
(where it runs; default cpu only), optional OPT_IN (True: only targets whose runtimes list names it run it) and
load(artifact, run_dir, threads, device) -> a Session (see runtimes.base), which raises toolkit.errors.Unavailable
when it cannot run on that device here.
Adding a runtime = one module + one line here, or, without editing deploycmp, the environment variable
DEPLOYCMP_RUNTIMES="name=package.module,..." (a module on the Python path; a name already here is replaced).
"""
from __future__ import annotations

import importlib
import importlib.util
import os

from toolkit.errors import UsageError

RUNTIMES = {
    "torch": "runtimes.torch_eager",
    "torchscript": "runtimes.torchscript",
    "torch-export": "runtimes.torch_export",
    "onnxruntime": "runtimes.onnxruntime",
    "keras": "runtimes.keras_eager",
    "keras-predict": "runtimes.keras_predict",
    "tf-function": "runtimes.tf_function",
    "tensorflow": "runtimes.tensorflow",
    "litert": "runtimes.litert",
    "executorch": "runtimes.executorch",
}
ENV = "DEPLOYCMP_RUNTIMES"


def _from_env(spec: str) -> dict:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, module = (p.strip() for p in item.partition("="))
        if not sep or not name or not module:
            raise UsageError(f"{ENV}: expected name=package.module, not {item!r}")
        out[name] = module
    return out


def get(name: str):
    try:
        return importlib.import_module(RUNTIMES[name])
    except ModuleNotFoundError as e:
        if RUNTIMES[name].startswith("runtimes."):
            raise
        raise UsageError(f"{ENV}: runtime {name}: {e}") from None


def for_format(fmt: str, framework: str | None = None) -> list[str]:
    """Runtimes that run `fmt`; an eager runtime runs only its own framework's source."""
    out = []
    for name in RUNTIMES:
        mod = get(name)
        if fmt in mod.FORMATS and (framework is None or getattr(mod, "FRAMEWORK", framework) == framework):
            out.append(name)
    return out


def missing(requires) -> list[str]:
    """Import names among `requires` that are not installed (checked without importing them)."""
    return [m for m in requires if importlib.util.find_spec(m) is None]


def opt_in(name: str) -> bool:
    """An opt-in runtime runs only on targets that name it in their runtimes list (not on server-cpu ...)."""
    return bool(getattr(get(name), "OPT_IN", False))


def devices(name: str) -> tuple[str, ...]:
    return getattr(get(name), "DEVICES", ("cpu",))


RUNTIMES.update(_from_env(os.environ.get(ENV, "")))
