"""Issue 25, untrusted input, on the way out: every string of a row or manifest may come from another machine (merge,
a run directory copied in) and hold anything. report.csv runs no formula in a spreadsheet; the terminal and
report.md get no escape sequence or control character; the JUnit XML of validate parses whatever the rows hold; the
HTML report escapes everything. Also: validate --junit at a path it cannot write is one line; an empty output is
said to be empty; NaN activations in int8 calibration are named; a baseline comparison never shows nan.

One small measured run directory serves the module: its rows are edited into hostile ones (the strings the schema of
incoming rows lets through: errors, warnings, descriptions); ids and hostnames with control characters, which that
schema refuses, are checked on the functions that write the outputs."""
import copy
import csv
import io
import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST, TINY
from tests.test_bad_input_corpus import cli, refused

ANSI = "\x1b[31;1mred\x1b[0m"
OSC8 = "\x1b]8;;http://evil.example/\x1b\\click here\x1b]8;;\x1b\\"
FORMULA = '=HYPERLINK("http://evil.example/","click")'
ERROR = f"{FORMULA} {ANSI} {OSC8} \x01\x0b\x7f\x9b2J bell\x07 \ud800 end"
WARNING = f"{ANSI} warning {OSC8}\r\nsecond line\ttab"
MARKUP = "[link=http://evil.example/]rich link[/link] [bold red]bold[/]"
SCRIPT = "<script>alert(1)</script>"
DDE = "-2+3+cmd|' /C calc'!A0"
HOSTNAME = "@SUM(A1:A9)"  # a hostname the schema of incoming rows allows, that a spreadsheet would compute

# what may not reach a terminal or a Markdown file: C0 controls but newline, DEL, C1 controls, lone surrogates
BAD = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def assert_plain(text: str, where: str) -> None:
    found = BAD.search(text)
    if found:
        around = text[max(0, found.start() - 60):found.end() + 60]
        raise AssertionError(f"{where} holds {found.group()!r} at {found.start()}: {around!r}")


