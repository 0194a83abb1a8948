"""ExecuTorch programs (.pte) lowered to the XNNPACK delegate, PyTorch's on-device path; int8 through the XNNPACK
quantizer (PT2E, static, per-channel symmetric weights) calibrated on the calibration split. Programs are
memory-planned for one input shape, so every batch size gets its own export."""
from __future__ import annotations

import importlib.metadata as md

FORMAT = "executorch"
SOURCES = ("torch",)
QUANTIZATIONS = ("none", "int8")
REQUIRES = ("executorch", "torch")
UNSUPPORTED = {
    "fp16": "executorch: fp16 is not wired here (XNNPACK runs fp16 only for models cast to half precision)",
    "dynamic": "executorch: dynamic int8 quantizes linear layers only on XNNPACK; use int8 (static)",
}


def export(source, out_dir, quantization: str) -> dict:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    example = source.example
    program = torch.export.export(source.model, example)
    quant_info = None
    if quantization == "int8":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(program.module(), quantizer)
        batches = source.calibration_feeds()
        for feed in batches:
            prepared(*source.fw.example(feed, source.inputs))
        program = torch.export.export(convert_pt2e(prepared), example)
        quant_info = {"tool": "XNNPACKQuantizer (PT2E)", "weights": "int8 per-channel symmetric",
                      "activations": "int8 (static)", "calibration_method": "min-max observers",
                      "calibration_samples": sum(len(next(iter(b.values()))) for b in batches), "io": "float32 (quantized inside the program)"}
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = out_dir / "model.pte"
    path.write_bytes(lowered.buffer)
    info = {"name": "executorch.exir.to_edge_transform_and_lower + XnnpackPartitioner",
            "executorch": md.version("executorch"), "torch": torch.__version__}
    if quant_info:
        info["quantization"] = quant_info
    return {"main_file": path.name, "layout": source.layout, "dynamic_dims": [], "exporter": info}
