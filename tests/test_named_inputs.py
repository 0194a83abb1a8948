"""Models that are not image classifiers, end to end through the real command line: two typed inputs, a token-id
encoder swept over sequence lengths, an attention mask, a two-input Keras model; and schema-1 run directories."""
import json
import shutil

import numpy as np
import pytest

from tests import tiny_keras
from tests.conftest import FAST, deploycmp, rows_by_id

FORMATS = "torchscript,torch-export,onnx,tflite,executorch"
MUST_BE_OK = ("torchscript-none-torchscript", "torch-export-none-torch-export", "onnx-none-onnxruntime",
              "tflite-none-litert")
pytestmark = pytest.mark.slow


def _check_rows(proc, rows: dict, suffixes):
    """The fp32 rows of the four main paths are ok with drift per output; any other row that is not ok says why, and
    the exit status is 1 only through such a row."""
    for path in MUST_BE_OK:
        for suffix in suffixes:
            row = rows[f"{path}-server-cpu-{suffix}"]
            assert row["status"] == "ok", (row["id"], row["error"])
            assert set(row["drift"]["outputs"]) == {"output"} and row["drift"]["output"] == "output"
            assert row["drift"]["sqnr_db"] is None or row["drift"]["sqnr_db"] > 60
    failed = [r for r in rows.values() if r["status"] not in ("ok", "unavailable")]
    assert all(r["error"] for r in rows.values() if r["status"] != "ok")
    assert proc.returncode == (1 if failed else 0), proc.stdout + proc.stderr