# --- the shared run directory --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The tiny CNN exported to ONNX and measured at batch 1 (an eager and an ONNX row)."""
    out = tmp_path_factory.mktemp("outputs") / "measured"
    proc = cli("export", *TINY, "--formats", "onnx", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = cli("bench", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def write_rows(run: Path, results: dict) -> None:
    """The rows back where deploycmp keeps them: results.json and one results/ROW.json file each."""
    (run / "results.json").write_text(json.dumps(results))
    for row in results["rows"]:
        (run / "results" / f"{row['id']}.json").write_text(json.dumps(row))


@pytest.fixture(scope="module")
def hostile(measured, tmp_path_factory):
    """A copy of the run whose rows and manifest hold hostile strings: the ONNX row failed with an error that is a
    formula with ANSI and OSC-8 escapes and control characters, the eager row warns with escapes, rich markup and
    HTML, every host's CPU and target description carry escapes, the hostname is a formula."""
    run = tmp_path_factory.mktemp("outputs") / "hostile"
    shutil.copytree(measured, run)
    results = json.loads((run / "results.json").read_text())
    rows = {r["runtime"]: r for r in results["rows"]}
    assert {"torch", "onnxruntime"} <= set(rows) and all(r["status"] == "ok" for r in rows.values())
    rows = {"onnx": rows["onnxruntime"], "eager": rows["torch"]}
    rows["onnx"].update(status="failed", error=ERROR)
    rows["eager"].update(warnings=[WARNING, MARKUP, SCRIPT], device=DDE)
    rows["eager"]["drift"]["accuracy_delta_pp"] = -0.5  # a negative number: a number in the CSV, not text
    for row in results["rows"]:
        row["target_description"] = f"target {ANSI} {MARKUP}"
        row["host"] = {**(row.get("host") or {}), "hostname": HOSTNAME, "cpu": f"CPU {ANSI}\x07", "os": f"OS {OSC8}"}
    write_rows(run, results)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["warnings"] = [*manifest.get("warnings", []), f"{OSC8} manifest warning\n{SCRIPT}"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture(scope="module")
def reported(hostile):
    """deploycmp report on the hostile run, every format."""
    proc = cli("report", hostile, "--format", "md,csv,json,html")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


# --- sanitize ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, shown", [
    (ANSI, "red"),
    (OSC8, "click here"),
    ("\x1b]0;window title\x07after", "after"),
    ("a\x1b(Bb\x1b7c", "abc"),               # other escapes: charset designation, save cursor
    ("\x9b31mX\x9d8;;http://e\x9cY", "XY"),  # 8-bit CSI and OSC
    ("\x1b]8;;never ends", "8;;never ends"),  # an unterminated OSC loses its introducer, the text stays
    ("a\x01\x02b\x7fc\x85d", "abc d"),    # NEL (\x85) is a line break: a space
    ("line one\nline two\r\n\tthree", "line one line two three"),
    ("bad \ud800surrogate", "bad surrogate"),
    ("abc\u202edcba", "abcdcba"),             # a right-to-left override
    ("é ünïcode ✅ [bold]x[/]", "é ünïcode ✅ [bold]x[/]"),
])
def test_terminal_text(text, shown):
    from deploycmp.core.sanitize import terminal

    assert terminal(text) == shown


def test_a_document_keeps_its_lines():
    from deploycmp.core.sanitize import document

    assert document(f"# title\n\n| {ANSI} |\r\n\ttabbed\x07\n") == "# title\n\n| red |\n\ttabbed\n"


@pytest.mark.parametrize("value, cell", [
    (FORMULA, "'" + FORMULA), ("+1+1", "'+1+1"), ("-1+1", "'-1+1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("ok =1", "ok =1"), ("", ""),
    (-1.5, -1.5), (3, 3), (True, True), ("bad\ud800", "bad\ufffd"),
])
def test_csv_cell(value, cell):
    from deploycmp.core.sanitize import csv_cell

    assert csv_cell(value) == cell and type(csv_cell(value)) is type(cell)


def test_xml_text_keeps_only_what_xml_allows():
    from deploycmp.core.sanitize import xml_text

    assert xml_text("a\x01\x0bb\tc\nd\re\ufffe\ud800f😀") == "ab\tc\nd\ref😀"


def test_sanitizing_is_linear():
    import time

    from deploycmp.core.sanitize import terminal

    start = time.perf_counter()
    for text in ("\x90" * 100_000, "\x1b[" + "1" * 100_000, "\x1b]" * 50_000, "\x9d" + "a" * 100_000):
        terminal(text)
    assert time.perf_counter() - start < 2


# --- report ----------------------------------------------------------------------------------------------------------

def test_csv_cells_are_neutralised_and_numbers_stay_numbers(hostile, reported):
    with open(hostile / "report.csv", newline="", encoding="utf-8") as f:
        rows = {r["runtime"]: r for r in csv.DictReader(f)}
    rows["onnx"], rows["eager"] = rows.pop("onnxruntime"), rows.pop("torch")
    assert rows["onnx"]["error"].startswith("'=HYPERLINK(")
    assert rows["eager"]["device"] == "'" + DDE
    assert {r["host.hostname"] for r in rows.values()} == {"'" + HOSTNAME}
    for row in rows.values():
        for field, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or _number(cell), (field, cell)
    assert rows["eager"]["drift.accuracy_delta_pp"] == "-0.5"  # a number: no quote
    assert float(rows["eager"]["latency_ms.p50"]) > 0 and float(rows["eager"]["size_bytes"]) > 0


def _number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def test_terminal_table_holds_no_escape_or_control_character(reported):
    out = reported.stdout
    assert_plain(out, "the terminal output")
    assert "warning: click here manifest warning <script>alert(1)</script>" in out
    assert "OS click here" in out and "CPU red (" in out
    # rich markup printed as it is, not obeyed
    assert "server-cpu: target red [link=http://evil.example/]rich link[/link] [bold red]bold[/]" in out


def test_markdown_holds_no_escape_or_control_character(hostile, reported):
    md = (hostile / "report.md").read_text(encoding="utf-8")
    assert_plain(md, "report.md")
    assert "HYPERLINK" in md and "click here" in md and "second line" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len({line.count(" | ") for line in table if "\\|" not in line}) == 1  # no cell broke its table row


def test_html_escapes_and_holds_no_control_character(hostile, reported):
    page = (hostile / "report.html").read_text(encoding="utf-8")
    assert_plain(page.replace("\t", " "), "report.html")
    assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_json_keeps_the_rows_and_is_json(hostile, reported):
    data = json.loads((hostile / "report.json").read_text(encoding="utf-8"))
    assert data["rows"][0]["host"]["hostname"] == HOSTNAME  # the data as it came; the text outputs are cleaned
    assert_plain(" ".join(data["warnings"]), "report.json's warnings")


# ids and hostnames with control characters: refused by the schema of incoming rows, and harmless even so

def _merged_rows(measured: Path) -> tuple[dict, list[dict]]:
    from deploycmp.core.rundir import load_manifest

    rows = json.loads((measured / "results.json").read_text())["rows"]
    for row in rows:
        row["id"] += "@evil\x01\x0bhost" + ANSI
        row["host"] = {**(row.get("host") or {}), "hostname": "evil\x01\x0bhost" + OSC8}
    rows[0]["memory_budget"] = {"within": False, "used_mb": 900, "limit_mb": 512}  # its id in a warning
    return load_manifest(measured), rows


def test_markdown_and_table_of_rows_with_hostile_ids_and_hostnames(measured):
    from rich.console import Console

    from deploycmp.report import write as report

    manifest, rows = _merged_rows(measured)
    other = copy.deepcopy(rows[0])
    other["host"]["hostname"] = "second\x1b[2Jhost"  # two hosts: a heading each
    rows.append(other)
    assert_plain(report.markdown(manifest, rows), "report.markdown()")
    buf = io.StringIO()
    report.print_table(manifest, rows, console=Console(file=buf, width=200))
    assert_plain(buf.getvalue(), "report.print_table()")
    assert "second host" not in buf.getvalue() and "secondhost" in buf.getvalue()


def test_junit_xml_of_rows_with_hostile_ids_and_hostnames_parses(measured):
    from deploycmp.gate.validate import Policy, Thresholds, junit_xml, validate, verdict_lines

    _, rows = _merged_rows(measured)
    rows[-1].update(status="failed", error=ERROR)
    verdicts, status = validate(rows, Policy(), Thresholds(max_top1_drop=100.0), allow_degenerate=True)
    assert status == 1
    suite = ET.fromstring(junit_xml(verdicts).encode())
    cases = suite.findall("testcase")
    assert len(cases) == len(rows) and all("\x1b" not in c.get("name") and "evil host" in c.get("name")
                                           for c in cases)
    failure = cases[-1].find("failure")
    assert "HYPERLINK" in failure.get("message") and "click here" in failure.text
    assert_plain("\n".join(verdict_lines(verdicts)), "validate's lines")


def test_validate_junit_of_hostile_rows_parses(hostile, tmp_path):
    junit = tmp_path / "junit.xml"
    proc = cli("validate", hostile, "--max-top1-drop", "100", "--junit", junit)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the failed row fails
    assert_plain(proc.stdout, "validate's output")
    suite = ET.parse(junit).getroot()
    failure = next(c for c in suite.iter("testcase") if c.get("name").startswith("onnx-")).find("failure")
    assert "HYPERLINK" in failure.get("message") and "click here" in failure.text
    assert_plain(failure.get("message"), "the failure's message")


# --- validate --junit at a path it cannot write -----------------------------------------------------------------------

@pytest.mark.parametrize("where, needle", [
    ("dir", "is a directory"),
    ("/proc/x.xml", "cannot write a file in /proc"),
    ("/proc/missing/x.xml", "cannot write a file in /proc"),
    ("file/j.xml", "is not a directory"),
    ("file/missing/j.xml", "is not a directory"),
    ("/dev/null", "not a regular file"),
])
def test_check_junit_path_refuses(tmp_path, where, needle):
    from deploycmp.core.errors import UsageError
    from deploycmp.gate.validate import check_junit_path

    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("a file")
    path = Path(where) if where.startswith("/") else tmp_path / where
    with pytest.raises(UsageError) as e:
        check_junit_path(path)
    assert str(e.value).startswith(f"--junit {path}") and needle in str(e.value) and "\n" not in str(e.value)


def test_check_junit_path_takes_a_writable_path_and_changes_nothing(tmp_path):
    from deploycmp.gate.validate import check_junit_path

    assert check_junit_path(tmp_path / "new.xml") == tmp_path / "new.xml"
    check_junit_path(tmp_path / "reports" / "ci" / "junit.xml")  # write_junit makes the missing folders
    (tmp_path / "old.xml").write_text("kept")
    check_junit_path(tmp_path / "old.xml")
    assert (tmp_path / "old.xml").read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["old.xml"]


def test_write_junit_turns_an_os_error_into_one_line(tmp_path, monkeypatch):
    import errno

    from deploycmp.core.errors import UsageError
    from deploycmp.gate import validate

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(validate, "write_atomic", full)
    with pytest.raises(UsageError, match=r"--junit .*j\.xml: cannot write the JUnit XML: No space left on device"):
        validate.write_junit(tmp_path / "j.xml", [])


@pytest.mark.parametrize("where", ["dir", "/proc/x.xml"])
def test_validate_with_a_junit_path_it_cannot_write(measured, tmp_path, where):
    (tmp_path / "dir").mkdir()
    path = Path(where) if where.startswith("/") else tmp_path / where
    refused(cli("validate", measured, "--max-top1-drop", "100", "--junit", path), 2, f"--junit {path}")
    assert not list((tmp_path / "dir").iterdir())


def test_validate_refuses_a_junit_path_before_validating_and_prints_plain_ids(measured, tmp_path):
    proc = cli("validate", measured, "--max-top1-drop", "100", "--junit", tmp_path)
    refused(proc, 2, "is a directory")
    assert proc.stdout == ""  # nothing validated: the verdicts could not have been kept
    import inspect

    from deploycmp.cli import commands as command_line

    assert "verdict_lines" in inspect.getsource(command_line.validate.callback)


def test_plots_draw_labels_with_dollar_signs_as_text(measured):
    from deploycmp.report import plots

    rows = json.loads((measured / "results.json").read_text())["rows"]
    for row in rows:
        row["runtime"] += " $\\frac{a$"
    assert plots.latency_vs_size(rows) and plots.drift_bars(rows)


# --- smaller ones -------------------------------------------------------------------------------------------------

def test_an_empty_output_is_said_to_be_empty():
    from deploycmp.core import degenerate

    found = degenerate.check(np.zeros((8, 0), np.float32), "other")
    assert found["scope"] == degenerate.ALL
    assert "has no elements" in found["reason"] and "(8, 0)" in found["reason"] and "constant" not in found["reason"]
    assert "constant (all 0)" in degenerate.check(np.zeros((8, 3)), "other")["reason"]  # a real all-zero one still


def test_nan_activations_in_int8_calibration_are_named(tmp_path):
    out = tmp_path / "nan"
    proc = cli("export", "--model", "tests.tiny_nan:nan_in_the_middle", "--input-shape", "1,3,16,16", "--formats",
               "onnx", "--quantize", "int8", "--samples", "8", "--out", out, "--no-cache")
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    artifacts = json.loads((out / "manifest.json").read_text())["artifacts"]
    error = next(a for a in artifacts if a["id"] == "onnx-int8")["error"]
    assert "int8 calibration met NaN or inf activations ('scale issue')" in error, error
    assert "the model computes non-finite values on the calibration inputs" in error and "Log node" in error
    assert "AssertionError" not in error and "int8 calibration met NaN" in proc.stdout + proc.stderr


def test_a_baseline_comparison_never_shows_nan(measured):
    from rich.console import Console

    from deploycmp.report import compare

    results = json.loads((measured / "results.json").read_text())
    baseline = copy.deepcopy(results)
    first, second = baseline["rows"][:2]
    for row in baseline["rows"]:  # what a hand-edited baseline may hold (the schema of incoming files refuses it)
        row["latency_ms"].update(p50=math.nan, ci95_p50=[math.nan, math.nan])
    first["latency_ms"]["p99"] = math.inf
    second["latency_ms"]["ci95_p99"] = [math.nan, 1.0]
    second["size_bytes"] = math.nan
    for row in baseline["rows"]:
        row["drift"]["sqnr_db"] = math.nan
    comparison = compare.compare(results, baseline, "base.json")
    assert comparison["median_p50_change_pct"] is None
    buf = io.StringIO()
    compare.print_comparison(comparison, console=Console(file=buf, width=200))
    text = "\n".join([*compare.summary(comparison), compare.markdown(comparison), buf.getvalue(),
                      *compare.regressions(comparison, 0.0),
                      *(cell for entry in comparison["rows"] for cell in compare.cells(entry))])
    assert not re.search(r"\bnan\b|\binf\b", text, re.IGNORECASE), text
    assert all(compare.verdict(e) == "no interval to compare" for e in comparison["rows"])
