"""Every exporter x quantization mode from a PyTorch and a Keras source, on tiny models trained on real digits,
measured on their runtimes through the real command line (TensorFlow and litert-torch stay out of this process)."""
import json

import numpy as np
import pytest

from tests import tiny_keras
from tests.conftest import FAST, deploycmp, rows_by_id
from tests.tiny_models import digits, train_tiny_cnn

MODES = "none,fp16,dynamic,int8"
MIN_SQNR_DB = {"none": 80, "fp16": 40, "dynamic": 20, "int8": 5}
MIN_TOP1 = {"none": 1.0, "fp16": 0.98, "dynamic": 0.9, "int8": 0.7}
EXPECTED_OK = {("tflite", "none"), ("tflite", "fp16"), ("tflite", "dynamic"), ("tflite", "int8"),
               ("onnx", "none"), ("onnx", "fp16"), ("onnx", "dynamic"), ("onnx", "int8"), ("savedmodel", "none")}


def _digits_npz(path, layout):
    x, y = digits(layout)
    idx = np.random.default_rng(0).permutation(len(x))[:96]
    np.savez(path, x=x[idx], y=y[idx])
    return path


def _run(out, *model_args, data):
    # every runtime of these formats but torch-compile (its rows are aoti's test's): bench --runtimes
    proc = deploycmp("run", *model_args, "--formats", "tflite,onnx,savedmodel,torchscript,executorch", "--quantize", MODES,
                     "--data", data, "--samples", "64", "--calibration-samples", "32", "--out", out, *FAST,
                     "--runtimes", "torch,keras,torchscript,onnxruntime,tensorflow,litert,executorch")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = rows_by_id(out)
    assert not any(r["runtime"] == "torch-compile" for r in rows.values())
    return rows, json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torch-q")
    assert train_tiny_cnn(tmp / "w.pt") > 0.8
    return _run(tmp / "run", "--model", "tests.tiny_models:tiny_cnn", "--weights", tmp / "w.pt", "--input-shape",
                "1,3,8,8", data=_digits_npz(tmp / "d.npz", "NCHW"))


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keras-q")
    model = tiny_keras.make(tmp / "tiny.keras", trained=True)
    return _run(tmp / "run", "--model", model, data=_digits_npz(tmp / "d.npz", "NHWC"))


def _check(rows, manifest, eager_runtime, also_ok=()):
    """Every expected path ok within its mode's drift bounds (also_ok: source-specific paths, same bounds)."""
    by_path = {(r["format"], r["quantization"]): r for r in rows.values()}
    ok = {k for k, r in by_path.items() if r["status"] == "ok"}
    assert ok == EXPECTED_OK | {("eager", "none"), *also_ok}, {k: r["error"] for k, r in by_path.items() if r["status"] != "ok"}
    for key, row in by_path.items():
        if row["status"] != "ok":
            assert row["status"] == "unavailable" and row["error"], key
    assert by_path[("eager", "none")]["runtime"] == eager_runtime
    assert by_path[("eager", "none")]["drift"]["identical"] is True
    for key in EXPECTED_OK | set(also_ok):
        d = by_path[key]["drift"]
        assert all(np.isfinite(d[k]) for k in ("max_abs", "rel_l2")), key
        # loose bounds per mode: a trained model keeps most predictions through every quantization mode
        # (static int8 of the tiny Keras model was seen at 8 dB SQNR, 81% top-1 agreement on ONNX Runtime)
        sqnr = np.inf if d["identical"] else d["sqnr_db"]
        assert sqnr > MIN_SQNR_DB[key[1]] and d["top1_agreement"] >= MIN_TOP1[key[1]], (key, d)
    int8 = by_path[("tflite", "int8")]
    assert [i["dtype"] for i in int8["runtime_info"]["inputs"].values()] == ["int8"]  # full-integer model
    assert "float32 -> int8 (scale" in int8["conversions"]["x" if eager_runtime == "torch" else "input_layer"]
    artifacts = {a["id"]: a for a in manifest["artifacts"]}
    quant = artifacts["onnx-int8"]["exporter"]["quantization"]
    assert quant["format"] == "QDQ" and quant["per_channel"] is True and quant["calibration_samples"] == 32
    assert artifacts["tflite-int8"]["exporter"]["quantization"]["calibration_samples"] == 32
    assert manifest["data"]["split"]["calibration"]["samples"] == 32
    assert manifest["data"]["split"]["evaluation"]["samples"] == 64
    return by_path, artifacts


