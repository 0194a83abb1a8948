"""explain's worker for ExecuTorch rows. A .pte computes its int8 ops inside XNNPACK and exposes no intermediate
tensors, so the comparison is in PyTorch before lowering, ExecuTorch's route for numerics: the run's source model is
exported and quantized again as the exporter did (deploycmp.exporters.executorch.calibrated: the same quantizer
config, calibration split and, for a repair candidate, recipe); a copy of the calibrated module (float, batch norms
folded, observers passing values through) is the reference and torchao's convert_pt2e of it the int8 program
(float ops between quantize/dequantize ops). Both run node by node on the row's inputs (torch.fx.Interpreter); each
quantize/dequantize pair's output is paired with the float value of the node it quantizes, the same name in both.

Not torchao's numeric debugger (prepare_for_propagation_comparison ...): it pairs nodes by the exported graph's
node they come from, so a convolution with a batch norm folded in is compared with the convolution's output before
the batch norm, and a quantize/dequantize pair that PT2E puts on an input edge (the model input, a float op feeding
a quantized one) is keyed to its observer and never compared. What is compared is PT2E's simulation of the int8
program, not the .pte's XNNPACK kernels (their rounding can differ slightly)."""
from __future__ import annotations

import copy
from pathlib import Path

from deploycmp.core.child import child_main

COMPARED = "the PT2E program (quantize/dequantize ops around float ops) in PyTorch before lowering to XNNPACK, " \
           "re-quantized from the run's source model as exported; not the .pte's kernels"


def _outputs(module, calls: list[tuple], names: set[str]) -> dict[str, list]:
    """node name -> its output on each call, for the nodes in `names` (copied when made: an in-place op later in
    the graph, a ResNet's relu_, would change it)."""
    import torch

    out: dict[str, list] = {}

    class Capture(torch.fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node.name in names:
                out.setdefault(node.name, []).append(value.detach().clone().numpy())
            return value

    with torch.no_grad():
        for args in calls:
            Capture(module).run(*args)
    return out


def quantized_activations(graph) -> dict[str, object]:
    """The node each activation quantize/dequantize pair quantizes (by name) -> its first dequantize node, in graph
    order (weights, held as quantized constants, have no quantize node; PT2E gives each reader its own dequantize)."""
    import torch

    out = {}
    for node in graph.nodes:
        quantize = node.args[0] if node.target == torch.ops.quantized_decomposed.dequantize_per_tensor.default else None
        if quantize is not None and quantize.op == "call_function":
            out.setdefault(quantize.args[0].name, node)
    return out


def layer_names(graph, tensors: list[str]) -> dict[str, str]:
    """tensor (a node name) -> the PyTorch module path of the node that made it; for a call in the model's own
    forward (a functional ReLU), the module of the nearest node before it since the previous quantized tensor, else
    the node's own name (as explain_onnx_worker.layer_names does for ONNX)."""
    from deploycmp.exporters.executorch import module_path

    by_name, quantized, out = {n.name: n for n in graph.nodes}, set(tensors), {}
    for name in tensors:
        node = by_name[name]
        while (path := module_path(node)) is None:
            ins = [a for a in node.all_input_nodes if a.op == "call_function" and a.name not in quantized]
            if not ins:
                break
            node = ins[0]
        out[name] = path or name
    return out


def _quantization(dequantize) -> dict:
    """A dequantize_per_tensor node's scale and zero point and the range they cover."""
    scale, zero, qmin, qmax = float(dequantize.args[1]), int(dequantize.args[2]), *map(int, dequantize.args[3:5])
    return {"scale": scale, "zero_point": zero, "range": [(qmin - zero) * scale, (qmax - zero) * scale],
            "range_from": "scale and zero point"}


def job(spec: dict) -> list[dict]:
    """Worker: the calibrated float module and its converted int8 program on the row's inputs; per quantized
    activation in execution order, the metrics of deploycmp.gate.explain.tensor_metrics and own_error and its scale
    and zero point."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from deploycmp.export.requantize_worker import run_source
    from deploycmp.exporters.executorch import calibrated
    from deploycmp.gate.explain import whole_batches, own_error, tensor_metrics

    artifact = spec["artifact"]
    source = run_source(Path(spec["run_dir"]), artifact)
    calls = [source.fw.example(feed, source.inputs) for feed in whole_batches(spec, source.names)]
    program = torch.export.export(source.model, source.example)
    prepared, _ = calibrated(source, program, "int8", (artifact.get("repair") or {}).get("recipe"))
    reference = copy.deepcopy(prepared)
    converted = convert_pt2e(prepared)
    pairs = quantized_activations(converted.graph)
    ref = _outputs(reference, calls, set(pairs))
    got = _outputs(converted, calls, {d.name for d in pairs.values()})
    names = layer_names(reference.graph, list(pairs))
    nodes = {n.name: n for n in reference.graph.nodes}
    layers = []
    for name, dequantize in pairs.items():
        node = nodes[name]
        axis = 1 if ref[name][0].ndim == 4 else -1  # NCHW inside
        metrics, quantization = tensor_metrics(ref[name], got[dequantize.name], axis), _quantization(dequantize)
        op = node.target.overloadpacket.__name__ if node.op == "call_function" else "input"
        layers.append({"tensor": name, "layer": names[name], "op": op, **metrics,
                       **own_error(ref[name], quantization, axis), **quantization})
    return layers


if __name__ == "__main__":
    child_main(job)
