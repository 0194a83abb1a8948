"""0-d inputs (--input sr:int64:scalar) and constants (--const sr=16000): parsed, checked against the model's own
signature, held once per sample in the data, passed as a Python int where a TorchScript schema says int, and fed on
every call by the runtimes; one run through torchscript, onnx and openvino on a TorchScript file like silero-vad's."""
import json

import numpy as np
import pytest

from deploycmp.core import specs
from deploycmp.core.errors import UsageError
from deploycmp.core.specs import InputSpec
from deploycmp.sources import data
from tests.conftest import FAST, deploycmp, rows_by_id


def test_a_zero_d_input_is_declared_with_scalar_or_an_empty_shape():
    for text in ("sr:int64:scalar", "sr:int64:", " sr : int64 : scalar "):
        s = specs.parse_input(text)
        assert (s.name, s.dtype, s.shape, s.dims()) == ("sr", "int64", [], [])
        assert s.resolve({"batch": 4}) == ()
    for bad in ("sr:int64", "sr:int64: ", ":int64:", "sr::scalar"):
        with pytest.raises(UsageError, match="NAME:DTYPE:SHAPE"):
            specs.parse_input(bad)


def test_constants_are_parsed_as_numbers():
    assert specs.parse_constants(("sr=16000", "gain=0.5", "eps=1e-3", "on=true", "off= False ")) == {
        "sr": 16000, "gain": 0.5, "eps": 1e-3, "on": True, "off": False}
    assert specs.parse_constants(()) == {} and specs.parse_constants(None) == {}
    for bad, message in (("sr", "NAME=VALUE"), ("sr=", "NAME=VALUE"), ("=1", "NAME=VALUE"), ("s r=1", "NAME=VALUE"), ("sr!=1", "NAME=VALUE"),
                         ("sr=abc", "not a value"), ("sr=1,2", "not a value"), ("sr=inf", "finite")):
        with pytest.raises(UsageError, match=message):
            specs.parse_constants((bad,))
    with pytest.raises(UsageError, match="given twice"):
        specs.parse_constants(("sr=1", "sr=2"))


def test_a_constant_fits_its_dtype():
    given = [InputSpec("x", "float32", ["batch", 8]), InputSpec("sr", "int64", []), InputSpec("k", "uint8", [])]
    out = specs.with_constants(given, {"sr": 16000.0, "gain": 0.5})
    assert [(s.name, s.dtype, s.shape, s.value) for s in out] == [
        ("x", "float32", ["batch", 8], None), ("sr", "int64", [], 16000), ("k", "uint8", [], None),
        ("gain", None, [], 0.5)]  # a --const alone: its dtype and shape come from the model
    assert isinstance(out[1].value, int) and given[1].value is None  # copied, never changed in place
    for const, message in (({"sr": 0.5}, "give an integer"), ({"sr": True}, "give an integer"),
                           ({"k": 300}, r"does not fit input k's uint8 \[0, 255\]"), ({"x": True}, "give a number")):
        with pytest.raises(UsageError, match=message):
            specs.with_constants(given, const)
    with pytest.raises(UsageError, match="true or false"):
        specs.with_constants([InputSpec("on", "bool", [])], {"on": 1})
    # an ONNX graph's own 0-d int64 input takes the --const given alone
    own = [InputSpec("input", "float32", ["batch", 512]), InputSpec("sr", "int64", [])]
    settled = specs.over_own(own, specs.with_constants([], {"sr": 16000}), "vad.onnx")
    assert [(s.name, s.dtype, s.shape, s.value) for s in settled] == [
        ("input", "float32", ["batch", 512], None), ("sr", "int64", [], 16000)]
    with pytest.raises(UsageError, match="--const rate: vad.onnx takes input, sr"):
        specs.over_own(own, specs.with_constants([], {"rate": 16000}), "vad.onnx")


