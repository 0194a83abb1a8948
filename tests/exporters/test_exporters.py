"""Each exporter on the tiny models, run back through its runtime adapter and compared with eager PyTorch."""
import numpy as np
import pytest
import torch

from deploycmp import exporters, runtimes
from deploycmp.core.rundir import describe_files
from deploycmp.core.specs import InputSpec, to_dicts
from deploycmp.export.export_worker import Source
from tests.tiny_models import ids_and_features, tiny_cnn

IMAGE = [InputSpec("x", "float32", ["batch", 3, 16, 16], layout="NCHW")]
TWO = [InputSpec("ids", "int64", ["batch", 16], value_range=[0, 1000]), InputSpec("feats", "float32", ["batch", 8])]


def _source(model, inputs, feed):
    return Source(model.eval(), "torch", inputs, {k: a[:1] for k, a in feed.items()}, {"batch": 1}, inputs[0].layout,
                  feed, outputs=["output"])


@pytest.fixture(scope="module")
def source():
    return _source(tiny_cnn(), IMAGE, {"x": np.random.default_rng(0).standard_normal((4, 3, 16, 16), dtype=np.float32)})


@pytest.fixture(scope="module")
def two_inputs():
    rng = np.random.default_rng(0)
    feed = {"ids": rng.integers(0, 1000, (4, 16)), "feats": rng.standard_normal((4, 8), dtype=np.float32)}
    return _source(ids_and_features(), TWO, feed)


def _artifact(tmp_path, fmt, details, inputs):
    return {"main_file": f"{fmt}/{details['main_file']}", "layout": details["layout"], "model": {"inputs": to_dicts(inputs)},
            **describe_files(tmp_path, tmp_path / fmt)}


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export", "onnx"])
def test_export_runs_on_its_runtimes_at_two_batch_sizes(fmt, source, tmp_path):
    out = tmp_path / fmt
    out.mkdir()
    details = exporters.get(fmt).export(source, out, "none")
    assert (out / details["main_file"]).stat().st_size > 0
    assert details["layout"] == "NCHW" and details["dynamic_dims"] == ["batch"]
    assert details["exporter"]["name"]
    artifact = _artifact(tmp_path, fmt, details, IMAGE)
    x = source.calibration["x"]
    with torch.no_grad():
        expected = source.model(torch.from_numpy(x)).numpy()
    names = _on_cpu(runtimes.for_format(fmt))
    assert names, f"no runtime runs {fmt}"
    for name in names:
        session = runtimes.get(name).load(artifact, tmp_path, threads=1)
        for batch in (1, 4):
            got = session.to_numpy(session.run(session.prepare({"x": x[:batch]})))
            assert list(got) == ["output"] and got["output"].shape == (batch, 10)
            np.testing.assert_allclose(got["output"], expected[:batch], rtol=1e-4, atol=1e-5)
        assert session.info()["threads"] == 1


def _on_cpu(names: list[str]) -> list[str]:
    """The runtimes among `names` that run on this machine's CPU (not onnxruntime-trt, a GPU-only provider)."""
    return [n for n in names if "cpu" in runtimes.devices(n)]


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export", "onnx"])
def test_two_typed_inputs_are_fed_by_name_in_any_order(fmt, two_inputs, tmp_path):
    """int64 ids and float features: exported with their own names and dtypes, fed by name whatever the feed's
    order, and a float where the artifact takes integers is refused rather than cast."""
    out = tmp_path / fmt
    out.mkdir()
    details = exporters.get(fmt).export(two_inputs, out, "none")
    artifact = _artifact(tmp_path, fmt, details, TWO)
    feed = two_inputs.calibration
    with torch.no_grad():
        expected = two_inputs.model(torch.from_numpy(feed["ids"]), torch.from_numpy(feed["feats"])).numpy()
    for name in _on_cpu(runtimes.for_format(fmt)):
        session = runtimes.get(name).load(artifact, tmp_path, threads=1)
        assert [(m.name, m.dtype) for m in session.input_metadata()] == [("ids", "int64"), ("feats", "float32")]
        reordered = {"feats": feed["feats"], "ids": feed["ids"]}
        got = session.to_numpy(session.run(session.prepare(reordered)))["output"]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert session.conversions == {}
        with pytest.raises(TypeError, match="does not cast between integers and floats"):
            session.prepare({"ids": feed["ids"].astype(np.float32), "feats": feed["feats"]})
        with pytest.raises(ValueError, match="input feats: the artifact takes shape"):
            session.prepare({"ids": feed["ids"], "feats": feed["feats"][:, :4]})


