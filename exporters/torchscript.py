"""TorchScript by tracing (torch.jit.trace); each named dimension is checked against the eager model at another size
to tell a trace that generalises from one specialised to the size it saw."""
from __future__ import annotations

import warnings

FORMAT = "torchscript"
SOURCES = ("torch",)
QUANTIZATIONS = ("none",)
REQUIRES = ("torch",)
# kept in the matrix because teams still ship TorchScript; `deploycmp list` says this
DEPRECATED = "PyTorch says 'please use torch.export instead' (torch-export, aoti)"
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
    from deploycmp.sources.torch import same_outputs

    # a trace records the sizes it saw wherever the model computes with them: a dimension counts as free only where
    # the trace gives the eager model's outputs at another size, otherwise each size gets its own trace
    free = source.free_dims_of(lambda other: same_outputs(module, source.model, source.fw.example(other, source.inputs)))
    fixed = [d for d in dict.fromkeys(d for s in source.inputs for d in s.dims()) if d in source.dims and d not in free]
    return {"main_file": path.name, "layout": source.layout, "dynamic_dims": free,
            "exporter": {"name": how, "torch": torch.__version__, "shape_specialisation": (
                f"traced at {', '.join(f'{d}={source.dims[d]}' for d in fixed)}: other sizes gave other outputs than "
                "the eager model, so each size gets its own trace" if fixed else
                f"none: at other sizes of {', '.join(free)} the trace gives the eager model's outputs")}}
