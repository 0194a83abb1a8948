"""Targets and batch sweeps end to end on the tiny model: server-cpu, mobile-cpu, gpu and a user's target, at batch
1 and 2, for the static-shape formats (TFLite, ExecuTorch: one export per batch size) and the dynamic ones. What
the worker really got (cores, threads) is read from inside it."""
import json

import pytest

from tests.conftest import FAST, TINY, deploycmp, rows_by_id
from deploycmp.core import gpu
from deploycmp.measure.targets import usable_cpus

STATIC = {"tflite", "executorch"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    targets = tmp / "targets.toml"
    targets.write_text('[targets.one-core-2t]\ncores = 1\nthreads = 2\nruntimes = ["onnxruntime"]\n')
    out = tmp / "run"
    proc = deploycmp("run", *TINY, "--formats", "torch-export,onnx,tflite,executorch", "--batch", "1,2", "--target",
                     "server-cpu,mobile-cpu,gpu,one-core-2t", "--targets-file", targets, "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return rows_by_id(out), json.loads((out / "manifest.json").read_text())


def test_every_format_at_every_batch_size(sweep):
    rows, manifest = sweep
    artifacts = {a["id"]: a for a in manifest["artifacts"]}
    assert {a["id"] for a in manifest["artifacts"] if a["format"] in STATIC} == {
        "tflite-none", "tflite-none-b2", "executorch-none", "executorch-none-b2"}
    cpu_rows = [r for r in rows.values() if r["target"] != "gpu"]
    paths = {(r["format"], r["runtime"], r["target"]) for r in cpu_rows}
    assert paths == {("eager", "torch", "server-cpu"), ("eager", "torch-compile", "server-cpu"),
                     ("torch-export", "torch-export", "server-cpu"),
                     *{("onnx", "onnxruntime", t) for t in ("server-cpu", "mobile-cpu", "one-core-2t")},
                     *{(f, rt, t) for f, rt in (("tflite", "litert"), ("executorch", "executorch"))
                       for t in ("server-cpu", "mobile-cpu")}}
    for row in cpu_rows:
        assert row["status"] == "ok", (row["id"], row["error"])
        artifact = artifacts[row["artifact"]]
        if row["format"] in STATIC:  # measured on the artifact exported for this batch size, never on another
            assert artifact["export_batch"] == row["batch"] and not artifact["dynamic_batch"]
            assert [i["shape"][0] for i in row["runtime_info"]["inputs"].values()] == [row["batch"]]
            assert row["batch_strategy"] == "static shapes: one export per batch size"
        else:
            assert artifact["dynamic_batch"] and row["batch_strategy"].startswith("dynamic batch axis")
        assert row["drift"]["max_abs"] < 1e-4
        assert row["latency_per_item_ms"] == pytest.approx(row["latency_ms"]["p50"] / row["batch"])
    assert {(r["format"], r["batch"]) for r in cpu_rows} >= {(f, b) for f in ("tflite", "executorch", "onnx") for b in (1, 2)}


def test_threads_and_cores_applied_inside_the_worker(sweep):
    rows, _ = sweep
    cpus = usable_cpus()
    for row in rows.values():
        if row["status"] != "ok":
            continue
        seen = row["observed"]
        if row["target"] == "server-cpu":
            assert seen["affinity"] == cpus and row["threads"] == len(cpus)
        else:  # mobile-cpu and one-core-2t: pinned to one core
            assert seen["affinity"] == cpus[-1:]
            assert seen["cores_busy"] < 1.25  # CPU time over wall time: one core's worth at most (plus noise)
        assert row["runtime_info"]["threads"] == row["threads"]
    assert rows["onnx-none-onnxruntime-one-core-2t-b1"]["threads"] == 2  # a user's target: 2 threads on 1 core
    for rt in ("litert", "executorch", "onnxruntime"):
        mobile = rows[f"{'tflite' if rt == 'litert' else 'onnx' if rt == 'onnxruntime' else rt}-none-{rt}-mobile-cpu-b1"]
        assert mobile["threads"] == 1 and "not a phone" in mobile["target_description"]
        budget = mobile["memory_budget"]
        assert budget["limit_mb"] == 512 and budget["within"] and 0 < budget["used_mb"] < mobile["peak_rss_mb"]


def test_gpu_rows(sweep):
    rows, _ = sweep
    gpu_rows = [r for r in rows.values() if r["target"] == "gpu"]
    assert {r["runtime"] for r in gpu_rows} == {"torch", "torch-compile", "torch-export", "onnxruntime",
                                                "onnxruntime-trt"}
    if not gpu.names():  # this host has no GPU: unavailable rows with the reason, and the run still exits 0
        assert all(r["status"] == "unavailable" and "no CUDA GPU" in r["error"] for r in gpu_rows)
        return
    for row in gpu_rows:
        if row["status"] == "unavailable":  # e.g. the CPU onnxruntime wheel: no CUDA provider
            assert row["runtime"] == "onnxruntime" and "CUDA" in row["error"]
            continue
        assert row["status"] == "ok", row["error"]
        assert row["device"] == "cuda" and row["observed"]["gpu"]["name"] and row["observed"]["gpu"]["driver"]
        assert row["device_memory_mb"] > 0 and row["drift"]["max_abs"] < 1e-3
        assert row["timing"]["clock"] == ("perf_counter + device synchronize" if row["runtime"] == "onnxruntime"
                                          else "CUDA events")
