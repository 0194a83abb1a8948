"""Runtime adapters, registered by name: each loads an artifact for a target and runs feeds.

A runtime module declares what it can do once: what runtimes.base.Runtime names (NAME, FORMATS, REQUIRES and
load(...) -> a Session, which raises deploycmp.core.errors.Unavailable when it cannot run on that device here), and
what runtimes.base.OPTIONAL names where it differs from the default. Targets, the CLI and `list` read these.
Adding a runtime = one module + one line here, or, from another package, an entry point in the group
`deploycmp.runtimes` (name = module; a name already here is replaced).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util

from deploycmp.core.errors import UsageError

BUILTIN = {
    "torch": "deploycmp.runtimes.torch_eager",
    "torchscript": "deploycmp.runtimes.torchscript",
    "torch-export": "deploycmp.runtimes.torch_export",
    "onnxruntime": "deploycmp.runtimes.onnxruntime",
    "keras": "deploycmp.runtimes.keras_eager",
    "keras-predict": "deploycmp.runtimes.keras_predict",
    "tf-function": "deploycmp.runtimes.tf_function",
    "tensorflow": "deploycmp.runtimes.tensorflow",
    "litert": "deploycmp.runtimes.litert",
    "executorch": "deploycmp.runtimes.executorch",
    "aoti": "deploycmp.runtimes.aoti",
    "torch-compile": "deploycmp.runtimes.torch_compile",
    "openvino": "deploycmp.runtimes.openvino",
    "onnxruntime-trt": "deploycmp.runtimes.onnxruntime_tensorrt",
}
GROUP = "deploycmp.runtimes"
# a source that is itself a deployment format: its eager artifact (the file) runs on that format's runtime
EAGER = {"onnx": "onnxruntime"}


def plugins(group: str) -> dict[str, str]:
    """name -> module of the entry points other installed packages register in `group`."""
    return {ep.name: ep.value.partition(":")[0] for ep in importlib.metadata.entry_points(group=group)}


RUNTIMES = {**BUILTIN, **plugins(GROUP)}


def get(name: str):
    try:
        return importlib.import_module(RUNTIMES[name])
    except ModuleNotFoundError as e:
        if RUNTIMES[name] == BUILTIN.get(name):
            raise
        raise UsageError(f"runtime {name} (entry point in {GROUP}): {e}") from None


def for_format(fmt: str, framework: str | None = None) -> list[str]:
    """Runtimes that run `fmt`; an eager runtime runs only its own framework's source."""
    if fmt == "eager" and framework in EAGER:
        return [EAGER[framework]]
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


def on_device() -> tuple[str, ...]:
    """Runtimes that run on phones (ON_DEVICE): what the mobile-cpu target runs."""
    return tuple(n for n in RUNTIMES if getattr(get(n), "ON_DEVICE", False))


def on_gpu() -> tuple[str, ...]:
    """Runtimes that run on CUDA and are not opt-in: what the gpu target runs."""
    return tuple(n for n in RUNTIMES if "cuda" in devices(n) and not opt_in(n))
