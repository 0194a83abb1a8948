"""The report's answer to "which path should we ship?": per host, target, batch and shape, the fastest path whose
drift and accuracy pass the thresholds in force, the runner-up and whether the lead is beyond noise, the smallest
passing path, and what was left out and why. With random weights there is nothing to recommend on: it says so."""
from __future__ import annotations

from deploycmp.core.hosts import hostname
from deploycmp.core.results import runtime_label
from deploycmp.core.schema import FAILED, Status
from deploycmp.core.sanitize import terminal
from deploycmp.gate.validate import Policy, Thresholds, check, resolve

# what a team would accept without a thresholds file: outputs that point the same way, and (with labels) at most
# one point of task accuracy lost; for a model that generates, at most 5% more perplexity on the evaluation text
DEFAULT_POLICY = Policy(default=Thresholds(min_cosine=0.99, max_accuracy_drop=1.0, max_perplexity_increase=5.0))
# the thresholds that speak of a model that generates, and those that speak of the others
GENERATION_RULES = ("max_kl", "max_perplexity_increase", "min_token_agreement", "max_top1_drop", "min_sqnr")


def path_name(row: dict) -> str:
    return f"{row['format']} {row['quantization']} · {runtime_label(row)}"


def _group(row: dict) -> tuple:
    dims = tuple(sorted((k, v) for k, v in (row.get("shape") or {}).items() if k != "batch"))
    return hostname(row), row["target"], row["batch"], dims


def group_name(key: tuple, with_host: bool) -> str:
    host, target, batch, dims = key
    text = ", ".join([target, f"batch {batch}", *(f"{k} {v}" for k, v in dims)])
    return text + (f" @ {host}" if with_host else "")


def _p50(row: dict) -> float:
    """The latency paths are ranked by: per call, or for a model that generates, per decoded token (ITL)."""
    return row["latency_ms"]["p50"]


def _speed(row: dict) -> str:
    gen = row.get("generation")
    if gen:
        return f"{gen['decode_tokens_per_s']:.3g} tok/s decode, TTFT {gen['ttft_ms']['p50']:.3g} ms"
    return f"{_p50(row):.3g} ms p50"


def _margin(fastest: dict, runner: dict) -> dict:
    """How much slower the runner-up is, and whether the two p50 confidence intervals are apart."""
    ci_f, ci_r = fastest["latency_ms"].get("ci95_p50"), runner["latency_ms"].get("ci95_p50")
    apart = None if not (ci_f and ci_r) else ci_f[1] < ci_r[0]
    return {"ratio": _p50(runner) / _p50(fastest), "beyond_noise": apart}


def _rules(t: Thresholds, generation: bool = False) -> str:
    words = {"min_cosine": "cosine >= {:g}", "max_accuracy_drop": "accuracy drop <= {:g} pp",
             "min_sqnr": "SQNR >= {:g} dB", "max_top1_drop": "top-1 changes <= {:g}%", "max_rel_l2": "rel L2 <= {:g}",
             "max_kl": "KL <= {:g} nats", "max_perplexity_increase": "perplexity increase <= {:g}%",
             "min_token_agreement": "same next token >= {:g}%"}
    shown = [k for k in words if (k in GENERATION_RULES) == generation or k == "max_top1_drop" or k == "min_sqnr"]
    return ", ".join(words[k].format(getattr(t, k)) for k in shown if getattr(t, k) is not None)


