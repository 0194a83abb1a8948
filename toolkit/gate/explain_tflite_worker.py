"""explain's worker for LiteRT rows: the int8 .tflite and the path's fp32 .tflite run on LiteRT's built-in kernels
with every intermediate tensor kept (experimental_preserve_all_tensors; the XNNPACK delegate would compute its
partitions without writing them), fed as the litert runtime feeds them. ai-edge-quantizer keeps the fp32 file's
tensor names, so each activation the int8 file quantizes per tensor is dequantized and paired with the fp32 tensor
of the same name (as is each one it left float: keep_float, ops the quantizer cannot take). Layers are named from
the location the converter fused into each tensor name."""
from __future__ import annotations

import re

from deploycmp.core.child import child_main

COMPARED = "the int8 file and the fp32 file on LiteRT's built-in kernels (XNNPACK off: it keeps no intermediates)"

# one component of a litert-torch module path: the module's qualified class, '_', its attribute in the parent
TORCH_MODULE = re.compile(r"^(?:\w+\.)+[A-Za-z0-9]+_(.+)$")
# TFLite ops whose kernels are channels-last whatever the model's interface
CHANNELS_LAST = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D", "AVERAGE_POOL_2D", "MAX_POOL_2D"}


def _interpreter(path: str):
    """LiteRT on its built-in kernels, keeping every intermediate tensor readable after a call."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=path, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def _run(it, feeds: list[dict]) -> dict[str, list]:
    """Tensor name -> its value after each call, dequantized where quantized per tensor, for every tensor an op of
    the interpreter's first subgraph makes. Inputs go through the litert runtime's session (names, dtypes, the
    int8 file's input quantization, resizing a free batch axis)."""
    import importlib.metadata as md

    from deploycmp.runtimes.litert import LiteRTSession, dequantize

    session = LiteRTSession(it, 1, md.version("ai-edge-litert"), xnnpack=False)
    made = [i for op in it._get_ops_details() for i in op["outputs"] if i >= 0]
    values: dict[str, list] = {}
    for feed in feeds:
        session.run(session.prepare(feed))
        details = it.get_tensor_details()
        for i in made:
            values.setdefault(details[i]["name"], []).append(dequantize(it.get_tensor(i), details[i]))
    return values


def _feeds(spec: dict, names: list[str]) -> list[dict]:
    """The row's evaluation inputs keyed by the file's input names, moved from each source input's layout (spec's
    "inputs", where the caller passes them) to the artifact's."""
    from deploycmp.gate.explain import whole_batches
    from deploycmp.core.specs import to_layout

    sources = spec.get("inputs") or [{}] * len(names)
    return [{k: to_layout(a, source.get("layout"), spec.get("layout")) for (k, a), source in zip(feed.items(), sources)}
            for feed in whole_batches(spec, names)]


def channel_axes(it, layout: str | None) -> dict[int, int]:
    """tensor index -> its channel axis (non-negative), followed through the ops: a 4-d input's from the file's
    layout, the last for what channels-last kernels make (TFLite's convolutions are NHWC inside, even where
    litert-torch keeps an NCHW interface), moved by TRANSPOSE, kept by ops that keep the rank, else the last."""
    details = it.get_tensor_details()
    ndim = {d["index"]: len(d["shape"]) for d in details}
    first_axis = (layout or "").startswith("NC")
    axes = {d["index"]: 1 if first_axis and len(d["shape"]) == 4 else len(d["shape"]) - 1 for d in it.get_input_details()}
    for op in it._get_ops_details():
        first = op["inputs"][0] if len(op["inputs"]) else -1
        for out in (i for i in op["outputs"] if i >= 0):
            if op["op_name"] == "TRANSPOSE" and first in axes:
                axes[out] = [int(p) for p in it.get_tensor(op["inputs"][1])].index(axes[first])
            elif op["op_name"] not in CHANNELS_LAST and first in axes and ndim[first] == ndim[out]:
                axes[out] = axes[first]
            else:
                axes[out] = max(ndim[out] - 1, 0)
    return axes


def layer_name(tensor: str) -> str:
    """The source's name for the layer that made a tensor, from the location the converter wrote into its name (MLIR
    fuses the locations of merged ops with ';'): litert-torch writes module paths, 'pkg.Model/pkg.Class_attr/...',
    read as the PyTorch path 'attr.attr' (the deepest one given); TF's converter writes 'model/layer/.../op', read
    as 'layer/...'. The tensor name where neither is there."""
    paths = []
    for part in tensor.split(";"):
        scopes = part.split("/")[1:]
        modules = [TORCH_MODULE.match(s) for s in scopes]
        if scopes and all(modules):
            paths.append([m.group(1) for m in modules])
    if paths:
        return ".".join(max(paths, key=len))
    scopes = tensor.split(";")[0].split("/")[1:-1]
    return "/".join(scopes) or tensor


def _kind(detail: dict) -> str | None:
    """'quantized' for a tensor held as integers with one scale and zero point (an activation: weights are quantized
    per channel), 'float' for a float one (an op left unquantized: keep_float, or one the quantizer cannot take),
    None for anything else (integer indices, per-channel tensors)."""
    import numpy as np

    scales = detail["quantization_parameters"]["scales"]
    if np.issubdtype(detail["dtype"], np.integer) and scales.size == 1 and float(scales[0]) > 0:
        return "quantized"
    return "float" if np.issubdtype(detail["dtype"], np.floating) else None


def _quantization(detail: dict, metrics: dict) -> dict:
    """A quantized tensor's scale and zero point and the range they cover; a float tensor's fp32 range seen."""
    import numpy as np

    if _kind(detail) == "float":
        return {"scale": None, "zero_point": None, "range": metrics["fp32_seen"],
                "range_from": "fp32 values seen (float in the int8 file)"}
    scale, zero = float(detail["quantization"][0]), int(detail["quantization"][1])
    info = np.iinfo(detail["dtype"])
    return {"scale": scale, "zero_point": zero, "range": [(info.min - zero) * scale, (info.max - zero) * scale],
            "range_from": "scale and zero point"}


def job(spec: dict) -> list[dict]:
    """Worker: both files on the row's inputs with their intermediate tensors kept; per activation an op of the int8
    file makes that the fp32 file has by name (quantized per tensor, or left float), in op order, the metrics of
    deploycmp.gate.explain.tensor_metrics and own_error and its scale and zero point."""
    from deploycmp.gate.explain import own_error, tensor_metrics
    from deploycmp.runtimes.litert import signature_details

    it = _interpreter(spec["int8"])
    inputs, _ = signature_details(it)
    feeds = _feeds(spec, list(inputs))
    got = _run(it, feeds)
    ref = _run(_interpreter(spec["fp32"]), feeds)
    details, axes = it.get_tensor_details(), channel_axes(it, spec.get("layout"))
    layers = []
    for op in it._get_ops_details():
        for d in (details[i] for i in op["outputs"] if i >= 0):
            if _kind(d) is None or d["name"] not in ref:
                continue
            metrics = tensor_metrics(ref[d["name"]], got[d["name"]], axes[d["index"]])
            quantization = _quantization(d, metrics)
            layers.append({"tensor": d["name"], "layer": layer_name(d["name"]), "op": op["op_name"], **metrics,
                           **own_error(ref[d["name"]], quantization, axes[d["index"]]), **quantization})
    return layers


if __name__ == "__main__":
    child_main(job)
