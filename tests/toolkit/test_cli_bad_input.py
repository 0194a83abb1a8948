"""Every bad input ends with one clear line and the right exit status, never a traceback."""
import json
import shutil

import torch

from tests.conftest import FAST, TINY, deploycmp


def _one_line_error(proc, status, *needles):
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_unknown_model_suggests_close_names(tmp_path):
    _one_line_error(deploycmp("export", "--model", "resnet1", "--out", tmp_path / "r"), 2, "unknown model 'resnet1'", "resnet18")


def test_missing_and_corrupted_weights_file(tmp_path):
    _one_line_error(deploycmp("export", "--model", "resnet18", "--weights", tmp_path / "nope.pt", "--out", tmp_path / "r"),
                    2, "weights file not found")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    _one_line_error(deploycmp("export", "--model", "resnet18", "--weights", bad, "--out", tmp_path / "r"), 2,
                    "could not be read as a state_dict")
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    _one_line_error(deploycmp("export", *TINY, "--weights", wrong, "--out", tmp_path / "r"), 2, "do not fit the model")


def test_unknown_format_and_quantization(tmp_path):
    _one_line_error(deploycmp("export", *TINY, "--formats", "onnx,coreml", "--out", tmp_path / "r"), 2, "unknown format 'coreml'")
    _one_line_error(deploycmp("export", *TINY, "--quantize", "int4", "--out", tmp_path / "r"), 2, "unknown quantization 'int4'")


def test_bad_shapes_factories_and_files(tmp_path):
    _one_line_error(deploycmp("export", *TINY[:2], "--input-shape", "1,3,x", "--out", tmp_path / "r"), 2, "--input-shape")
    _one_line_error(deploycmp("export", *TINY[:2], "--input-shape", "1,3", "--out", tmp_path / "r"), 2, "fails on input of shape")
    _one_line_error(deploycmp("export", "--model", "tests.tiny_models:not_a_module", "--input-shape", "1,3,8,8",
                              "--out", tmp_path / "r"), 2, "not a torch.nn.Module")
    _one_line_error(deploycmp("export", "--model", "tests.nowhere:f", "--input-shape", "1,3,8,8", "--out", tmp_path / "r"),
                    2, "cannot import")
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"junk")
    _one_line_error(deploycmp("export", "--model", junk, "--out", tmp_path / "r"), 2, "--input-shape")
    _one_line_error(deploycmp("export", "--model", junk, "--input-shape", "1,3,8,8", "--out", tmp_path / "r"), 2,
                    "could not be loaded as a TorchScript file")


def test_not_a_run_directory(tmp_path):
    for cmd in ("bench", "report"):
        _one_line_error(deploycmp(cmd, tmp_path), 2, "not a run directory")
    _one_line_error(deploycmp("validate", tmp_path, "--max-top1-drop", "1"), 2, "not a run directory")


def test_bad_bench_options(tiny_run):
    for batch in ("0", "-1", "1,two"):
        _one_line_error(deploycmp("bench", tiny_run, "--batch", batch), 2, "--batch")
    _one_line_error(deploycmp("bench", tiny_run, "--target", "phone"), 2, "unknown target 'phone'")
    _one_line_error(deploycmp("bench", tiny_run, "--threads", "0"), 2, "--threads")
    _one_line_error(deploycmp("validate", tiny_run), 2, "threshold")


def test_existing_run_is_not_overwritten_without_force(tiny_run):
    _one_line_error(deploycmp("export", *TINY, "--out", tiny_run), 2, "--force")


def test_verbose_shows_the_traceback(tmp_path):
    proc = deploycmp("export", "--model", "tests.nowhere:f", "--input-shape", "1,3,8,8", "--out", tmp_path / "r", "--verbose")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_corrupted_artifact_fails_only_its_row(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    onnx = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    (run / onnx["main_file"]).write_bytes(b"not onnx any more")
    proc = deploycmp("bench", run, "--force", "--batch", "1", *FAST)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    rows = json.loads((run / "results.json").read_text())["rows"]
    statuses = {r["id"]: r["status"] for r in rows if r["batch"] == 1}
    assert statuses.pop("onnx-none-onnxruntime-server-cpu-b1") == "failed"
    assert set(statuses.values()) == {"ok"}
    failed = next(r for r in rows if r["id"] == "onnx-none-onnxruntime-server-cpu-b1")
    assert "sha256" in failed["error"]
    assert "failed" in proc.stdout  # the table says why
