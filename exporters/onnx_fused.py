"""ONNX with ONNX Runtime's transformer graph optimizer (onnxruntime.transformers.optimizer): an ONNX export (from
PyTorch by the TorchScript-based exporter, whose graphs its fusion patterns match), then
optimize_model fuses attention, LayerNorm, GELU and embedding subgraphs into ONNX Runtime's own operators
(com.microsoft Attention, SkipLayerNormalization, EmbedLayerNormalization, BiasGelu ...). fp16 through the
optimizer's convert_float_to_float16 (float32 inputs and outputs kept), dynamic int8 through
onnxruntime.quantization on the fused graph (Attention becomes QAttention), as ONNX Runtime's transformer
optimization and quantization guides do.

opt_level 1: ONNX Runtime's basic graph optimizations (constant folding, redundant node elimination), then the
Python fusions. Those are the same on every execution provider, so the saved graph runs on the CPU and the CUDA
provider alike; the optimizer's documentation warns that with opt_level 2 or 99 the saved graph "might contain
operators for GPU or CPU only" (use_gpu must then match the deployment), and 1 is its own default for BERT. Nothing
is lost: the onnxruntime runtime opens every session with ORT_ENABLE_ALL, so the extended and layout optimizations
still run at load time, for the provider actually used.

Hugging Face models are exported with their eager attention (the same computation): ONNX Runtime's attention
fusion matches that graph, not the one the SDPA attention exports to (its boolean mask and NaN guard), in which
only LayerNorm and GELU fuse. num_heads and hidden_size come from the model's config where it has one; 0 (the
optimizer detects them from the graph) otherwise. A model with nothing to fuse (a CNN) is still exported, with
ONNX Runtime's basic optimizations applied, and its exporter info says that nothing was fused.

Static int8 is not made: ONNX Runtime recommends dynamic quantization for transformers, and its static QDQ
quantizer leaves the fused Attention in fp32 (for a CNN, `onnx` int8 is the static path)."""
from __future__ import annotations

import tempfile
from pathlib import Path

FORMAT = "onnx-fused"
SOURCES = ("torch", "keras")
QUANTIZATIONS = ("none", "fp16", "dynamic")
REQUIRES = {"torch": ("torch", "onnx", "onnxscript", "onnxruntime", "sympy"),
            # onnx through tf2onnx; ONNX Runtime's optimizer imports torch for its basic-optimization step
            "keras": ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "sympy", "torch")}
UNSUPPORTED = {"int8": "onnx-fused: no static int8 (ONNX Runtime recommends dynamic int8 for transformers, and "
                       "static QDQ leaves the fused Attention in fp32); use dynamic, or onnx int8"}
INSTALL_HINT = {"sympy": "pip install sympy (ONNX Runtime's transformer optimizer and shape inference need it)"}

OPT_LEVEL = 1
# what a Hugging Face config's model_type runs as in the optimizer (ViT and Swin have their own fusion options)
MODEL_TYPES = {"vit": "vit", "deit": "vit", "swin": "swin"}
ORT_DOMAIN = "com.microsoft"


def _hf_config(source):
    """The Hugging Face config of a transformers source (hf_source wraps the model as .inner), or None."""
    inner = getattr(source.model, "inner", None)
    config = getattr(inner, "config", None)
    return config if hasattr(config, "model_type") and hasattr(config, "to_dict") else None


def _settings(source) -> dict:
    config = _hf_config(source)
    heads, hidden = (getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)) if config else (0, 0)
    return {"model_type": MODEL_TYPES.get(getattr(config, "model_type", None), "bert"),
            "num_heads": heads if isinstance(heads, int) else 0,  # Swin's is a list per stage: detected instead
            "hidden_size": hidden if isinstance(hidden, int) else 0, "from_config": config is not None}


def _convert(source, path: Path) -> dict:
    """The model as ONNX by torch.onnx's TorchScript-based exporter, whose graphs ONNX Runtime's fusion patterns are
    written for (on the dynamo exporter's graph of the same BERT, attention and the embeddings do not fuse), the
    dynamo exporter if it fails; a transformers model with its eager attention (see the module docstring)."""
    from deploycmp.exporters import onnx as plain

    if source.framework != "torch":
        return plain.keras_to_onnx(source, path)
    inner = getattr(source.model, "inner", None)
    before = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    if _hf_config(source) is None or before in (None, "eager") or not hasattr(inner, "set_attn_implementation"):
        return plain.torch_to_onnx(source, path, prefer="legacy")
    inner.set_attn_implementation("eager")
    try:
        info = plain.torch_to_onnx(source, path, prefer="legacy")
    finally:
        inner.set_attn_implementation(before)
    info["attention"] = f"eager (the model's {before} attention exports to a graph ONNX Runtime does not fuse)"
    return info


