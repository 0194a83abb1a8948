"""onnx-fused: ONNX Runtime's transformer optimizer on a tiny BERT classifier (attention, LayerNorm, GELU and the
embeddings fused into com.microsoft operators; dynamic int8 on the fused graph), and a graph with nothing to fuse."""
import json
from collections import Counter
from types import SimpleNamespace

import pytest

from tests.conftest import FAST, deploycmp, rows_by_id

transformers = pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")

TINY_BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, num_labels=3)


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def test_tiny_bert_fuses_attention_and_layernorm_and_stays_exact(tmp_path):
    bert = tmp_path / "tiny-bert"
    transformers.BertConfig(**TINY_BERT, architectures=["BertForSequenceClassification"]).save_pretrained(bert)
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", bert, "--task", "text-classification", "--weights", "random",
                     "--formats", "onnx-fused", "--quantize", "none,dynamic", "--shape", "sequence=16",
                     "--samples", "8", "--calibration-samples", "8", "--no-cache", "--runtimes", "onnxruntime", "--out", out,
                     *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(out)
    fp32, dynamic = (rows[f"onnx-fused-{q}-onnxruntime-server-cpu-b1-sequence16"] for q in ("none", "dynamic"))
    assert fp32["status"] == dynamic["status"] == "ok", (fp32["error"], dynamic["error"])
    assert fp32["drift"]["max_abs"] < 1e-4 and dynamic["drift"]["max_abs"] < 1e-2  # fused fp32: the same computation

    artifacts = {a["id"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    fusion = artifacts["onnx-fused-none"]["exporter"]["fusion"]
    # 2 layers: one Attention each, two SkipLayerNormalization each (after attention, after the FFN), the embeddings'
    # LayerNorm, the FFN's bias + GELU
    assert fusion["fused"] == {"EmbedLayerNormalization": 1, "Attention": 2, "BiasGelu": 2, "SkipLayerNormalization": 4}
    assert fusion["opt_level"] == 1 and fusion["use_gpu"] is False and fusion["model_type"] == "bert"
    assert (fusion["num_heads"], fusion["hidden_size"]) == (2, 32)
    assert fusion["heads_and_size"] == "from the model's config"
    assert fusion["summary"].startswith("fused: ") and "2 Attention" in fusion["summary"]
    assert "eager" in artifacts["onnx-fused-none"]["exporter"]["attention"]
    graph = _ops(out / "artifacts" / "onnx-fused-none" / "model.onnx")
    assert {op: graph[op] for op in fusion["fused"]} == fusion["fused"]
    assert graph["Softmax"] == 0 and graph["Erf"] == 0  # nothing of attention or GELU left unfused

    # dynamic int8 on the fused graph: ONNX Runtime's quantized Attention and embeddings, the other MatMuls integer
    quantized = _ops(out / "artifacts" / "onnx-fused-dynamic" / "model.onnx")
    assert quantized["QAttention"] == 2 and quantized["QEmbedLayerNormalization"] == 1
    assert quantized["MatMulInteger"] > 0
    assert artifacts["onnx-fused-dynamic"]["exporter"]["quantization"]["tool"].endswith("quantize_dynamic")


def test_a_graph_with_nothing_to_fuse_is_still_exported_and_says_so(tmp_path):
    """A CNN (Conv, Relu, global pooling, Gemm): ORT's basic optimizations only, and an empty `fused`; its fp16
    keeps float32 inputs and outputs."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from deploycmp.exporters.onnx_fused import _fuse, _quantize

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (4, 3, 3, 3)), ("b", (4,)), ("fc", (4, 5)), ("fcb", (5,)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"])], "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], inits)
    plain, fused, half = tmp_path / "plain.onnx", tmp_path / "fused" / "model.onnx", tmp_path / "fp16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
    info = _fuse(SimpleNamespace(model=object()), plain, fused)
    assert info["fused"] == {} and info["ort_operators"] == [] and info["summary"].startswith("nothing fused")
    assert info["heads_and_size"] == "detected from the graph" and "fully_fused" not in info
    import onnxruntime

    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert _quantize(None, fused, half, "fp16")["keep_io_types"] is True
    y = [onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
         for p in (plain, fused, half)]
    np.testing.assert_allclose(y[1], y[0], rtol=1e-5, atol=1e-6)
    assert y[2].dtype == np.float32 and np.abs(y[2] - y[0]).max() < 1e-2 * np.abs(y[0]).max()
