"""resnet18 through every path of this slice, as a user runs it; and the tiny run's files and keys."""
import json

import pytest

from tests.conftest import FAST, deploycmp, rows_by_id

ROW_KEYS = {"id", "model", "format", "quantization", "runtime", "target", "batch", "threads", "status", "error",
            "size_bytes", "size_gzip_bytes", "latency_ms", "throughput_per_s", "cold_start_ms", "peak_rss_mb", "drift",
            "gflops", "peak_fraction"}
PATHS = {("eager", "torch"), ("torchscript", "torchscript"), ("torch-export", "torch-export"), ("onnx", "onnxruntime")}


def test_tiny_run_files_and_keys(tiny_run):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["schema"] == 2 and manifest["model"]["input_shape"] == [1, 3, 16, 16]
    assert manifest["model"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 3, 16, 16],
                                            "value_range": None, "layout": "NCHW"}]
    assert manifest["model"]["outputs"] == [{"name": "output", "dtype": "float32", "shape": ["batch", 10], "kind": "logits"}]
    assert {"torch", "onnxruntime", "numpy"} <= set(manifest["environment"]["versions"])
    for artifact in manifest["artifacts"]:
        assert artifact["status"] == "ok" and artifact["dynamic_batch"] is True and artifact["dynamic_dims"] == ["batch"]
        assert artifact["size_bytes"] == sum(f["bytes"] for f in artifact["files"]) > 0
        assert all(len(f["sha256"]) == 64 for f in artifact["files"])
    rows = rows_by_id(tiny_run)
    assert len(rows) == 10  # 5 paths (eager on torch and torch-compile, torchscript, torch.export, onnx) x batch 1, 2
    for row in rows.values():
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["status"] == "ok", row["error"]
        lat = row["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
        assert lat["ci95_p50"][0] <= lat["p50"] <= lat["ci95_p50"][1]
        assert row["throughput_per_s"] == pytest.approx(row["batch"] * 1e3 / lat["p50"])
        cold = row["cold_start_ms"]
        assert cold["total"] == pytest.approx(cold["import"] + cold["load"] + cold["first_inference"])
        assert row["drift"]["max_abs"] < 1e-4 and row["drift"]["top1_agreement"] == 1.0
        assert row["peak_rss_mb"] > 0 and 0 < row["peak_fraction"]
        peak = row["peak"]  # the fastest GEMM here, the others it tried, and the bound from clock and SIMD width
        assert peak["probe"] in peak["probes"] and row["peak_gflops"] == max(peak["probes"].values())
        assert peak["theoretical"]["gflops"] > 0 and peak["threads"] == row["runtime_info"]["threads"]
        n = 1024 if peak["threads"] <= 4 else 2048
        assert peak["matmul"] == f"{n} x {n} fp32, the fastest of 10 calls after an untimed one"
        assert (row["peak_fraction"] > 1) == ("exceeded" in peak)  # never a fraction above 1 unexplained
        assert row["versions"]["torch"] and row["host"]["cpu_count"]
        # none of these runtimes reports its precision on the CPU: it is the artifact's, and the row says so
        assert row["computes_in"] == {"precision": "fp32", "how": "from the artifact's quantization mode (the "
                                      "runtime does not report it)"}
    eager = rows["eager-none-torch-server-cpu-b1"]
    assert eager["drift"]["identical"] is True  # the reference row is the source itself, at batch 1
    for name in ("report.md", "report.csv", "report.json"):
        assert (tiny_run / name).stat().st_size > 0


def test_report_and_validate(tiny_run):
    proc = deploycmp("report", tiny_run, "--format", "csv")
    assert proc.returncode == 0 and "torch-export" in proc.stdout
    csv_lines = (tiny_run / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("id,model,format") and len(csv_lines) == 11
    # the tiny CNN's random init sends every random sample to one class: a top-1 threshold cannot be checked
    one_class = deploycmp("validate", tiny_run, "--max-top1-drop", "0", "--max-rel-l2", "1e-3")
    assert one_class.returncode == 1 and "top-1 says nothing (--allow-degenerate accepts it)" in one_class.stdout
    ok = deploycmp("validate", tiny_run, "--max-top1-drop", "0", "--max-rel-l2", "1e-3", "--allow-degenerate")
    assert ok.returncode == 0 and "10 passed, 0 failed" in ok.stdout
    strict = deploycmp("validate", tiny_run, "--max-rel-l2", "0")
    drifted = sorted(i for i, r in rows_by_id(tiny_run).items() if r["drift"]["rel_l2"] > 0)
    assert strict.returncode == (1 if drifted else 0)
    failed = sorted(line.split()[1].rstrip(":") for line in strict.stdout.splitlines() if line.startswith("FAIL"))
    assert failed == drifted


@pytest.mark.slow
def test_resnet18_every_path(tmp_path):
    out = tmp_path / "resnet18"
    proc = deploycmp("run", "--model", "resnet18", "--weights", "random", "--formats", "torchscript,torch-export,onnx",
                     "--samples", "8", "--out", out, *FAST, "--runtimes", ",".join(sorted({r for _, r in PATHS})))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = list(rows_by_id(out).values())
    assert {(r["format"], r["runtime"]) for r in rows} == PATHS
    assert all(r["status"] == "ok" for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    onnx = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    assert any(f["path"].endswith(".onnx.data") for f in onnx["files"])  # weights live beside the graph
    assert onnx["size_bytes"] > 40e6 and onnx["exporter"]["dynamo"] is True
    assert manifest["model"]["gflops_per_sample"] == pytest.approx(3.63, rel=0.01)
    assert "random weights" in proc.stdout + proc.stderr
    assert "random weights" in (out / "report.md").read_text()
    for r in rows:
        assert r["drift"]["top1_agreement"] == 1.0 and r["drift"]["rel_l2"] < 1e-4
