"""An ONNX file as the source model: `--model FILE.onnx`, with its weights inline or in external data, through the
formats that take it; the others unavailable with the reason; bad files refused with one line."""
import json

import numpy as np
import pytest

from tests.conftest import FAST, deploycmp, rows_by_id

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SMALL = ["--samples", "8", "--calibration-samples", "8", *FAST]


def _save(graph, path, external: bool = False):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="deploycmp-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=0)
    return path


def image_model(path, external: bool = False):
    """x[N,3,8,8] -> Conv -> Tanh -> mean over H, W -> Gemm: 10 logits that differ from sample to sample."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * scale, name)
               for name, shape, scale in (("conv_w", (8, 3, 3, 3), 0.5), ("conv_b", (8,), 0.1),
                                          ("fc_w", (10, 8), 4.0), ("fc_b", (10,), 0.1))]
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Tanh", ["c"], ["t"]), helper.make_node("ReduceMean", ["t"], ["f"], axes=[2, 3], keepdims=0),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny_image", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], weights)
    return _save(graph, path, external)


def ranker_model(path):
    """ids[N,sequence] int64 (an embedding of 50 tokens) and feats[N,4] float32 -> 5 logits."""
    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("emb", (50, 8)), ("proj", (4, 8)), ("head", (8, 5)))]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"]),
             helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["feats", "proj"], ["p"]), helper.make_node("Add", ["m", "p"], ["h"]),
             helper.make_node("MatMul", ["h", "head"], ["logits"])]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"]),
              helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", 4])]
    graph = helper.make_graph(nodes, "tiny_ranker", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], weights)
    return _save(graph, path)


def test_an_onnx_file_with_external_data_through_every_format_that_takes_it(tmp_path):
    (tmp_path / "model").mkdir()
    model = image_model(tmp_path / "model" / "tiny.onnx", external=True)
    assert (tmp_path / "model" / "tiny.onnx.data").is_file()
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", model, "--formats", "onnx,openvino,tflite,savedmodel,torchscript,executorch",
                     "--quantize", "none,int8", "--out", out, *SMALL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["model"]
    assert record["framework"] == "onnx" and record["weights"] == "file"
    assert record["onnx"]["external_data"] == ["tiny.onnx.data"] and record["onnx"]["opset"] == 17
    assert record["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 3, 8, 8], "value_range": None,
                                 "layout": "NCHW"}]
    assert record["outputs"][0]["name"] == "logits" and record["outputs"][0]["kind"] == "logits"
    source = next(a for a in manifest["artifacts"] if a["id"] == "eager-none")
    # the run directory keeps the file with its external data, as the graph names it
    assert sorted(f["path"].split("/")[-1] for f in source["files"]) == ["model.onnx", "tiny.onnx.data"]
    assert source["dynamic_dims"] == ["batch"]
    rows = rows_by_id(out)
    ok = {"eager-none-onnxruntime", "onnx-none-onnxruntime", "onnx-int8-onnxruntime", "openvino-none-openvino",
          "openvino-int8-openvino", "tflite-none-litert", "tflite-int8-litert", "savedmodel-none-tensorflow"}
    for path in ok:
        row = rows[f"{path}-server-cpu-b1"]
        assert row["status"] == "ok", (path, row["error"])
        assert "degenerate" not in row["drift"] and row["drift"]["cosine_min"] > 0, (path, row["drift"])
        if "-none-" in path:
            assert row["drift"]["cosine_min"] > 0.99, (path, row["drift"])
    assert rows["eager-none-onnxruntime-server-cpu-b1"]["drift"]["identical"] is True  # the reference itself
    assert rows["onnx-none-onnxruntime-server-cpu-b1"]["drift"]["max_abs"] < 1e-5
    assert rows["tflite-none-litert-server-cpu-b1"]["drift"]["max_abs"] < 1e-4
    assert rows["onnx-int8-onnxruntime-server-cpu-b1"]["drift"]["max_abs"] > 0  # quantized, calibrated
    layouts = {a["id"]: a["layout"] for a in manifest["artifacts"] if a["status"] == "ok"}
    assert layouts["tflite-none"] == layouts["savedmodel-none"] == "NHWC"  # onnx2tf moves channels last
    for fmt in ("torchscript", "executorch"):
        row = rows[f"{fmt}-none-{fmt}-server-cpu-b1"]
        assert row["status"] == "unavailable" and "no maintained converter" in row["error"]
    assert rows["savedmodel-int8-tensorflow-server-cpu-b1"]["status"] == "unavailable"


def test_two_named_inputs_of_different_dtypes(tmp_path):
    model, out = ranker_model(tmp_path / "ranker.onnx"), tmp_path / "run"
    proc = deploycmp("run", "--model", model, "--shape", "sequence=6", "--formats", "onnx,openvino",
                     "--quantize", "none,dynamic", "--out", out, *SMALL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["inputs"] == [  # the vocabulary read from the embedding table the ids index
        {"name": "ids", "dtype": "int64", "shape": ["batch", "sequence"], "value_range": [0, 50], "layout": None},
        {"name": "feats", "dtype": "float32", "shape": ["batch", 4], "value_range": None, "layout": None}]
    rows = rows_by_id(out)
    for path in ("eager-none-onnxruntime", "onnx-none-onnxruntime", "onnx-dynamic-onnxruntime", "openvino-none-openvino"):
        row = rows[f"{path}-server-cpu-b1-sequence6"]
        assert row["status"] == "ok" and row["drift"]["cosine_min"] > 0.9, (path, row["error"], row["drift"])
    assert rows["openvino-dynamic-openvino-server-cpu-b1-sequence6"]["status"] == "unavailable"


def _refused(proc, *needles):
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(err) == 1, proc.stderr
    for needle in needles:
        assert needle in err[0], err[0]


def test_bad_onnx_files_are_refused_with_one_line(tmp_path):
    def export(model, *more):
        return deploycmp("export", "--model", model, "--formats", "onnx", "--samples", "4", "--out", tmp_path / "r", *more)

    _refused(export(tmp_path / "missing.onnx"), "model file not found")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07 not a protobuf of a model")
    _refused(export(tmp_path / "junk.onnx"), "could not be read as an ONNX file", "not a model deploycmp can export from")
    folder = tmp_path / "m"
    folder.mkdir()
    model = image_model(folder / "tiny.onnx", external=True)
    _refused(export(model, "--weights", "random"), "--weights random does not apply to an ONNX file")
    data = folder / "tiny.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    _refused(export(model), "external data file tiny.onnx.data holds 100 bytes")
    data.unlink()
    _refused(export(model), "external data file tiny.onnx.data is missing")
    outside = tmp_path / "elsewhere.data"
    outside.write_bytes(b"\x00" * 4096)
    data.symlink_to(outside)
    _refused(export(model), "is a link to", "outside the model's folder")
    assert not (tmp_path / "r" / "manifest.json").exists()
