"""bench --tune: every row gets a tuned twin whose settings were searched on the target (threads never above the
target's, each runtime's declared knobs, ONNX Runtime's int8 recipes re-quantized from the fp32 file), the winner
recorded with every trial's p50 and SQNR; the untuned rows stay as they were. Real exports, real ONNX Runtime."""
import json

import pytest

from deploycmp import runtimes, tune
from deploycmp.runtimes import onnxruntime as ort_runtime
from tests.conftest import FAST, TINY, deploycmp, rows_by_id


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """onnx none + int8 of the tiny CNN on a 2-thread ONNX Runtime target, measured, then benched again with --tune."""
    tmp = tmp_path_factory.mktemp("tune")
    targets = tmp / "targets.toml"
    targets.write_text('[targets.ort2]\nthreads = 2\nruntimes = ["onnxruntime"]\n')
    out = tmp / "run"
    common = ["--target", "ort2", "--targets-file", targets, *FAST]
    proc = deploycmp("run", *TINY, "--formats", "onnx", "--quantize", "none,int8", "--out", out, *common)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    before = rows_by_id(out)
    proc = deploycmp("bench", out, "--tune", *common)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, before, rows_by_id(out), proc


def test_tune_adds_a_tuned_row_per_row_and_keeps_the_untuned_ones(tuned):
    _, before, after, proc = tuned
    assert set(before) == {"onnx-none-onnxruntime-ort2-b1", "onnx-int8-onnxruntime-ort2-b1"}
    assert set(after) == set(before) | {i + "-tuned" for i in before}
    for i in before:  # measured before with the same key: kept, not measured again
        assert after[i]["key"] == before[i]["key"] and after[i]["latency_ms"] == before[i]["latency_ms"]
        assert not after[i].get("tuned")
    assert "measured 2 row(s), kept 2" in proc.stderr
    assert "onnxruntime (tuned)" in proc.stdout and "tuned (" in proc.stdout


def test_the_tuned_row_records_the_winner_and_every_trial(tuned):
    _, _, rows, _ = tuned
    row = rows["onnx-none-onnxruntime-ort2-b1-tuned"]
    assert row["status"] == "ok" and row["tuned"] and row["drift"]["sqnr_db"] > 60
    tried = row["tuning"]["tried"]
    untuned = {"graph_optimization": "all", "execution_mode": "sequential", "threads": 2}
    assert tried[0]["settings"] == untuned  # the untuned settings are the first trial
    # one knob at a time: the other levels, parallel execution, and fewer threads (never more than the target's)
    assert len(tried) == 1 + 2 + 1 + 1
    assert {t["settings"]["threads"] for t in tried} == {1, 2}
    assert all(t["status"] == "ok" and t["p50_ms"] > 0 and t["sqnr_db"] > 60 for t in tried)
    winners = [t for t in tried if t.get("winner")]
    assert len(winners) == 1 and winners[0]["settings"] == row["settings"] and row["threads"] == row["settings"]["threads"]
    # a setting other than the untuned one won only by being at least MARGIN faster in its trial
    if row["settings"] != untuned:
        assert winners[0]["p50_ms"] < tried[0]["p50_ms"] * (1 - tune.MARGIN)


def test_int8_tuning_tries_onnx_runtimes_recipes_on_the_same_calibration(tuned):
    out, _, rows, _ = tuned
    row = rows["onnx-int8-onnxruntime-ort2-b1-tuned"]
    assert row["status"] == "ok", row["error"]
    tried = row["tuning"]["tried"]
    first = tried[0]["settings"]
    assert (first["recipe.activations"], first["recipe.format"], first["recipe.per_channel"],
            first["recipe.calibration_method"]) == ("uint8", "QDQ", True, "MinMax")  # what the export used (x86-64)
    recipes = {(t["recipe"]["recipe"], t["recipe"]["format"], t["recipe"]["per_channel"],
                t["recipe"]["calibration_method"]) for t in tried if "recipe" in t}
    assert {("S8S8", "QDQ", True, "MinMax"), ("U8S8", "QOperator", True, "MinMax")} <= recipes
    assert {r[3] for r in recipes} >= {"Entropy", "Percentile"} and {r[2] for r in recipes} == {True, False}
    assert all(t["sqnr_db"] is not None and t["p50_ms"] > 0 for t in tried if t["status"] == "ok")
    assert all(t["passes"] in (True, False) for t in tried)
    # the re-quantized file that won (if one did) is kept and is what the tuned row ran; the others are removed
    files = sorted((out / "tuning").rglob("*.onnx")) if (out / "tuning").exists() else []
    if row.get("tuned_file"):
        assert [f.relative_to(out).as_posix() for f in files] == [row["tuned_file"]]
    else:
        assert files == []


