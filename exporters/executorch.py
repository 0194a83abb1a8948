"""ExecuTorch programs (.pte) lowered to the XNNPACK delegate, PyTorch's on-device path; int8 through the XNNPACK
quantizer (PT2E, per-channel symmetric weights): static, calibrated on the calibration split, or dynamic
(activations quantized at run time; XNNPACK runs it for linear layers, the recipe ExecuTorch uses for transformers). Programs are
memory-planned for one input shape, so every batch size gets its own export. deploycmp repair quantizes static
int8 again from the run's source model (quantize_source): another activation observer (CALIBRATION_METHODS), and
activations explain names kept float (the XNNPACK quantizer's filter leaves the ops that make and read them out)."""
from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

FORMAT = "executorch"
SOURCES = ("torch",)
QUANTIZATIONS = ("none", "dynamic", "int8")
REQUIRES = ("executorch", "torch")
UNSUPPORTED = {
    "fp16": "executorch: fp16 is not wired here (XNNPACK runs fp16 only for models cast to half precision)",
}
# static int8's activation observers (torchao.quantization.pt2e classes), the XNNPACK config's own first
CALIBRATION_METHODS = {
    "histogram": "HistogramObserver",  # the range of least L2 quantization error over a histogram of the values seen
    "min-max": "MinMaxObserver",  # the smallest and largest value seen
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


def _config(dynamic: bool, method: str):
    """The XNNPACK quantizer's config: int8 per-channel symmetric weights; activations per tensor, static ones
    observed by `method` (its other arguments, eps, as the config gives them)."""
    import dataclasses

    import torchao.quantization.pt2e as pt2e
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration_method {method!r}: the XNNPACK quantizer takes {', '.join(CALIBRATION_METHODS)}")
    if dynamic or method == next(iter(CALIBRATION_METHODS)):
        return config
    activation = config.input_activation
    observer = getattr(pt2e, CALIBRATION_METHODS[method]).with_args(**activation.observer_or_fake_quant_ctr.p.keywords)
    activation = dataclasses.replace(activation, observer_or_fake_quant_ctr=observer)
    return dataclasses.replace(config, input_activation=activation, output_activation=activation)


def module_path(node) -> str | None:
    """The path of the innermost PyTorch module a node of an exported graph comes from ('layer1.0.conv1'); None for
    a call in the model's own forward (a functional ReLU) and for nodes without a module."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    return (stack[-1][0] if stack else "") or None


def float_nodes(graph, tensors: list[str]) -> list[str]:
    """The nodes to leave unquantized so that each of `tensors` (node names of the exported graph, as explain names
    activations) stays float: the node that makes it, the single-input ops before it back to the last op with
    weights (a convolution before its ReLU), and every node that reads it (through a batch norm, which PT2E folds
    into the convolution before it); in graph order."""
    by_name = {n.name: n for n in graph.nodes}
    position = {name: i for i, name in enumerate(by_name)}

    def readers(node):
        for user in (u for u in node.users if u.op == "call_function"):
            yield user
            if "batch_norm" in user.target.overloadpacket.__name__:
                yield from readers(user)

    out = []
    for name in tensors:
        node = by_name[name]
        out += [u.name for u in readers(node)]
        while True:
            out.append(node.name)
            ins = [a for a in node.all_input_nodes if a.op == "call_function"]
            if len(ins) != 1 or any(a.op == "get_attr" for a in node.all_input_nodes):
                break
            node = ins[0]
    return sorted(set(out), key=position.get)


def calibrated(source, program, quantization: str, recipe: dict | None = None):
    """(the PT2E-prepared module, observers calibrated, what was done): the exported `program` through the XNNPACK
    quantizer (batch norms folded into convolutions, observers inserted), run on the source's calibration split
    (static int8) or once for weight observers only (dynamic); torchao's convert_pt2e makes it the quantized
    program. `recipe` (static int8): "calibration_method" a key of CALIBRATION_METHODS, "keep_float" node names
    whose activations stay float (float_nodes)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    recipe, dynamic = recipe or {}, quantization == "dynamic"
    method = recipe.get("calibration_method", next(iter(CALIBRATION_METHODS)))
    module = program.module()
    kept = float_nodes(module.graph, recipe.get("keep_float", []))
    quantizer = _integer_safe(XNNPACKQuantizer)().set_global(_config(dynamic, method))
    if kept:
        quantizer.set_filter_function(lambda node: node.name not in kept)
    by_name = {n.name: n for n in module.graph.nodes}
    prepared = prepare_pt2e(module, quantizer)
    batches = [] if dynamic else source.calibration_feeds()
    if dynamic:
        prepared(*source.example)  # weight observers only: activations are quantized at run time
    for feed in batches:
        prepared(*source.fw.example(feed, source.inputs))
    info = {"tool": "XNNPACKQuantizer (PT2E)", "weights": "int8 per-channel symmetric",
            "io": "float32 (quantized inside the program)"}
    if dynamic:
        info.update({"activations": "int8, per token range computed at run time (dynamic)", "calibration_samples": 0})
    else:
        info.update({"activations": "int8 (static)", "calibration_method": method,
                     "observer": CALIBRATION_METHODS[method],
                     "calibration_samples": sum(len(next(iter(b.values()))) for b in batches)})
    if kept:
        info.update(kept_float=list(recipe["keep_float"]),
                    float_ops=[{"node": n, "op": str(by_name[n].target), "layer": module_path(by_name[n])} for n in kept])
    return prepared, info


def _converted(source, prepared):
    """The calibrated module converted (quantize/dequantize ops around float ops) and exported again for lowering."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return torch.export.export(convert_pt2e(prepared), source.example)


def _lower(program, path: Path) -> None:
    """The exported program lowered to XNNPACK, written as an ExecuTorch program."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    path.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)


def quantize_source(source, out_path: Path, mode: str, recipe: dict | None = None) -> dict:
    """Quantize the source model again (ExecuTorch has no quantizer for a finished .pte) with `recipe` and lower it
    into out_path, as export does; what was done."""
    import torch

    prepared, info = calibrated(source, torch.export.export(source.model, source.example), mode, recipe)
    _lower(_converted(source, prepared), out_path)
    return info


def export(source, out_dir, quantization: str) -> dict:
    import torch

    program = torch.export.export(source.model, source.example)
    quant_info = None
    if quantization in ("int8", "dynamic"):
        prepared, quant_info = calibrated(source, program, quantization)
        program = _converted(source, prepared)
    path = out_dir / "model.pte"
    _lower(program, path)
    info = {"name": "executorch.exir.to_edge_transform_and_lower + XnnpackPartitioner",
            "executorch": md.version("executorch"), "torch": torch.__version__}
    if quant_info:
        info["quantization"] = quant_info
    return {"main_file": path.name, "layout": source.layout, "dynamic_dims": [], "exporter": info}
