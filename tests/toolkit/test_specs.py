import numpy as np
import pytest

from deploycmp.core import specs
from deploycmp.core.errors import UsageError
from deploycmp.core.specs import InputSpec


def test_parse_input_fixed_batch_becomes_named():
    s = specs.parse_input("ids:int64:1,16")
    assert s.name == "ids" and s.dtype == "int64" and s.shape == ["batch", 16]
    assert s.value_range is None and s.layout is None
    assert s.dims() == ["batch"] and s.resolve({"batch": 8}) == (8, 16)
    assert specs.parse_input("ids:int64:batch,max_len").shape == ["batch", "max_len"]  # commas only: x may be in a name
    assert specs.parse_input(" pixel : float16 : 1,3,224,224 ").shape == ["batch", 3, 224, 224]


def test_parse_input_keeps_named_dimensions():
    s = specs.parse_input("ids:int64:batch,sequence")
    assert s.shape == ["batch", "sequence"] and s.dims() == ["batch", "sequence"]
    assert s.resolve({"batch": 2, "sequence": 64}) == (2, 64)
    with pytest.raises(UsageError, match="--shape sequence=N"):
        s.resolve({"batch": 2})
    assert specs.parse_input("mask:bool:batch,sequence,1").shape == ["batch", "sequence", 1]


def test_parse_input_takes_names_as_graphs_spell_them():
    """torch.onnx names inputs input.1, tf2onnx serving/x, others input-ids: a name is what the file says."""
    for name in ("input.1", "serving/x", "input-ids", "0"):
        assert specs.parse_input(f"{name}:float32:1,8").name == name
    assert specs.parse_constants(["input.2=16000"]) == {"input.2": 16000}


@pytest.mark.parametrize("text, message", [
    ("ids:int64", "NAME:DTYPE:SHAPE"),
    ("ids", "NAME:DTYPE:SHAPE"),
    ("ids:int64:1,16:extra", "NAME:DTYPE:SHAPE"),
    (":int64:1,16", "NAME:DTYPE:SHAPE"),
    ("ids::1,16", "NAME:DTYPE:SHAPE"),
    ("ids:int64: ", "NAME:DTYPE:SHAPE"),
    ("ids:int128:1,16", "dtype 'int128' is not one of"),
    ("ids:float64:1,16", "dtype 'float64'"),
    ("ids!:int64:1,16", "not a valid input name"),
    ("input ids:int64:1,16", "not a valid input name"),
    ("state:float32:2,batch,128", "the batch is axis 0"),
    ("ids:int64:1,0", "dimension 0 must be positive"),
    ("ids:int64:1,-4", "neither a positive integer nor a name"),
    ("ids:int64:1,4.5", "neither a positive integer nor a name"),
    ("ids:int64:1,,16", "neither a positive integer nor a name"),
])
def test_parse_input_errors(text, message):
    with pytest.raises(UsageError, match=message):
        specs.parse_input(text)


def test_parse_sweeps():
    assert specs.parse_sweeps(("sequence=16,64",), "1,8") == {"sequence": [16, 64], "batch": [1, 8]}
    assert specs.parse_sweeps(("batch=2,4", "sequence=32"), None) == {"batch": [2, 4], "sequence": [32]}
    assert specs.parse_sweeps((), "1, 8, 8") == {"batch": [1, 8]}  # blanks and repeats dropped
    assert specs.parse_sweeps(None) == {}
    with pytest.raises(UsageError, match="give batch sizes once"):
        specs.parse_sweeps(("batch=1,8",), "1,8")
    for bad in ("sequence", "sequence:16", "=16", "2x=16", "sequence=16,abc", "sequence="):
        with pytest.raises(UsageError, match="--shape"):
            specs.parse_sweeps((bad,))
    with pytest.raises(UsageError, match="positive"):
        specs.parse_sweeps(("sequence=0,16",))
    with pytest.raises(UsageError, match="positive"):
        specs.parse_sweeps(("sequence=-16",))
    with pytest.raises(UsageError, match="--batch"):
        specs.parse_sweeps((), "1,x")
    with pytest.raises(UsageError, match="--batch"):
        specs.parse_sweeps((), "0")
    with pytest.raises(UsageError, match="empty"):
        specs.parse_sweeps((), ",")


def test_parse_value_ranges():
    assert specs.parse_value_ranges(("ids:0,1000", "type_ids: 0, 2")) == {"ids": [0, 1000], "type_ids": [0, 2]}
    assert specs.parse_value_ranges(()) == {} and specs.parse_value_ranges(None) == {}
    for bad in ("ids", "ids:0", "ids:0,1,2", "ids:a,b", "ids0,10"):
        with pytest.raises(UsageError, match="NAME:LOW,HIGH"):
            specs.parse_value_ranges((bad,))
    for bad in ("ids:10,10", "ids:10,5"):
        with pytest.raises(UsageError, match="LOW < HIGH"):
            specs.parse_value_ranges((bad,))


def test_apply_ranges():
    inputs = [InputSpec("ids", "int64", ["batch", "sequence"]), InputSpec("attention_mask", "int64", ["batch", "sequence"])]
    specs.apply_ranges(inputs, {"ids": [0, 100]})
    assert inputs[0].value_range == [0, 100] and inputs[1].value_range is None
    with pytest.raises(UsageError, match="no input 'tokens'"):
        specs.apply_ranges(inputs, {"tokens": [0, 5]})


