"""bench --tune: every row gets a tuned twin whose settings were searched on the target (threads never above the
target's, each runtime's declared knobs, ONNX Runtime's int8 recipes re-quantized from the fp32 file), the decision
recorded with every trial's p50 and SQNR; the untuned rows stay as they were. Real exports, real ONNX Runtime for
what is tried and how the decision is recorded; made-up timings for which setting wins (a 20 µs model's timings
are noise)."""
import json

import pytest

from deploycmp import runtimes
from deploycmp.gate import tune
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


def _decided_by_the_rule(row: dict) -> None:
    """The tuned row's settings are the untuned ones unless a finalist's full-timing p50 CI lies below the untuned
    one's; the row says which, with the numbers, wherever a finalist was measured."""
    tried = row["tuning"]["tried"]
    winners = [t for t in tried if t.get("winner")]
    assert len(winners) == 1 and winners[0]["settings"] == row["settings"]
    assert row["threads"] == row["settings"]["threads"]
    finalists = [t for t in tried if t.get("finalist")]
    why = row["tuning"]["notes"][-1]
    if not finalists:
        assert winners[0] is tried[0] and "no trial passed and was 3% faster" in why
        return
    untuned = tried[0]["full"]
    assert all(t["full"]["processes"] == untuned["processes"] == tune.FINAL_ROUNDS for t in finalists)
    for t in finalists:
        assert t["beyond_noise"] == (t["full"]["ci95_p50"][1] < untuned["ci95_p50"][0])
        assert f"{t['full']['p50_ms']:.4g} ms" in why
    assert f"{untuned['p50_ms']:.4g} ms" in why
    if winners[0] is tried[0]:
        assert why.startswith("the untuned settings were kept")
        assert any("the untuned settings were kept" in w for w in row["warnings"])
    else:
        assert winners[0]["finalist"] and winners[0]["beyond_noise"] and why.startswith("tuned: ")


def _single_changes(tried: list, untuned: dict) -> list:
    """(knob, value) of every trial that changed one knob alone from the untuned settings, in order."""
    out = []
    for t in tried[1:]:
        changed = [(k, v) for k, v in t["settings"].items() if untuned[k] != v]
        if not t.get("combined"):
            assert len(changed) == 1, t["settings"]
            out.append(changed[0])
    return out


def test_the_tuned_row_records_every_trial_and_the_decision(tuned):
    _, _, rows, _ = tuned
    row = rows["onnx-none-onnxruntime-ort2-b1-tuned"]
    assert row["status"] == "ok" and row["tuned"] and row["drift"]["sqnr_db"] > 60
    tried = row["tuning"]["tried"]
    untuned = {"graph_optimization": "all", "execution_mode": "sequential", "threads": 2}
    assert tried[0]["settings"] == untuned  # the untuned settings are the first trial
    # every value of every knob, each alone from the untuned settings, whatever the trials measured
    assert _single_changes(tried, untuned) == [("graph_optimization", "extended"), ("graph_optimization", "basic"),
                                               ("execution_mode", "parallel"), ("threads", 1)]
    assert sum(bool(t.get("combined")) for t in tried) <= 1
    assert all(t["status"] == "ok" and t["p50_ms"] > 0 and t["sqnr_db"] > 60 for t in tried)
    _decided_by_the_rule(row)


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
    # each recipe knob changed alone from U8S8 QDQ per-channel MinMax: what is tried never hangs on a noisy trial
    assert {("S8S8", "QDQ", True, "MinMax"), ("U8S8", "QOperator", True, "MinMax"), ("U8S8", "QDQ", False, "MinMax"),
            ("U8S8", "QDQ", True, "Entropy"), ("U8S8", "QDQ", True, "Percentile")} <= recipes
    assert [k for k, _ in _single_changes(tried, first) if k.startswith("recipe.")] == [
        "recipe.activations", "recipe.format", "recipe.per_channel", "recipe.calibration_method",
        "recipe.calibration_method"]
    assert all(t["sqnr_db"] is not None and t["p50_ms"] > 0 for t in tried if t["status"] == "ok")
    assert all(t["passes"] in (True, False) for t in tried)
    _decided_by_the_rule(row)
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
    def __init__(self, p50, cosine, per_call=None):
        self.status, self.error = "ok", None
        self.result = {"latency_ms": {"p50": p50, "per_call": per_call or [p50]},
                       "drift": {"sqnr_db": 40.0, "cosine_min": cosine}}


