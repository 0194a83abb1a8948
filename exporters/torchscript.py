"""TorchScript by tracing (torch.jit.trace), checked against the eager model on a second batch size."""
from __future__ import annotations

import warnings

FORMAT = "torchscript"
SOURCES = ("torch",)
QUANTIZATIONS = ("none",)
REQUIRES = ("torch",)
UNSUPPORTED = {"int8": "torchscript: no int8 export in this version (eager-mode quantization is deprecated)",
               "dynamic": "torchscript: no dynamic quantization export in this version",
               "fp16": "torchscript: fp16 on CPU is not a deployment path"}


def export(source, out_dir, quantization: str) -> dict:
    import torch

    path = out_dir / "model.torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices; the artifact is still what users ship
        if isinstance(source.model, torch.jit.ScriptModule):
            module, how = source.model, "scripted source"
        else:
            # strict=False records a dict of outputs (a Hugging Face model's logits ...) instead of refusing it
            module, how = torch.jit.trace(source.model, source.example, check_trace=False, strict=False), "torch.jit.trace"
        module.save(str(path))
    return {"main_file": path.name, "layout": source.layout, "dynamic_dims": source.free_dims(module),
            "exporter": {"name": how, "torch": torch.__version__}}
