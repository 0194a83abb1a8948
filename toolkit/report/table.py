"""The results table as text: columns, one row's cells, the heading and warnings; the same for the terminal,
Markdown and HTML reports."""
from __future__ import annotations

from deploycmp.core.degenerate import hides
from deploycmp.core.results import runtime_label
from deploycmp.core.sanitize import terminal
from deploycmp.core.schema import failed

MARKS = {"ok": "✅", "unavailable": "❎"}
COLUMNS = ("", "format", "quant", "runtime", "target", "batch", "size MB", "p50 ms", "p99 ms", "ms/item", "items/s",
           "max abs", "SQNR dB", "top-1", "acc % (Δpp)", "cold ms", "RSS MB", "note")
# a model that generates: time to first token, decode inter-token latency and tokens/s, teacher-forced drift
GENERATION_COLUMNS = ("", "format", "quant", "runtime", "target", "prompt+new", "size MB", "TTFT ms", "ITL p50 ms",
                      "ITL p99 ms", "tok/s", "prefill tok/s", "KL", "same top", "ppl Δ%", "1st diff", "load ms",
                      "RSS MB", "note")
LEFT = ("", "format", "quant", "runtime", "target", "note")


def columns(rows: list[dict]) -> tuple[str, ...]:
    """The table's columns: a run of a model that generates has its own."""
    return GENERATION_COLUMNS if any("generation" in r for r in rows) else COLUMNS


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def tuned_text(row: dict) -> str:
    """What bench --tune changed from the untuned settings, in words."""
    tried = (row.get("tuning") or {}).get("tried") or []
    if not row.get("settings") or not tried:
        return ""
    untuned = tried[0]["settings"]
    changed = [f"{k}={v}" for k, v in row["settings"].items() if untuned.get(k) != v]
    return f"tuned ({len(tried)} trials): " + (", ".join(changed) if changed else
                                               "the untuned settings kept (nothing faster beyond noise)")


def _short_reason(row: dict) -> str:
    if row["status"] == "ok":
        found = (row.get("drift") or {}).get("degenerate")
        tuned, repair = tuned_text(row), row.get("repair")
        return "; ".join([*([f"drift n/a: {found['reason']}"] if found else []), *([tuned] if tuned else []),
                          *([f"repair step {repair['step']}: {repair['change']}"] if repair else []),
                          *(row.get("warnings") or [])])
    reason = (row.get("error") or "").replace("\n", " ")
    return f"{row['status']}: {reason}" if row["status"] != "unavailable" else reason


def _accuracy(d: dict) -> str:
    """Task accuracy and its change against the source model, on labeled data."""
    if d.get("accuracy") is None:
        return "-"
    return f"{d['accuracy'] * 100:.1f} ({d['accuracy_delta_pp']:+.1f})"


def generation_cells(row: dict) -> list[str]:
    """One row of a model that generates as text (GENERATION_COLUMNS)."""
    g, d = row.get("generation") or {}, row.get("drift") or {}
    size, shape = row.get("size_bytes"), row.get("shape") or {}
    greedy = d.get("greedy") or {}
    diverged = greedy.get("first_divergence")
    first = "-" if not greedy else "none" if diverged is None else str(diverged)
    top = d.get("top1_agreement")
    return [terminal(c) for c in (
        MARKS.get(row["status"], "❌"), row["format"], row["quantization"], runtime_label(row), row["target"],
        f"{shape.get('prompt', '?')}+{shape.get('new_tokens', '?')}", _num(size / 1e6 if size is not None else None, ".3g"),
        _num((g.get("ttft_ms") or {}).get("p50"), ".3g"), _num((g.get("itl_ms") or {}).get("p50"), ".3g"),
        _num((g.get("itl_ms") or {}).get("p99"), ".3g"), _num(g.get("decode_tokens_per_s"), ".4g"),
        _num(g.get("prefill_tokens_per_s"), ".4g"), "0" if d.get("identical") else _num(d.get("kl_mean"), ".2e"),
        "-" if top is None else f"{top * 100:.1f}%", _num(d.get("perplexity_change_pct"), "+.2f"), first,
        _num((row.get("cold_start_ms") or {}).get("load"), ".0f"), _num(row.get("peak_rss_mb"), ".0f"),
        _short_reason(row),
    )]