def test_constants_take_no_range_and_a_zero_d_input_one_value():
    sr = InputSpec("sr", "int64", [], value=16000)
    with pytest.raises(UsageError, match="sr is a constant .* never a range"):
        specs.apply_ranges([sr], {"sr": [0, 10]})
    specs.check_ranges([sr])  # an int constant needs no --value-range
    with pytest.raises(UsageError, match="0-d int64 .* --const sr=VALUE"):
        specs.check_ranges([InputSpec("sr", "int64", [])])
    drawn = [InputSpec("gain", "float32", []), InputSpec("k", "int64", [], value_range=[8000, 8001]), sr]
    said = specs.fix_scalars(drawn, seed=0)
    assert [s.value for s in drawn[1:]] == [8000, 16000] and isinstance(drawn[0].value, float)
    assert len(said) == 2 and "drawn once" in said[0] and "--const gain=VALUE" in said[0]
    assert specs.describe(drawn[1:]) == "k:int64[]=8000, sr:int64[]=16000"
    # written only where set: the inputs of a model without constants read as before
    assert specs.to_dicts([InputSpec("x", "float32", ["batch"])]) == [
        {"name": "x", "dtype": "float32", "shape": ["batch"], "value_range": None, "layout": None}]
    assert specs.inputs_from_dicts(specs.to_dicts([sr]))[0] == sr


def test_the_data_holds_a_constant_once_per_sample():
    inputs = [InputSpec("x", "float32", ["batch", 8]), InputSpec("sr", "int64", [], value=16000, passed_as="int"),
              InputSpec("mask", "int64", ["batch", 4], value=1)]
    feed, labels, info = data.load("random", inputs, {}, 10)
    assert list(feed) == ["x", "sr", "mask"] and feed["x"].shape == (10, 8)
    assert feed["sr"].dtype == np.int64 and (feed["sr"] == 16000).all() and feed["sr"].shape == (10,)
    assert (feed["mask"] == 1).all() and feed["mask"].shape == (10, 4)
    assert info["constants"] == {"sr": 16000, "mask": 1}
    cal, ev, _, _ = data.split(feed, labels, 4)
    assert cal["sr"].shape == (4,) and ev["sr"].shape == (6,)
    assert specs.per_call(ev, inputs)["sr"].shape == () and specs.per_call(ev, inputs)["mask"].shape == (6, 4)
    with pytest.raises(UsageError, match="every input is a constant"):
        data.load("random", inputs[1:], {}, 10)


@pytest.fixture(scope="module")
def scripted():
    import torch

    from tests.tiny_models import rate_scaled

    return torch.jit.script(rate_scaled())


def test_a_torchscript_file_is_described_from_its_schema(scripted):
    from deploycmp.sources.torch_feed import example
    from deploycmp.sources.torch_inputs import describe_inputs, forward_params

    params = forward_params(scripted)
    with pytest.raises(UsageError) as e:
        describe_inputs(scripted, params, [], "vad.jit", None, {})
    text = str(e.value)
    assert "forward(x: Tensor, sr: int, gain: Tensor)" in text and "--input x:DTYPE:SHAPE --const sr=INT" in text
    assert "224" not in text
    x = InputSpec("x", "float32", ["batch", 8])
    with pytest.raises(UsageError, match=r"also needs sr, gain \(--const sr=INT --input gain:DTYPE:SHAPE\)"):
        describe_inputs(scripted, params, [x], "vad.jit", None, {})
    with pytest.raises(UsageError, match="takes a Python int, not a tensor: give its value with --const sr=VALUE"):
        describe_inputs(scripted, params, [x, InputSpec("sr", "int64", ["batch"])], "vad.jit", None, {})
    with pytest.raises(UsageError, match="takes a Python int; declare it int64"):
        describe_inputs(scripted, params, [x, InputSpec("sr", "float32", [])], "vad.jit", None, {})
    warnings = []
    given = specs.with_constants([InputSpec("", "float32", ["batch", 8])], {"sr": 8000, "gain": 0.5})
    record = describe_inputs(scripted, params, given, "vad.jit", None, {}, warnings)
    assert record == [{"name": "x", "dtype": "float32", "shape": ["batch", 8], "value_range": None, "layout": None},
                      {"name": "sr", "dtype": "int64", "shape": [], "value_range": None, "layout": None, "value": 8000,
                       "passed_as": "int"},
                      {"name": "gain", "dtype": "float32", "shape": [], "value_range": None, "layout": None,
                       "value": 0.5}]
    assert warnings == []
    inputs = specs.inputs_from_dicts(record)
    feed, _, _ = data.load("random", inputs, {}, 3)
    args = example(feed, inputs)
    assert type(args[1]) is int and args[1] == 8000 and args[2].dim() == 0
    assert scripted(*args).shape == (3, 4)


