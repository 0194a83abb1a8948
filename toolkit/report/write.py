"""deploycmp report: one table (terminal, Markdown, CSV, JSON) from a run directory's results."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from deploycmp.core.errors import UsageError
from deploycmp.core.hosts import describe_host, hosts_of, targets_of
from deploycmp.core.rundir import load_manifest, read_json, write_atomic, write_json
from deploycmp.core.sanitize import csv_cell, document, terminal
from deploycmp.core.specs import split_list
from deploycmp.gate.answer import DEFAULT_POLICY, answer, answer_lines
from deploycmp.report import compare
from deploycmp.report.plots import scaling_lines
from deploycmp.report.table import LEFT, cells, columns, heading, markdown_table, warnings_of

FORMATS = ("md", "csv", "json", "html")

CSV_FIELDS = (
    "id", "model", "format", "quantization", "computes_in.precision", "runtime", "tuned", "settings", "target", "batch", "shape", "threads",
    "status", "error",
    "size_bytes", "size_gzip_bytes", "latency_ms.p50", "latency_ms.p90", "latency_ms.p99", "latency_ms.mean",
    "latency_ms.std", "latency_ms.min", "latency_ms.ci95_p50", "latency_per_item_ms", "throughput_per_s",
    "cold_start_ms.import", "cold_start_ms.load", "cold_start_ms.first_inference", "cold_start_ms.total", "peak_rss_mb",
    "model_memory_mb", "memory_budget.limit_mb", "device", "device_memory_mb", "observed.cores_busy", "batch_strategy",
    "drift.max_abs",
    "drift.mean_abs", "drift.rel_l2", "drift.cosine_min", "drift.cosine_mean", "drift.sqnr_db",
    "drift.top1_agreement", "drift.top5_overlap", "drift.accuracy", "drift.accuracy_delta_pp",
    "samples_to_look_at.flipped_count", "gflops", "peak_fraction", "peak.probe", "peak_gflops", "host.hostname",
    # a model that generates
    "generation.ttft_ms.p50", "generation.ttft_ms.p99", "generation.itl_ms.p50", "generation.itl_ms.p99",
    "generation.decode_tokens_per_s", "generation.prefill_tokens_per_s", "generation.e2e_ms.p50",
    "cold_start_ms.first_token", "drift.kl_mean", "drift.kl_p99", "drift.kl_max", "drift.logit_sqnr_db",
    "drift.perplexity", "drift.perplexity_change_pct", "drift.greedy.first_divergence", "drift.greedy.agreement",
)
GENERATION_LEGEND = ("TTFT: time to first token (prompt token ids in, first new token id out, a fresh cache: the "
                     "prefill); ITL: inter-token latency of each further token (a decode step), tok/s: decode tokens/s "
                     "(median over requests); prefill tok/s: prompt tokens / TTFT; greedy, a fixed number of new "
                     "tokens, tokenizer outside. KL: mean KL divergence of the reference's next-token distribution to "
                     "the path's, same top: positions with the same most likely next token, ppl Δ%: perplexity change, "
                     "all teacher-forced on the evaluation text; 1st diff: the first generated token that differs from "
                     "the reference's greedy continuation (none: all equal); load: loading the artifact; RSS: the "
                     "worker's peak resident memory.")


def parse_report_formats(spec: str) -> list[str]:
    names = split_list(spec, "--format")
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise UsageError(f"unknown report format {unknown[0]!r}; formats: {', '.join(FORMATS)}")
    return names


def _get(row: dict, dotted: str):
    value = row
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def markdown(manifest: dict, rows: list[dict], policy=None) -> str:
    """report.md: every text from the rows and the manifest as one line without escape sequences or control
    characters (rows merged from other machines may hold any)."""
    lines = [terminal(f"# deploycmp report: {manifest['model']['name']}"), "", heading(manifest), ""]
    lines += [f"> **Warning:** {w}" for w in warnings_of(manifest, rows)]
    groups = hosts_of(rows)
    for name, host_rows in groups.items():
        if len(groups) > 1:
            lines += ["", terminal(f"### Host {name}"), "", terminal(describe_host(host_rows[0]))]
        else:
            lines += ["", terminal(f"Host {name}: {describe_host(host_rows[0])}")]
        lines += [""] + markdown_table(columns(host_rows), [cells(r) for r in host_rows])
    lines += ["", GENERATION_LEGEND, ""] if manifest.get("generation") else ["", "p50/p99: latency of one call at that batch size; ms/item: p50 / batch; items/s from p50; max abs, "
              "SQNR, top-1: drift against the source model (top-1: share of samples whose top class is unchanged); "
              "acc: task accuracy on the labeled data, and its change against the source model in percentage points; "
              "cold: process start to first result (import + load + first inference); RSS: the worker's peak "
              "resident memory.", ""]
    lines += [terminal(f"- **{name}**: {desc}") for name, desc in targets_of(rows).items()]
    if said := answer_lines(answer(manifest, rows, policy or DEFAULT_POLICY), rows):
        lines += ["", "## Which path to ship", ""] + [f"- {line}" for line in said]
    if scaling := scaling_lines(rows):
        lines += ["", "Scaling along the swept dimensions (p50; a path stops scaling where its rate falls by more "
                  "than 10%):", ""] + [terminal(f"- {line}") for line in scaling]
    return document("\n".join(lines) + "\n")


def csv_text(rows: list[dict]) -> str:
    """report.csv; a text cell that a spreadsheet would run as a formula (=, +, -, @ ...) starts with a quote."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_FIELDS)
    for row in rows:
        writer.writerow([csv_cell("" if (v := _get(row, f)) is None else (json.dumps(v) if isinstance(v, (list, dict))
                                                                           else v)) for f in CSV_FIELDS])
    return buf.getvalue()


