"""torch.export programs saved as .pt2, with every named dimension (batch, sequence ...) dynamic when the model
allows it, else the batch only, else static shapes."""
from __future__ import annotations

FORMAT = "torch-export"
SOURCES = ("torch",)
QUANTIZATIONS = ("none",)
REQUIRES = ("torch",)


def dynamic_shapes(source, only: set[str] | None = None) -> tuple:
    """torch.export's dynamic_shapes for the source's inputs: one Dim per named dimension, shared by name."""
    import torch

    dims: dict = {}
    return tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in axes.items()
                  if only is None or name in only}
                 for axes in source.dynamic_dims().values())


def export_program(source):
    """(program, note): all named dimensions free, else only the batch, else static (some models fix a size)."""
    import torch

    errors = []
    for only in (None, {"batch"}):
        try:
            return torch.export.export(source.model, source.dynamic_example(), dynamic_shapes=dynamic_shapes(source, only)), None
        except Exception as e:
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
    note = f"dynamic shapes failed ({errors[-1]}); exported with static shapes {source.dims}"
    return torch.export.export(source.model, source.example), note


def export(source, out_dir, quantization: str) -> dict:
    import torch

    path = out_dir / "model.pt2"
    program, note = export_program(source)
    torch.export.save(program, str(path))
    return {"main_file": path.name, "layout": source.layout, "dynamic_dims": source.free_dims(program.module()),
            "exporter": {"name": "torch.export.export", "torch": torch.__version__, "note": note}}