def _op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _fuse(source, plain_path: Path, path: Path) -> dict:
    """optimize_model on the plain export, saved to `path` (external data when the export had it); what fused."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model
    from onnxruntime.transformers.onnx_utils import has_external_data

    import onnxruntime

    settings = _settings(source)
    original = onnx.load(str(plain_path), load_external_data=False)
    external = has_external_data(original) or plain_path.stat().st_size >= 2**31
    before = _op_counts(original)
    del original
    optimizer = optimize_model(str(plain_path), model_type=settings["model_type"], num_heads=settings["num_heads"],
                               hidden_size=settings["hidden_size"], opt_level=OPT_LEVEL, use_gpu=False)
    stats = {op: n for op, n in optimizer.get_fused_operator_statistics().items() if n}
    after = _op_counts(optimizer.model)
    # ORT's statistics count an operator the export already had (LayerNormalization at opset 17) as fused too
    fused = {op: n - before.get(op, 0) for op, n in stats.items() if n > before.get(op, 0)}
    optimizer.save_model_to_file(str(path), use_external_data_format=external)
    info = {"tool": "onnxruntime.transformers.optimizer.optimize_model", "onnxruntime": onnxruntime.__version__,
            "model_type": settings["model_type"], "num_heads": settings["num_heads"],
            "hidden_size": settings["hidden_size"],
            "heads_and_size": "from the model's config" if settings["from_config"] else "detected from the graph",
            "opt_level": OPT_LEVEL, "use_gpu": False, "fused": fused, "operator_statistics": stats,
            "ort_operators": sorted({n.op_type for n in optimizer.model.graph.node if n.domain == ORT_DOMAIN}),
            "nodes": {"before": sum(before.values()), "after": sum(after.values())}, "external_data": external}
    if hasattr(optimizer, "is_fully_optimized") and fused:
        info["fully_fused"] = bool(optimizer.is_fully_optimized(optimizer.get_fused_operator_statistics()))
    info["summary"] = ("fused: " + ", ".join(f"{n} {op}" for op, n in fused.items()) if fused
                       else "nothing fused (ONNX Runtime's basic graph optimizations only)")
    return info


def _convert_and_fuse(source, path: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="deploycmp-onnx-") as tmp:
        plain_path = Path(tmp) / "model.onnx"
        info = _convert(source, plain_path)
        info["fusion"] = _fuse(source, plain_path, path)
    return info


def _quantize(source, fp32: Path, out: Path, mode: str) -> dict:
    import onnx

    from deploycmp.exporters.onnx_quantization import to_fp16

    if mode == "fp16":
        return to_fp16(fp32, out)
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from deploycmp.exporters.onnx_quantization import quantize

    # the quantizer's ONNX shape inference knows no com.microsoft operator: give it their types first
    with tempfile.TemporaryDirectory(prefix="deploycmp-fused-shapes-") as tmp:
        typed = Path(tmp) / "typed.onnx"
        onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(fp32)), auto_merge=True), str(typed))
        info = quantize(typed, out, mode, source.calibration_feeds())
    info["shape_inference"] = "onnxruntime symbolic shape inference (for the fused com.microsoft operators)"
    return info


def export(source, out_dir, quantization: str) -> dict:
    from deploycmp.exporters import convert_then_quantize
    from deploycmp.exporters.onnx import inspect
    from deploycmp.exporters.onnx_check import check

    path = out_dir / "model.onnx"
    info = convert_then_quantize(source, path, quantization, _convert_and_fuse,
                                 lambda fp32, out, mode: _quantize(source, fp32, out, mode))
    info["checked"] = check(path, f"the fused {quantization} ONNX file" if quantization != "none" else "the fused ONNX file")
    graph = inspect(path, source)
    info["opset"] = graph["opset"]
    return {"main_file": path.name, "layout": source.layout, "dynamic_dims": graph["dynamic_dims"],
            "inputs": graph["inputs"], "exporter": info}