def test_report_csv_marks_tuned_rows(tuned):
    out, _, _, _ = tuned
    proc = deploycmp("report", out, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    header, *lines = (out / "report.csv").read_text().splitlines()
    col = header.split(",").index("tuned")
    assert sorted(line.split(",")[col] for line in lines) == ["", "", "True", "True"]


def _row(runtime: str, threads: int, fmt: str = "onnx", quantization: str = "none", artifact: dict | None = None):
    return {"runtime": runtime, "threads": threads, "device": "cpu", "format": fmt, "quantization": quantization,
            "_artifact": artifact or {"id": "a", "exporter": {}}}


def test_the_search_space_comes_from_each_runtimes_declaration():
    space, notes = tune.space(_row("onnxruntime", 4), {"artifacts": []})
    assert space == {**ort_runtime.TUNE, "threads": (4, 2, 1)} and notes == []
    assert tune.space(_row("onnxruntime", 1), {"artifacts": []})[0] == ort_runtime.TUNE  # one thread: nothing to try
    # TensorFlow's inter-op threads are capped by the target's thread count like the intra-op ones
    assert tune.space(_row("tensorflow", 2, "savedmodel"), {"artifacts": []})[0] == {
        "inter_op_threads": (1, 2), "threads": (2, 1)}
    # an int8 ONNX row without the fp32 file to re-quantize from: the recipes are not tried, and it says why
    space, notes = tune.space(_row("onnxruntime", 2, quantization="int8"), {"artifacts": []})
    assert not any(k.startswith("recipe.") for k in space) and "no fp32 onnx artifact" in notes[0]
    # a bf16 OpenVINO artifact keeps its precision hint; an fp32 one may try f32 and bf16
    bf16 = {"id": "b", "exporter": {"compile_properties": {"INFERENCE_PRECISION_HINT": "bf16"}}}
    assert "precision" not in tune.space(_row("openvino", 2, "openvino", "bf16", bf16), {"artifacts": []})[0]
    assert "precision" in tune.space(_row("openvino", 2, "openvino"), {"artifacts": []})[0]
    for name in runtimes.RUNTIMES:  # every runtime gets at least the threads knob
        assert "threads" in tune.space(_row(name, 2, "eager"), {"artifacts": []})[0]


class _Outcome:
    def __init__(self, p50, cosine):
        self.status, self.error = "ok", None
        self.result = {"latency_ms": {"p50": p50}, "drift": {"sqnr_db": 40.0, "cosine_min": cosine}}


def _search(timings: dict) -> dict:
    """tune.search on ONNX Runtime's knobs at 2 threads, with made-up trials: (level, mode, threads) -> (p50, cosine),
    under cosine >= 0.99."""
    from deploycmp.bench import Settings

    def measure_once(row, run_dir, manifest, settings, trial=None):
        o = trial["options"]
        return _Outcome(*timings[(o["graph_optimization"], o["execution_mode"], trial["threads"])])

    return tune.search(_row("onnxruntime", 2), {"artifacts": []}, None, Settings(),
                       lambda r: r["drift"]["cosine_min"] >= 0.99, measure_once)


def test_a_faster_setting_that_breaks_the_thresholds_does_not_win():
    """The search on a made-up runtime: threads=1 is fastest but drifts; 'basic' is faster and within."""
    timings = {("all", "sequential", 2): (10.0, 1.0), ("extended", "sequential", 2): (9.9, 1.0),
               ("basic", "sequential", 2): (8.0, 1.0), ("basic", "parallel", 2): (12.0, 1.0),
               ("basic", "sequential", 1): (1.0, 0.5)}

    found = _search(timings)
    assert found["settings"] == {"graph_optimization": "basic", "execution_mode": "sequential", "threads": 2}
    by = {tuple(t["settings"].values()): t for t in found["tried"]}
    assert by[("basic", "sequential", 1)]["passes"] is False and not by[("basic", "sequential", 1)].get("winner")
    assert by[("extended", "sequential", 2)]["passes"] is True  # within, not 3% faster: the untuned level stays
    assert by[("basic", "sequential", 2)]["winner"] and sum(bool(t.get("winner")) for t in found["tried"]) == 1


def test_runtime_options_reach_the_session(tmp_path):
    """The options a trial passes are the ones ONNX Runtime runs with."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    session = ort_runtime.load({"main_file": "m.onnx"}, tmp_path, 2,
                               options={"graph_optimization": "basic", "execution_mode": "parallel"})
    opts = session.sess.get_session_options()
    import onnxruntime as ort

    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.execution_mode == ort.ExecutionMode.ORT_PARALLEL and opts.inter_op_num_threads == 2
    assert json.dumps(tune.thread_counts(8)) == "[8, 4, 2, 1]"


def test_where_the_untuned_row_misses_the_thresholds_a_setting_no_worse_may_still_win():
    """An int8 row of random weights misses cosine >= 0.99 whatever its settings: tuning may make it faster at the
    same drift, never faster at a worse one."""
    timings = {("all", "sequential", 2): (10.0, 0.9), ("extended", "sequential", 2): (5.0, 0.8),
               ("basic", "sequential", 2): (8.0, 0.9), ("basic", "parallel", 2): (12.0, 0.9),
               ("basic", "sequential", 1): (9.0, 0.9)}

    found = _search(timings)
    assert found["settings"] == {"graph_optimization": "basic", "execution_mode": "sequential", "threads": 2}
    assert [t["passes"] for t in found["tried"]] == [True, False, True, True, True]