def test_onnx_records_the_exporter_opset_and_its_inputs(two_inputs, tmp_path):
    details = exporters.get("onnx").export(two_inputs, tmp_path, "none")
    assert details["exporter"]["dynamo"] is True
    assert details["exporter"]["opset"] >= 17
    assert details["inputs"] == [{"name": "ids", "dtype": "int64", "shape": ["batch", 16]},
                                 {"name": "feats", "dtype": "float32", "shape": ["batch", 8]}]


def test_onnx_static_int8_uses_the_hosts_recipe_and_leaves_integer_inputs_alone(two_inputs, tmp_path):
    import onnx

    from deploycmp.exporters.onnx_quantization import static_recipe

    details = exporters.get("onnx").export(two_inputs, tmp_path, "int8")
    q = details["exporter"]["quantization"]
    assert q["recipe"] in ("U8S8", "S8S8") and q["calibration_samples"] == 4
    graph = onnx.load(str(tmp_path / "model.onnx"))
    assert [i.type.tensor_type.elem_type for i in graph.graph.input] == [onnx.TensorProto.INT64, onnx.TensorProto.FLOAT]
    assert static_recipe(["avx2", "avx512_vnni"], "x86_64")["name"] == "U8S8"
    assert static_recipe(["avx2"], "x86_64")["reduce_range"] is True
    assert static_recipe(["avx2", "avx512_vnni"], "x86_64")["reduce_range"] is False
    assert static_recipe(["asimd", "asimddp"], "aarch64")["name"] == "S8S8"


def test_unsupported_modes_say_why():
    assert exporters.unsupported_reason("torchscript", "torch", "int8") == \
        "torchscript: no int8 export in this version (eager-mode quantization is deprecated)"
    assert exporters.unsupported_reason("onnx", "tensorflow", "none") == "onnx: no maintained converter from tensorflow"
    assert exporters.unsupported_reason("torch-export", "torch", "none") is None


def test_an_onnx2tf_failure_names_the_node_and_the_exception_not_its_generic_advice():
    """onnx2tf's last lines are advice it prints for every failure; the row must say where and why it stopped
    (this excerpt is its real output on a Hugging Face BERT, colours included)."""
    from deploycmp.exporters.savedmodel import onnx2tf_reason

    log = "\n".join([
        "\x1b[31mERROR:\x1b[0m The trace log is below.", "Traceback (most recent call last):",
        '  File "onnx2tf/ops/Expand.py", line 335, in make_node', "    expanded_tensor = input_tensor * ones",
        'TypeError: Exception encountered when calling layer "tf.math.multiply_606" (type TFOpLambda).', "",
        "Value passed to parameter 'x' has DataType bool not in list of allowed values: float32, int64",
        "Call arguments received by layer \"tf.math.multiply_606\" (type TFOpLambda):",
        "\x1b[31mERROR:\x1b[0m onnx_op_name: wa/inner/bert/Expand",
        "\x1b[31mERROR:\x1b[0m Also, for models that include NonMaxSuppression in the post-processing, try the -onwdt option."])
    assert onnx2tf_reason(log) == (
        'at ONNX node wa/inner/bert/Expand: TypeError: Exception encountered when calling layer "tf.math.multiply_606" '
        "(type TFOpLambda). Value passed to parameter 'x' has DataType bool not in list of allowed values: float32, int64")
    assert onnx2tf_reason("converting\nsomething odd happened") == "something odd happened"