TEXT = [InputSpec("ids", "int64", ["batch", "sequence"], value_range=[0, 100]),
        InputSpec("attention_mask", "int64", ["batch", "sequence"]),
        InputSpec("pixels", "float32", ["batch", 3, "height", "width"])]


def test_points_are_every_combination_of_used_dimensions():
    sweeps = {"batch": [1, 8], "sequence": [16, 64], "height": [32], "width": [32, 48], "unused": [5]}
    got = specs.points(sweeps, TEXT)
    assert got == [
        {"sequence": 16, "height": 32, "width": 32},
        {"sequence": 16, "height": 32, "width": 48},
        {"sequence": 64, "height": 32, "width": 32},
        {"sequence": 64, "height": 32, "width": 48},
    ]  # the first value of each first; batch and unused dimensions are not points
    assert specs.points({"batch": [1]}, [InputSpec("x", "float32", ["batch", 3, 8, 8])]) == [{}]
    with pytest.raises(UsageError, match="'sequence'.*--shape sequence="):
        specs.points({"batch": [1]}, TEXT[:1])


def test_point_key_and_id():
    assert specs.point_key({}) == "" and specs.point_key({"batch": 8}) == ""
    assert specs.point_key({"sequence": 64}) == "sequence64"
    assert specs.point_key({"batch": 1, "sequence": 64, "width": 32}) == "sequence64-width32"
    assert specs.point_id({"batch": 8}) == "b8"
    assert specs.point_id({"batch": 1, "sequence": 64}) == "b1-sequence64"


def test_served_by():
    artifact = {"export_dims": {"batch": 1, "sequence": 16}, "dynamic_dims": ["batch"]}
    assert specs.served_by(artifact, {"batch": 1, "sequence": 16})
    assert specs.served_by(artifact, {"batch": 8, "sequence": 16})
    assert not specs.served_by(artifact, {"batch": 8, "sequence": 64})
    assert not specs.served_by(artifact, {"batch": 1, "sequence": 64})
    both = {"export_dims": {"batch": 1, "sequence": 16}, "dynamic_dims": ["batch", "sequence"]}
    assert specs.served_by(both, {"batch": 8, "sequence": 64})
    static = {"export_dims": {"batch": 1, "sequence": 16}, "dynamic_dims": []}
    assert not specs.served_by(static, {"batch": 8, "sequence": 16})
    # older records: export_batch / dynamic_batch
    assert specs.served_by({"export_batch": 1, "dynamic_batch": True}, {"batch": 8})
    assert not specs.served_by({"export_batch": 1, "dynamic_batch": False}, {"batch": 8})
    assert specs.served_by({"export_batch": 8}, {"batch": 8})


def test_check_ranges():
    specs.check_ranges([InputSpec("x", "float32", ["batch", 3, 8, 8])])
    specs.check_ranges([InputSpec("attention_mask", "int64", ["batch", "sequence"])])  # a mask needs no range
    specs.check_ranges([InputSpec("ids", "int64", ["batch", "sequence"], value_range=[0, 10])])
    specs.check_ranges([InputSpec("flags", "bool", ["batch", 4])])
    for dtype in ("int64", "int32", "uint8"):
        with pytest.raises(UsageError, match="--value-range ids:LOW,HIGH"):
            specs.check_ranges([InputSpec("ids", dtype, ["batch", "sequence"])])
    with pytest.raises(UsageError, match="token_type_ids"):
        specs.check_ranges(TEXT[:2] + [InputSpec("token_type_ids", "int64", ["batch", "sequence"])])


def test_is_mask():
    assert InputSpec("attention_mask", "int64", ["batch", 8]).is_mask()
    assert InputSpec("Mask", "bool", ["batch", 8]).is_mask()
    assert not InputSpec("mask_scale", "float32", ["batch", 8]).is_mask()
    assert not InputSpec("ids", "int64", ["batch", 8]).is_mask()


def test_output_kind():
    inputs = TEXT[:2]
    dims = {"sequence": 16}
    assert specs.output_kind((1, 10), inputs, dims) == "logits"
    assert specs.output_kind((1, 16, 768), inputs, dims) == "sequence"
    assert specs.output_kind((1, 64, 768), inputs, {"sequence": 64}) == "sequence"
    assert specs.output_kind((1, 32, 768), inputs, dims) == "other"  # axis 1 is not the sequence
    assert specs.output_kind((1,), inputs, dims) == "other"
    assert specs.output_kind((1, 1), inputs, dims) == "other"  # one score: not logits
    assert specs.output_kind((1, 3, 8, 8), [InputSpec("x", "float32", ["batch", 3, 8, 8])], {}) == "other"


def test_dicts_round_trip_and_numpy_dtype():
    out = [specs.OutputSpec("logits", kind="logits")]
    assert specs.inputs_from_dicts(specs.to_dicts(TEXT)) == TEXT
    assert [specs.OutputSpec(**o) for o in specs.to_dicts(out)] == out
    assert specs.numpy_dtype("bfloat16") == np.float32 and specs.numpy_dtype("int64") == np.int64
    assert specs.describe(TEXT[:2]) == "ids:int64[batch,sequence], attention_mask:int64[batch,sequence]"
