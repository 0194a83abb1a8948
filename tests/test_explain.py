"""deploycmp explain on the tiny CNN's ONNX int8 row: every quantized activation against the fp32 model, in graph
order, with where the SQNR drops; rows it cannot explain get one line and exit 2. Real exports, real ONNX Runtime."""
import json
import math

import pytest

from tests.conftest import FAST, TINY, deploycmp

INT8 = "onnx-int8-onnxruntime-server-cpu-b1"


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    proc = deploycmp("run", *TINY, "--formats", "onnx", "--quantize", "none,int8", "--runtimes", "onnxruntime",
                     "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = deploycmp("explain", out, "--row", INT8)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc, json.loads((out / "results" / f"{INT8}.layers.json").read_text())


def test_every_quantized_activation_against_fp32_in_graph_order(explained):
    _, proc, result = explained
    assert result["row"] == INT8 and result["compared_with"] == "onnx-none"
    layers = result["layers"]
    # the tiny CNN: conv+relu, conv+relu, mean+reshape, linear: each output that the int8 file quantizes
    assert [x["op"] for x in layers] == ["Relu", "Relu", "Reshape", "Gemm"]
    assert layers[-1]["tensor"] == "output"
    for before, x in zip([None, *layers], layers):
        assert math.isfinite(x["sqnr_db"]) and 10 < x["sqnr_db"] < 120 and 0.99 < x["cosine"] <= 1 + 1e-9
        assert x["drop_db"] == (None if before is None else pytest.approx(before["sqnr_db"] - x["sqnr_db"]))
        assert x["range_from"] == "scale and zero point" and x["scale"] > 0
        lo, hi = x["range"]  # what calibration covered, next to what the evaluation inputs reached in fp32
        assert lo <= max(x["fp32_seen"][0], 0) and hi > 0
    # the terminal names the tensors where the SQNR dropped most first
    ranked = sorted(layers[1:], key=lambda x: -x["drop_db"])
    assert result["top"] == [x["tensor"] for x in ranked]
    assert f"1. {ranked[0]['node']}" in proc.stdout and "where the error enters" in proc.stdout


def test_rows_it_cannot_explain_get_one_line(explained):
    out, _, _ = explained
    for row, words in (("onnx-none-onnxruntime-server-cpu-b1", "is none, not int8"),
                       ("no-such-row", "has no measured row 'no-such-row'")):
        proc = deploycmp("explain", out, "--row", row)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
