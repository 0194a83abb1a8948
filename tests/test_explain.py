"""deploycmp explain and repair on ONNX Runtime int8 rows of a model made to fail int8 (tests.tiny_models:outlier:
conv2's first channel is 1000x the others and nothing reads it, so the per-tensor scale of conv2's output crushes the
channels conv3 reads): explain names conv2 first, where the error enters, not conv3, where it shows; repair keeps
conv2 in float and passes. Real exports, real ONNX Runtime, real files."""
import json
import math

import pytest

from tests.conftest import FAST, deploycmp, explain_outlier, repair_steps, rows_by_id

INT8 = "onnx-int8-onnxruntime-server-cpu-b1"


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    return explain_outlier(tmp_path_factory, "onnx", "onnxruntime")


@pytest.fixture(scope="module")
def run(explained):
    return explained[0]


def test_explain_names_the_outlier_layer_first(explained):
    _, proc, result = explained
    assert result["row"] == INT8 and result["compared_with"] == "onnx-none"
    layers = result["layers"]
    # the input, then every activation the int8 file quantizes, in execution order, named by the PyTorch module
    assert [(x["layer"], x["op"]) for x in layers] == [
        ("x", "input"), ("conv1", "Relu"), ("conv2", "Relu"), ("conv3", "Relu"), ("mean", "ReduceMean"),
        ("head", "Gemm")]
    for before, x in zip([None, *layers], layers):
        assert math.isfinite(x["sqnr_db"]) and 0 <= x["cosine"] <= 1 + 1e-9 and x["scale"] > 0
        assert x["drop_db"] == (None if before is None else pytest.approx(before["sqnr_db"] - x["sqnr_db"]))
        assert x["range_from"] == "scale and zero point"
        assert x["range"][1] >= 0.9 * x["fp32_seen"][1]  # calibration covered what the evaluation inputs reach
    x, conv1, conv2, conv3 = layers[:4]
    # where the error enters: conv2's output alone rounded to int8 (conv1's output float) loses its read channels
    # to the scale the outlier sets; the whole tensor, dominated by the outlier, still looks fine
    assert conv2["own_channel_sqnr_db"] < 3 and conv2["own_worst_channel"] != 0 and conv2["own_sqnr_db"] > 40
    assert conv2["own_channel_mean_sqnr_db"] < 15
    assert conv2["sqnr_db"] > 40 and conv2["channel_sqnr_db"] < 3
    # where it shows: conv3 reads only the crushed channels; its accumulated SQNR falls most, its own error is small
    assert max(layers[1:], key=lambda y: y["drop_db"]) is conv3 and conv3["drop_db"] > 40 and conv3["sqnr_db"] < 5
    assert conv3["own_channel_sqnr_db"] > 20 and conv3["cosine"] < 0.5
    assert min(conv1["own_sqnr_db"], conv1["own_channel_sqnr_db"], x["own_channel_sqnr_db"]) > 30
    assert result["top"][0] == conv2["tensor"]
    own = sorted(layers, key=lambda y: min(y["own_sqnr_db"], y["own_channel_mean_sqnr_db"]))
    assert result["top"] == [y["tensor"] for y in own]
    assert "1. conv2 " in proc.stdout and "where the error enters" in proc.stdout


def test_explain_names_are_stable_across_runs(run, explained):
    _, _, first = explained
    proc = deploycmp("explain", run, "--row", INT8)
    assert proc.returncode == 0, proc.stderr
    again = json.loads((run / "results" / f"{INT8}.layers.json").read_text())
    assert [(x["tensor"], x["layer"]) for x in again["layers"]] == [(x["tensor"], x["layer"]) for x in first["layers"]]
    assert again["top"] == first["top"]


def test_rows_explain_and_repair_cannot_take_get_one_line(run, explained):
    for args, words in ((("explain", run, "--row", "onnx-none-onnxruntime-server-cpu-b1"), "is none, not int8"),
                        (("explain", run, "--row", "no-such-row"), "has no measured row 'no-such-row'"),
                        (("repair", run, "--row", INT8), "give at least one threshold"),
                        (("repair", run, "--row", "no-such-row", "--min-sqnr", "40"), "has no measured row")):
        proc = deploycmp(*args)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_repair_tries_calibration_then_keeps_the_outlier_layer_in_float(run, explained):
    # the plain int8 row misses 40 dB; nothing passes in one step: exit 1, the candidate kept as a row
    proc = deploycmp("repair", run, "--row", INT8, "--min-sqnr", "40", "--max-steps", "1", *FAST)
    assert proc.returncode == 1 and "no candidate passes within --max-steps 1" in proc.stdout, proc.stdout + proc.stderr
    assert f"{INT8.replace('int8', 'int8-r1')}" in rows_by_id(run)

    steps, artifacts = repair_steps(run, INT8, "--min-sqnr", "40")
    result = json.loads((run / "results" / f"{INT8}.repair.json").read_text())
    assert [s["change"] for s in steps] == ["none: the int8 row as exported", "calibration Entropy",
                                            "calibration Percentile", "float: conv2"]
    assert [s["verdict"] for s in steps] == ["fail", "fail", "fail", "pass"]
    assert result["passed"] == "onnx-int8-r3-onnxruntime-server-cpu-b1" == steps[-1]["row"]
    assert steps[-1]["sqnr_db"] > 40 > steps[0]["sqnr_db"]
    # every candidate is a measured row of the run, with its artifact and what changed; the earlier try's rows went
    rows = rows_by_id(run)
    assert [i for i in rows if "-r" in i] == [s["row"] for s in steps[1:]]
    repaired = artifacts["onnx-int8-r3"]
    assert repaired["repair"] == {"of_artifact": "onnx-int8", "of_row": INT8, "step": 3, "change": "float: conv2",
                                  "recipe": {"keep_float": ["relu_1"]}}
    kept = repaired["exporter"]["quantization"]
    # conv2 (and the ReLU after it) and conv3, which reads its output, run in float; conv1 and head stay int8
    assert kept["nodes_excluded"] == ["node_relu_1", "node_conv2d_1", "node_Conv_3"]
    assert "QuantizeLinear" in {n for n in _ops(run / repaired["main_file"])}
    # the repaired artifact goes through validate like any other
    proc = deploycmp("validate", run, "--min-sqnr", "40")
    assert "PASS  onnx-int8-r3-onnxruntime-server-cpu-b1" in proc.stdout and f"FAIL  {INT8}" in proc.stdout
    proc = deploycmp("repair", run, "--row", "onnx-int8-r3-onnxruntime-server-cpu-b1", "--min-sqnr", "40")
    assert proc.returncode == 0 and "passes already: nothing to repair" in proc.stdout, proc.stdout + proc.stderr


def _ops(path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_the_html_report_draws_sqnr_through_the_depth(run, explained):
    proc = deploycmp("report", run, "--format", "html")
    assert proc.returncode == 0, proc.stderr
    page = (run / "report.html").read_text()
    assert "Where int8 error enters" in page
    for key in ("sqnr_db", "channel_sqnr_db", "own_channel_mean_sqnr_db"):
        assert f'id="layer-sqnr:{INT8}:{key}"' in page


def test_list_says_which_int8_paths_explain_and_repair_take():
    proc = deploycmp("list")
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("int8 paths explain and repair take:")[1].split("targets:")[0]
    assert [line.split()[:3] for line in section.strip().splitlines()] == [
        ["onnx", "on", "onnxruntime"], ["tflite", "on", "litert"], ["executorch", "on", "executorch"]]
    assert "MinMax, Entropy, Percentile" in section and "histogram, min-max" in section