def test_an_onnx2tf_failure_inside_tensorflow_user_code_gives_the_layers_own_error():
    """TensorFlow wraps a layer's error in "ValueError: in user code:"; the row must give the wrapped one and the
    ONNX node the layer was made from (excerpt of onnx2tf's real output on paddle2onnx's PP-OCRv4 recognizer)."""
    from deploycmp.exporters.savedmodel import onnx2tf_reason

    log = "\n".join([
        "Traceback (most recent call last):", '  File "tensorflow/python/framework/ops.py", line 1081, in _create_c_op',
        "    raise ValueError(e.message)", "ValueError: in user code:", "",
        '    File "onnx2tf/onnx2tf.py", line 2617, in None  *', "        lambda *inputs : model(inputs)",
        "    ValueError: Exception encountered when calling layer 'tf.linalg.matmul_1' (type TFOpLambda).", "",
        "    Dimensions must be equal, but are 15 and 1 for '{{node model_29/tf.linalg.matmul_1/MatMul}} = "
        "BatchMatMulV2[T=DT_FLOAT](model_29/tf.math.multiply_310/Mul, model_29/tf.compat.v1.transpose_7/transpose)' "
        "with input shapes: [0,8,1,15], [0,15,1,8].",
        "    Call arguments received by layer 'tf.linalg.matmul_1' (type TFOpLambda):",
        "      \u2022 a=tf.Tensor(shape=(0, 8, 1, 15), dtype=float32)", "      \u2022 name='p2o.MatMul.2'"])
    assert onnx2tf_reason(log) == (
        "at ONNX node p2o.MatMul.2: ValueError: Exception encountered when calling layer 'tf.linalg.matmul_1' (type "
        "TFOpLambda). Dimensions must be equal, but are 15 and 1 with input shapes: [0,8,1,15], [0,15,1,8].")


class _MeanOverSequence(torch.nn.Module):
    """Divides by the sequence length as a Python int: a trace bakes it in and still runs at other lengths."""

    def forward(self, x):
        return x.sum(1, keepdim=True) / int(x.shape[1]) + x[:, :1]


def test_a_trace_that_baked_in_a_size_is_specialised_to_it(source, tmp_path):
    inputs = [InputSpec("x", "float32", ["batch", "sequence"])]
    feed = {"x": np.random.default_rng(0).standard_normal((4, 8), dtype=np.float32)}
    mean = Source(_MeanOverSequence().eval(), "torch", inputs, {"x": feed["x"][:1]}, {"batch": 1, "sequence": 8}, None,
                  feed, outputs=["output"])
    details = exporters.get("torchscript").export(mean, tmp_path, "none")
    assert details["dynamic_dims"] == ["batch"]  # the sequence runs at 9 too, with 8 baked in: wrong outputs
    assert details["exporter"]["shape_specialisation"].startswith("traced at sequence=8")
    details = exporters.get("torchscript").export(source, tmp_path, "none")
    assert details["exporter"]["shape_specialisation"] == "none: at other sizes of batch the trace gives the eager model's outputs"


def test_an_exporter_that_finds_it_cannot_run_here_makes_an_unavailable_artifact(tmp_path):
    """deploycmp.core.errors.Unavailable raised inside an export worker (OpenVINO's bf16 on a CPU without it ...) is an
    honest 'unavailable' with its reason, not an export failure: the exit status stays 0."""
    import json

    from tests.conftest import deploycmp

    out = tmp_path / "run"
    proc = deploycmp("export", "--model", "tests.tiny_models:misbehaving", "--input-shape", "1,3,16,16", "--samples",
                     "4", "--formats", "torchscript,onnx", "--out", out, "--no-cache",  # the exporter must run
                     env={"DEPLOYCMP_TEST_MISBEHAVE": "unavailable-trace"})
    assert proc.returncode == 0, proc.stderr
    artifacts = {a["id"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert artifacts["torchscript-none"]["status"] == "unavailable"
    assert artifacts["torchscript-none"]["error"] == "tracing needs hardware this machine lacks (a test's pretence)"
    assert artifacts["onnx-none"]["status"] == "ok"
