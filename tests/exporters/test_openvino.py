"""OpenVINO IR on OpenVINO through the real command line: fp32 (OpenVINO's default precision, read back and said in
the row), bf16, NNCF int8, from a PyTorch and a Keras source, and a model with two named inputs (TensorFlow stays
out of this process: the Keras model is made by a separate one)."""
import importlib.util
import json

import numpy as np
import pytest

from tests import tiny_keras
from tests.conftest import FAST, TINY, deploycmp, rows_by_id

# openvino is not imported here: the workers use it
pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


def _bf16_cpu() -> bool:
    from deploycmp.exporters import openvino

    return "bf16" in openvino.QUANTIZATIONS


def _ov_only(tmp_path):
    """A target that runs only openvino (no eager row: the Keras one would import TensorFlow for nothing)."""
    path = tmp_path / "targets.toml"
    path.write_text('[targets.ov]\nthreads = 2\nruntimes = ["openvino"]\n')
    return ["--targets-file", path, "--target", "ov"]


def _rows(out) -> dict:
    return {(r["format"], r["quantization"]): r for r in rows_by_id(out).values()}


def _artifacts(out) -> dict:
    return {a["quantization"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]
            if a["format"] == "openvino"}


def test_torch_none_bf16_int8(tmp_path):
    out = tmp_path / "run"
    proc = deploycmp("run", *TINY, "--calibration-samples", "8", "--formats", "openvino", "--quantize", "none,bf16,int8",
                     "--out", out, "--no-cache", *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows, artifacts = _rows(out), _artifacts(out)
    modes = ("none", "bf16", "int8") if _bf16_cpu() else ("none", "int8")
    for mode in modes:
        row = rows[("openvino", mode)]
        assert row["status"] == "ok", (mode, row["error"])
        assert row["runtime"] == "openvino" and row["target"] == "server-cpu"
        assert np.isfinite(row["drift"]["max_abs"]) and row["drift"]["max_abs"] < (0.5 if mode == "int8" else 0.05), mode
        info = row["runtime_info"]
        assert info["properties"]["PERFORMANCE_HINT"] == "LATENCY"
        assert info["properties"]["INFERENCE_NUM_THREADS"] == row["threads"]
        assert info["computes_in"] == info["properties"]["INFERENCE_PRECISION_HINT"]
        assert row["computes_in"] == {"precision": info["computes_in"], "how": "read back from the runtime"}
        assert artifacts[mode]["exporter"]["compress_to_fp16"] is False
        assert artifacts[mode]["dynamic_dims"] == ["batch"]

    # fp32: OpenVINO's own default precision is kept, read back, and said in the row where it is not f32
    none = rows[("openvino", "none")]
    assert "INFERENCE_PRECISION_HINT" not in none["runtime_info"]["requested"]
    if _bf16_cpu():
        assert none["runtime_info"]["computes_in"] == "bf16"
        assert any("computes this fp32 model in bf16" in w and "INFERENCE_PRECISION_HINT=f32" in w
                   for w in none["warnings"]), none["warnings"]
        bf16 = rows[("openvino", "bf16")]
        assert bf16["runtime_info"]["requested"]["INFERENCE_PRECISION_HINT"] == "bf16"
        assert bf16["runtime_info"]["computes_in"] == "bf16" and not bf16["runtime_info"]["notes"]
        assert artifacts["bf16"]["exporter"]["compile_properties"] == {"INFERENCE_PRECISION_HINT": "bf16"}
    else:
        assert rows[("openvino", "bf16")]["status"] == "unavailable" and "bf16" in rows[("openvino", "bf16")]["error"]

    quant = artifacts["int8"]["exporter"]["quantization"]
    assert quant["tool"] == "nncf.quantize" and quant["preset"] == "performance"
    assert quant["calibration_samples"] == 8 and quant["subset_size"] == 8
    assert "u8" in rows[("openvino", "int8")]["runtime_info"]["layer_precisions"]


def test_keras_source_and_two_named_inputs(tmp_path):
    target = _ov_only(tmp_path)
    keras_out = tmp_path / "keras"
    model = tiny_keras.make(tmp_path / "tiny.keras")
    proc = deploycmp("run", "--model", model, "--samples", "8", "--formats", "openvino", "--out", keras_out,
                     "--no-cache", *target, *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row, artifact = _rows(keras_out)[("openvino", "none")], _artifacts(keras_out)["none"]
    assert row["status"] == "ok", row["error"]
    assert row["drift"]["max_abs"] < 0.05
    assert artifact["layout"] == "NHWC" and "SavedModel" in artifact["exporter"]["name"]

    two_out = tmp_path / "two"
    proc = deploycmp("run", "--model", "tests.tiny_models:ids_and_features", "--input", "ids:int64:batch,sequence",
                     "--input", "feats:float32:batch,8", "--shape", "sequence=16", "--value-range", "ids:0,1000",
                     "--samples", "8", "--formats", "openvino", "--out", two_out, "--no-cache", *target, *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row, artifact = _rows(two_out)[("openvino", "none")], _artifacts(two_out)["none"]
    assert row["status"] == "ok", row["error"]
    assert row["drift"]["max_abs"] < 0.05
    assert artifact["inputs"] == [{"name": "ids", "dtype": "int64", "shape": ["batch", "sequence"]},
                                  {"name": "feats", "dtype": "float32", "shape": ["batch", 8]}]
    assert artifact["dynamic_dims"] == ["batch", "sequence"]
