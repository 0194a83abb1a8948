"""examples/pytorch_vs_tensorflow.py end to end (--quick: 32x32 inputs, short timing, batch 1 and 2): eight modes of
MobileNetV2 through the real deploycmp, the comparison it prints, its plot; and its verdict logic on its own."""
import json
import struct
import subprocess
import sys

import pytest

from examples.pytorch_vs_tensorflow import MODES, TARGET, verdict
from tests.conftest import REPO

BATCHES = (1, 2)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    out = tmp_path_factory.mktemp("pt-vs-tf") / "run"
    proc = subprocess.run([sys.executable, "-m", "examples.pytorch_vs_tensorflow", "--quick", "--batch", "1,2",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1200)
    return proc, out


def test_every_mode_has_an_ok_row_at_every_batch(example):
    proc, out = example
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = {s: json.loads((out / s / "results.json").read_text())["rows"] for s in ("pytorch", "keras")}
    for label, _, source, fmt, runtime in MODES:
        for b in BATCHES:
            found = [r for r in rows[source] if (r["format"], r["runtime"], r["target"], r["batch"]) ==
                     (fmt, runtime, TARGET, b)]
            assert len(found) == 1 and found[0]["status"] == "ok", (label, b, found)
            assert found[0]["latency_ms"]["p50"] > 0 and found[0]["drift"]["top1_agreement"] == 1.0
    by_id = {r["id"]: r for r in rows["keras"]}
    tf_fn = by_id[f"eager-none-tf-function-{TARGET}-b2"]["runtime_info"]
    assert tf_fn["traces"] == 1 and list(tf_fn["input_signature"].values()) == [[None, 32, 32, 3]]  # traced at load only
    assert "predict" in by_id[f"eager-none-keras-predict-{TARGET}-b1"]["runtime_info"]["call"]


def test_prints_the_comparison_and_a_verdict(example):
    proc, out = example
    text = proc.stdout
    for heading in ("Keras eager call / PyTorch eager", "Fastest PyTorch-side path vs fastest TF-side path",
                    "Fastest mode at each batch size:", "Claim: ", "Verdict: "):
        assert heading in text, heading
    for label, *_ in MODES:
        assert any(line.startswith(label) for line in text.splitlines()), label
    comparison = json.loads((out / "comparison.json").read_text())
    modes = comparison["modes"]
    for b in BATCHES:
        ratio = modes["Keras eager call"][str(b)]["p50_ms"] / modes["PyTorch eager"][str(b)]["p50_ms"]
        assert comparison["keras_eager_over_pytorch_eager"][str(b)] == pytest.approx(ratio)
        assert f"batch   {b}: {ratio:5.2f}" in text
    assert comparison["input"] == "32x32" and f"Verdict: {comparison['verdict']}." in text
    assert comparison["other_processes_cores"] >= 0 and "Other processes on this machine used" in text


def test_writes_a_real_png(example):
    _, out = example
    data = (out / "pytorch_vs_tensorflow.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 400 and height >= 300 and len(data) > 10_000


def test_bad_batch_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "examples.pytorch_vs_tensorflow", "--batch", "1,x"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["pytorch_vs_tensorflow: error: --batch '1,x': expected comma-separated "
                                                "positive integers, e.g. 1,8,32"]


@pytest.mark.parametrize("ratios, expected", [
    ({1: 3.0, 8: 1.5, 32: 0.8}, "HOLDS on this machine: at batch 1 PyTorch eager was 3.00x faster than the Keras eager "
                                "call (about the claimed 3x), and at batch 32 it was gone (ratio 0.80)"),
    ({1: 1.6, 8: 1.2}, "HOLDS on this machine: at batch 1 PyTorch eager was 1.60x faster than the Keras eager call "
                       "(less than 3x), and the advantage shrank to 1.20x at batch 8"),
    ({1: 5.0, 32: 6.0}, "holds only in part on this machine: at batch 1 PyTorch eager was 5.00x faster than the Keras "
                        "eager call (more than the claimed 3x), but it did not shrink (6.00x at batch 32)"),
    ({1: 0.9, 8: 2.0}, "does NOT hold on this machine: at batch 1 the Keras eager call was not slower than PyTorch "
                       "eager (ratio 0.90)"),
    ({1: None, 8: 2.0, 32: 1.0}, "HOLDS on this machine: at batch 8 PyTorch eager was 2.00x faster than the Keras eager "
                                 "call (less than 3x), and at batch 32 it was gone (ratio 1.00)"),
    ({1: None}, "cannot tell: no batch size has both a Keras eager call row and a PyTorch eager row"),
])
def test_verdict(ratios, expected):
    assert verdict(ratios) == expected


def test_failed_and_missing_rows_are_shown_with_their_reason_never_invented(tmp_path):
    """--reuse on hand-made run directories: one ok row, one failed row, the other modes absent."""
    def row(runtime, fmt, status, p50=None, error=None):
        return {"id": f"{fmt}-none-{runtime}-{TARGET}-b1", "format": fmt, "quantization": "none", "runtime": runtime,
                "target": TARGET, "batch": 1, "status": status, "error": error, "threads": 2,
                "target_description": "host CPU", "latency_ms": {"p50": p50} if p50 else None}

    for source, shape, layout, rows in (
            ("pytorch", [1, 3, 32, 32], "NCHW", [row("torch", "eager", "ok", p50=4.0)]),
            ("keras", [1, 32, 32, 3], "NHWC", [row("keras", "eager", "timeout", error="row took over 300 s")])):
        (tmp_path / source).mkdir()
        (tmp_path / source / "manifest.json").write_text(json.dumps(
            {"model": {"input_shape": shape, "layout": layout, "weights": "random"}}))
        (tmp_path / source / "results.json").write_text(json.dumps({"rows": rows}))
    proc = subprocess.run([sys.executable, "-m", "examples.pytorch_vs_tensorflow", "--reuse", "--batch", "1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("pytorch_vs_tensorflow: error: 7 of 8 mode/batch cells have no ok "
                                                    "row (listed under the table)")
    out = proc.stdout
    assert "Keras eager call at batch 1: timeout: row took over 300 s" in out
    assert "LiteRT at batch 1: missing: no such row in results.json" in out
    assert "batch   1: n/a (Keras eager call has no ok row)" in out
    assert "Verdict: cannot tell" in out
    modes = json.loads((tmp_path / "comparison.json").read_text())["modes"]
    assert modes["PyTorch eager"]["1"]["p50_ms"] == 4.0 and modes["Keras eager call"]["1"]["p50_ms"] is None
    assert (tmp_path / "pytorch_vs_tensorflow.png").stat().st_size > 0
