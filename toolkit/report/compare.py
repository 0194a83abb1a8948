"""deploycmp report --baseline: what changed against another run, row by row, and whether it is beyond noise.

A latency change counts as significant only when the 95% confidence intervals of the two runs (order statistics of
the per-call timings, see deploycmp.measure.latency) do not overlap: a change inside run-to-run noise is reported, not flagged.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from deploycmp.core.errors import UsageError
from deploycmp.core.hosts import compiled_for_another_cpu
from deploycmp.core.sanitize import terminal

LATENCY = (("p50", "ci95_p50"), ("p99", "ci95_p99"))


def load_baseline(path) -> dict:
    """A baseline: another run directory, or a results.json file kept from a release."""
    from deploycmp.core.results import load_results
    from deploycmp.core.rundir import read_results_file

    from deploycmp.measure.merge import check_schema

    path = Path(path)
    if path.is_dir():
        return check_schema(load_results(path), f"--baseline {path}")
    if not path.is_file():
        raise UsageError(f"--baseline {path}: no such run directory or results.json file")
    return check_schema(read_results_file(path, f"--baseline {path}"), f"--baseline {path}")


def _finite(value) -> float | None:
    """A measurement to compare: a finite number, else None (missing; NaN, inf or not a number in a hand-edited or
    foreign results file), so that no comparison is made with it."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def _interval(ci) -> list | None:
    """A confidence interval [low, high] of finite numbers, else None."""
    if not isinstance(ci, list | tuple) or len(ci) != 2 or any(_finite(v) is None for v in ci):
        return None
    return list(ci)


def _pct(now, base):
    now, base = _finite(now), _finite(base)
    return None if now is None or not base else (now / base - 1) * 100


def latency_change(now: dict, base: dict, key: str, ci_key: str) -> dict:
    """now/base/change % of one latency statistic; significant is None when either run lacks its interval. A value
    that is not a finite number counts as missing."""
    a, b = _interval(now.get(ci_key)), _interval(base.get(ci_key))
    significant = None if not (a and b) else (a[0] > b[1] or a[1] < b[0])
    return {"now": _finite(now.get(key)), "base": _finite(base.get(key)),
            "change_pct": _pct(now.get(key), base.get(key)), "ci_now": a, "ci_base": b, "significant": significant}


def drift_change(now: dict, base: dict) -> dict:
    out = {}
    for key in ("sqnr_db", "rel_l2", "max_abs", "top1_agreement", "accuracy"):
        if now.get(key) is not None or base.get(key) is not None:
            out[key] = {"now": _finite(now.get(key)), "base": _finite(base.get(key))}
    out["changed"] = any(v["now"] != v["base"] for v in out.values())
    out["identical"] = {"now": bool(now.get("identical")), "base": bool(base.get("identical"))}
    return out


def compare_row(row: dict, base: dict) -> dict:
    entry = {"id": row["id"], "status": row["status"], "base_status": base["status"],
             "same_artifact": bool(row.get("artifact_sha256")) and row.get("artifact_sha256") == base.get("artifact_sha256")}
    if row["status"] != "ok" or base["status"] != "ok":
        return entry
    why = compiled_for_another_cpu(row, (base.get("host") or {}).get("isa"))
    if why:  # a package compiled for one CPU: its speed on another says nothing about a change
        return {**entry, "not_comparable": why}
    lat, base_lat = row.get("latency_ms") or {}, base.get("latency_ms") or {}
    for key, ci_key in LATENCY:
        entry[key] = latency_change(lat, base_lat, key, ci_key)
    entry["size"] = {"now": _finite(row.get("size_bytes")), "base": _finite(base.get("size_bytes")),
                     "change_pct": _pct(row.get("size_bytes"), base.get("size_bytes"))}
    entry["drift"] = drift_change(row.get("drift") or {}, base.get("drift") or {})
    return entry


def compare(results: dict, baseline: dict, baseline_name: str) -> dict:
    models, base_models = ({r.get("model") for r in rs["rows"]} for rs in (results, baseline))
    if models and base_models and not models & base_models:
        raise UsageError(f"--baseline {baseline_name} is of model {', '.join(map(repr, sorted(base_models, key=str)))}, "
                         f"this run of {', '.join(map(repr, sorted(models, key=str)))}: compare runs of the same model")
    base = {r["id"]: r for r in baseline["rows"]}
    ids = {r["id"] for r in results["rows"]}
    rows = [compare_row(r, base[r["id"]]) for r in results["rows"] if r["id"] in base]
    return {
        "baseline": baseline_name,
        "rows": rows,
        "new": [r["id"] for r in results["rows"] if r["id"] not in base],
        "gone": [i for i in base if i not in ids],
        "median_p50_change_pct": median_change(rows),
    }


def median_change(entries: list[dict]) -> float | None:
    """The median p50 change over the rows measured in both: a shift every row shares (a busier or quieter machine,
    another library version) shows here, to be read against a single row's change."""
    changes = [c for e in entries if "p50" in e and (c := _finite(e["p50"]["change_pct"])) is not None]
    return statistics.median(changes) if changes else None


