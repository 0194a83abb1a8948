"""report --baseline and merge on real runs of the tiny model: a copy of the shared run, one row re-measured slower
through a test-only runtime (tests/slow_onnxruntime.py adds a 20 ms sleep per call), and rows from "another machine"."""
import json
import shutil

import pytest

from tests.conftest import FAST, deploycmp, plugin_env, rows_by_id
from deploycmp.report.compare import compare, regressions, verdict

SLOWED = "onnx-none-onnxruntime-server-cpu-b1"


def _copy(run, tmp_path, name):
    return shutil.copytree(run, tmp_path / name)


@pytest.fixture(scope="module")
def slowed_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run where one row was measured again with 20 ms added to every call."""
    out = shutil.copytree(tiny_run, tmp_path_factory.mktemp("slowed") / "run")
    (out / "results" / f"{SLOWED}.json").unlink()
    env = plugin_env(tmp_path_factory.mktemp("plugin"), "deploycmp.runtimes", "onnxruntime", "tests.slow_onnxruntime")
    proc = deploycmp("bench", out, "--batch", "1,2", *FAST, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_a_run_against_itself_has_no_significant_change(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path, "run")
    proc = deploycmp("report", run, "--baseline", tiny_run, "--fail-on-regression", "0", "--format", "md,json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 changed beyond noise" in proc.stdout and "0 regression(s)" in proc.stdout
    comparison = json.loads((run / "report.json").read_text())["baseline"]
    assert len(comparison["rows"]) == len(rows_by_id(tiny_run)) and not comparison["new"] and not comparison["gone"]
    assert all(verdict(e) == "within noise" for e in comparison["rows"] if "p50" in e)
    assert comparison["median_p50_change_pct"] == 0 and "median p50 change over those rows: +0.0%" in proc.stdout
    assert "## Against the baseline" in (run / "report.md").read_text()


def test_a_slowed_row_is_flagged_and_fails_the_gate(tiny_run, slowed_run):
    rows = rows_by_id(slowed_run)
    assert rows[SLOWED]["runtime_info"]["runtime"] == "onnxruntime" and rows[SLOWED]["latency_ms"]["p50"] > 20
    proc = deploycmp("report", slowed_run, "--baseline", tiny_run, "--fail-on-regression", "50", "--format", "json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flagged = [line for line in proc.stdout.splitlines() if line.startswith("REGRESSION")]
    assert len(flagged) == 1 and SLOWED in flagged[0], proc.stdout
    comparison = json.loads((slowed_run / "report.json").read_text())["baseline"]
    entry = next(e for e in comparison["rows"] if e["id"] == SLOWED)
    assert entry["p50"]["significant"] and verdict(entry).startswith("slower")
    # the same slowdown, asked the other way round, is an improvement and no regression
    proc = deploycmp("report", tiny_run, "--baseline", slowed_run, "--fail-on-regression", "50", "--format", "md")
    assert proc.returncode == 0 and "faster (p" in proc.stdout, proc.stdout + proc.stderr


def test_changes_inside_the_noise_are_reported_not_flagged():
    def row(p50, ci):
        return {"id": "r", "status": "ok", "latency_ms": {"p50": p50, "ci95_p50": ci, "p99": p50, "ci95_p99": ci},
                "size_bytes": 10, "drift": {}}
    overlapping = compare({"rows": [row(12.0, [9.0, 14.0])]}, {"rows": [row(10.0, [8.0, 11.0])]}, "base")
    assert verdict(overlapping["rows"][0]) == "within noise" and regressions(overlapping, 5) == []
    apart = compare({"rows": [row(12.0, [11.5, 13.0])]}, {"rows": [row(10.0, [9.0, 11.0])]}, "base")
    assert verdict(apart["rows"][0]) == "slower (p50)" and len(regressions(apart, 5)) == 1
    assert regressions(apart, 25) == []  # +20% is beyond noise but under the 25% allowed
    both = compare({"rows": [row(12.0, [11.5, 13.0]), {**row(10.0, [9.0, 11.0]), "id": "s"}, {"id": "u",
                    "status": "unavailable"}]}, {"rows": [row(10.0, [9.0, 11.0]), {**row(10.0, [9.0, 11.0]), "id": "s"},
                    {"id": "u", "status": "unavailable"}]}, "base")
    assert both["median_p50_change_pct"] == pytest.approx(10.0)  # +20% and 0%; the unavailable row has none


def test_fail_on_regression_needs_a_baseline(tiny_run):
    proc = deploycmp("report", tiny_run, "--fail-on-regression", "5")
    assert proc.returncode == 2 and "needs --baseline" in proc.stderr and "Traceback" not in proc.stderr


def _other_machine(run, tmp_path, host):
    """Rows measured from a copy of the run directory; the copy's host name is changed to stand for another machine."""
    other = _copy(run, tmp_path, host)
    results = json.loads((other / "results.json").read_text())
    for r in results["rows"]:
        r["host"] = {**r["host"], "hostname": host}
    (other / "results.json").write_text(json.dumps(results))
    return other / "results.json", results


