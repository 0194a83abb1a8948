"""Every bad input ends with one clear line and the right exit status, never a traceback."""
import json
import shutil

import pytest
import torch

from tests.conftest import FAST, TINY, deploycmp
from tests.tiny_models import tiny_cnn


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
    _one_line_error(deploycmp("export", *TINY[:2], "--input-shape", "1,3", "--out", tmp_path / "r"), 2, "fails on inputs")
    _one_line_error(deploycmp("export", "--model", "tests.tiny_models:not_a_module", "--input-shape", "1,3,8,8",
                              "--out", tmp_path / "r"), 2, "not a torch.nn.Module")
    _one_line_error(deploycmp("export", "--model", "tests.nowhere:f", "--input-shape", "1,3,8,8", "--out", tmp_path / "r"),
                    2, "cannot import")
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"junk")
    _one_line_error(deploycmp("export", "--model", junk, "--input-shape", "1,3,8,8", "--out", tmp_path / "r"), 2,
                    "could not be loaded as a TorchScript file")
    traced = tmp_path / "traced.pt"
    torch.jit.trace(tiny_cnn().eval(), torch.zeros(1, 3, 16, 16)).save(str(traced))
    _one_line_error(deploycmp("export", "--model", traced, "--out", tmp_path / "r"), 2, "give its inputs", "--input x:")


TWO = ["--model", "tests.tiny_models:ids_and_features"]


@pytest.mark.parametrize("args, needles", [
    (["--input", "ids:int64"], ["NAME:DTYPE:SHAPE"]),
    (["--input", "ids:int4:1,16"], ["dtype 'int4'"]),
    (["--input", "ids:int64:1,0"], ["must be positive"]),
    (["--input", "ids:int64:1,16", "--input", "ids:int64:1,16"], ["given twice"]),
    (["--input", "ids:int64:1,16", "--input-shape", "1,16"], ["not both"]),
    (["--input", "tokens:int64:1,16", "--input", "feats:float32:1,8"], ["forward() takes ids, feats"]),
    (["--input", "ids:int64:1,16"], ["also needs feats"]),
    (["--input", "ids:int64:batch,sequence", "--input", "feats:float32:1,8"], ["--shape sequence="]),
    (["--input", "ids:int64:1,16", "--input", "feats:float32:1,8", "--shape", "width=4"], ["no input has a dimension"]),
    (["--input", "ids:int64:1,16", "--input", "feats:float32:1,8", "--shape", "sequence"], ["NAME=V1,V2"]),
    (["--input", "ids:int64:1,16", "--input", "feats:float32:1,8", "--value-range", "mask:0,2"], ["no input 'mask'"]),
    (["--input", "ids:int64:1,16", "--input", "feats:float32:1,8", "--value-range", "ids:5,1"], ["LOW < HIGH"]),
])
def test_bad_inputs_shapes_and_ranges(tmp_path, args, needles):
    _one_line_error(deploycmp("export", *TWO, *args, "--out", tmp_path / "r"), 2, *needles)


def test_an_integer_input_needs_a_value_range(tmp_path):
    # tiny_cnn has no embedding that could tell the range of an integer input
    _one_line_error(deploycmp("export", "--model", "tests.tiny_models:tiny_cnn", "--input", "x:int64:1,3,16,16",
                              "--out", tmp_path / "r"), 2, "--value-range x:LOW,HIGH")


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
