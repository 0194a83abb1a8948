"""Issue 14: the bad-input corpus. Every bad input ends with one clear line on stderr naming the problem, the
documented exit status (2: the input is wrong; 1: a failure while doing the work), no traceback, and nothing left
that looks finished (no manifest.json after a refused export, no results for a refused bench). Where deploycmp can
go on (a corrupt image in an image folder, a data file with fewer samples than asked) it warns, and the manifest and
the report count it. Paths with spaces and non-ASCII characters work.

Most cases run the command line in this process (fast; it never imports TensorFlow here); Keras cases, the path
case and the file-system cases run it in a fresh process."""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import FAST, REPO, TINY, deploycmp
from tests.tiny_models import tiny_cnn

# an export that makes no artifact, so runs no export worker (TorchScript has no int8: the row is unavailable);
# the source model, its reference inputs and outputs and the manifest are still written
FREE = ["--formats", "torchscript", "--quantize", "int8"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args) -> Result:
    """The command line in this process: main() with stdout and stderr captured, its exit status returned."""
    from deploycmp import cli as command_line

    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            command_line.main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return Result(code, out.getvalue(), err.getvalue())


def refused(proc, status: int, *needles: str) -> str:
    """Exit `status`, no traceback, exactly one `deploycmp: error:` line on stderr, holding every needle."""
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("deploycmp: ")]
    assert len(lines) == 1 and lines[0].startswith("deploycmp: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def export_refused(tmp_path: Path, status: int, needles: list, *args) -> str:
    """`export ARGS` into a new --out folder under tmp_path is refused, and leaves no manifest."""
    out = tmp_path / f"r{len(list(tmp_path.glob('r*')))}"
    line = refused(cli("export", *args, "--out", out), status, *needles)
    assert not (out / "manifest.json").exists()
    return line


def no_rows(run: Path) -> None:
    assert not (run / "results.json").exists() and not list(run.glob("results/*.json"))


def copy_run(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# --- shared run directories -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """The tiny CNN exported to ONNX: a run directory that has not been measured."""
    out = tmp_path_factory.mktemp("corpus") / "exported"
    proc = cli("export", *TINY, "--formats", "onnx", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="session")
def measured(exported, tmp_path_factory):
    """The same run measured at batch 1 (an eager and an ONNX row)."""
    out = tmp_path_factory.mktemp("corpus") / "measured"
    shutil.copytree(exported, out)
    proc = cli("bench", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """Model and weights files: good ones and each kind of broken one."""
    d = tmp_path_factory.mktemp("files")
    model = tiny_cnn().eval()
    x = torch.zeros(1, 3, 16, 16)
    torch.jit.trace(model, x).save(str(d / "traced.pt"))
    torch.export.save(torch.export.export(model, (x,)), str(d / "exported.pt2"))
    torch.save(model.state_dict(), d / "state.pt")
    for name in ("traced.pt", "exported.pt2", "state.pt"):
        data = (d / name).read_bytes()
        (d / f"truncated-{name}").write_bytes(data[:len(data) // 2])
    shutil.copy(d / "traced.pt", d / "torchscript-as.pt2")  # another format under the right extension
    shutil.copy(d / "state.pt", d / "state-as-model.pt")
    torch.save([1, 2, 3], d / "list.pt")
    torch.save({"conv.weight": torch.zeros(1)}, d / "wrong.pt")
    (d / "junk.pt").write_bytes(b"junk")
    (d / "empty.pt").write_bytes(b"")
    return d


@pytest.fixture(scope="session")
def keras_files(tmp_path_factory):
    from tests.tiny_keras import make_bad

    return make_bad(tmp_path_factory.mktemp("keras"))


# --- names --------------------------------------------------------------------------------------------------------

def test_unknown_model_suggests_close_names(tmp_path):
    export_refused(tmp_path, 2, ["unknown model 'resnet1'", "resnet18"], "--model", "resnet1")


def test_unknown_format_and_quantization(tmp_path):
    export_refused(tmp_path, 2, ["unknown format 'coreml'"], *TINY, "--formats", "onnx,coreml")
    export_refused(tmp_path, 2, ["unknown quantization 'int4'"], *TINY, "--quantize", "int4")


def test_unknown_target(exported):
    refused(cli("bench", exported, "--target", "phone"), 2, "unknown target 'phone'")
    no_rows(exported)


# --- flags ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["--batch", "0"], ["--batch", "positive"]),
    (["--batch", "1,,2"], ["--batch", "empty item"]),
    (["--batch", "1,two"], ["--batch"]),
    (["--calibration-samples", "0"], ["--calibration-samples", "not 0"]),
    (["--input-shape", "1,3,x"], ["--input-shape"]),
    (["--input-shape", "1,3"], ["fails on inputs"]),
    (["--input-shape", "1,3,16,16", "--num-classes", "0"], ["--num-classes"]),
])
def test_malformed_export_flags(tmp_path, args, needles):
    export_refused(tmp_path, 2, needles, "--model", "tests.tiny_models:tiny_cnn", "--input-shape", "1,3,16,16",
                   "--samples", "8", *FREE, *args)


def test_a_refused_export_leaves_nothing_in_the_way(tmp_path):
    out = tmp_path / "r"
    refused(cli("export", "--model", "tests.tiny_models:tiny_cnm", "--input-shape", "1,3,16,16", "--out", out), 2,
            "tiny_cnm")
    proc = cli("export", *TINY, *FREE, "--out", out)  # the command the user meant
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("samples", ["-1", "0"])
def test_samples_must_be_positive(tmp_path, samples):
    export_refused(tmp_path, 2, ["--samples"], "--model", "tests.tiny_models:tiny_cnn", "--input-shape",
                   "1,3,16,16", "--samples", samples, *FREE)


@pytest.mark.parametrize("args", [
    ["--input-shape", "64,3,100000,100000", "--samples", "8"],  # 120 GB a sample
    ["--input-shape", "1,3,16,16", "--samples", "100000000"],     # 3 KB a sample, a hundred million of them
])
def test_inputs_larger_than_memory_are_refused_before_allocating(tmp_path, args):
    # without the check numpy would be asked for terabytes: a MemoryError (exit 1, 'unexpected error') at best
    line = export_refused(tmp_path, 2, ["need", "of memory", "available", "--samples"],
                          "--model", "tests.tiny_models:tiny_cnn", *FREE, *args)
    assert "B of memory" in line


@pytest.mark.parametrize("args, needles", [
    (["--batch", "0"], ["--batch"]),
    (["--batch", "-1"], ["--batch"]),
    (["--batch", "1,two"], ["--batch"]),
    (["--batch", "1,,2"], ["--batch", "empty item"]),
    (["--threads", "0"], ["--threads"]),
    (["--min-runs", "0"], ["--min-runs"]),
    (["--thresholds", "no-such-thresholds.toml"], ["no-such-thresholds.toml", "cannot read thresholds file"]),
])
def test_malformed_bench_flags(exported, args, needles):
    refused(cli("bench", exported, *args), 2, *needles)
    no_rows(exported)


def test_validate_without_a_threshold(measured, tmp_path):
    refused(cli("validate", measured, "--junit", tmp_path / "j.xml"), 2, "threshold")
    assert not (tmp_path / "j.xml").exists()


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
    export_refused(tmp_path, 2, needles, *TWO, *args)


def test_an_integer_input_needs_a_value_range(tmp_path):
    # tiny_cnn has no embedding that could tell the range of an integer input
    export_refused(tmp_path, 2, ["--value-range x:LOW,HIGH"], "--model", "tests.tiny_models:tiny_cnn",
                   "--input", "x:int64:1,3,16,16")


def test_factories_that_do_not_give_a_model(tmp_path):
    export_refused(tmp_path, 2, ["not a torch.nn.Module"], "--model", "tests.tiny_models:not_a_module",
                   "--input-shape", "1,3,8,8")
    export_refused(tmp_path, 2, ["cannot import"], "--model", "tests.nowhere:f", "--input-shape", "1,3,8,8")


def test_verbose_shows_the_traceback(tmp_path):
    proc = cli("export", "--model", "tests.nowhere:f", "--input-shape", "1,3,8,8", "--out", tmp_path / "r", "--verbose")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


# --- weights files --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, needles", [
    ("nope.pt", ["weights file not found"]),
    ("junk.pt", ["could not be read as a state_dict"]),
    ("list.pt", ["holds list, not a state_dict"]),
    ("wrong.pt", ["do not fit the model"]),
    ("truncated-state.pt", ["could not be read as a state_dict"]),
    ("empty.pt", ["is empty"]),
])
def test_bad_weights_files(tmp_path, model_files, name, needles):
    export_refused(tmp_path, 2, [str(model_files / name), *needles], *TINY, "--weights", model_files / name)


@pytest.mark.parametrize("name, needle", [("nope.pt", "weights file not found"),
                                          ("junk.pt", "could not be read as a state_dict")])
def test_bad_weights_for_a_torchvision_model(tmp_path, model_files, name, needle):
    export_refused(tmp_path, 2, [needle], "--model", "resnet18", "--weights", model_files / name)


class _Payload:
    """Pickled as a call to open(marker, 'w'): loading it without weights_only creates the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"head.weight": _Payload(str(marker))}, evil)
    export_refused(tmp_path, 2, ["could run code", "weights_only=True"], *TINY, "--weights", evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the proof that the file does run code when loaded unsafely
    assert marker.exists()


# --- model files ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, needles", [
    ("junk.pt", ["could not be loaded as a TorchScript file"]),
    ("truncated-traced.pt", ["could not be loaded as a TorchScript file"]),
    ("state-as-model.pt", ["could not be loaded as a TorchScript file", "--weights FILE"]),
    ("truncated-exported.pt2", ["could not be loaded as a torch.export .pt2 file"]),
    ("torchscript-as.pt2", ["could not be loaded as a torch.export .pt2 file"]),
])
def test_broken_model_files(tmp_path, model_files, name, needles):
    export_refused(tmp_path, 2, needles, "--model", model_files / name, "--input-shape", "1,3,16,16")


def test_a_torchscript_file_needs_its_inputs(tmp_path, model_files):
    export_refused(tmp_path, 2, ["give its inputs", "--input x:"], "--model", model_files / "traced.pt")


@pytest.mark.parametrize("name, content, what", [
    ("model.onnx", b"\x08\x07truncated onnx", "an ONNX file"),
    ("model.tflite", b"PK\x03\x04 a zip, not a flatbuffer", "a TFLite file"),
    ("model.pte", b"", "an ExecuTorch program"),
])
def test_deployment_files_are_not_models_to_export_from(tmp_path, name, content, what):
    f = tmp_path / name
    f.write_bytes(content)
    export_refused(tmp_path, 2, [what, "not a model deploycmp can export from"], "--model", f,
                   "--input-shape", "1,3,16,16")


def test_keras_file_with_a_lambda_layer_is_refused_by_safe_mode(tmp_path, keras_files):
    out = tmp_path / "r"
    refused(deploycmp("export", "--model", keras_files["lambda"], "--formats", "onnx", "--samples", "8", "--out", out),
            2, "Lambda layer", "safe mode")
    assert not (out / "manifest.json").exists()


def test_savedmodel_without_its_variables(tmp_path, keras_files):
    out = tmp_path / "r"
    refused(deploycmp("export", "--model", keras_files["no_variables"], "--input-shape", "1,16,16,3", "--formats",
                      "onnx", "--samples", "8", "--out", out), 2, "without its variables/")
    assert not (out / "manifest.json").exists()


def test_a_kerashub_preset_that_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty"))
    # a Kaggle handle is looked up in the local cache before TensorFlow is imported, so in this process
    export_refused(tmp_path, 2, ["not in the local KerasHub cache", "does not download"], "--model",
                   "keras-hub:kaggle://keras/bert/keras/bert_tiny_en_uncased/3")
    assert "tensorflow" not in sys.modules


def test_savedmodel_with_a_link_outside_it_is_refused(tmp_path, keras_files):
    model = tmp_path / "savedmodel"
    shutil.copytree(keras_files["savedmodel"], model)
    (tmp_path / "secret.txt").write_text("not part of the model")
    (model / "assets" / "vocab.txt").symlink_to(tmp_path / "secret.txt")
    # refused before TensorFlow is imported, so in this process
    export_refused(tmp_path, 2, ["assets/vocab.txt", "outside the SavedModel directory"], "--model", model,
                   "--input-shape", "1,16,16,3", "--formats", "onnx")
    assert "tensorflow" not in sys.modules


# --- --data -----------------------------------------------------------------------------------------------------------

def _npz(path: Path, n: int = 40, **arrays) -> Path:
    arrays.setdefault("x", np.random.default_rng(0).standard_normal((n, 3, 16, 16)).astype(np.float32))
    np.savez(path, **arrays)
    return path


def _with(value, index=(3, 0, 1, 2)):
    x = np.random.default_rng(0).standard_normal((40, 3, 16, 16)).astype(np.float32)
    x[index] = value
    return x


@pytest.mark.parametrize("arrays, needles", [
    ({"z": np.ones((40, 3, 16, 16), np.float32), "x": None}, ["no array named 'x'", "found: z"]),
    ({"x": np.ones((40, 3, 16, 16), np.int64)}, ["x is int64, the model takes float32"]),
    ({"x": _with(np.nan)}, ["x holds 1 NaN or infinite value(s)"]),
    ({"x": _with(np.inf)}, ["x holds 1 NaN or infinite value(s)"]),
    ({"x": np.ones((40, 3, 8, 8), np.float32)}, ["samples of shape (3, 8, 8)", "(3, 16, 16)"]),
    ({"y": -np.ones(40, np.int64)}, ["y must hold one class index per sample"]),
    ({"y": np.full(40, 0.5)}, ["y must hold one class index per sample"]),
])
def test_bad_npz_data(tmp_path, arrays, needles):
    f, arrays = tmp_path / "data.npz", dict(arrays)
    if arrays.get("x", 0) is None:
        arrays.pop("x")
        np.savez(f, **arrays)
    else:
        _npz(f, **arrays)
    export_refused(tmp_path, 2, needles, *TINY, "--data", f, *FREE)


def test_npz_data_that_is_no_npz(tmp_path):
    f = tmp_path / "data.npz"
    f.write_bytes(b"not a zip")
    export_refused(tmp_path, 2, ["not a readable .npz file"], *TINY, "--data", f, *FREE)


def test_labels_out_of_range_of_the_model_classes(tmp_path):
    f = _npz(tmp_path / "data.npz", y=np.arange(40) % 15)  # the tiny CNN has 10 classes
    export_refused(tmp_path, 2, ["labels run from 0 to 14", "10 classes"], *TINY, "--data", f, *FREE)


def test_npz_with_fewer_samples_than_asked_warns_and_goes_on(tmp_path):
    f = _npz(tmp_path / "data.npz", n=12)
    out = tmp_path / "r"
    proc = cli("export", *TINY, "--data", f, *FREE, "--out", out)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "holds 12 samples, fewer than the 40 asked" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ")
    data = json.loads((out / "manifest.json").read_text())["data"]
    assert data["samples"] == 6 and data["split"]["calibration"]["samples"] == 6
    assert any("fewer than the 40 asked" in w for w in data["warnings"])


def _image_folder(root: Path, per_class: int = 3) -> Path:
    for i, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for j in range(per_class):
            Image.new("RGB", (20, 20), (40 * j, 100 * i, 0)).save(root / cls / f"{j}.png")
    return root


def test_image_folder_with_a_corrupt_image_warns_skips_and_counts_it(tmp_path):
    images = _image_folder(tmp_path / "images")
    (images / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "r"
    proc = cli("run", *TINY, "--data", images, *FREE, "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "skipped 1 image(s)" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "cat/broken.png" in warned[0], proc.stderr
    data = json.loads((out / "manifest.json").read_text())["data"]
    assert [s["file"] for s in data["skipped"]] == ["cat/broken.png"] and "not a readable image" in data["skipped"][0]["reason"]
    assert data["samples"] + data["split"]["calibration"]["samples"] == 6  # the six good images, all used
    assert "skipped 1 image(s)" in proc.stdout  # the table's warnings
    report = cli("report", out, "--format", "md")
    assert report.returncode == 0 and "skipped 1 image(s)" in report.stdout
    assert "skipped 1 image(s)" in (out / "report.md").read_text()


def test_image_folder_with_a_link_outside_it_skips_that_file(tmp_path):
    images = _image_folder(tmp_path / "images")
    Image.new("RGB", (20, 20)).save(tmp_path / "private.png")
    (images / "dog" / "linked.png").symlink_to(tmp_path / "private.png")
    (images / "dog" / "inside.png").symlink_to(images / "dog" / "0.png")  # a link within the folder is fine
    out = tmp_path / "r"
    proc = cli("export", *TINY, "--data", images, *FREE, "--out", out)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "skipped 1 image(s)" in line]
    assert len(warned) == 1 and "dog/linked.png" in warned[0] and "outside the folder" in warned[0], proc.stderr
    data = json.loads((out / "manifest.json").read_text())["data"]
    assert [s["file"] for s in data["skipped"]] == ["dog/linked.png"]
    assert data["samples"] + data["split"]["calibration"]["samples"] == 7


def test_image_folder_without_images(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "notes.txt").write_text("no images here")
    export_refused(tmp_path, 2, ["no images found"], *TINY, "--data", tmp_path / "images", *FREE)


def test_image_folder_whose_images_are_all_unreadable(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "a.jpg").write_bytes(b"not a jpeg")
    export_refused(tmp_path, 2, ["none of its 1 image(s) could be used"], *TINY, "--data", tmp_path / "images",
                   *FREE)


# --- thresholds and targets files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, needles", [
    ("[default\nmax_top1_drop = 1", ["invalid TOML"]),
    ("[default]\nmax_top1_dorp = 1.0\n", ["unknown threshold 'max_top1_dorp'"]),
    ("[default]\nmax_top1_drop = \"one\"\n", ["max_top1_drop must be a number"]),
    ("[format.coreml]\nmin_sqnr = 20\n", ["unknown format 'coreml'"]),
])
def test_bad_thresholds_file(measured, tmp_path, text, needles):
    f = tmp_path / "thresholds.toml"
    f.write_text(text)
    refused(cli("validate", measured, "--thresholds", f, "--junit", tmp_path / "j.xml"), 2, str(f), *needles)
    assert not (tmp_path / "j.xml").exists()


@pytest.mark.parametrize("text, needles", [
    ("[targets.small\nthreads = 1", ["not valid TOML"]),
    ("[targets.small]\nthread = 1\n", ["unknown key 'thread'"]),
    ("[targets.small]\nthreads = \"one\"\n", ["threads must be a positive integer"]),
    ("[targets.small]\nruntimes = [\"tensorrt\"]\n", ["unknown runtime 'tensorrt'"]),
    ("[targets.small]\nruntimes = \"onnxruntime\"\n", ["runtimes must be a list"]),
])
def test_bad_targets_file(exported, tmp_path, text, needles):
    f = tmp_path / "targets.toml"
    f.write_text(text)
    refused(cli("bench", exported, "--targets-file", f, "--target", "small", *FAST), 2, str(f), *needles)
    no_rows(exported)


# --- results files, run directories edited by hand -------------------------------------------------------------------

def _results_file(measured: Path, tmp_path: Path, kind: str) -> Path:
    f = tmp_path / "other" / "results.json"
    f.parent.mkdir()
    results = json.loads((measured / "results.json").read_text())
    if kind == "not json":
        f.write_text('{"schema": 2, "rows": [')
        return f
    if kind == "other schema":
        results["schema"] = 99
    elif kind == "not results":
        results = json.loads((measured / "manifest.json").read_text())
    elif kind == "other model":
        for row in results["rows"]:
            row["id"], row["model"] = "elsewhere-" + row["id"], "resnet18"
    f.write_text(json.dumps(results))
    return f


RESULTS_CASES = [("not json", ["is not readable JSON"]), ("other schema", ["results schema 99"]),
                 ("not results", ["not a deploycmp results file"]), ("other model", ["'resnet18'", "tiny_cnn"])]


@pytest.mark.parametrize("kind, needles", RESULTS_CASES)
def test_merge_refuses_a_bad_results_file(measured, tmp_path, kind, needles):
    run = copy_run(measured, tmp_path)
    before = (run / "results.json").read_bytes()
    refused(cli("merge", run, _results_file(measured, tmp_path, kind)), 2, *needles)
    assert (run / "results.json").read_bytes() == before and not list(run.glob("results/*@*.json"))


@pytest.mark.parametrize("kind, needles", RESULTS_CASES)
def test_report_refuses_a_bad_baseline(measured, tmp_path, kind, needles):
    run = copy_run(measured, tmp_path)
    refused(cli("report", run, "--baseline", _results_file(measured, tmp_path, kind)), 2, "--baseline", *needles)
    assert not list(run.glob("report.*"))


@pytest.mark.parametrize("name, command", [("manifest.json", "report"), ("results.json", "report"),
                                           ("manifest.json", "bench"), ("results.json", "validate")])
def test_run_directory_edited_into_invalid_json(measured, tmp_path, name, command):
    run = copy_run(measured, tmp_path)
    text = (run / name).read_text()
    (run / name).write_text(text[:len(text) // 2])
    extra = {"bench": FAST, "validate": ["--max-top1-drop", "1"]}.get(command, [])
    refused(cli(command, run, *extra), 2, name, "is not readable JSON")
    assert not list(run.glob("report.*"))


def test_not_a_run_directory(tmp_path):
    for cmd in ("bench", "report"):
        refused(cli(cmd, tmp_path), 2, "not a run directory")
    refused(cli("validate", tmp_path, "--max-top1-drop", "1"), 2, "not a run directory")


def test_a_run_directory_of_another_model_needs_force(exported, tmp_path):
    run = copy_run(exported, tmp_path)
    refused(cli("export", "--model", "tests.tiny_models:misbehaving", "--input-shape", "1,3,16,16", "--samples", "8",
                "--formats", "onnx", "--out", run), 2, "--force")
    assert json.loads((run / "manifest.json").read_text())["model"]["name"] == "tiny_cnn"


def test_corrupted_artifact_fails_only_its_row(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    onnx = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    (run / onnx["main_file"]).write_bytes(b"not onnx any more")
    proc = cli("bench", run, "--force", "--batch", "1", *FAST)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    rows = json.loads((run / "results.json").read_text())["rows"]
    statuses = {r["id"]: r["status"] for r in rows if r["batch"] == 1}
    assert statuses.pop("onnx-none-onnxruntime-server-cpu-b1") == "failed"
    assert set(statuses.values()) == {"ok"}
    failed = next(r for r in rows if r["id"] == "onnx-none-onnxruntime-server-cpu-b1")
    assert "sha256" in failed["error"]
    assert "failed" in proc.stdout  # the table says why


# --- a read-only file system, a full disk ----------------------------------------------------------------------------

@cache
def _namespace() -> list[str] | None:
    """How to mount a tmpfs where only one command sees it: a mount namespace (as root), else a user namespace."""
    probe = Path(os.environ.get("TMPDIR", "/tmp"))
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        if prefix == ["unshare", "--mount"] and os.geteuid() != 0:
            continue
        try:
            ok = subprocess.run([*prefix, "sh", "-c", 'mount -t tmpfs -o size=16k tmpfs "$0"', str(probe)],
                                capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return prefix
    return None


def on_tmpfs(tmp_path: Path, size: str, setup: str, *args, readonly: bool = False):
    """deploycmp ARGS with a tmpfs of `size` at $M (tmp_path/mnt), after `setup` (shell) and, with readonly, a
    read-only remount; returns (the process, the files left on the tmpfs, relative to it)."""
    prefix = _namespace()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs here: neither 'unshare --mount' as root nor 'unshare --user --map-root-user "
                    "--mount' is permitted")
    mnt, left = tmp_path / "mnt", tmp_path / "left.txt"
    mnt.mkdir()
    script = ('mount -t tmpfs -o "size=$SIZE" tmpfs "$M" || exit 97\n' + setup + " || exit 98\n"
              + ('mount -o remount,ro "$M" || exit 99\n' if readonly else "")
              + '"$PY" -m deploycmp.cli "$@"\nrc=$?\n(cd "$M" && find . -type f | sort) > "$LEFT"\nexit $rc\n')
    env = {**os.environ, "M": str(mnt), "SIZE": size, "LEFT": str(left), "PY": sys.executable}
    proc = subprocess.run([*prefix, "sh", "-c", script, "sh", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode not in (97, 98, 99), proc.stderr
    return proc, [line.removeprefix("./") for line in left.read_text().splitlines()]


def test_export_onto_a_full_disk(tmp_path):
    # 32 KB: the run directory's reference inputs (60 KB) do not fit
    proc, left = on_tmpfs(tmp_path, "32k", "true", "export", *TINY, "--formats", "onnx", "--out",
                          tmp_path / "mnt" / "run")
    refused(proc, 1, "No space left on device")
    assert "run/manifest.json" not in left and not [f for f in left if f.endswith(".tmp")], left


def test_bench_of_a_run_directory_on_a_read_only_file_system(exported, tmp_path):
    proc, left = on_tmpfs(tmp_path, "16m", f'cp -a "{exported}" "$M/run"', "bench", tmp_path / "mnt" / "run", *FAST,
                          readonly=True)
    refused(proc, 1, "Read-only file system")
    assert not [f for f in left if f.startswith("run/results")], left


# --- paths with spaces and non-ASCII characters work -----------------------------------------------------------------

def test_paths_with_spaces_and_non_ascii_characters_work(tmp_path, model_files):
    where = tmp_path / "dír with spåces"
    where.mkdir()
    model = where / "mödel file.pt"
    shutil.copy(model_files / "traced.pt", model)
    data = _npz(where / "dåta file.npz", y=np.arange(40) % 10)
    run = where / "rün dir"
    proc = deploycmp("run", "--model", model, "--input-shape", "1,3,16,16", "--samples", "8", "--data", data,
                     "--formats", "onnx", "--out", run, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["runtime"]: r for r in json.loads((run / "results.json").read_text())["rows"]}
    compiled = rows.pop("torch-compile")  # a TorchScript source is no model torch.compile takes: said, not run
    assert compiled["status"] == "unavailable" and "does not compile TorchScript" in compiled["error"]
    assert {r["status"] for r in rows.values()} == {"ok"} and len(rows) == 2
    assert all(r["drift"]["accuracy"] is not None for r in rows.values())  # the labels of the data file were read
    assert (run / "report.md").is_file()
