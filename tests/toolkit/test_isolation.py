"""A worker that raises, segfaults or hangs spoils only its own row; re-runs measure only missing rows."""
import json

from tests.conftest import FAST, deploycmp, rows_by_id

MISBEHAVING = ["--model", "tests.tiny_models:misbehaving", "--input-shape", "1,3,16,16", "--samples", "4"]


def _export(tmp_path):
    out = tmp_path / "run"
    proc = deploycmp("export", *MISBEHAVING, "--formats", "torchscript,onnx", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


# the rows these tests check: every runtime of the exports but torch-compile (its compile is 4 s a row of nothing
# checked here; its rows are tests/exporters/test_aoti_and_compile.py's and the tiny run's)
NO_COMPILE = ["--runtimes", "torch,torchscript,onnxruntime"]


def test_segfault_and_hang_spoil_only_their_row(tmp_path):
    out = _export(tmp_path)
    proc = deploycmp("bench", out, *FAST, *NO_COMPILE, env={"DEPLOYCMP_TEST_MISBEHAVE": "segfault"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    rows = rows_by_id(out)
    eager = rows.pop("eager-none-torch-server-cpu-b1")
    assert eager["status"] == "crashed" and "SIGSEGV" in eager["error"]
    assert {r["status"] for r in rows.values()} == {"ok"}

    proc = deploycmp("bench", out, *FAST, *NO_COMPILE, "--force", "--timeout", "10",
                     env={"DEPLOYCMP_TEST_MISBEHAVE": "hang"})
    assert proc.returncode == 1
    rows = rows_by_id(out)
    assert rows.pop("eager-none-torch-server-cpu-b1")["status"] == "timeout"
    assert {r["status"] for r in rows.values()} == {"ok"}

    # --verbose prints the failed worker's log: its traceback, not only the one-line reason
    (out / "results" / "eager-none-torch-server-cpu-b1.json").unlink()
    proc = deploycmp("bench", out, *FAST, *NO_COMPILE, "--verbose", env={"DEPLOYCMP_TEST_MISBEHAVE": "raise"})
    assert proc.returncode == 1
    assert "logs/eager-none-torch-server-cpu-b1.log" in proc.stderr and "RuntimeError: misbehaving on purpose" in proc.stderr
    assert "Traceback" in proc.stderr


def test_rerun_measures_only_missing_rows(tmp_path):
    out = _export(tmp_path)
    assert deploycmp("bench", out, *FAST, *NO_COMPILE).returncode == 0
    files = sorted((out / "results").glob("*.json"))
    before = {p.name: p.read_text() for p in files}
    files[0].unlink()
    assert deploycmp("bench", out, *FAST, *NO_COMPILE).returncode == 0
    after = {p.name: p.read_text() for p in (out / "results").glob("*.json")}
    assert set(after) == set(before)
    changed = [n for n in before if before[n] != after[n]]
    assert changed == [files[0].name]
    assert deploycmp("bench", out, *FAST, *NO_COMPILE, "--force").returncode == 0
    forced = {p.name: p.read_text() for p in (out / "results").glob("*.json")}
    assert all(forced[n] != after[n] for n in after)
    assert len(json.loads((out / "results.json").read_text())["rows"]) == len(before)


def test_crashing_converter_spoils_only_its_artifact(tmp_path):
    out = tmp_path / "run"
    proc = deploycmp("run", *MISBEHAVING, "--formats", "torchscript,onnx", "--out", out, *FAST, "--no-cache",
                     env={"DEPLOYCMP_TEST_MISBEHAVE": "segfault-trace"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    artifacts = {a["id"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert artifacts["torchscript-none"]["status"] == "export_failed"
    assert "SIGSEGV" in artifacts["torchscript-none"]["error"]
    assert not (out / "artifacts" / "torchscript-none").exists()  # nothing half-written left behind
    rows = rows_by_id(out)
    assert rows["torchscript-none-torchscript-server-cpu-b1"]["status"] == "export_failed"
    assert rows["onnx-none-onnxruntime-server-cpu-b1"]["status"] == "ok"
    assert rows["eager-none-torch-server-cpu-b1"]["status"] == "ok"
