"""The release gate end to end: examples/quantized_release_gate.py fine-tunes resnet18 on the digits, runs
deploycmp on the checkpoint with --data digits, and validates it; then the gate's verdicts and JUnit XML."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import REPO, deploycmp, rows_by_id


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    out = tmp_path_factory.mktemp("gate") / "run"
    # every path the tests below read: the eager reference, onnx and tflite (not torch-compile's 10 s of compiling)
    proc = subprocess.run([sys.executable, "-m", "examples.quantized_release_gate", "--epochs", "2", "--quick",
                           "--formats", "onnx,tflite", "--runtimes", "torch,onnxruntime,litert", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    return proc, out


def test_example_passes_its_gate_with_real_accuracy(gate):
    proc, out = gate
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "% on the held-out digits" in proc.stdout and "0 failed" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["num_classes"] == 10 and manifest["data"]["kind"] == "digits"
    assert manifest["data"]["split"]["calibration"]["samples"] == 100
    rows = rows_by_id(out)
    reference = rows["eager-none-torch-server-cpu-b1"]["drift"]
    assert reference["accuracy"] > 0.8 and reference["accuracy_delta_pp"] == 0  # a trained model, not chance
    for path in ("onnx-int8-onnxruntime", "tflite-int8-litert"):
        row = rows[f"{path}-server-cpu-b1"]
        assert row["status"] == "ok" and row["drift"]["accuracy_delta_pp"] > -2.0, (path, row["drift"])
        seen = row["samples_to_look_at"]
        assert seen["flipped_count"] == round((1 - row["drift"]["top1_agreement"]) * 400)
        assert (out / seen["file"]).is_file()


def test_thresholds_verdicts_and_junit(gate):
    _, out = gate
    assert deploycmp("validate", out, "--max-top1-drop", "100").returncode == 0
    strict = deploycmp("validate", out, "--min-sqnr", "1000", "--junit", out / "strict.xml")
    failing = [line for line in strict.stdout.splitlines() if line.startswith("FAIL")]
    drifted = [i for i, r in rows_by_id(out).items() if r["status"] == "ok" and not r["drift"]["identical"]]
    assert strict.returncode == 1 and len(failing) == len(drifted) > 0
    assert all("dB < 1000 dB" in line for line in failing)
    suite = ET.parse(out / "strict.xml").getroot()
    assert int(suite.get("failures")) == len(failing) == len(suite.findall("testcase/failure"))
    assert int(suite.get("tests")) == len(rows_by_id(out))


def test_the_report_answers_which_path_to_ship_under_the_thresholds_in_force(gate, tmp_path):
    """A trained model: the report names a path per target and batch; under a thresholds file only outputs identical
    to the source pass (the eager model itself), and the answer follows it."""
    _, out = gate
    proc = deploycmp("report", out, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    [answer] = json.loads((out / "report.json").read_text())["answer"]
    assert answer["name"] == "server-cpu, batch 1" and answer["recommendation"] in rows_by_id(out)
    assert "answer: server-cpu, batch 1: ship " in proc.stdout
    strict = tmp_path / "strict.toml"
    strict.write_text("[default]\nmin_sqnr = 1000\n")
    proc = deploycmp("report", out, "--format", "md", "--thresholds", strict)
    assert "answer: server-cpu, batch 1: ship eager none · torch" in proc.stdout and "SQNR" in proc.stdout
    assert "## Which path to ship" in (out / "report.md").read_text()