def test_two_typed_inputs_through_every_format(tmp_path):
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", "tests.tiny_models:ids_and_features", "--input", "ids:int64:1,16",
                     "--input", "feats:float32:1,8", "--value-range", "ids:0,1000", "--formats", FORMATS,
                     "--quantize", "none,int8", "--samples", "8", "--out", out, *FAST)
    rows = rows_by_id(out)
    _check_rows(proc, rows, ["b1"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"] == 2
    assert [(i["name"], i["dtype"], i["shape"], i["value_range"]) for i in manifest["model"]["inputs"]] == [
        ("ids", "int64", ["batch", 16], [0, 1000]), ("feats", "float32", ["batch", 8], None)]
    with np.load(out / "reference.npz") as ref:
        assert ref["input/ids"].dtype == np.int64 and 0 <= ref["input/ids"].min() and ref["input/ids"].max() < 1000
        assert ref["input/feats"].shape[1:] == (8,) and ref["output/output"].shape[1:] == (5,)
    with np.load(out / "calibration.npz") as cal:
        assert set(cal.files) == {"input/ids", "input/feats"}
    # the .tflite takes int32 ids under its own names: fed by position, converted, and both recorded in the row
    tflite = rows["tflite-none-litert-server-cpu-b1"]
    assert tflite["conversions"]["ids"] == "int64 -> int32 (the artifact takes int32)"
    assert "by position" in tflite["conversions"]["names"]
    assert rows["onnx-none-onnxruntime-server-cpu-b1"]["conversions"] == {}
    onnx_int8 = next(a for a in manifest["artifacts"] if a["id"] == "onnx-int8")
    assert onnx_int8["inputs"][0] == {"name": "ids", "dtype": "int64", "shape": ["batch", 16]}  # ids not quantized
    assert onnx_int8["exporter"]["quantization"]["recipe"] in ("U8S8", "S8S8")
    assert "inputs ids:int64[batch,16], feats:float32[batch,8]" in proc.stdout


def test_token_ids_swept_over_sequence_lengths(tmp_path):
    out = tmp_path / "run"
    # ExecuTorch, like TFLite, exports once per sequence length: TFLite stands for both here (each costs ~40 s)
    proc = deploycmp("run", "--model", "tests.tiny_models:tiny_encoder", "--input", "ids:int64:batch,sequence",
                     "--shape", "sequence=16,64", "--formats", "torchscript,torch-export,onnx,tflite", "--quantize",
                     "none,int8", "--samples", "4", "--calibration-samples", "4",
                     "--runtimes", "torch,torchscript,torch-export,onnxruntime,litert", "--out", out, *FAST)
    rows = rows_by_id(out)
    _check_rows(proc, rows, ["b1-sequence16", "b1-sequence64"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shapes"] == {"sequence": [16, 64], "batch": [1]}
    assert [(r["dims"], r["file"], r["calibration"]) for r in manifest["references"]] == [
        ({"sequence": 16}, "reference.npz", "calibration.npz"),
        ({"sequence": 64}, "reference.sequence64.npz", "calibration.sequence64.npz")]
    assert manifest["model"]["outputs"][0]["kind"] == "sequence"
    with np.load(out / manifest["references"][1]["file"]) as ref:
        assert ref["input/ids"].shape == (4, 64) and ref["output/output"].shape == (4, 64, 16)
    ids = {a["id"]: a for a in manifest["artifacts"]}
    # ONNX keeps batch and sequence free: one file; the .tflite fixes its shapes: one file per sequence length
    assert ids["onnx-none"]["dynamic_dims"] == ["batch", "sequence"] and "onnx-none-b1-sequence64" not in ids
    assert ids["tflite-none-b1-sequence64"]["export_dims"] == {"batch": 1, "sequence": 64}
    for seq in (16, 64):
        row = rows[f"tflite-none-litert-server-cpu-b1-sequence{seq}"]
        assert row["shape"] == {"batch": 1, "sequence": seq} and row["artifact"] in ("tflite-none", f"tflite-none-b1-sequence{seq}")
    assert "sequence=64" in proc.stdout


def test_padded_positions_leave_the_drift_out(tmp_path):
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", "tests.tiny_models:masked_encoder", "--input", "ids:int64:1,32",
                     "--input", "attention_mask:int64:1,32", "--formats", "onnx", "--samples", "8", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out / "reference.npz") as ref:
        mask = ref["input/attention_mask"]
    assert set(np.unique(mask)) == {0, 1} and (np.diff(mask, axis=1) <= 0).all() and (mask[:, 0] == 1).all()
    row = rows_by_id(out)["onnx-none-onnxruntime-server-cpu-b1"]
    assert row["drift"]["kind"] == "sequence" and row["drift"]["padding_excluded"] is True


def test_a_keras_model_with_two_named_inputs(tmp_path):
    model = tiny_keras.make_two_inputs(tmp_path / "two.keras")
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", model, "--value-range", "ids:0,1000", "--formats", "savedmodel,tflite,onnx",
                     "--samples", "8", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(i["name"], i["dtype"]) for i in manifest["model"]["inputs"]] == [("ids", "int32"), ("feats", "float32")]
    rows = rows_by_id(out)
    for row_id in ("eager-none-keras-server-cpu-b1", "savedmodel-none-tensorflow-server-cpu-b1",
                   "tflite-none-litert-server-cpu-b1", "onnx-none-onnxruntime-server-cpu-b1"):
        assert rows[row_id]["status"] == "ok" and rows[row_id]["drift"]["max_abs"] < 1e-4, rows[row_id]["error"]


def test_schema_1_run_directories_are_reported_not_measured(tiny_run, tmp_path):
    """A run directory made before schema 2 (one float input x): report and validate read it; bench says why not."""
    old = shutil.copytree(tiny_run, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["schema"] = 1
    for key in ("inputs", "outputs", "forward_params"):
        manifest["model"].pop(key)
    (old / "manifest.json").write_text(json.dumps(manifest))
    results = json.loads((old / "results.json").read_text())
    results["schema"] = 1
    for row in results["rows"]:
        row.pop("shape"), row.pop("conversions"), row["drift"].pop("outputs"), row["drift"].pop("degenerate", None)
    (old / "results.json").write_text(json.dumps(results))
    proc = deploycmp("report", old, "--format", "md,html")
    assert proc.returncode == 0 and "input 1x3x16x16 NCHW" in proc.stdout, proc.stderr
    assert deploycmp("validate", old, "--max-top1-drop", "1").returncode == 0
    proc = deploycmp("bench", old)
    assert proc.returncode == 2 and "schema 1" in proc.stderr and "export it anew" in proc.stderr
    assert deploycmp("report", tiny_run, "--baseline", old).returncode == 0


def test_random_weights_are_well_conditioned_and_the_raw_init_is_called_degenerate(tmp_path):
    """mobilenet_v2's plain init gives logits near 1e-9: --weights random-raw shows drift as n/a and validate fails
    it unless --allow-degenerate; --weights random (constant layers re-initialised, BatchNorm recalibrated) gives
    logits with several top classes and an int8 row whose drift is finite and worse than fp32's."""
    common = ["--model", "mobilenet_v2", "--input-shape", "1,3,64,64", "--formats", "onnx", "--quantize", "none,int8",
              "--samples", "16", "--calibration-samples", "16", "--runtimes", "onnxruntime", *FAST]  # its onnx rows only
    raw = tmp_path / "raw"
    proc = deploycmp("run", *common, "--weights", "random-raw", "--out", raw)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "drift shown as n/a" in proc.stderr + proc.stdout and "n/a" in proc.stdout
    row = rows_by_id(raw)["onnx-int8-onnxruntime-server-cpu-b1"]
    assert row["drift"]["degenerate"]["scope"] == "all"
    fail = deploycmp("validate", raw, "--min-sqnr", "10")
    assert fail.returncode == 1 and "drift n/a: reference outputs are" in fail.stdout
    assert deploycmp("validate", raw, "--min-sqnr", "10", "--allow-degenerate").returncode == 0

    good = tmp_path / "good"
    proc = deploycmp("run", *common, "--weights", "random", "--out", good)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((good / "manifest.json").read_text())
    assert manifest["model"]["weights"].startswith("random (") and "BatchNorm recalibrated on 16 samples" in \
        manifest["model"]["weights"]
    assert manifest["references"][0]["degenerate"] == {}
    with np.load(good / "reference.npz") as ref:
        assert len(set(np.argmax(ref["output/output"], 1))) > 2
    rows = rows_by_id(good)
    fp32, int8 = (rows[f"onnx-{q}-onnxruntime-server-cpu-b1"]["drift"] for q in ("none", "int8"))
    assert "degenerate" not in int8 and np.isfinite(int8["sqnr_db"]) and int8["sqnr_db"] < fp32["sqnr_db"]
