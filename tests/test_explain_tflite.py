"""deploycmp explain on a TFLite int8 row (litert-torch file, ai-edge-quantizer int8, LiteRT): the outlier model's
conv2, whose per-tensor activation scale is stretched 1000x by one channel nothing reads, is named first (where the
error enters, not conv3, where it shows); deploycmp repair keeps that tensor float (ai-edge-quantizer leaves the ops
that make and read it unquantized) and passes. Real exports, real LiteRT; TensorFlow, litert_torch and LiteRT only
ever run in subprocesses."""
import json
import math

import pytest

from tests.conftest import deploycmp, explain_outlier, repair_steps

INT8 = "tflite-int8-litert-server-cpu-b1"


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    return explain_outlier(tmp_path_factory, "tflite", "litert")


def test_the_outlier_layer_is_named_first(explained):
    _, proc, result = explained
    assert result["compared_with"] == "tflite-none"
    layers = {x["tensor"]: x for x in result["layers"]}
    first = layers[result["top"][0]]
    assert first["layer"] == "conv2" and first["op"] == "CONV_2D"
    # the whole tensor looks fine, its read channels do not, with conv1's output float: the error enters there
    assert first["own_channel_sqnr_db"] < 3 and first["own_sqnr_db"] > 40 and first["channel_sqnr_db"] < 3
    assert "  1. conv2 " in proc.stdout


def test_activations_in_execution_order_with_their_quantization(explained):
    _, _, result = explained
    layers = result["layers"]
    # NCHW in, transposed to NHWC for the convolutions (ReLU fused), back to NCHW for the mean, then the head
    assert [x["op"] for x in layers] == ["TRANSPOSE", "CONV_2D", "CONV_2D", "CONV_2D", "TRANSPOSE", "MEAN",
                                         "FULLY_CONNECTED"]
    assert [x["layer"] for x in layers if x["op"] == "CONV_2D"] == ["conv1", "conv2", "conv3"]
    for x in layers:
        assert math.isfinite(x["sqnr_db"]) and 0 <= x["cosine"] <= 1 + 1e-9
        assert x["range_from"] == "scale and zero point" and x["scale"] > 0
        assert x["range"][0] <= 0 < x["range"][1]
    # the transposed conv3 output is the same values, channels first: the same worst channel and SQNR
    assert layers[4]["channel_sqnr_db"] == pytest.approx(layers[3]["channel_sqnr_db"])


def test_repair_keeps_the_outlier_tensor_float_and_passes(explained):
    out, _, result = explained
    tensor = result["top"][0]
    # the int8 row misses 44 dB; ai-edge-quantizer's other calibration does not reach it (a little better, so
    # kept), conv2 in float does
    steps, artifacts = repair_steps(out, INT8, "--min-sqnr", "44")
    assert [(s["change"], s["verdict"]) for s in steps] == [
        ("none: the int8 row as exported", "fail"), ("calibration global-min-max", "fail"),
        ("calibration global-min-max; float: conv2", "pass")]
    info = artifacts["tflite-int8-r2"]["exporter"]["quantization"]
    assert info["kept_float"] == [tensor]
    assert [op["op"] for op in info["float_ops"]] == ["CONV_2D", "CONV_2D"]  # conv2 makes it, conv3 takes it
    # explained in turn, the repaired row holds that tensor in float, and its worst channel is mended
    proc = deploycmp("explain", out, "--row", "tflite-int8-r2-litert-server-cpu-b1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = {x["tensor"]: x for x in json.loads(
        (out / "results" / "tflite-int8-r2-litert-server-cpu-b1.layers.json").read_text())["layers"]}
    before = {x["tensor"]: x for x in result["layers"]}
    assert after[tensor]["range_from"].startswith("fp32 values seen") and after[tensor]["scale"] is None
    assert after[tensor]["channel_sqnr_db"] > before[tensor]["channel_sqnr_db"] + 20