def cells(row: dict) -> list[str]:
    """One table row as text, the same for the terminal, Markdown and HTML: one line each, without escape sequences or
    control characters (a row merged from another machine may hold any text)."""
    if "generation" in row:
        return generation_cells(row)
    d, lat = row.get("drift") or {}, row.get("latency_ms") or {}
    size = row.get("size_bytes")
    cold = (row.get("cold_start_ms") or {}).get("total")
    top1 = d.get("top1_agreement")
    sqnr = "exact" if d.get("identical") else _num(d.get("sqnr_db"), ".1f")
    max_abs, top1 = _num(d.get("max_abs"), ".1e"), "-" if top1 is None else f"{top1 * 100:.0f}%"
    if hides(d, "sqnr_db"):  # a degenerate reference: any path "matches" it
        max_abs = sqnr = "n/a"
    if hides(d, "top1_agreement"):
        top1 = "n/a"
    return [terminal(c) for c in (
        MARKS.get(row["status"], "❌"), row["format"], row["quantization"], runtime_label(row), row["target"],
        shape_text(row), _num(size / 1e6 if size is not None else None, ".3g"),
        _num(lat.get("p50"), ".2f"), _num(lat.get("p99"), ".2f"), _num(row.get("latency_per_item_ms"), ".3g"),
        _num(row.get("throughput_per_s"), ".1f"),
        max_abs, sqnr, top1, _accuracy(d),
        _num(cold, ".0f"), _num(row.get("peak_rss_mb"), ".0f"), _short_reason(row),
    )]


def warnings_of(manifest: dict, rows: list[dict]) -> list[str]:
    """The run's warnings: the manifest's (random weights ...) and a count of rows that are not ok; each one line of
    plain text."""
    out = list(manifest.get("warnings", [])) + list((manifest.get("data") or {}).get("warnings", []))
    unavailable = sum(r["status"] == "unavailable" for r in rows)
    failures = sum(failed(r) for r in rows)
    if failures:
        out.append(f"{failures} row(s) failed: see the note column and RUN_DIR/logs/")
    if unavailable:
        out.append(f"{unavailable} row(s) unavailable in this install or on this machine")
    over = [r["id"] for r in rows if not (r.get("memory_budget") or {}).get("within", True)]
    if over:
        out.append(f"{len(over)} row(s) over their target's memory budget: {', '.join(map(str, over))}")
    return [terminal(w) for w in out]


def inputs_text(model: dict) -> str:
    """'input 1x3x224x224 NCHW' (schema 1), or each input as name:dtype[shape] (layout)."""
    if not model.get("inputs"):
        return f"input {'x'.join(map(str, model['input_shape']))} {model.get('layout') or ''}".rstrip()
    return "inputs " + ", ".join(f"{i['name']}:{i['dtype']}[{','.join(map(str, i['shape']))}]"
                                 + (f" {i['layout']}" if i.get("layout") else "") for i in model["inputs"])


def heading(manifest: dict) -> str:
    m = manifest["model"]
    if manifest.get("generation"):
        gen = manifest["generation"]
        return terminal(f"{m['name']} ({m['hf']['architecture']}, {m['parameters'] / 1e6:.3g}M parameters, weights: "
                        f"{m['weights']}); drift vs {gen['reference']} on {gen['evaluation_tokens']} tokens of "
                        f"{manifest['data']['kind']}, teacher-forced")
    gf = m.get("gflops_per_sample")
    outputs = m.get("outputs") or []
    shown = f"; drift of output {outputs[0]['name']} shown (all {len(outputs)} in JSON/HTML)" if len(outputs) > 1 else ""
    return terminal(f"{m['name']} ({m['framework']}, weights: {m['weights']}, {inputs_text(m)}"
                    f"{f', {gf:.3g} GFLOP/sample' if gf else ''}); drift vs the source model on "
                    f"{manifest['data']['samples']} {manifest['data']['kind']} samples{shown}")


def shape_text(row: dict) -> str:
    """The batch, and any other named dimension the row was measured at: '8', '1 sequence=64'."""
    rest = [f"{k}={v}" for k, v in (row.get("shape") or {}).items() if k != "batch"]
    return " ".join([str(row["batch"]), *rest])


def markdown_table(columns, cell_rows) -> list[str]:
    """A Markdown table's lines: header, separator, one line per row (each cell one line of plain text, a | inside
    it escaped)."""
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(terminal(c).replace("|", "\\|") for c in row) + " |" for row in cell_rows])