def test_the_torch_runtimes_pass_the_constants(scripted):
    import torch

    from deploycmp.runtimes.torch_common import TorchSession

    inputs = [{"name": "x", "dtype": "float32", "shape": ["batch", 8]},
              {"name": "sr", "dtype": "int64", "shape": [], "value": 8000, "passed_as": "int"},
              {"name": "gain", "dtype": "float32", "shape": [], "value": 0.5}]
    session = TorchSession(scripted, "torchscript", inputs)
    assert [m.name for m in session.input_metadata()] == ["x"]  # constants come from the manifest, not the feed
    x = np.random.default_rng(0).standard_normal((2, 8), dtype=np.float32)
    got = session.infer({"x": x, "sr": np.full(2, 8000), "gain": np.full(2, 0.5, np.float32)})
    want = scripted(torch.from_numpy(x), 8000, torch.tensor(0.5))
    assert np.allclose(got["output"], want.detach().numpy())


def test_an_onnx_file_with_a_zero_d_input(scripted, tmp_path):
    """The legacy exporter keeps a ScriptModule's int argument as a 0-d int64 graph input (silero-vad's .onnx has one
    too): a --const alone takes the graph's dtype, and the reference feeds it 0-d."""
    import torch

    from deploycmp.sources import onnx as onnx_source

    path = tmp_path / "rate.onnx"
    x = torch.randn(2, 8)
    torch.onnx.export(scripted, (x, 16000, torch.tensor(0.5)), str(path), dynamo=False,
                      input_names=["x", "sr", "gain"], dynamic_axes={"x": {0: "batch"}}, opset_version=17)
    model, record, warnings = onnx_source.build(str(path), "auto", specs.with_constants([], {"sr": 8000, "gain": 2.0}))
    assert [(i["name"], i["dtype"], i["shape"], i.get("value")) for i in record["inputs"]] == [
        ("x", "float32", ["batch", 8], None), ("sr", "int64", [], 8000), ("gain", "float32", [], 2.0)]
    inputs = specs.inputs_from_dicts(record["inputs"])
    feed, _, _ = data.load("random", inputs, {}, 3)
    assert onnx_source.example(feed, inputs)["sr"].shape == ()
    got = onnx_source.reference_outputs(model, feed, inputs)
    want = scripted(torch.from_numpy(feed["x"]), 8000, torch.tensor(2.0)).detach().numpy()
    assert np.allclose(next(iter(got.values())), want, atol=1e-6)
    with pytest.raises(UsageError, match="0-d int64 .* --const sr=VALUE"):
        onnx_source.build(str(path), "auto", specs.with_constants([], {"gain": 2.0}))


