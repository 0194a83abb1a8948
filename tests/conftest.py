import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "tests.tiny_models:tiny_cnn", "--input-shape", "1,3,16,16", "--samples", "8"]
FAST = ["--min-runs", "5", "--min-time", "0.05", "--max-time", "0", "--warmup-runs", "1", "--warmup-time", "0"]


def pytest_configure(config):
    """One export cache for the whole test session (not the user's), shared by the pytest-xdist workers (made by the
    controller before it starts them; entries are stored under a temporary name and renamed, so two workers may
    store at once): a test that needs an artifact but does not test its exporter gets it from there when an earlier
    test made the same one. Tests of exporting itself pass --no-cache. DEPLOYCMP_CACHE=off runs the suite without
    it (to measure what it saves)."""
    import tempfile

    if os.environ.get("DEPLOYCMP_CACHE") != "off" and not hasattr(config, "workerinput"):
        os.environ["DEPLOYCMP_CACHE"] = tempfile.mkdtemp(prefix="deploycmp-test-cache-")
    own_cores(getattr(config, "workerinput", None))


def own_cores(workerinput: dict | None) -> None:
    """Each pytest-xdist worker on cores of its own (gw0 the first of every N usable cores, gw1 the second ...), so
    the rows and exports of one test never share a core with another test's: every process a test starts inherits
    the affinity, and deploycmp's targets take their cores from it. Two tests' rows of 2 OpenMP threads each on 2
    shared cores made each other's threads wait for a time slice: eager resnet18 ran at 100 ms a call instead of 4.
    DEPLOYCMP_TEST_CORES=shared leaves the workers on every core."""
    if not workerinput or os.environ.get("DEPLOYCMP_TEST_CORES") == "shared":
        return
    cpus, n = sorted(os.sched_getaffinity(0)), int(workerinput.get("workercount", 1))
    if 1 < n <= len(cpus):
        os.sched_setaffinity(0, cpus[int(workerinput["workerid"].removeprefix("gw")) % n::n])


def pytest_unconfigure(config):
    import shutil

    if os.environ.get("DEPLOYCMP_CACHE") != "off" and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ.pop("DEPLOYCMP_CACHE", ""), ignore_errors=True)


def deploycmp(*args, env=None, timeout=900):
    """Run the real command line in a fresh process; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "deploycmp.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def plugin_env(tmp_path, group: str, name: str, module: str) -> dict:
    """The environment of a process that sees an installed package registering `name = module` as an entry point
    in `group`, the way a third-party plug-in registers an exporter or runtime (a bare .dist-info on PYTHONPATH)."""
    dist = Path(tmp_path) / "plugins" / "deploycmp_test_plugin-0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: deploycmp-test-plugin\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}\n")
    return {"PYTHONPATH": os.pathsep.join([str(dist.parent), str(REPO)])}


def rows_by_id(run_dir) -> dict:
    return {r["id"]: r for r in json.loads((Path(run_dir) / "results.json").read_text())["rows"]}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One full run on the tiny model, at batch 1 and 2, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    proc = deploycmp("run", *TINY, "--formats", "torchscript,torch-export,onnx", "--out", out, "--batch", "1,2", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


OUTLIER = ["--model", "tests.tiny_models:outlier", "--input-shape", "1,3,16,16", "--samples", "32"]


def explain_outlier(tmp_path_factory, fmt: str, runtime: str) -> tuple:
    """The model made to fail int8 (tests.tiny_models:outlier) in fp32 and int8 of one format on one runtime, and
    explain on its int8 row: (run directory, explain's process, results/ROW.layers.json)."""
    out = tmp_path_factory.mktemp(f"explain-{fmt}") / "run"
    proc = deploycmp("run", *OUTLIER, "--formats", fmt, "--quantize", "none,int8", "--runtimes", runtime, "--out", out,
                     *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = f"{fmt}-int8-{runtime}-server-cpu-b1"
    proc = deploycmp("explain", out, "--row", row)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc, json.loads((out / "results" / f"{row}.layers.json").read_text())


def repair_steps(run_dir, row: str, *args) -> tuple[list[dict], dict]:
    """deploycmp repair on a row that it makes pass: (the steps of results/ROW.repair.json, the manifest's artifacts
    by id)."""
    proc = deploycmp("repair", run_dir, "--row", row, *args, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = json.loads((Path(run_dir) / "results" / f"{row}.repair.json").read_text())["steps"]
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    return steps, {a["id"]: a for a in manifest["artifacts"]}
