import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from deploycmp.core.errors import UsageError
from deploycmp.gate.validate import (Policy, Thresholds, check, junit_xml, load_thresholds, resolve, validate,
                                     write_junit)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "thresholds.toml"


def _row(status="ok", fmt="onnx", quant="none", id="r", **drift):
    base = {"top1_agreement": 1.0, "sqnr_db": 40.0, "rel_l2": 0.01, "cosine_min": 0.9999, "identical": False,
            "accuracy": 0.9, "accuracy_delta_pp": 0.0}
    return {"id": id, "format": fmt, "quantization": quant, "status": status,
            "error": None if status == "ok" else "boom", "drift": {**base, **drift}}


def _pair(v):
    return v.verdict, v.reasons


def test_each_threshold_fails_its_row():
    assert _pair(check(_row(top1_agreement=0.97), Thresholds(max_top1_drop=2))) == \
        ("fail", ["top-1 changed on 3.00% of samples > 2"])
    assert check(_row(top1_agreement=0.99), Thresholds(max_top1_drop=2)).verdict == "pass"
    assert check(_row(sqnr_db=20.0), Thresholds(min_sqnr=30)).verdict == "fail"
    assert check(_row(rel_l2=0.2), Thresholds(max_rel_l2=0.1)).verdict == "fail"
    assert _pair(check(_row(accuracy_delta_pp=-1.5), Thresholds(max_accuracy_drop=1))) == \
        ("fail", ["accuracy dropped 1.50 pp > 1 pp"])
    assert check(_row(accuracy_delta_pp=-0.5), Thresholds(max_accuracy_drop=1)).verdict == "pass"
    assert check(_row(accuracy_delta_pp=+3.0), Thresholds(max_accuracy_drop=0)).verdict == "pass"
    assert _pair(check(_row(cosine_min=0.95), Thresholds(min_cosine=0.99))) == ("fail", ["cosine min 0.9500 < 0.99"])
    assert check(_row(cosine_min=0.995), Thresholds(min_cosine=0.99)).verdict == "pass"
    verdict, reasons = _pair(check(_row(sqnr_db=10.0, rel_l2=0.5), Thresholds(min_sqnr=30, max_rel_l2=0.1)))
    assert verdict == "fail" and len(reasons) == 2


def test_every_output_is_checked_and_named():
    """A model with two outputs: the second one's drift fails the row even when the first one (shown in tables) is fine."""
    good, bad = _row()["drift"], _row(sqnr_db=12.0)["drift"]
    row = _row(**{"outputs": {"logits": good, "embedding": {**bad, "top1_agreement": None, "accuracy_delta_pp": None}}})
    assert _pair(check(row, Thresholds(min_sqnr=30))) == ("fail", ["output embedding: SQNR 12.0 dB < 30 dB"])
    v = check(row, Thresholds(max_top1_drop=2))
    assert v.verdict == "pass" and v.notes == ["output embedding: max_top1_drop not checked: "
                                               "no top-1 agreement measured (not a logits output)"]


def test_nan_measurements_break_thresholds():
    for key, drift_key in [("min_sqnr", "sqnr_db"), ("min_cosine", "cosine_min"), ("max_rel_l2", "rel_l2")]:
        assert check(_row(**{drift_key: math.nan}), Thresholds(**{key: 0.5})).verdict == "fail", key


def test_identical_outputs_pass_any_sqnr_and_cosine():
    row = _row(sqnr_db=None, cosine_min=1.0, identical=True, accuracy=None, accuracy_delta_pp=None)
    v = check(row, Thresholds(min_sqnr=1000, min_cosine=1.0, max_accuracy_drop=0))
    assert (v.verdict, v.reasons, v.notes) == ("pass", [], [])
    assert check(_row(sqnr_db=None), Thresholds(min_sqnr=1)).verdict == "fail"  # not identical, no SQNR


def test_accuracy_threshold_without_labels_is_reported_not_silently_passed():
    row = _row(accuracy=None, accuracy_delta_pp=None)
    v = check(row, Thresholds(max_accuracy_drop=1, min_sqnr=10))
    assert v.verdict == "pass"
    assert v.notes == ["max_accuracy_drop not checked: no accuracy measured (data without labels)"]
    assert "max_accuracy_drop not checked" in ET.fromstring(junit_xml([v])).find("testcase/system-out").text
    assert check(row, Thresholds(min_sqnr=10)).notes == []


def test_rows_without_any_threshold_say_so():
    assert check(_row(), Thresholds()).notes == ["no threshold applies to this row"]


