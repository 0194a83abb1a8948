"""torch.export programs saved as .pt2, with a dynamic batch dimension when the model allows one."""
from __future__ import annotations

FORMAT = "torch-export"
SOURCES = ("torch",)
QUANTIZATIONS = ("none",)
REQUIRES = ("torch",)


def export(source, out_dir, quantization: str) -> dict:
    import torch

    path = out_dir / "model.pt2"
    try:
        program = torch.export.export(source.model, (source.dynamic_example(),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        dynamic, note = True, None
    except Exception as e:  # some models specialise the batch size; a static program is still a valid artifact
        program = torch.export.export(source.model, (source.example,))
        dynamic, note = False, f"dynamic batch failed ({type(e).__name__}); exported with static batch {source.example.shape[0]}"
    torch.export.save(program, str(path))
    return {"main_file": path.name, "layout": source.layout,
            "dynamic_batch": dynamic and source.batch_works(program.module()),
            "exporter": {"name": "torch.export.export", "torch": torch.__version__, "note": note}}
