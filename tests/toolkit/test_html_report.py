"""deploycmp report --format html: one self-contained page, rendered by a real browser; the Pareto front, host
grouping and the plots' fallbacks on synthetic rows (no model runs)."""
import csv
import io
import json
import os
import re
import shutil
import subprocess
from html import escape

import numpy as np
import pytest

from tests.conftest import deploycmp
from deploycmp.report import plots
from deploycmp.report.html import html
from deploycmp.report.write import hosts_of, warnings_of

EVIL = '<script>alert("x")</script> & more'


@pytest.fixture(scope="module")
def html_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run with an unavailable and a failed row added, reported as html, csv and md."""
    run = tmp_path_factory.mktemp("html") / "run"
    shutil.copytree(tiny_run, run)
    results = json.loads((run / "results.json").read_text())
    template = results["rows"][-1]
    empty = {"latency_ms": None, "latency_per_item_ms": None, "throughput_per_s": None, "drift": None,
             "size_bytes": None, "cold_start_ms": None, "peak_rss_mb": None}
    results["rows"] += [
        {**template, **empty, "id": "onnx-fp16-onnxruntime-server-cpu-b1", "quantization": "fp16", "batch": 1,
         "status": "unavailable", "error": "onnx: no fp16 export in this version"},
        {**template, **empty, "id": "onnx-int8-onnxruntime-server-cpu-b1", "quantization": "int8", "batch": 1,
         "status": "failed", "error": f"RuntimeError: {EVIL}"},
    ]
    (run / "results.json").write_text(json.dumps(results))
    proc = deploycmp("report", run, "--format", "html,csv,md")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run, results


def test_report_writes_html_csv_and_markdown(html_run):
    run, results = html_run
    rows = results["rows"]
    page = (run / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for row in rows:
        assert escape(row["id"]) in page, row["id"]
        path = f"<td class=\"left\">{row['format']}</td><td class=\"left\">{row['quantization']}</td>"
        assert path in page, path
    manifest = json.loads((run / "manifest.json").read_text())
    warnings = warnings_of(manifest, rows)
    assert any("failed" in w for w in warnings) and any("unavailable" in w for w in warnings)
    assert all(escape(w) in page for w in warnings)
    assert "onnx: no fp16 export in this version" in page and escape(EVIL) in page and "<script" not in page
    assert page.count("<svg") == 4  # latency vs size, distributions, batch scaling (batch 1, 2), drift
    assert "Pareto-optimal" in page and "quartiles of the timed calls" in page  # rows keep every call's time
    table = list(csv.DictReader(io.StringIO((run / "report.csv").read_text())))
    assert len(table) == len(rows) and "latency_ms.p50" in table[0]
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    assert float(table[0]["latency_ms.p50"]) == pytest.approx(rows[0]["latency_ms"]["p50"])
    assert "| onnx | fp16 |" in (run / "report.md").read_text()


def test_html_references_nothing_outside_itself(html_run):
    page = (html_run[0] / "report.html").read_text()
    assert not re.search(r"<link|<script|<img|<iframe|<object|@import", page, re.IGNORECASE)
    assert not re.search(r"\ssrc\s*=", page, re.IGNORECASE)
    refs = re.findall(r'href\s*=\s*"([^"]*)"', page)  # inside the SVGs: their own ids, the colour bar's image
    assert refs and all(ref.startswith(("#", "data:image/png;base64,")) for ref in refs), "a link leaves the page"
    assert all(ref.strip("'\" ").startswith("#") for ref in re.findall(r"url\(([^)]*)\)", page))
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page


@pytest.fixture(scope="session")  # session: checked before the module's run is made, so a skip costs nothing
def chromium():
    """The chromium executable; a skip where it is missing, a failure if DEPLOYCMP_REQUIRE_CHROMIUM=1 (as in CI)."""
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("DEPLOYCMP_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is not on PATH but DEPLOYCMP_REQUIRE_CHROMIUM=1 requires rendering the HTML report")
        pytest.skip("chromium is not on PATH: the HTML report is not rendered (set DEPLOYCMP_REQUIRE_CHROMIUM=1 "
                    "to fail instead)")
    return exe


def _screenshot(exe, page, png, tmp_path):
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={png}",
                           "--window-size=1400,4000", page.as_uri()], capture_output=True, text=True, timeout=120,
                          check=False)
    assert png.is_file(), proc.stdout + proc.stderr
    from PIL import Image  # a dependency of matplotlib

    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def test_html_renders_in_chromium_with_colourful_plots(chromium, html_run, tmp_path):
    page = html_run[0] / "report.html"
    img = _screenshot(chromium, page, tmp_path / "report.png", tmp_path)
    text_only = tmp_path / "no-plots.html"
    text_only.write_text(re.sub(r"<svg.*?</svg>", "", page.read_text(), flags=re.DOTALL))
    bare = _screenshot(chromium, text_only, tmp_path / "no-plots.png", tmp_path)

    def colourful(pixels):  # share of clearly coloured pixels (channels far apart), not grey or black text
        return float(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).mean())

    assert (img.min(axis=2) < 235).mean() > 0.02, "the page rendered (nearly) blank"
    assert len(np.unique(img.reshape(-1, 3) @ np.array([1 << 16, 1 << 8, 1]))) > 1000
    assert colourful(img) > 0.005 and colourful(img) > 5 * colourful(bare), (colourful(img), colourful(bare))


# Synthetic rows: no model runs.

def _row(id, size_mb, p50, *, host="vm", target="server-cpu", batch=1, status="ok", quant="none", fmt="onnx",
         sqnr=40.0, identical=False, per_call=None):
    ok = status == "ok"
    lat = {"p50": p50, "p90": p50 * 1.2, "p99": p50 * 1.5, "mean": p50, "std": 0.1, "min": p50 * 0.9,
           "max": p50 * 2, "ci95_p50": [p50 * 0.95, p50 * 1.05], "runs": 50}
    if per_call:
        lat["per_call"] = per_call
    return {
        "id": id, "model": "m", "format": fmt, "quantization": quant, "runtime": "onnxruntime", "target": target,
        "target_description": f"{target} on {host}", "batch": batch, "status": status,
        "error": None if ok else "boom <b>", "size_bytes": int(size_mb * 1e6) if ok else None,
        "latency_ms": lat if ok else None, "latency_per_item_ms": p50 / batch if ok else None,
        "throughput_per_s": batch * 1e3 / p50 if ok else None, "cold_start_ms": None, "peak_rss_mb": None,
        "drift": None if not ok else {
            "max_abs": 0.0 if identical else 0.01, "rel_l2": 0.0 if identical else 10 ** (-sqnr / 20),
            "sqnr_db": None if identical else sqnr, "identical": identical, "top1_agreement": 1.0},
        "warnings": [], "host": {"hostname": host, "cpu": f"{host}-cpu", "cpu_count": 8, "usable_cpus": 4,
                                 "python": "3.11.7"},
        "versions": {"numpy": "2.4.6", "onnxruntime": "1.32.0" if host == "vm" else "1.31.0"},
    }


MANIFEST = {
    "model": {"name": "m", "framework": "torch", "weights": "random", "input_shape": [1, 3, 8, 8], "layout": "NCHW"},
    "data": {"samples": 8, "kind": "random"}, "warnings": ["m has random weights"], "tool": {"version": "0.1.0"},
    "environment": {"host": {"hostname": "vm"}, "versions": {}, "command": ["deploycmp", "export"]},
}


def test_pareto_keeps_rows_nothing_beats_on_both_size_and_latency():
    a, b, c, d, e = (_row("a", 10, 5.0), _row("b", 20, 3.0), _row("c", 20, 6.0), _row("d", 5, 10.0),
                     _row("e", 10, 5.0))
    assert [r["id"] for r in plots.pareto([a, b, c, d, e])] == ["d", "a", "e", "b"]  # c: b is as big and faster
    assert [r["id"] for r in plots.pareto([_row("x", 1, 1.0), _row("y", 2, 2.0)])] == ["x"]
    # one front per host, target and batch: a slow phone row is not beaten by the server's rows
    phone, big_batch = _row("p", 20, 50.0, target="mobile-cpu"), _row("b2", 20, 4.0, batch=2)
    fronts = plots.pareto_fronts([a, b, c, phone, big_batch, _row("f", 1, 0.1, status="failed")])
    assert {key: [r["id"] for r in rows] for key, rows in fronts.items()} == {
        ("vm", "server-cpu", 1): ["a", "b"], ("vm", "mobile-cpu", 1): ["p"], ("vm", "server-cpu", 2): ["b2"]}


def test_hosts_of_keeps_order_and_puts_the_runs_own_host_first():
    rows = [_row("1", 1, 1, host="pi"), _row("2", 1, 1, host="vm"), _row("3", 1, 1, host="pi"), {"id": "4"}]
    assert {h: [r["id"] for r in rs] for h, rs in hosts_of(rows).items()} == {
        "pi": ["1", "3"], "vm": ["2"], "unknown host": ["4"]}
    assert list(hosts_of(rows, first="vm")) == ["vm", "pi", "unknown host"]
    assert list(hosts_of(rows, first="absent")) == ["pi", "vm", "unknown host"]


def test_two_hosts_single_batch_no_per_call_and_a_failed_row():
    rows = [_row("onnx-none", 40, 30.0, identical=True), _row("onnx-int8", 10, 20.0, quant="int8", sqnr=30.0),
            _row("onnx-fp16", 20, 1.0, quant="fp16", status="failed"),
            _row("onnx-none", 40, 80.0, host="pi5", identical=True),
            _row("onnx-int8", 10, 60.0, host="pi5", quant="int8")]
    page = html(MANIFEST, {"schema": 1, "rows": rows, "environment": MANIFEST["environment"]})
    # one table per host, headed by hostname, CPU and cores; the failed row's reason in the table, escaped
    assert "<h3>vm: vm-cpu (ISA extensions not recorded), 4 of 8 CPUs usable</h3>" in page
    assert "<h3>pi5: pi5-cpu (ISA extensions not recorded), 4 of 8 CPUs usable</h3>" in page
    assert page.index("<h3>vm:") < page.index("<h3>pi5:")
    assert "failed: boom &lt;b&gt;" in page and "boom <b>" not in page
    # only ok rows are drawn; every plotted element carries its host and row id
    for plot in ("latency-size", "latency-boxes", "drift-bars"):
        for host, row_id in (("vm", "onnx-none"), ("vm", "onnx-int8"), ("pi5", "onnx-none"), ("pi5", "onnx-int8")):
            assert f'id="{plot}:{host}:{row_id}"' in page, (plot, host, row_id)
        assert f'id="{plot}:vm:onnx-fp16"' not in page
    assert "single batch size (1)" in page and page.count("<svg") == 3
    assert "No row of this run stored per-call timings" in page
    assert "onnx int8 · onnxruntime · server-cpu · b1 @ pi5" in page  # Pareto list names the host
    assert plots.label(rows[3], with_host=True).endswith("@ pi5")
    assert "1.31.0" in page and "1.32.0" in page  # versions per host in the environment table
    assert escape("m has random weights") in page and "1 row(s) failed" in page


def test_per_call_boxes_and_batch_scaling():
    calls = [1.0, 2.0, 3.0, 4.0, 100.0]
    with_calls, without = _row("a", 1, 3.0, per_call=calls), _row("b", 1, 3.0)
    stats = plots._box_stats(with_calls, False)
    assert (stats["med"], stats["q1"], stats["q3"], stats["fliers"].tolist()) == (3.0, 2.0, 4.0, [100.0])
    fallback = plots._box_stats(without, False)
    assert [fallback[k] for k in ("med", "q1", "q3", "whislo", "whishi")] == pytest.approx(
        [3.0, 3.0, 3.6, 2.7, 4.5]) and fallback["fliers"] == [6.0]  # p50, p50, p90, min, p99; max
    assert plots.latency_boxes([with_calls, without]).startswith("<svg")
    page = html(MANIFEST, {"schema": 1, "rows": [with_calls, without]})
    assert "1 row(s) have no per-call timings" in page
    b1, b4 = _row("b1", 1, 2.0, batch=1), _row("b4", 1, 4.0, batch=4)
    assert list(plots.batch_paths([b1, b4, _row("x", 1, 1.0, fmt="tflite")])) == [
        ("vm", "onnx", "none", "onnxruntime", "server-cpu", ())]
    assert plots.batch_scaling([b1, b4]).startswith("<svg") and plots.batch_scaling([b1]) is None
    page = html(MANIFEST, {"schema": 1, "rows": [b1, b4, _row("t", 1, 1.0, fmt="tflite", batch=2)]})
    assert page.count("<svg") == 4


def _seq(id, sequence, p50, batch=1, fmt="onnx"):
    return {**_row(id, 1, p50, batch=batch, fmt=fmt), "shape": {"sequence": sequence}}


def test_sequence_sweep_plots_latency_and_sequences_per_second_and_says_where_a_path_stops_scaling():
    # onnx: 4x the tokens for 2x the time, then 4x for 8x (tokens/s halves): it stops scaling at 256
    onnx = [_seq("o16", 16, 1.0), _seq("o64", 64, 2.0), _seq("o256", 256, 16.0)]
    tflite = [_seq("t16", 16, 1.0, fmt="tflite"), _seq("t64", 64, 3.0, fmt="tflite")]
    rows = onnx + tflite + [_seq("b2", 16, 1.5, batch=2)]  # batch 2 at one sequence only: no line
    assert plots.swept_dims(rows) == ["sequence"]
    assert list(plots.dim_paths(rows, "sequence")) == [("vm", "onnx", "none", "onnxruntime", "server-cpu", 1),
                                                        ("vm", "tflite", "none", "onnxruntime", "server-cpu", 1)]
    steps = plots.scaling(onnx, "sequence")
    assert [(s["dim_ratio"], s["latency_ratio"], s["stops_scaling"]) for s in steps] == [(4, 2, False), (4, 8, True)]
    assert steps[1]["rate_from"] == pytest.approx(32_000) and steps[1]["rate_to"] == pytest.approx(16_000)
    lines = plots.scaling_lines(rows)
    assert lines[0] == ("onnx none · onnxruntime · server-cpu · b1: 16->64: sequence x4, latency x2; 64->256: "
                        "sequence x4, latency x8; stops scaling at sequence 256 (tokens/s 32,000 -> 16,000)")
    assert lines[1].endswith("scales to sequence 64 (tokens/s never falls by more than 10%)")
    svg = plots.dim_scaling(rows, "sequence")
    assert 'id="sequence-scaling:vm:onnx-none-onnxruntime-server-cpu-b1"' in svg
    assert 'id="sequence-scaling:vm:tflite-none-onnxruntime-server-cpu-b1:rate"' in svg
    page = html(MANIFEST, {"schema": 1, "rows": rows})
    assert "<h3>Sequence scaling</h3>" in page and escape(lines[0]) in page
    assert "sequences per second (right)" in page
    assert plots.swept_dims(onnx[:1] + tflite[:1]) == [] and plots.dim_scaling(onnx[:1], "sequence") is None


def test_nothing_to_plot_when_no_row_is_ok():
    page = html(MANIFEST, {"schema": 1, "rows": [_row("f", 1, 1.0, status="failed")]})
    assert "<svg" not in page and "nothing to plot" in page and "failed: boom" in page