def test_failed_rows_fail_and_unavailable_rows_are_skipped():
    assert check(_row("crashed"), Thresholds(min_sqnr=1)).verdict == "fail"
    assert check({"status": "unavailable", "error": "no GPU"}, Thresholds(min_sqnr=1)).verdict == "skip"
    flags = Thresholds(min_sqnr=1)
    _, status = validate([_row(), {"status": "unavailable", "error": "x"}], Policy(), flags)
    assert status == 0
    _, status = validate([_row(), _row(sqnr_db=0.5)], Policy(), flags)
    assert status == 1
    _, status = validate([_row("export_failed")], Policy(), flags)
    assert status == 1


def test_rows_over_their_targets_memory_budget_fail():
    row = {**_row(), "target": "mobile-cpu", "memory_budget": {"limit_mb": 512, "used_mb": 700.0, "within": False}}
    assert _pair(check(row, Thresholds(min_sqnr=1))) == ("fail", ["memory 700 MB > mobile-cpu budget 512 MB"])
    row["memory_budget"].update(used_mb=100.0, within=True)
    assert check(row, Thresholds(min_sqnr=1)).verdict == "pass"


def _write(tmp_path, text) -> Path:
    path = tmp_path / "thresholds.toml"
    path.write_text(text)
    return path


def test_precedence_default_quantization_format_path_flags(tmp_path):
    policy = load_thresholds(_write(tmp_path, """
[default]
min_sqnr = 1
max_top1_drop = 1
max_rel_l2 = 0.5
min_cosine = 0.5
[quantization.int8]
min_sqnr = 2
max_top1_drop = 2
max_rel_l2 = 0.4
[format.onnx]
min_sqnr = 3
max_top1_drop = 3
[path."onnx-int8"]
min_sqnr = 4
"""))
    flags = Thresholds()
    t = resolve(_row(fmt="onnx", quant="int8"), policy, flags)
    assert (t.min_sqnr, t.max_top1_drop, t.max_rel_l2, t.min_cosine) == (4, 3, 0.4, 0.5)
    assert resolve(_row(fmt="tflite", quant="int8"), policy, flags).min_sqnr == 2
    assert resolve(_row(fmt="onnx", quant="fp16"), policy, flags).min_sqnr == 3
    assert resolve(_row(fmt="tflite", quant="none"), policy, flags).min_sqnr == 1
    t = resolve(_row(fmt="onnx", quant="int8"), policy, Thresholds(min_sqnr=9, max_accuracy_drop=0.1))
    assert (t.min_sqnr, t.max_top1_drop, t.max_accuracy_drop) == (9, 3, 0.1)
    assert resolve(_row(fmt="torch-export", quant="int8"), load_thresholds(_write(tmp_path, """
[path."torch-export-int8"]
min_cosine = 0.7
""")), flags).min_cosine == 0.7


def test_validate_applies_the_policy_per_row(tmp_path):
    policy = load_thresholds(_write(tmp_path, "[default]\nmin_sqnr = 30\n[quantization.int8]\nmin_sqnr = 10\n"))
    rows = [_row(id="a", quant="int8", sqnr_db=15.0), _row(id="b", sqnr_db=15.0)]
    verdicts, status = validate(rows, policy)
    assert [(v.row["id"], v.verdict) for v in verdicts] == [("a", "pass"), ("b", "fail")] and status == 1


