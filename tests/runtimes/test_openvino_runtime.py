"""The OpenVINO runtime feeds the way OpenVINO documents for the lowest latency: an IR with free dimensions compiled
static for the row's shape, input tensors sharing the feed's memory set once per feed, the timed call start_async +
wait; every feed still gives its own outputs (drift), 0-d int64 inputs included. Tiny IRs built in code."""
import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from deploycmp.runtimes import openvino as rt  # noqa: E402


def _ir(tmp_path, free_batch=True):
    """y = x * 2 + sr, with x [batch, 4] float32 and sr a 0-d int64 (like silero-vad's sample rate)."""
    import openvino.opset13 as ops

    x = ops.parameter([-1 if free_batch else 2, 4], np.float32, name="x")
    sr = ops.parameter([], np.int64, name="sr")
    y = ops.add(ops.multiply(x, ops.constant(np.float32(2))), ops.convert(sr, "f32"))
    y.output(0).get_tensor().set_names({"y"})
    ov.save_model(ov.Model([y], [x, sr]), str(tmp_path / "m.xml"), compress_to_fp16=False)
    return {"main_file": "m.xml", "quantization": "none", "exporter": {}}


def test_a_free_batch_is_compiled_static_for_the_feed_and_each_feed_gives_its_own_outputs(tmp_path):
    session = rt.load(_ir(tmp_path), tmp_path, 1)
    assert session.compiled is None  # compiled at the first feed, for its shapes
    assert [(m.name, m.dtype, m.shape) for m in session.input_metadata()] == [
        ("x", "float32", [None, 4]), ("sr", "int64", [])]
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = -a
    first = session.prepare({"x": a, "sr": np.array(16000)})
    second = session.prepare({"x": b, "sr": np.array(8000)})
    assert session.to_numpy(session.run(first))["y"].tolist() == (a * 2 + 16000).tolist()
    assert session.to_numpy(session.run(second))["y"].tolist() == (b * 2 + 8000).tolist()
    out = session.run(first)  # back to the first feed: its tensors are set again before the call
    assert np.array_equal(session.to_numpy(out)["y"], a * 2 + 16000)
    request = first.request
    assert np.shares_memory(request.get_tensor("x").data, a)  # the feed's own memory, no copy
    assert request.get_tensor("sr").data.shape == ()
    info = session.info()
    assert info["compiled_for"] == {"x": [2, 4], "sr": []} and info["compiled_at"].startswith("the first feed")
    assert info["properties"]["INFERENCE_NUM_THREADS"] == 1 and "start_async" in info["timed_call"]
    # another shape gets its own static compile, the first stays as it was
    c = np.ones((3, 4), np.float32)
    assert session.infer({"x": c, "sr": np.array(1)})["y"].tolist() == (c * 2 + 1).tolist()
    assert np.array_equal(session.to_numpy(session.run(first))["y"], a * 2 + 16000)


def test_the_timed_call_sets_no_tensor(tmp_path, monkeypatch):
    session = rt.load(_ir(tmp_path, free_batch=False), tmp_path, 1)
    assert session.compiled is not None and session.info()["compiled_at"] == "load"  # static IR: compiled at load
    prepared = session.prepare({"x": np.zeros((2, 4), np.float32), "sr": np.array(3)})
    session.run(prepared)
    calls = []
    monkeypatch.setattr(type(prepared.request), "set_tensor", lambda *a: calls.append(a))
    for _ in range(3):
        session.run(prepared)
    assert calls == []


def test_read_only_and_strided_feeds_are_copied_once_at_prepare(tmp_path):
    session = rt.load(_ir(tmp_path), tmp_path, 1)
    x = np.arange(16, dtype=np.float32).reshape(2, 8)[:, ::2]  # not contiguous
    sr = np.array(5)
    sr.setflags(write=False)
    got = session.infer({"x": x, "sr": sr})["y"]
    assert np.array_equal(got, x * 2 + 5)


def test_the_row_says_in_words_when_openvino_chose_bf16():
    note = rt.precision_note("bf16", "f32", "none", asked=False)
    assert "OpenVINO chose bf16, not fp32" in note and "computes this fp32 model in bf16" in note
    assert "--quantize none compiled with INFERENCE_PRECISION_HINT=f32" in note and "bench --tune" in note
    assert "float layers of this int8 model" in rt.precision_note("bf16", "f32", "int8", asked=False)
    assert "although f32 was asked for" in rt.precision_note("bf16", "f32", "none", asked=True)
