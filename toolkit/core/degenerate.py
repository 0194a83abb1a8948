"""Reference outputs that make drift meaningless: empty (no elements), all zero, constant over samples, near the
dtype's resolution, NaN/inf, or one class winning every sample. Any path "matches" such a reference, an int8 one
included, so rows show drift as n/a with the reason instead of exact/100%."""
from __future__ import annotations

import numpy as np

ALL, TOP1 = "all", "top1"  # what a finding makes meaningless: every drift metric, or top-1/top-5 only


def check(reference: np.ndarray, kind: str) -> dict | None:
    """{"reason": ..., "scope": all|top1} for a degenerate reference output (samples first), else None."""
    a = np.asarray(reference, dtype=np.float64)
    if a.size == 0:  # nothing to compare: not "constant (all 0)", which max() of nothing would make it
        return {"reason": f"reference output is empty: shape {tuple(a.shape)} has no elements", "scope": ALL}
    if not np.all(np.isfinite(a)):
        return {"reason": f"reference outputs hold {int(np.sum(~np.isfinite(a)))} NaN/inf values", "scope": ALL}
    peak = float(np.max(np.abs(a)))
    if peak == 0.0:
        return {"reason": "reference outputs are constant (all 0)", "scope": ALL}
    if len(a) > 1 and np.all(a == a[:1]):
        return {"reason": f"reference outputs are constant over samples (every sample gives the same {a[0].size} "
                          "values)", "scope": ALL}
    resolution = 8 * float(np.finfo(np.float32).eps)
    if peak < resolution:
        return {"reason": f"reference outputs are tiny (max |x| {peak:.1e}, near float32 resolution)", "scope": ALL}
    if kind == "logits" and len(a) > 1 and a.ndim == 2:
        top = np.argmax(a, axis=1)
        if np.all(top == top[0]):
            return {"reason": f"class {int(top[0])} wins every one of the {len(a)} samples: top-1 says nothing",
                    "scope": TOP1}
    return None


def check_outputs(outputs: dict, kinds: dict) -> dict:
    """Output name -> finding, for the degenerate outputs only."""
    found = {name: check(a, kinds.get(name, "other")) for name, a in outputs.items()}
    return {name: f for name, f in found.items() if f}


def mark(drift: dict, findings: dict) -> dict:
    """A row's drift with each degenerate output's finding under `degenerate` (the top level follows the first
    output, as the table does)."""
    for name, metrics in drift.get("outputs", {}).items():
        if name in findings:
            metrics["degenerate"] = findings[name]
    first = drift.get("output")
    if first in findings:
        drift["degenerate"] = findings[first]
    return drift


def hides(d: dict, metric: str) -> bool:
    """Whether a degenerate finding makes `metric` (max_abs, sqnr_db, top1_agreement ...) meaningless."""
    f = d.get("degenerate")
    return bool(f) and (f["scope"] == ALL or metric in ("top1_agreement", "top5_overlap"))