@pytest.mark.parametrize("text, message", [
    ("[default\n", "invalid TOML"),
    ("[targets.x]\nthreads = 1\n", "unknown table [targets]"),
    ("[default]\nmax_top1 = 1\n", "unknown threshold 'max_top1'; thresholds: max_top1_drop, min_sqnr"),
    ("[default]\nmin_sqnr = '20'\n", "min_sqnr must be a number, not '20'"),
    ("[default]\nmin_sqnr = true\n", "min_sqnr must be a number, not True"),
    ("[default]\nmin_sqnr = nan\n", "min_sqnr must be a number, not nan"),
    ("[format.tflit]\nmin_sqnr = 1\n", "unknown format 'tflit'; formats: torchscript, torch-export, onnx"),
    ("[quantization.int3]\nmin_sqnr = 1\n", "unknown quantization 'int3'; quantizations: none, bf16, fp16, dynamic, int8, int4"),
    ("[path.onnx]\nmin_sqnr = 1\n", "not of the form FORMAT-QUANT"),
    ("[path.\"onnx-int3\"]\nmin_sqnr = 1\n", "unknown quantization 'int3'"),
    ("[path.\"tflit-int8\"]\nmin_sqnr = 1\n", "unknown format 'tflit'"),
    ("[default]\nmax_top1_drop = -1\n", "max_top1_drop must be >= 0"),
    ("[quantization.int8]\nmax_accuracy_drop = -0.5\n", "max_accuracy_drop must be >= 0"),
    ("[default]\nmin_cosine = 1.5\n", "min_cosine must be between -1 and 1"),
    ("default = 1\n", "default must be a table"),
    ("[quantization]\nint8 = 1\n", "quantization.int8 must be a table"),
    ("", "give at least one threshold"),
    ("[default]\n[format.onnx]\n", "give at least one threshold"),
])
def test_thresholds_file_errors(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(UsageError) as e:
        load_thresholds(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_unreadable_thresholds_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read thresholds file"):
        load_thresholds(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_bytes(b"[default]\nmin_sqnr = 1 # \xff\n")
    with pytest.raises(UsageError, match="cannot read thresholds file"):
        load_thresholds(tmp_path / "bad.toml")


def test_the_example_file_loads():
    policy = load_thresholds(EXAMPLE)
    assert policy.default.max_top1_drop == 1.0 and policy.quantization["int8"].max_accuracy_drop == 1.0
    assert policy.quantization["fp16"].min_sqnr == 40
    assert resolve(_row(fmt="tflite", quant="int8"), policy).min_cosine == 0.98


def test_junit_xml_counts_and_cases(tmp_path):
    rows = [_row(id="onnx-int8", quant="int8", sqnr_db=5.0, accuracy_delta_pp=-3.0), _row(id="onnx-none"),
            {**_row("unavailable", fmt="tflite", id="tflite-none"), "error": "no LiteRT"}, _row("crashed", id="x")]
    verdicts, _ = validate(rows, Policy(), Thresholds(min_sqnr=20, max_accuracy_drop=1))
    path = tmp_path / "out" / "junit.xml"
    write_junit(path, verdicts, "resnet18")
    suite = ET.parse(path).getroot()
    assert suite.tag == "testsuite" and suite.get("name") == "resnet18"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["onnx-int8"].get("classname") == "deploycmp.onnx.int8"
    assert cases["onnx-int8"].find("failure").get("message") == \
        "accuracy dropped 3.00 pp > 1 pp; SQNR 5.0 dB < 20 dB"
    assert "accuracy delta -3.00 pp, SQNR 5.0 dB, cosine min 0.9999, top-1 agreement 100.00%" in \
        cases["onnx-int8"].find("system-out").text
    assert cases["onnx-none"].find("failure") is None and cases["onnx-none"].find("skipped") is None
    assert cases["tflite-none"].find("skipped").get("message") == "unavailable: no LiteRT"
    assert cases["x"].find("failure").get("message").startswith("crashed: boom")
    assert len(suite.findall("testcase/failure")) == 2 and len(suite.findall("testcase/skipped")) == 1


def test_degenerate_rows_fail_unless_allowed():
    """An all-zero reference makes every path 'match' it: such a row fails with the reason, or passes with a note
    under --allow-degenerate; a top-1-only finding leaves the other thresholds checked."""
    found = {"reason": "reference outputs are constant (all 0)", "scope": "all"}
    row = _row(sqnr_db=None, identical=True, degenerate=found)
    assert _pair(check(row, Thresholds(min_sqnr=30))) == \
        ("fail", ["drift n/a: reference outputs are constant (all 0) (--allow-degenerate accepts it)"])
    v = check(row, Thresholds(min_sqnr=30), allow_degenerate=True)
    assert v.verdict == "pass" and v.notes == ["drift n/a: reference outputs are constant (all 0) (accepted: "
                                               "--allow-degenerate)"]
    one_class = _row(sqnr_db=10.0, degenerate={"reason": "class 3 wins every one of the 8 samples", "scope": "top1"})
    v = check(one_class, Thresholds(min_sqnr=30, max_top1_drop=1), allow_degenerate=True)
    assert v.reasons == ["SQNR 10.0 dB < 30 dB"]  # top-1 is not checked, SQNR still is
    assert check(one_class, Thresholds(min_sqnr=5)).verdict == "pass"  # a top-1 finding spoils only top-1
    assert check(one_class, Thresholds(max_top1_drop=1)).reasons == [
        "drift n/a: class 3 wins every one of the 8 samples (--allow-degenerate accepts it)"]
    _, status = validate([row], Policy(), Thresholds(min_sqnr=30))
    assert status == 1 and validate([row], Policy(), Thresholds(min_sqnr=30), allow_degenerate=True)[1] == 0


def test_thresholds_are_given_by_name_only():
    with pytest.raises(TypeError):
        Thresholds(2.0)  # positional: a reordering of the fields would silently swap release thresholds


def test_one_definition_of_a_failed_row():
    from deploycmp.core.results import exit_status
    from deploycmp.core.schema import STATUSES, Status, failed

    assert [s for s in STATUSES if failed({"status": s})] == ["failed", "crashed", "timeout", "export_failed",
                                                              "out_of_memory"]
    assert not failed({"status": Status.UNAVAILABLE}) and not failed({"status": "ok"})
    assert exit_status([{"status": "ok"}, {"status": "unavailable"}]) == 0
    assert exit_status([{"status": "ok"}, {"status": "timeout"}]) == 1
