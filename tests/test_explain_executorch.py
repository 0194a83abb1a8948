"""deploycmp explain on an ExecuTorch int8 row (XNNPACKQuantizer PT2E, XNNPACK .pte): the outlier model's conv2,
whose per-tensor activation scale is stretched 1000x by one channel nothing reads, is named first (where the
error enters, not conv3, where it shows), from the PT2E program in PyTorch (the .pte exposes no intermediates);
deploycmp repair re-quantizes from the run's source model with conv2's activation kept float (the quantizer leaves
conv2, which makes it, and conv3, which reads it, unquantized) and passes. Real exports, real ExecuTorch runtime."""
import math

import pytest

from tests.conftest import explain_outlier, repair_steps

INT8 = "executorch-int8-executorch-server-cpu-b1"


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    return explain_outlier(tmp_path_factory, "executorch", "executorch")


def test_the_outlier_layer_is_named_first(explained):
    _, proc, result = explained
    assert result["compared_with"] == "executorch-none" and "before lowering to XNNPACK" in result["compared"]
    first = next(x for x in result["layers"] if x["tensor"] == result["top"][0])
    assert (first["layer"], first["op"]) == ("conv2", "relu")
    # the whole tensor looks fine, its read channels do not, with conv1's output float: the error enters there
    assert first["own_channel_sqnr_db"] < 3 and first["own_sqnr_db"] > 40 and first["channel_sqnr_db"] < 3
    assert "  1. conv2 " in proc.stdout


def test_activations_in_execution_order_with_their_quantization(explained):
    _, _, result = explained
    layers = result["layers"]
    # the input, each convolution's ReLU (a top-level torch.relu, named by the module before it), the mean, the head
    assert [(x["layer"], x["op"]) for x in layers] == [("x", "input"), ("conv1", "relu"), ("conv2", "relu"),
                                                       ("conv3", "relu"), ("mean", "mean"), ("head", "linear")]
    for x in layers:
        assert math.isfinite(x["sqnr_db"]) and 0 <= x["cosine"] <= 1 + 1e-9
        assert x["range_from"] == "scale and zero point" and x["scale"] > 0 and x["range"][0] <= 0 < x["range"][1]


def test_repair_keeps_the_outlier_tensor_float_and_passes(explained):
    out, _, result = explained
    tensor = result["top"][0]
    # the int8 row (37 dB) misses 40 dB; the min-max observer does not reach it, conv2's activation in float does
    steps, artifacts = repair_steps(out, INT8, "--min-sqnr", "40")
    assert [(s["change"], s["verdict"]) for s in steps] == [
        ("none: the int8 row as exported", "fail"), ("calibration min-max", "fail"), ("float: conv2", "pass")]
    info = artifacts["executorch-int8-r2"]["exporter"]["quantization"]
    assert info["kept_float"] == [tensor]
    assert [op["layer"] for op in info["float_ops"]] == ["conv2", None, "conv3"]  # conv2 + relu make it, conv3 reads