def _search(trials: dict, full: dict | None = None, row: dict | None = None) -> dict:
    """tune.search on ONNX Runtime's knobs at 2 threads, under cosine >= 0.99, with made-up measurements:
    trials (level, mode, threads) -> (short-trial p50, cosine); full: (level, mode, threads) -> the centre of the
    full measurements (default: the trial's p50), each process 2% off it one way or the other."""
    from deploycmp.measure.row import Settings

    processes = {}

    def measure_once(row, run_dir, manifest, settings, trial=None):
        o = trial["options"]
        key = (o["graph_optimization"], o["execution_mode"], trial["threads"])
        p50, cosine = trials[key]
        if trial["name"].startswith("full-"):  # processes scatter by +-2% around the centre, calls by +-3%
            n = processes[key] = processes.get(key, 0) + 1
            centre = (full or {}).get(key, p50) * (0.98 if n % 2 else 1.02)
            return _Outcome(centre, cosine, [centre * (0.97 + 0.06 * i / 99) for i in range(100)])
        return _Outcome(p50, cosine)

    return tune.search(row or _row("onnxruntime", 2), {"artifacts": []}, None, Settings(),
                       lambda r: r["drift"]["cosine_min"] >= 0.99, measure_once)


UNTUNED = ("all", "sequential", 2)
TRIED = [UNTUNED, ("extended", "sequential", 2), ("basic", "sequential", 2), ("all", "parallel", 2),
         ("all", "sequential", 1)]


def _by(found: dict) -> dict:
    return {tuple(t["settings"].values()): t for t in found["tried"]}


def test_a_faster_setting_that_breaks_the_thresholds_does_not_win():
    """threads=1 is fastest but drifts; 'basic' is faster and within, in its trial and in full timing."""
    trials = {UNTUNED: (10.0, 1.0), ("extended", "sequential", 2): (9.9, 1.0), ("basic", "sequential", 2): (8.0, 1.0),
              ("all", "parallel", 2): (12.0, 1.0), ("all", "sequential", 1): (1.0, 0.5)}
    found = _search(trials)
    assert [tuple(t["settings"].values()) for t in found["tried"]] == TRIED  # each knob alone from the untuned
    assert found["settings"] == {"graph_optimization": "basic", "execution_mode": "sequential", "threads": 2}
    by = _by(found)
    assert by[("all", "sequential", 1)]["passes"] is False and not by[("all", "sequential", 1)].get("winner")
    assert by[("extended", "sequential", 2)]["passes"] is True  # within, not 3% faster: not a finalist
    assert by[("basic", "sequential", 2)]["winner"] and by[("basic", "sequential", 2)]["finalist"]
    assert sum(bool(t.get("winner")) for t in found["tried"]) == 1
    assert found["decision"]["winner"] == 2 and found["notes"][-1].startswith("tuned: ")


