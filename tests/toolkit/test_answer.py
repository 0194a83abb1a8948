"""The report's answer to "which path should we ship?" on synthetic rows (no model runs)."""
from deploycmp.gate.answer import answer, answer_lines
from deploycmp.gate.validate import Policy, Thresholds

TRAINED = {"model": {"weights": "w.pt"}}


def _row(fmt, quant, p50, *, ci=0.05, size_mb=10.0, cosine=0.999, acc_delta=0.0, status="ok", target="server-cpu",
         batch=1, shape=None):
    ok = status == "ok"
    return {"id": f"{fmt}-{quant}-{target}-b{batch}", "format": fmt, "quantization": quant, "runtime": f"rt-{fmt}",
            "target": target, "batch": batch, "shape": {"batch": batch, **(shape or {})}, "status": status,
            "error": None if ok else "no converter", "size_bytes": int(size_mb * 1e6) if ok else None,
            "latency_ms": {"p50": p50, "ci95_p50": [p50 * (1 - ci), p50 * (1 + ci)]} if ok else None,
            "drift": {"cosine_min": cosine, "accuracy_delta_pp": acc_delta, "sqnr_db": 30.0} if ok else None,
            "host": {"hostname": "vm"}}


def test_the_fastest_passing_path_with_its_runner_up_margin_smallest_and_what_was_left_out():
    rows = [_row("onnx", "none", 4.0, size_mb=40), _row("onnx", "int8", 1.0, size_mb=11, cosine=0.95),
            _row("tflite", "int8", 1.5, size_mb=10, acc_delta=-0.5), _row("tflite", "none", 2.0, size_mb=40),
            _row("executorch", "dynamic", 0, status="unavailable")]
    [entry] = answer(TRAINED, rows)
    assert entry["recommendation"] == "tflite-int8-server-cpu-b1"  # onnx int8 is faster but its cosine fails
    assert entry["runner_up"] == "tflite-none-server-cpu-b1" and entry["smallest"] == "tflite-int8-server-cpu-b1"
    assert entry["margin"]["ratio"] == 2.0 / 1.5 and entry["margin"]["beyond_noise"] is True
    assert [x["row"] for x in entry["excluded"]] == ["onnx-int8-server-cpu-b1", "executorch-dynamic-server-cpu-b1"]
    [line] = answer_lines([entry], rows)
    assert line.startswith("server-cpu, batch 1: ship tflite int8 · rt-tflite (1.5 ms p50, 10 MB): the fastest of 3 "
                           "path(s) that pass cosine >= 0.99, accuracy drop <= 1 pp")
    assert "runner-up tflite none · rt-tflite 2 ms p50, 1.33x slower, beyond noise" in line
    assert "failing the thresholds: onnx int8 · rt-onnx (cosine min 0.9500 < 0.99)" in line
    assert "not measured: executorch dynamic · rt-executorch (unavailable)" in line
    assert "smallest passing" not in line  # the recommendation is the smallest too


def test_a_lead_inside_the_noise_is_called_so_and_an_accuracy_drop_fails():
    rows = [_row("onnx", "none", 1.00, ci=0.1), _row("tflite", "none", 1.05, ci=0.1),
            _row("tflite", "int8", 0.5, acc_delta=-1.5)]
    [entry] = answer(TRAINED, rows)
    assert entry["margin"]["beyond_noise"] is False and "within noise" in answer_lines([entry], rows)[0]
    assert "accuracy dropped 1.50 pp > 1 pp" in answer_lines([entry], rows)[0]


def test_one_answer_per_target_batch_and_shape_and_a_thresholds_file_changes_it():
    rows = [_row("onnx", "int8", 1.0, cosine=0.95), _row("onnx", "none", 2.0),
            _row("onnx", "int8", 3.0, cosine=0.95, target="mobile-cpu"), _row("onnx", "none", 5.0, target="mobile-cpu"),
            _row("onnx", "none", 6.0, batch=8, shape={"sequence": 64})]
    entries = answer(TRAINED, rows)
    assert [e["name"] for e in entries] == ["server-cpu, batch 1", "mobile-cpu, batch 1", "server-cpu, batch 8, sequence 64"]
    assert [e["recommendation"] for e in entries][:2] == ["onnx-none-server-cpu-b1", "onnx-none-mobile-cpu-b1"]
    loose = Policy(default=Thresholds(min_sqnr=20))
    assert [e["recommendation"] for e in answer(TRAINED, rows, loose)][:2] == [
        "onnx-int8-server-cpu-b1", "onnx-int8-mobile-cpu-b1"]


def test_random_weights_or_nothing_passing_give_no_recommendation_and_say_why():
    rows = [_row("onnx", "none", 2.0), _row("onnx", "int8", 1.0, cosine=0.5)]
    [entry] = answer({"model": {"weights": "random (BatchNorm recalibrated on 8 samples)"}}, rows)
    assert entry["recommendation"] is None and "random weights" in entry["why_none"]
    assert answer_lines([entry], rows)[0].endswith("(fastest measured: onnx int8 · rt-onnx, 1 ms p50)")
    [entry] = answer(TRAINED, rows[1:])
    assert entry["recommendation"] is None and entry["why_none"] == "no measured path passes the thresholds in force"
