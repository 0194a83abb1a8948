"""ExecuTorch programs (.pte) lowered to the XNNPACK delegate, PyTorch's on-device path; int8 through the XNNPACK
quantizer (PT2E, per-channel symmetric weights): static, calibrated on the calibration split, or dynamic
(activations quantized at run time; XNNPACK runs it for linear layers, the recipe ExecuTorch uses for transformers). Programs are
memory-planned for one input shape, so every batch size gets its own export."""
from __future__ import annotations

import importlib.metadata as md

FORMAT = "executorch"
SOURCES = ("torch",)
QUANTIZATIONS = ("none", "dynamic", "int8")
REQUIRES = ("executorch", "torch")
UNSUPPORTED = {
    "fp16": "executorch: fp16 is not wired here (XNNPACK runs fp16 only for models cast to half precision)",
}


def _integer_safe(quantizer_class):
    """XNNPACKQuantizer turns every scalar operand of add/mul into a float32 constant, integer arithmetic included:
    transformers' attention-mask indexing (arange + 0) then indexes with floats and prepare fails. This subclass
    gives those constants back the integer dtype of the node they feed."""
    import torch

    class IntegerSafe(quantizer_class):
        def transform_for_annotation(self, model):
            model = super().transform_for_annotation(model)
            for node in model.graph.nodes:
                val = node.meta.get("val")
                if node.op != "call_function" or not isinstance(val, torch.Tensor) or val.dtype.is_floating_point:
                    continue
                for arg in node.args:
                    if isinstance(arg, torch.fx.Node) and arg.op == "get_attr" and arg.target.startswith("_tensor_constant_"):
                        const = getattr(model, arg.target)
                        if const.is_floating_point():
                            model.register_buffer(arg.target, const.to(val.dtype))
                            arg.meta["val"] = arg.meta["val"].to(val.dtype)
            model.recompile()
            return model

    return IntegerSafe


def export(source, out_dir, quantization: str) -> dict:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    example = source.example
    program = torch.export.export(source.model, example)
    quant_info = None
    if quantization in ("int8", "dynamic"):
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        dynamic = quantization == "dynamic"
        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
        prepared = prepare_pt2e(program.module(), _integer_safe(XNNPACKQuantizer)().set_global(config))
        batches = [] if dynamic else source.calibration_feeds()
        if dynamic:
            prepared(*example)  # weight observers only: activations are quantized at run time
        for feed in batches:
            prepared(*source.fw.example(feed, source.inputs))
        program = torch.export.export(convert_pt2e(prepared), example)
        quant_info = {"tool": "XNNPACKQuantizer (PT2E)", "weights": "int8 per-channel symmetric",
                      "io": "float32 (quantized inside the program)"}
        if dynamic:
            quant_info.update({"activations": "int8, per token range computed at run time (dynamic)",
                               "calibration_samples": 0})
        else:
            quant_info.update({"activations": "int8 (static)", "calibration_method": "min-max observers",
                               "calibration_samples": sum(len(next(iter(b.values()))) for b in batches)})
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = out_dir / "model.pte"
    path.write_bytes(lowered.buffer)
    info = {"name": "executorch.exir.to_edge_transform_and_lower + XnnpackPartitioner",
            "executorch": md.version("executorch"), "torch": torch.__version__}
    if quant_info:
        info["quantization"] = quant_info
    return {"main_file": path.name, "layout": source.layout, "dynamic_dims": [], "exporter": info}