def answer(manifest: dict, rows: list[dict], policy: Policy = DEFAULT_POLICY,
           flags: Thresholds = Thresholds()) -> list[dict]:
    """One entry per (host, target, batch, shape): recommendation (or None and why), runner-up, margin,
    smallest, excluded rows with the reason."""
    weights = str((manifest.get("model") or {}).get("weights", ""))
    random = weights.startswith("random")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("batch") is not None:
            groups.setdefault(_group(row), []).append(row)
    out = []
    for key, group in groups.items():
        passing, excluded = [], []
        for row in group:
            verdict = check(row, resolve(row, policy, flags))
            if row["status"] == "ok" and verdict.verdict == "pass" and row.get("latency_ms"):
                passing.append(row)
            else:
                why = row["status"] if row["status"] != "ok" else "; ".join(verdict.reasons)
                excluded.append({"row": row["id"], "path": path_name(row), "why": why,
                                 "detail": "; ".join(verdict.reasons)})
        passing.sort(key=_p50)
        host, target, batch, dims = key
        entry = {"host": host, "target": target, "batch": batch, "shape": dict(dims), "name": group_name(key, False),
                 "thresholds": _rules(resolve(group[0], policy, flags), bool(group[0].get("generation") or
                                                                             manifest.get("generation"))),
                 "passing": len(passing),
                 "excluded": excluded, "recommendation": None, "runner_up": None, "margin": None, "smallest": None}
        if random:
            entry["why_none"] = (f"the model has random weights ({weights}): drift against it says little about the "
                                 "trained model, so no path is recommended; measure the trained weights")
        elif not passing:
            entry["why_none"] = "no measured path passes the thresholds in force"
        else:
            entry["recommendation"] = passing[0]["id"]
            entry["smallest"] = min(passing, key=lambda r: (r.get("size_bytes") or float("inf"), _p50(r)))["id"]
            if passing[0].get("generation"):  # the fastest decode is the recommendation; the quickest first token too
                entry["fastest_ttft"] = min(passing, key=lambda r: r["generation"]["ttft_ms"]["p50"])["id"]
            if len(passing) > 1:
                entry["runner_up"] = passing[1]["id"]
                entry["margin"] = _margin(passing[0], passing[1])
        entry["fastest_measured"] = min((r for r in group if r["status"] == "ok" and r.get("latency_ms")),
                                        key=_p50, default={"id": None})["id"]
        out.append(entry)
    return out


def answer_lines(entries: list[dict], rows: list[dict]) -> list[str]:
    """The answer in words, one paragraph (line) per group, as plain text: the ids, paths and hosts of merged rows
    may hold any text, but no escape sequence or control character reaches the terminal or report.md."""
    by_id = {r["id"]: r for r in rows}
    with_host = len({e["host"] for e in entries}) > 1
    text = []
    for e in entries:
        where = e["name"] + (f" @ {e['host']}" if with_host else "")
        if e["recommendation"] is None:
            fastest = by_id.get(e["fastest_measured"])
            text.append(f"{where}: no recommendation: {e['why_none']}"
                        + (f" (fastest measured: {path_name(fastest)}, {_speed(fastest)})" if fastest else ""))
            continue
        best = by_id[e["recommendation"]]
        parts = [f"{where}: ship {path_name(best)} ({_speed(best)}, {_mb(best)}): the fastest of "
                 f"{e['passing']} path(s) that pass {e['thresholds'] or 'no threshold'}"]
        if e.get("fastest_ttft") not in (None, e["recommendation"]):
            quick = by_id[e["fastest_ttft"]]
            parts.append(f"quickest first token: {path_name(quick)} ({_speed(quick)})")
        if e["runner_up"]:
            runner, m = by_id[e["runner_up"]], e["margin"]
            noise = {True: "beyond noise (95% CIs of p50 apart)", False: "within noise (95% CIs of p50 overlap)",
                     None: "noise not measured"}[m["beyond_noise"]]
            parts.append(f"runner-up {path_name(runner)} {_speed(runner)}, {m['ratio']:.2f}x slower, {noise}")
        if e["smallest"] != e["recommendation"]:
            small = by_id[e["smallest"]]
            parts.append(f"smallest passing: {path_name(small)} ({_mb(small)}, {_speed(small)})")
        not_measured = {Status.UNAVAILABLE.value, *FAILED}
        gate = [f"{x['path']} ({x['why']})" for x in e["excluded"] if x["why"] not in not_measured]
        other = [f"{x['path']} ({x['why']})" for x in e["excluded"] if x["why"] in not_measured]
        if gate:
            parts.append("failing the thresholds: " + "; ".join(gate))
        if other:
            parts.append("not measured: " + ", ".join(other))
        text.append(". ".join(parts))
    return [terminal(line) for line in text]


def _mb(row: dict) -> str:
    size = row.get("size_bytes")
    return "size unknown" if size is None else f"{size / 1e6:.3g} MB"
