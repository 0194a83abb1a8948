"""explain's worker for ONNX Runtime QDQ rows: the int8 file and the path's fp32 file (pre-processed as the quantizer
saw it, so tensor names match) run with every intermediate tensor made a graph output (as Polygraphy marks them),
their shapes kept; ONNX Runtime's qdq_loss_debug pairs each quantized activation's dequantized value with the fp32
tensor of the same name. Layers are named by the PyTorch module that made them where the exporter recorded it."""
from __future__ import annotations

import ast
import tempfile
from pathlib import Path

from deploycmp.core.child import child_main

COMPARED = "the int8 file and the fp32 file on ONNX Runtime's CPU provider, graph optimisations off (the graph as written)"


def _expose(model, path: Path) -> None:
    """Every float tensor a node makes, as a graph output (shapes from ONNX shape inference)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
    have = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            info = known.get(name)
            if name and name not in have and info is not None and info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                model.graph.output.append(info)
                have.add(name)
    onnx.save(model, str(path), save_as_external_data=model.ByteSize() > 1 << 30)


def _run(path: Path, batches: list[dict]) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    out: dict[str, list] = {}
    for feed in batches:
        for name, value in [*feed.items(), *zip(names, session.run(None, feed))]:  # the inputs too
            out.setdefault(name, []).append(value)
    return out


def _scopes(node) -> list[str] | None:
    """The paths of the modules a node is in, outermost first, then its op's name, as torch.onnx's dynamo exporter
    records them (['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d_1']); None for files from other exporters."""
    scopes = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes")
    return None if scopes is None else ast.literal_eval(scopes)


def layer_names(graph, tensors: list[str]) -> dict[str, str]:
    """tensor -> the layer that made it: the PyTorch module of its node; for a top-level call (a functional ReLU),
    the module of the nearest node before it since the previous quantized tensor, else the call's own name; the
    node's name in files from other exporters."""
    producer = {o: node for node in graph.node for o in node.output}
    quantized, out = set(tensors), {}
    for name in tensors:
        node = producer.get(name)
        while node is not None:
            scopes = _scopes(node)
            if scopes is None or len(scopes) > 2:
                out[name] = producer[name].name if scopes is None else scopes[-2]  # the deepest module's path
                break
            ins = [i for i in node.input if i in producer and i not in quantized]
            if not ins:
                out[name] = _scopes(producer[name])[-1]
                break
            node = producer[ins[0]]
    return {t: out.get(t, t) for t in tensors}  # graph inputs by their own name


def _qparams(model) -> dict:
    """tensor -> scale, zero point, dtype and the range they cover, of each QuantizeLinear's input."""
    import numpy as np
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in init and len(node.input) > 2 and node.input[2] in init:
            scale, zero = init[node.input[1]], init[node.input[2]]
            if scale.size == 1:
                info = np.iinfo(zero.dtype)
                s, z = float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0])
                out[node.input[0]] = {"scale": s, "zero_point": z, "dtype": str(zero.dtype),
                                      "range": [(info.min - z) * s, (info.max - z) * s]}
    return out


def job(spec: dict) -> list[dict]:
    """Worker: both models with their intermediate tensors as outputs, on the row's inputs; per quantized activation
    in graph order, the metrics of deploycmp.gate.explain.tensor_metrics and own_error and the quantization parameters."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching
    from onnxruntime.quantization.quant_utils import QUANT_INPUT_SUFFIX
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from deploycmp.gate.explain import whole_batches, own_error, tensor_metrics

    int8 = onnx.load(spec["int8"])
    feeds = whole_batches(spec, [i.name for i in int8.graph.input])
    with tempfile.TemporaryDirectory(prefix="deploycmp-explain-") as tmp:
        tmp = Path(tmp)
        single, fp32 = tmp / "fp32.onnx", tmp / "fp32-pre.onnx"
        onnx.save(onnx.load(spec["fp32"]), str(single))
        quant_pre_process(str(single), str(fp32), skip_symbolic_shape=True)  # as the quantizer saw it
        float_model = onnx.load(str(fp32))
        graph = float_model.graph
        acts = {}
        for key, model in (("float", float_model), ("int8", int8)):  # _expose adds outputs to a shape-inferred copy
            _expose(model, tmp / f"{key}-exposed.onnx")
            acts[key] = _run(tmp / f"{key}-exposed.onnx", feeds)
    matched = create_activation_matching(acts["int8"], acts["float"])
    qparams = _qparams(int8)
    producer = {o: node for node in graph.node for o in node.output}
    order = [t for t in [*(i.name for i in graph.input), *(o for node in graph.node for o in node.output)]
             if t in matched and matched[t].get("float") is not None and matched[t].get("post_qdq") is not None]
    names = layer_names(graph, order)
    axis = 1 if (spec.get("layout") or "").startswith("NC") else -1  # channels first for PyTorch images
    layers = []
    for name in order:
        q = qparams.get(name + QUANT_INPUT_SUFFIX) or qparams.get(name) or {}
        metrics = tensor_metrics(matched[name]["float"], matched[name]["post_qdq"], axis)
        op = producer[name].op_type if name in producer else "input"
        layers.append({"tensor": name, "layer": names[name], "op": op, **metrics,
                       **own_error(matched[name]["float"], q, axis),
                       "scale": q.get("scale"), "zero_point": q.get("zero_point"),
                       "range": q.get("range") or metrics["fp32_seen"],
                       "range_from": "scale and zero point" if q else "fp32 values seen"})
    return layers


if __name__ == "__main__":
    child_main(job)
