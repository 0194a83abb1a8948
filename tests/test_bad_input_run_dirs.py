"""Issue 25: the bad-input corpus, continued for input that comes from other machines: results files (merge,
--baseline), run directories someone sends you, and folders that are not run directories. Each case ends with one
clear line and a non-zero exit (or is contained and said so), writes nothing outside the run directory, deletes no
user file, runs no code that only the run directory names, and leaves later commands on the same run working."""
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST, REPO, TINY
from tests.test_bad_input_corpus import cli, copy_run, refused

EAGER = "eager-none-torch-server-cpu-b1"
ONNX = "onnx-none-onnxruntime-server-cpu-b1"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The tiny CNN exported to ONNX and measured at batch 1 (eager, torch.compile left out, and ONNX rows)."""
    out = tmp_path_factory.mktemp("untrusted") / "measured"
    proc = cli("run", *TINY, "--formats", "onnx", "--runtimes", "torch,onnxruntime", "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def results_of(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def other_machine(run: Path, tmp_path: Path, edit=None, host: str = "gpu-box") -> Path:
    """run's results as another host's results.json, each row passed through edit(row) (in place)."""
    results = results_of(run)
    for row in results["rows"]:
        row["host"] = {**row["host"], "hostname": host}
        if edit:
            edit(row)
    f = tmp_path / "other" / "results.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(results))
    return f


def still_works(run: Path) -> None:
    """The later commands on the run: report and validate."""
    proc = cli("report", run, "--format", "md,csv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cli("validate", run, "--min-cosine", "0.9").returncode == 0


def files_under(folder: Path) -> dict:
    """Every file and its bytes (the lock file, which holds its holder's pid, left out)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# --- 1. merge writes only inside the run directory ----------------------------------------------------------------

@pytest.mark.parametrize("host, needle", [
    ("x/../../../victim/config", "path separator"), ("x/../../manifest", "path separator"),
    ("rack1/gpu-box", "path separator"), ("a\x00b", "NUL"), ("h" * 300, "300 characters"),
    ("gpu\x1b[31mbox", "control character")])
def test_merge_refuses_a_hostname_that_is_no_file_name(measured, tmp_path, host, needle):
    base = tmp_path / "base"
    run = copy_run(measured, base)
    victim = base / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("{}")
    before = files_under(base)
    line = refused(cli("merge", run, other_machine(measured, tmp_path, host=host)), 2, "host.hostname", needle)
    assert "results.json" in line
    assert files_under(base) == before
    still_works(run)


def test_merge_refuses_the_same_row_of_the_same_host_twice(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    f = other_machine(measured, tmp_path)
    results = json.loads(f.read_text())
    results["rows"].append({**results["rows"][0], "latency_ms": {**results["rows"][0]["latency_ms"], "p50": 1.0}})
    f.write_text(json.dumps(results))
    refused(cli("merge", run, f), 2, "given twice")
    assert not list(run.glob("results/*@*.json"))
    # from two files: the same
    g = other_machine(measured, tmp_path / "again")
    refused(cli("merge", run, other_machine(measured, tmp_path / "once"), g), 2, "given twice", "also in")


def test_a_good_merge_still_merges(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    proc = cli("merge", run, other_machine(measured, tmp_path, host="board-1.lab"))
    assert proc.returncode == 0, proc.stderr
    assert f"{ONNX}@board-1.lab" in {r["id"] for r in results_of(run)["rows"]}
    still_works(run)


# --- 4. rows with nonsense in them ---------------------------------------------------------------------------------

def _set(path: str, value):
    def edit(row):
        *parents, last = path.split(".")
        d = row
        for p in parents:
            d = d[p]
        d[last] = value
    return edit


NONSENSE = [
    ("latency_ms.p50", -5, "must be >= 0"), ("size_bytes", -100, "must be >= 0"),
    ("latency_ms.p50", math.nan, "finite"), ("latency_ms.p99", math.inf, "finite"),
    ("status", "pwned", "none of ok"), ("batch", "one", "integer"), ("latency_ms.p50", "fast", "number"),
    ("drift", [1, 2, 3], "must be an object"), ("drift.sqnr_db", "high", "number"), ("id", ["a"], "string"),
    ("host", "gpu-box", "must be an object"), ("error", "x" * 10_000_000, "characters"),
    ("drift.cosine_min", math.nan, "finite"), ("latency_ms.ci95_p50", [1], "pair"),
    ("log", "../../etc/passwd", "outside the run directory")]


@pytest.mark.parametrize("field, value, needle", NONSENSE, ids=[f"{f}={str(v)[:10]}" for f, v, _ in NONSENSE])
def test_merge_refuses_rows_with_nonsense(measured, tmp_path, field, value, needle):
    run = copy_run(measured, tmp_path)
    before = (run / "results.json").read_bytes()
    line = refused(cli("merge", run, other_machine(measured, tmp_path, _set(field, value))), 2, needle)
    assert field.split(".")[0] in line and "results.json" in line and len(line) < 400
    assert (run / "results.json").read_bytes() == before and not list(run.glob("results/*@*.json"))
    still_works(run)


@pytest.mark.parametrize("field, value, needle", [("latency_ms.p50", "fast", "number"),
                                                  ("drift", [1, 2], "must be an object"),
                                                  ("latency_ms.p50", math.nan, "finite")])
def test_report_refuses_a_baseline_with_nonsense(measured, tmp_path, field, value, needle):
    run = copy_run(measured, tmp_path)
    baseline = other_machine(measured, tmp_path, _set(field, value))
    before = files_under(run)
    refused(cli("report", run, "--baseline", baseline), 2, "--baseline", field.split(".")[0], needle)
    assert files_under(run) == before


def test_a_run_directory_whose_row_files_were_edited_is_refused_by_every_command(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    for where in (run / "results" / f"{ONNX}.json", run / "results.json"):
        data = json.loads(where.read_text())
        for row in data.get("rows", [data]):
            row["latency_ms"]["p50"] = "fast"
        where.write_text(json.dumps(data))
    for args in (["report", run], ["validate", run, "--min-cosine", "0.9"], ["bench", run, *FAST]):
        refused(cli(*args), 2, "latency_ms.p50", "number")
    refused(cli("explain", run, "--row", ONNX), 2, "latency_ms.p50")


# --- 2. a folder is a run directory only with deploycmp's marker; --force removes only deploycmp's files -------------

def _project(folder: Path) -> dict:
    for rel in ("artifacts/model_v1.bin", "logs/train.log", "results/exp1.csv", "report.md", "reference_images.npz"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(f"the user's {rel}")
    return files_under(folder)


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_export_refuses_a_project_folder_that_looks_like_a_run(tmp_path, force):
    before = _project(tmp_path / "proj")
    refused(cli("export", *TINY, "--formats", "onnx", "--out", tmp_path / "proj", *force), 2,
            "not a run directory")
    assert files_under(tmp_path / "proj") == before


def test_force_replaces_a_run_but_not_the_files_a_user_put_in_it(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    (run / "notes.txt").write_text("mine")
    refused(cli("export", *TINY, "--formats", "onnx", "--out", run, "--force"), 2, "notes.txt",
            "which deploycmp does not write")
    assert (run / "notes.txt").read_text() == "mine" and (run / "manifest.json").is_file()
    (run / "notes.txt").unlink()
    (run / "artifacts" / "model_v1.bin").write_text("mine")
    refused(cli("export", *TINY, "--formats", "onnx", "--out", run, "--force"), 2, "artifacts/model_v1.bin")
    (run / "artifacts" / "model_v1.bin").unlink()
    (run / "reference_images.npz").write_text("mine")  # not deploycmp's reference*.npz
    refused(cli("export", *TINY, "--formats", "onnx", "--out", run, "--force"), 2, "reference_images.npz")
    (run / "reference_images.npz").unlink()
    proc = cli("export", *TINY, "--formats", "onnx", "--out", run, "--force")
    assert proc.returncode == 0, proc.stderr
    assert not (run / "results.json").exists() and (run / "manifest.json").is_file()


def test_out_through_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    refused(cli("export", *TINY, "--formats", "onnx", "--out", tmp_path / "afile" / "sub"), 2, "is a file")


# --- 3. code and paths a received run directory names ----------------------------------------------------------------

def _plant(run: Path) -> Path:
    """A module inside the run directory that leaves a file when imported, named as the run's source model."""
    (run / "evil.py").write_text("from pathlib import Path\nPath(__file__).with_name('pwned').write_text('ran')\n"
                                 "def factory():\n    raise SystemExit('ran')\n")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["model"]["spec"] = "evil:factory"
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run / "pwned"


def test_bench_never_imports_code_only_the_run_directory_names(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    pwned = _plant(run)
    env = {"PYTHONPATH": f"{run}{os.pathsep}{REPO}"}  # even where the module would be importable
    from tests.conftest import deploycmp

    proc = deploycmp("bench", run, "--force", "--runtimes", "torch,onnxruntime", *FAST, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not pwned.exists()
    rows = {r["id"]: r for r in results_of(run)["rows"]}
    assert rows[EAGER]["status"] == "unavailable" and "--model evil:factory" in rows[EAGER]["error"]
    assert rows[ONNX]["status"] == "ok"
    assert "rows of the source model not measured" in proc.stderr
    refused(cli("bench", run, "--model", "tests.tiny_models:tiny_cnn", *FAST), 2, "is not this run's source model")
    still_works(run)


def test_a_run_directory_from_another_machine_needs_the_model_given_again(measured, tmp_path, monkeypatch):
    run = copy_run(measured, tmp_path)
    monkeypatch.setenv("DEPLOYCMP_KEY_FILE", str(tmp_path / "another-machine-key"))  # not the key that sealed it
    (tmp_path / "another-machine-key").write_bytes(os.urandom(32))
    proc = cli("bench", run, "--force", "--runtimes", "torch", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert {r["id"]: r for r in results_of(run)["rows"]}[EAGER]["status"] == "unavailable"
    proc = cli("bench", run, "--force", "--runtimes", "torch", "--model", "tests.tiny_models:tiny_cnn", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert {r["id"]: r for r in results_of(run)["rows"]}[EAGER]["status"] == "ok"


def test_the_worker_itself_refuses_a_factory_it_was_not_allowed(measured):
    from deploycmp.core.errors import UsageError
    from deploycmp.sources.torch import load_source

    manifest = json.loads((measured / "manifest.json").read_text())
    with pytest.raises(UsageError, match="not allowed to import"):
        load_source(measured, manifest["model"], manifest["artifacts"][0]["main_file"])


@pytest.mark.parametrize("field, value", [("path", "../../victim3/pwned"), ("id", "../pwned"),
                                          ("main_file", "/etc/passwd"), ("main_file", "artifacts/../../x")])
def test_bench_refuses_artifact_paths_that_leave_the_run_directory(measured, tmp_path, field, value):
    base = tmp_path / "base"
    run = copy_run(measured, base)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["artifacts"][1][field] = value
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = files_under(base)
    line = refused(cli("bench", run, "--force", *FAST), 2, field, "manifest.json")
    assert "outside" in line or "path separator" in line
    assert files_under(base) == before


def test_a_results_folder_that_is_a_link_elsewhere_is_refused(measured, tmp_path):
    run = copy_run(measured, tmp_path / "base")
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run / "results", elsewhere)
    (run / "results").symlink_to(elsewhere)
    refused(cli("bench", run, "--force", *FAST), 2, "is a link")


# --- 5. reference files -------------------------------------------------------------------------------------------

def test_bench_refuses_a_tampered_or_missing_reference(measured, tmp_path):
    run = copy_run(measured, tmp_path)
    with np.load(run / "reference.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["output/output"] = arrays["output/output"] * 1.5 + 0.1
    np.savez(run / "reference.npz", **arrays)
    refused(cli("bench", run, "--force", *FAST), 2, "reference.npz changed since export")
    (run / "reference.npz").unlink()
    refused(cli("bench", run, "--force", *FAST), 2, "reference.npz is missing")
    refused(cli("explain", run, "--row", ONNX), 2, "reference.npz is missing")


# --- 6. a factory that hangs -----------------------------------------------------------------------------------------

def test_a_factory_that_hangs_ends_at_the_export_timeout(tmp_path):
    out = tmp_path / "run"
    line = refused(cli("export", "--model", "tests.tiny_models:hangs", "--input-shape", "1,3,16,16", "--formats",
                       "onnx", "--export-timeout", "2", "--out", out), 1, "--export-timeout 2 s")
    assert "tests.tiny_models:hangs" in line and not (out / "manifest.json").exists()


# --- 8. one line, not "unexpected error" -------------------------------------------------------------------------------

def test_explain_of_a_row_id_that_is_a_path(measured):
    refused(cli("explain", measured, "--row", "../manifest"), 2, "no row id")
    refused(cli("explain", measured, "--row", "nope"), 2, "no measured row")


def test_a_damaged_export_cache_entry_is_dropped(tmp_path):
    cache = tmp_path / "cache"
    args = [*TINY, "--formats", "onnx", "--cache", cache]
    assert cli("export", *args, "--out", tmp_path / "a").returncode == 0
    entry = next(cache.glob("exports/*/entry.json"))
    data = json.loads(entry.read_text())
    data.pop("main_file")
    entry.write_text(json.dumps(data))
    proc = cli("export", *args, "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    onnx = json.loads((tmp_path / "b" / "manifest.json").read_text())["artifacts"][1]
    assert onnx["status"] == "ok" and onnx.get("reused") is None  # exported again, not taken from the damaged entry
