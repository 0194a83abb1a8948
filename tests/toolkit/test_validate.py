from toolkit.validate import Thresholds, check, validate


def _row(status="ok", **drift):
    base = {"top1_agreement": 1.0, "sqnr_db": 40.0, "rel_l2": 0.01, "identical": False}
    return {"id": "r", "status": status, "error": None if status == "ok" else "boom", "drift": {**base, **drift}}


def test_each_threshold_fails_its_row():
    assert check(_row(top1_agreement=0.97), Thresholds(max_top1_drop=2)) == ("fail", ["top-1 changed on 3.00% of samples > 2"])
    assert check(_row(top1_agreement=0.99), Thresholds(max_top1_drop=2))[0] == "pass"
    assert check(_row(sqnr_db=20.0), Thresholds(min_sqnr=30))[0] == "fail"
    assert check(_row(rel_l2=0.2), Thresholds(max_rel_l2=0.1))[0] == "fail"
    verdict, reasons = check(_row(sqnr_db=10.0, rel_l2=0.5), Thresholds(min_sqnr=30, max_rel_l2=0.1))
    assert verdict == "fail" and len(reasons) == 2


def test_identical_outputs_pass_any_sqnr():
    assert check(_row(sqnr_db=None, identical=True), Thresholds(min_sqnr=1000))[0] == "pass"


def test_failed_rows_fail_and_unavailable_rows_are_skipped():
    assert check(_row("crashed"), Thresholds(min_sqnr=1))[0] == "fail"
    assert check({"status": "unavailable", "error": "no GPU"}, Thresholds(min_sqnr=1))[0] == "skip"
    _, status = validate([_row(), {"status": "unavailable", "error": "x"}], Thresholds(min_sqnr=1))
    assert status == 0
    _, status = validate([_row(), _row(sqnr_db=0.5)], Thresholds(min_sqnr=1))
    assert status == 1


def test_rows_over_their_targets_memory_budget_fail():
    row = {**_row(), "target": "mobile-cpu", "memory_budget": {"limit_mb": 512, "used_mb": 700.0, "within": False}}
    assert check(row, Thresholds(min_sqnr=1)) == ("fail", ["memory 700 MB > mobile-cpu budget 512 MB"])
    row["memory_budget"].update(used_mb=100.0, within=True)
    assert check(row, Thresholds(min_sqnr=1))[0] == "pass"