def print_table(manifest: dict, rows: list[dict], console=None, policy=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # every text from the rows and the manifest: one line, no escape sequences or control characters (sanitize), and
    # no rich markup (printed with markup=False, or escaped)
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    console.print(heading(manifest), markup=False, highlight=False)
    for w in warnings_of(manifest, rows):
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")
    groups = hosts_of(rows)
    if len(groups) == 1 and rows:
        name = next(iter(groups))
        console.print(terminal(f"host {name}: {describe_host(rows[0])}"), markup=False, highlight=False)
    for name, host_rows in groups.items():
        table = Table(show_lines=False, header_style="bold",
                      title=(escape(terminal(f"host {name}: {describe_host(host_rows[0])}")) if len(groups) > 1
                             else None))
        for col in columns(host_rows):
            table.add_column(col, justify="left" if col in LEFT else "right", overflow="fold",
                             max_width=60 if col == "note" else None)
        for row in host_rows:
            table.add_row(*map(escape, cells(row)))
        console.print(table)
    for name, desc in targets_of(rows).items():
        console.print(terminal(f"{name}: {desc}"), markup=False, highlight=False)
    for line in scaling_lines(rows):
        console.print(terminal(f"scaling: {line}"), markup=False, highlight=False)
    for line in answer_lines(answer(manifest, rows, policy or DEFAULT_POLICY), rows):
        console.print(f"answer: {line}", markup=False, highlight=False)


def write_reports(run_dir, formats: list[str], results: dict, comparison: dict | None = None,
                  policy=None) -> list[Path]:
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    rows = results["rows"]
    written = []
    for fmt in formats:
        path = run_dir / f"report.{fmt}"
        if fmt == "md":
            write_atomic(path, document(markdown(manifest, rows, policy)
                                        + ("\n" + compare.markdown(comparison) if comparison else "")))
        elif fmt == "csv":
            write_atomic(path, csv_text(rows))
        elif fmt == "html":
            from deploycmp.report.html import html

            ids = {r["id"] for r in rows}
            explained = [e for e in (read_json(f) for f in sorted((run_dir / "results").glob("*.layers.json")))
                         if e.get("row") in ids]
            write_atomic(path, html(manifest, results, comparison, policy, explained))
        else:
            write_json(path, {"schema": results["schema"], "model": manifest["model"],
                              "warnings": warnings_of(manifest, rows), "scaling": scaling_lines(rows),
                              "answer": answer(manifest, rows, policy or DEFAULT_POLICY), "rows": rows,
                              "baseline": comparison})
        written.append(path)
    return written
