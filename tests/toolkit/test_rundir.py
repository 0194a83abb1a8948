import gzip
import json

import pytest

from deploycmp.core.errors import UsageError
from deploycmp.core.rundir import changed_files, describe_files, gzip_size, load_manifest, write_atomic


def test_write_atomic_leaves_only_the_file(tmp_path):
    write_atomic(tmp_path / "a" / "x.json", "{}")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]


def test_write_atomic_gives_the_permissions_open_would(tmp_path):
    write_atomic(tmp_path / "report.html", "<html></html>")
    (tmp_path / "plain.html").write_text("<html></html>")
    assert (tmp_path / "report.html").stat().st_mode == (tmp_path / "plain.html").stat().st_mode


def test_size_counts_every_file_and_gzip_matches(tmp_path):
    art = tmp_path / "artifacts" / "onnx-none"
    art.mkdir(parents=True)
    (art / "model.onnx").write_bytes(b"graph" * 10)
    data = bytes(range(256)) * 100
    (art / "model.onnx.data").write_bytes(data)
    info = describe_files(tmp_path, art)
    assert info["size_bytes"] == 50 + len(data)
    assert [f["path"] for f in info["files"]] == ["artifacts/onnx-none/model.onnx", "artifacts/onnx-none/model.onnx.data"]
    assert gzip_size(art / "model.onnx.data") == len(gzip.compress(data, compresslevel=6, mtime=0))
    assert changed_files(tmp_path, info) == []
    (art / "model.onnx.data").write_bytes(data[:-1] + b"\x00")
    assert changed_files(tmp_path, info) == ["artifacts/onnx-none/model.onnx.data"]


def test_not_a_run_directory(tmp_path):
    with pytest.raises(UsageError, match="not a run directory"):
        load_manifest(tmp_path)
    with pytest.raises(UsageError, match="not a directory"):
        load_manifest(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(UsageError, match="JSON"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": 99}))
    with pytest.raises(UsageError, match="schema"):
        load_manifest(tmp_path)


def test_force_replaces_every_file_of_the_old_run(tmp_path):
    """--force leaves nothing of the run it replaces: no report.html or per-shape reference file survives to look
    like part of the new run."""
    from deploycmp.export.out_dir import prepare_out

    old = ["manifest.json", "results.json", "report.md", "report.html", "reference.npz", "reference.sequence64.npz",
           "calibration.npz", "calibration.sequence64.npz"]
    for name in old:
        (tmp_path / name).write_text("old")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "row.json").write_text("{}")
    with pytest.raises(UsageError, match="--force"):  # no identity.json: not a run this deploycmp can resume
        prepare_out(tmp_path, False, {"model": "m"})
    prepare_out(tmp_path, True, {"model": "m"})
    assert [p.name for p in tmp_path.iterdir()] == ["identity.json"]  # the new run's, written first