def test_merge_joins_rows_from_another_host_and_the_report_groups_by_host(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path, "run")
    other, results = _other_machine(tiny_run, tmp_path, "board-1")
    proc = deploycmp("merge", run, other)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(run)
    assert len(rows) == 2 * len(results["rows"])
    merged = rows[f"{SLOWED}@board-1"]
    assert merged["host"]["hostname"] == "board-1" and merged["source_id"] == SLOWED
    assert rows[SLOWED]["host"]["hostname"] != "board-1"
    # merging again adds nothing; the report shows one table per host
    assert deploycmp("merge", run, other).returncode == 0 and len(rows_by_id(run)) == len(rows)
    proc = deploycmp("report", run, "--format", "md")
    md = (run / "report.md").read_text()
    assert "### Host board-1" in md and f"### Host {rows[SLOWED]['host']['hostname']}" in md
    assert "board-1" in proc.stdout


def test_a_package_compiled_for_one_cpu_is_not_compared_with_another_cpu():
    """AOTInductor packages are built with -march=native: a row measured on a host of other ISA extensions is not
    compared with the baseline, and merge refuses it (the row says which extensions differ)."""
    from deploycmp.core.hosts import compiled_for_another_cpu

    def row(isa, built=("avx2", "avx512f")):
        return {"id": "aoti-none-aoti-server-cpu-b1", "artifact": "aoti-none", "status": "ok", "size_bytes": 10,
                "drift": {}, "latency_ms": {"p50": 1.0, "ci95_p50": [0.9, 1.1], "p99": 1.0, "ci95_p99": [0.9, 1.1]},
                "host": {"isa": list(isa)}, "runtime_info": {"built_for": {"device": "cpu", "isa": list(built)}}}
    same = compare({"rows": [row(["avx2", "avx512f"])]}, {"rows": [row(["avx512f", "avx2"])]}, "base")
    assert verdict(same["rows"][0]) == "within noise"
    other = compare({"rows": [row(["avx2", "avx512f"])]}, {"rows": [row(["avx2"], built=["avx2"])]}, "base")
    assert verdict(other["rows"][0]) == ("not compared: aoti-none is compiled for a CPU with other ISA extensions "
                                         "(differing: avx512f); export it on that host to compare")
    assert compiled_for_another_cpu(row(["avx2", "avx512f", "amx_tile"])).startswith("aoti-none is compiled")
    assert compiled_for_another_cpu({**row(["avx2"]), "runtime_info": {}}) is None  # a portable artifact