@pytest.mark.slow
def test_a_torchscript_file_with_an_int_argument_through_torchscript_onnx_and_openvino(scripted, tmp_path):
    """As silero-vad's forward(self, x, sr: int): --const sr for the int, a 0-d tensor declared with an empty shape
    and its --const; at batch 2 every runtime takes one value for the batch. sr=8000 takes the model's other branch,
    so the rows agree with the reference only where 8000 was fed."""
    import torch

    from deploycmp.core.schema import check_manifest

    model = tmp_path / "rate.pt"
    scripted.save(str(model))
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", model, "--input", "x:float32:1,8", "--input", "gain:float32:", "--const",
                     "sr=8000", "--const", "gain=0.5", "--formats", "torchscript,onnx,openvino", "--batch", "2",
                     "--samples", "6", "--calibration-samples", "2", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(i["name"], i["dtype"], i["shape"], i.get("value"), i.get("passed_as"))
            for i in manifest["model"]["inputs"]] == [
        ("x", "float32", ["batch", 8], None, None), ("sr", "int64", [], 8000, "int"), ("gain", "float32", [], 0.5, None)]
    assert manifest["data"]["constants"] == {"sr": 8000, "gain": 0.5}
    check_manifest(manifest, "manifest.json")
    with np.load(out / "reference.npz") as ref:
        assert (ref["input/sr"] == 8000).all() and ref["input/sr"].shape == (6,)
        want = scripted(torch.from_numpy(ref["input/x"]), 8000, torch.tensor(0.5)).detach().numpy()
        assert np.allclose(ref["output/output"], want, atol=1e-6)
    onnx = next(a for a in manifest["artifacts"] if a["id"] == "onnx-none")
    assert onnx["exporter"]["dynamo"] is False and "ScriptModule" in onnx["exporter"]["dynamo_skipped"]
    assert {"name": "sr", "dtype": "int64", "shape": []} in onnx["inputs"] and "baked_in" not in onnx["exporter"]
    rows = rows_by_id(out)
    for row_id, most in (("torchscript-none-torchscript", 1e-5), ("onnx-none-onnxruntime", 1e-5),
                         ("openvino-none-openvino", 0.05)):  # OpenVINO computes in bf16 on CPUs that have it
        row = rows[f"{row_id}-server-cpu-b2"]
        assert row["status"] == "ok", (row["id"], row["error"])
        assert row["drift"]["max_abs"] < most, row["drift"]

    # the manifest's constants are checked as what every runtime is fed
    for key, bad, message in (("value", "16000", "must be a number"), ("value", 2**70, "does not fit an int64"),
                              ("passed_as", "str", "is none of int, float, bool")):
        broken = json.loads(json.dumps(manifest))
        broken["model"]["inputs"][1][key] = bad
        with pytest.raises(UsageError, match=rf"model.inputs\[1\].{key} .*{message}"):
            check_manifest(broken, "manifest.json")


def test_an_int_argument_of_an_nn_module_is_baked_into_the_onnx_graph_and_said(tmp_path):
    """The exporters specialise an nn.Module's graph to a Python number: no graph input for it, named in baked_in (the
    graph's inputs keep their own names; the runtimes leave the constant out)."""
    import onnx

    from deploycmp.export.export_worker import Source
    from deploycmp.exporters.onnx import torch_to_onnx
    from deploycmp.sources.torch_inputs import describe_inputs, forward_params
    from tests.tiny_models import rate_scaled

    model = rate_scaled()
    given = specs.with_constants([InputSpec("x", "float32", ["batch", 8])], {"sr": 8000, "gain": 0.5})
    inputs = specs.inputs_from_dicts(describe_inputs(model, forward_params(model), given, "rate", None, {}))
    assert [s.passed_as for s in inputs] == [None, "int", None]  # from forward's annotation sr: int
    feed, _, _ = data.load("random", inputs, {}, 2)
    source = Source(model, "torch", inputs, feed, {"batch": 2}, None, feed, outputs=["output"])
    info = torch_to_onnx(source, tmp_path / "model.onnx")
    assert info["dynamo"] is True and info["baked_in"] == {"sr": 8000}
    assert [i.name for i in onnx.load(str(tmp_path / "model.onnx")).graph.input] == ["x", "gain"]