def verdict(entry: dict) -> str:
    """slower / faster (beyond noise, by p50 or p99), within noise, or the status change."""
    if entry.get("not_comparable"):
        return f"not compared: {entry['not_comparable']}"
    if "p50" not in entry:
        return f"{entry['base_status']} → {entry['status']}"
    moved = [(k, entry[k]["change_pct"]) for k, _ in LATENCY
             if entry[k]["significant"] and _finite(entry[k]["change_pct"])]
    if not moved:
        return "within noise" if entry["p50"]["significant"] is not None else "no interval to compare"
    key, pct = max(moved, key=lambda kv: abs(kv[1]))
    return f"{'slower' if pct > 0 else 'faster'} ({key})"


def regressions(comparison: dict, pct: float) -> list[str]:
    """One line per row whose p50 or p99 got more than `pct` % slower beyond noise."""
    out = []
    for entry in comparison["rows"]:
        slower = [f"{key} {c['base']:.3g} -> {c['now']:.3g} ms ({c['change_pct']:+.1f}%, 95% CIs {_ci(c['ci_base'])} "
                  f"and {_ci(c['ci_now'])})" for key, _ in LATENCY
                  if (c := entry.get(key)) and c["significant"] and _finite(c["change_pct"]) is not None
                  and c["change_pct"] > pct and _finite(c["base"]) is not None and _finite(c["now"]) is not None]
        if slower:
            out.append(terminal(f"{entry['id']}: " + "; ".join(slower)))
    return out


def _ci(ci) -> str:
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"


COLUMNS = ("row", "p50 ms (base → now)", "Δ p50", "p99 ms (base → now)", "Δ p99", "size Δ", "SQNR dB (base → now)",
           "verdict")


def _number(value, fmt: str) -> str:
    """A value as text; "-" for one that is missing or not a finite number: a comparison never shows nan."""
    return "-" if _finite(value) is None else format(value, fmt)


def _latency_cell(change: dict) -> tuple[str, str]:
    mark = " *" if change["significant"] else ""
    pct = "-" if _finite(change["change_pct"]) is None else f"{change['change_pct']:+.1f}%{mark}"
    return f"{_number(change['base'], '.3g')} → {_number(change['now'], '.3g')}", pct


def _sqnr(drift: dict, which: str) -> str:
    if drift["identical"][which]:
        return "exact"
    return _number((drift.get("sqnr_db") or {}).get(which), ".1f")


def cells(entry: dict) -> list[str]:
    """One comparison row as text, the same for the terminal, Markdown and HTML (each cell one line of plain text)."""
    if "p50" not in entry:
        return [terminal(c) for c in (entry["id"], "-", "-", "-", "-", "-", "-", verdict(entry))]
    size = entry["size"]["change_pct"]
    return [terminal(c) for c in (
        entry["id"], *_latency_cell(entry["p50"]), *_latency_cell(entry["p99"]),
        "-" if _finite(size) is None else f"{size:+.1f}%",
        f"{_sqnr(entry['drift'], 'base')} → {_sqnr(entry['drift'], 'now')}",
        verdict(entry) + ("" if entry["same_artifact"] else "; other artifact"))]


def summary(comparison: dict) -> list[str]:
    n = len(comparison["rows"])
    moved = sum(verdict(e).startswith(("slower", "faster")) for e in comparison["rows"])
    lines = [f"against baseline {comparison['baseline']}: {n} row(s) in both, {moved} changed beyond noise "
             f"(* = 95% confidence intervals do not overlap)"]
    if _finite(comparison.get("median_p50_change_pct")) is not None:
        lines.append(f"median p50 change over those rows: {comparison['median_p50_change_pct']:+.1f}% (a change every "
                     "row shares comes from the machine or the stack, not from one path)")
    if comparison["new"]:
        lines.append(f"{len(comparison['new'])} row(s) not in the baseline: {', '.join(map(str, comparison['new']))}")
    if comparison["gone"]:
        lines.append(f"{len(comparison['gone'])} baseline row(s) not in this run: "
                     f"{', '.join(map(str, comparison['gone']))}")
    return [terminal(line) for line in lines]


def markdown(comparison: dict) -> str:
    from deploycmp.report.table import markdown_table

    lines = ["## Against the baseline", ""] + [f"- {s}" for s in summary(comparison)]
    lines += [""] + markdown_table(COLUMNS, [cells(e) for e in comparison["rows"]])
    return "\n".join(lines) + "\n"


def print_comparison(comparison: dict, console=None) -> None:
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # the lines and cells are plain text (sanitize.terminal) printed without rich markup: ids may hold any text
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    for line in summary(comparison):
        console.print(line, markup=False, highlight=False)
    table = Table(header_style="bold")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("row", "verdict") else "right")
    for entry in comparison["rows"]:
        table.add_row(*map(escape, cells(entry)))
    console.print(table)