def test_torch_source_every_mode(torch_run):
    rows, manifest = torch_run
    by_path, artifacts = _check(rows, manifest, "torch",
                                also_ok={("torchscript", "none"), ("executorch", "none"), ("executorch", "dynamic"),
                                         ("executorch", "int8")})
    et_int8 = artifacts["executorch-int8"]["exporter"]["quantization"]
    assert et_int8["tool"] == "XNNPACKQuantizer (PT2E)" and et_int8["calibration_samples"] == 32
    assert artifacts["savedmodel-none"]["layout"] == "NHWC"  # onnx2tf: the harness transposes NCHW inputs
    assert artifacts["tflite-none"]["layout"] == "NCHW"  # litert-torch keeps the source layout
    assert by_path[("torchscript", "int8")]["status"] == "unavailable"
    fp16 = artifacts["onnx-fp16"]["exporter"]["quantization"]
    assert fp16["keep_io_types"] is True and artifacts["onnx-fp16"]["inputs"][0]["dtype"] == "float32"


def test_keras_source_every_mode(keras_run):
    rows, manifest = keras_run
    by_path, artifacts = _check(rows, manifest, "keras")
    assert manifest["model"]["layout"] == "NHWC" and artifacts["savedmodel-none"]["layout"] == "NHWC"
    assert by_path[("torchscript", "none")]["error"] == "torchscript: no maintained converter from a Keras model"
    assert by_path[("executorch", "int8")]["error"] == "executorch: no maintained converter from a Keras model"


@pytest.mark.slow
def test_keras_application(tmp_path):
    out = tmp_path / "run"
    # ONNX from a Keras source (none and int8, tf2onnx) is measured end to end on the tiny Keras model in
    # test_keras_source_every_mode; here the application goes through the TensorFlow-side converters only
    proc = deploycmp("run", "--model", "keras:MobileNetV3Small", "--weights", "random", "--formats",
                     "savedmodel,tflite", "--quantize", "none,int8", "--data", "digits", "--samples", "4",
                     "--calibration-samples", "4", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = rows_by_id(out)
    ok = {(r["format"], r["quantization"]) for r in rows.values() if r["status"] == "ok"}
    assert ok == {("eager", "none"), ("savedmodel", "none"), ("tflite", "none"), ("tflite", "int8")}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["input_shape"] == [1, 224, 224, 3]
    assert manifest["model"]["weights"] == "random (BatchNorm recalibrated on 4 samples)"  # well-conditioned
    # digits through the application's own preprocess_input, resized to 224x224, labeled
    assert manifest["data"]["preprocess"] == {"kind": "keras", "module": "keras.applications.mobilenet_v3"}
    assert all(r["drift"]["accuracy"] is not None for r in rows.values() if r["status"] == "ok")
    sizes = {a["id"]: a["size_bytes"] for a in manifest["artifacts"] if a["status"] == "ok"}
    assert sizes["tflite-int8"] < sizes["tflite-none"] / 2.5
    assert "random weights" in (out / "report.md").read_text()


def test_savedmodel_directory_source_at_two_batch_sizes(tmp_path):
    model = tiny_keras.make(tmp_path / "savedmodel")
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", model, "--input-shape", "1,16,16,3", "--formats", "tflite,savedmodel",
                     "--samples", "4", "--calibration-samples", "4", "--batch", "1,3", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = rows_by_id(out)
    assert rows["eager-none-keras-server-cpu-b1"]["drift"]["identical"] is True
    for batch in (1, 3):
        for row_id in ("tflite-none-litert", "savedmodel-none-tensorflow", "eager-none-keras"):
            row = rows[f"{row_id}-server-cpu-b{batch}"]
            assert row["status"] == "ok" and row["drift"]["rel_l2"] < 1e-4, row["error"]
    # the TF converter leaves the batch axis free: one .tflite file, resized at load (litert-torch fixes it)
    tflite = rows["tflite-none-litert-server-cpu-b3"]
    assert tflite["artifact"] == "tflite-none" and tflite["runtime_info"]["resized_at_load"] is True
    assert [i["shape"] for i in tflite["runtime_info"]["inputs"].values()] == [[3, 16, 16, 3]] and "resizes" in tflite["batch_strategy"]
    assert rows["savedmodel-none-tensorflow-server-cpu-b3"]["artifact"] == "savedmodel-none"  # dynamic batch
    assert json.loads((out / "manifest.json").read_text())["model"]["kind"] == "savedmodel-dir"


def test_keras_bad_input(tmp_path):
    proc = deploycmp("export", "--model", "keras:MobileNetV9", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "unknown Keras application 'MobileNetV9'" in proc.stderr and "MobileNet" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = deploycmp("export", "--model", tmp_path / "missing.keras", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "model file not found" in proc.stderr