def test_merge_refuses_rows_measured_on_other_files(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path, "run")
    other, results = _other_machine(tiny_run, tmp_path, "gpu-box")
    results["rows"][-1]["artifact_sha256"] = "0" * 64
    other.write_text(json.dumps(results))
    before = sorted(p.name for p in (run / "results").iterdir())
    proc = deploycmp("merge", run, other)
    assert proc.returncode == 2 and "sha256 differs" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (run / "results").iterdir()) == before  # nothing half-merged
    results["rows"][-1]["model"] = "resnet18"
    other.write_text(json.dumps(results))
    proc = deploycmp("merge", run, other)
    assert proc.returncode == 2 and "is of model 'resnet18'" in proc.stderr


@pytest.mark.parametrize("args, env, message", [
    (["report", "{run}", "--baseline", "{run}/nope"], {}, "no such run directory or results.json"),
    (["report", "{run}", "--baseline", "{run}/manifest.json"], {}, "not a deploycmp results file"),
    (["merge", "{run}", "{run}/manifest.json"], {}, "not a deploycmp results file"),
    (["merge", "{run}", "{run}/reference.npz"], {}, "is not readable JSON"),
    (["bench", "{run}", "--repeat", "0"], {}, "--repeat must be positive"),
    (["bench", "{run}"], ("onnxruntime", "no.such.module"),
     "runtime onnxruntime (entry point in deploycmp.runtimes): No module named"),
])
def test_bad_baseline_merge_and_runtime_input_is_one_line(tiny_run, tmp_path, args, env, message):
    env = plugin_env(tmp_path, "deploycmp.runtimes", *env) if env else {}
    proc = deploycmp(*[a.format(run=tiny_run) for a in args], env=env)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def _terminal_rows(text):
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    return [r[:9] for r in rows if r[1]]  # a row whose format cell is empty continues a folded note


def test_terminal_and_markdown_show_the_same_rows_and_warnings(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path, "run")
    other, _ = _other_machine(tiny_run, tmp_path, "board-1")
    assert deploycmp("merge", run, other).returncode == 0
    targets = tmp_path / "targets.toml"  # a target on cores this host lacks: unavailable rows and a warning
    targets.write_text('[targets.far-cores]\ncpus = [4096]\n')
    assert deploycmp("bench", run, "--targets-file", targets, "--target", "far-cores").returncode == 0
    proc = deploycmp("report", run, "--format", "md")
    md = (run / "report.md").read_text()
    md_rows = [[c.strip() for c in line.split(" | ")][:9] for line in md.splitlines() if line.startswith(("| ✅", "| ❎"))]
    md_rows = [[r[0].lstrip("| ").strip(), *r[1:]] for r in md_rows]
    assert _terminal_rows(proc.stdout) == md_rows and len(md_rows) == len(rows_by_id(run))
    terminal_warnings = [line.removeprefix("warning: ") for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert terminal_warnings == [line.removeprefix("> **Warning:** ") for line in md.splitlines() if line.startswith("> **Warning:**")]
    assert any("unavailable" in w for w in terminal_warnings)


def test_repeat_measures_each_row_in_several_processes(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path, "run")
    proc = deploycmp("bench", run, "--batch", "1", "--repeat", "2", "--force", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(run)
    lat = rows[SLOWED]["latency_ms"]
    assert lat["processes"] == 2 and len(lat["p50_per_process"]) == 2 and lat["ci95_p50"][0] <= lat["p50"] <= lat["ci95_p50"][1]
    assert lat["runs"] == len(lat["per_call"]) == rows[SLOWED]["timing"]["timed_runs"]
    assert (run / "logs" / f"{SLOWED}.log").is_file() and (run / "logs" / f"{SLOWED}.2.log").is_file()
    assert "processes" not in rows[SLOWED.replace("-b1", "-b2")]["latency_ms"]  # batch 2 rows were not re-measured
    proc = deploycmp("report", run, "--baseline", run, "--fail-on-regression", "0", "--format", "md")
    assert proc.returncode == 0 and "0 changed beyond noise" in proc.stdout, proc.stdout + proc.stderr