def test_a_win_within_noise_keeps_the_untuned_settings_and_says_so():
    """The tiny model's case: a setting 'won' its short trial by 20%, but measured in full, interleaved with the
    untuned settings, the p50 confidence intervals overlap: the untuned settings stay, with both numbers."""
    trials = {UNTUNED: (0.027, 1.0), ("extended", "sequential", 2): (0.0206, 1.0),
              ("basic", "sequential", 2): (0.026, 1.0), ("all", "parallel", 2): (0.03, 1.0),
              ("all", "sequential", 1): (0.028, 1.0)}
    row = _row("onnxruntime", 2)
    found = _search(trials, full={UNTUNED: 0.0250, ("extended", "sequential", 2): 0.0248}, row=row)
    assert found["settings"] == dict(zip(("graph_optimization", "execution_mode", "threads"), UNTUNED))
    by = _by(found)
    assert by[UNTUNED]["winner"] and by[("extended", "sequential", 2)]["finalist"]
    fin, untuned = by[("extended", "sequential", 2)]["full"], by[UNTUNED]["full"]
    assert fin["processes"] == untuned["processes"] == tune.FINAL_ROUNDS
    assert fin["ci95_p50"][1] >= untuned["ci95_p50"][0]  # they overlap
    why = found["notes"][-1]
    assert "not faster beyond noise" in why and "graph_optimization=extended" in why
    assert f"{fin['p50_ms']:.4g} ms" in why and f"{untuned['p50_ms']:.4g} ms" in why
    assert row["warnings"] == [f"bench --tune: {why}"]
    # the same trials with a real difference in full timing: the setting wins
    found = _search(trials, full={UNTUNED: 0.0250, ("extended", "sequential", 2): 0.0200})
    assert found["settings"]["graph_optimization"] == "extended" and found["decision"]["winner"] == 1


def test_what_is_tried_does_not_depend_on_the_timings():
    flat = {k: (10.0, 1.0) for k in TRIED}
    noisy = {**flat, ("extended", "sequential", 2): (5.0, 1.0), ("all", "parallel", 2): (20.0, 1.0)}
    assert [t["settings"] for t in _search(flat)["tried"]] == [t["settings"] for t in _search(noisy)["tried"][:5]]
    assert len(_search(flat)["tried"]) == len(TRIED) and _search(flat)["decision"]["winner"] == 0


def test_knobs_that_won_alone_are_tried_together_and_kept_together_only_beyond_noise():
    trials = {UNTUNED: (10.0, 1.0), ("extended", "sequential", 2): (9.0, 1.0), ("basic", "sequential", 2): (8.0, 1.0),
              ("all", "parallel", 2): (12.0, 1.0), ("all", "sequential", 1): (9.0, 1.0), ("basic", "sequential", 1): (6.0, 1.0)}
    found = _search(trials)
    last = found["tried"][-1]
    assert last["combined"] and tuple(last["settings"].values()) == ("basic", "sequential", 1)  # each knob's best
    assert last["finalist"] and last["winner"] and found["settings"] == last["settings"]
    assert [t["settings"]["graph_optimization"] for t in found["tried"] if t.get("finalist")] == ["basic", "all", "basic"]
    # threads=1 alone is within noise of the untuned settings in full timing: it does not ride along with basic
    found = _search(trials, full={("all", "sequential", 1): 10.0, ("basic", "sequential", 1): 7.8})
    assert found["settings"] == {"graph_optimization": "basic", "execution_mode": "sequential", "threads": 2}
    # both beyond noise alone, but together no better than basic alone beyond noise: basic alone
    found = _search(trials, full={("basic", "sequential", 1): 7.9})
    assert found["settings"] == {"graph_optimization": "basic", "execution_mode": "sequential", "threads": 2}


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
    trials = {UNTUNED: (10.0, 0.9), ("extended", "sequential", 2): (5.0, 0.8), ("basic", "sequential", 2): (8.0, 0.9),
              ("all", "parallel", 2): (12.0, 0.9), ("all", "sequential", 1): (9.0, 0.9),
              ("basic", "sequential", 1): (8.5, 0.9)}  # both faster alone; together slower than basic alone
    found = _search(trials)
    assert found["settings"] == {"graph_optimization": "basic", "execution_mode": "sequential", "threads": 2}
    assert [t["passes"] for t in found["tried"]] == [True, False, True, True, True, True]
    assert found["tried"][-1]["combined"] and found["tried"][-1]["finalist"] and not found["tried"][-1].get("winner")
