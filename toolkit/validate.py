"""deploycmp validate: a pass/fail verdict per row against drift thresholds, and an exit status for CI."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Thresholds:
    max_top1_drop: float | None = None  # percentage points of samples whose top-1 differs from the source
    min_sqnr: float | None = None       # dB
    max_rel_l2: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.max_top1_drop, self.min_sqnr, self.max_rel_l2))


def check(row: dict, t: Thresholds) -> tuple[str, list[str]]:
    """('pass' | 'fail' | 'skip', reasons) for one row."""
    if row["status"] == "unavailable":
        return "skip", [f"unavailable: {row.get('error')}"]
    if row["status"] != "ok":
        return "fail", [f"{row['status']}: {row.get('error')} (nothing to validate)"]
    d, broken = row.get("drift") or {}, []
    if t.max_top1_drop is not None and d.get("top1_agreement") is not None:
        drop = (1 - d["top1_agreement"]) * 100
        if drop > t.max_top1_drop:
            broken.append(f"top-1 changed on {drop:.2f}% of samples > {t.max_top1_drop:g}")
    if t.min_sqnr is not None and not d.get("identical") and (d.get("sqnr_db") is None or d["sqnr_db"] < t.min_sqnr):
        broken.append(f"SQNR {d.get('sqnr_db', float('nan')):.1f} dB < {t.min_sqnr:g} dB")
    if t.max_rel_l2 is not None and d.get("rel_l2") is not None and d["rel_l2"] > t.max_rel_l2:
        broken.append(f"rel L2 {d['rel_l2']:.3g} > {t.max_rel_l2:g}")
    budget = row.get("memory_budget")
    if budget and not budget["within"]:  # a target's budget is a release criterion of its own
        broken.append(f"memory {budget['used_mb']:.0f} MB > {row['target']} budget {budget['limit_mb']:g} MB")
    return ("fail" if broken else "pass"), broken


def validate(rows: list[dict], t: Thresholds) -> tuple[list[tuple[dict, str, list[str]]], int]:
    verdicts = [(row, *check(row, t)) for row in rows]
    return verdicts, (1 if any(v == "fail" for _, v, _ in verdicts) else 0)
