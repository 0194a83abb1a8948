"""deploycmp report: one table (terminal, Markdown, CSV, JSON) from a run directory's results."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from toolkit.errors import UsageError
from toolkit.rundir import load_manifest, write_atomic, write_json

MARKS = {"ok": "✅", "unavailable": "❎"}
FORMATS = ("md", "csv", "json", "html")
COLUMNS = ("", "format", "quant", "runtime", "target", "batch", "size MB", "p50 ms", "p99 ms", "ms/item", "items/s",
           "max abs", "SQNR dB", "top-1", "acc % (Δpp)", "cold ms", "RSS MB", "note")
LEFT = ("", "format", "quant", "runtime", "target", "note")

CSV_FIELDS = (
    "id", "model", "format", "quantization", "runtime", "target", "batch", "threads", "status", "error",
    "size_bytes", "size_gzip_bytes", "latency_ms.p50", "latency_ms.p90", "latency_ms.p99", "latency_ms.mean",
    "latency_ms.std", "latency_ms.min", "latency_ms.ci95_p50", "latency_per_item_ms", "throughput_per_s",
    "cold_start_ms.import", "cold_start_ms.load", "cold_start_ms.first_inference", "cold_start_ms.total", "peak_rss_mb",
    "model_memory_mb", "memory_budget.limit_mb", "device", "device_memory_mb", "observed.cores_busy", "batch_strategy",
    "drift.max_abs",
    "drift.mean_abs", "drift.rel_l2", "drift.cosine_min", "drift.cosine_mean", "drift.sqnr_db",
    "drift.top1_agreement", "drift.top5_overlap", "drift.accuracy", "drift.accuracy_delta_pp",
    "samples_to_look_at.flipped_count", "gflops", "peak_fraction", "host.hostname",
)


def parse_formats(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise UsageError(f"unknown report format {unknown[0] if unknown else spec!r}; formats: {', '.join(FORMATS)}")
    return names


def _get(row: dict, dotted: str):
    value = row
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _short_reason(row: dict) -> str:
    if row["status"] == "ok":
        return "; ".join(row.get("warnings") or [])
    reason = (row.get("error") or "").replace("\n", " ")
    return f"{row['status']}: {reason}" if row["status"] != "unavailable" else reason


def _accuracy(d: dict) -> str:
    """Task accuracy and its change against the source model, on labeled data."""
    if d.get("accuracy") is None:
        return "-"
    return f"{d['accuracy'] * 100:.1f} ({d['accuracy_delta_pp']:+.1f})"


def cells(row: dict) -> list[str]:
    """One table row as text, the same for the terminal and Markdown."""
    d, lat = row.get("drift") or {}, row.get("latency_ms") or {}
    size = row.get("size_bytes")
    cold = (row.get("cold_start_ms") or {}).get("total")
    top1 = d.get("top1_agreement")
    sqnr = "exact" if d.get("identical") else _num(d.get("sqnr_db"), ".1f")
    return [
        MARKS.get(row["status"], "❌"), row["format"], row["quantization"], row["runtime"], row["target"],
        str(row["batch"]), _num(size / 1e6 if size is not None else None, ".3g"),
        _num(lat.get("p50"), ".2f"), _num(lat.get("p99"), ".2f"), _num(row.get("latency_per_item_ms"), ".3g"),
        _num(row.get("throughput_per_s"), ".1f"),
        _num(d.get("max_abs"), ".1e"), sqnr, "-" if top1 is None else f"{top1 * 100:.0f}%", _accuracy(d),
        _num(cold, ".0f"), _num(row.get("peak_rss_mb"), ".0f"), _short_reason(row),
    ]


def warnings_of(manifest: dict, rows: list[dict]) -> list[str]:
    """The run's warnings: the manifest's (random weights ...) and a count of rows that are not ok."""
    out = list(manifest.get("warnings", []))
    unavailable = sum(r["status"] == "unavailable" for r in rows)
    failed = sum(r["status"] not in ("ok", "unavailable") for r in rows)
    if failed:
        out.append(f"{failed} row(s) failed: see the note column and RUN_DIR/logs/")
    if unavailable:
        out.append(f"{unavailable} row(s) unavailable in this install or on this machine")
    over = [r["id"] for r in rows if not (r.get("memory_budget") or {}).get("within", True)]
    if over:
        out.append(f"{len(over)} row(s) over their target's memory budget: {', '.join(over)}")
    return out


def heading(manifest: dict) -> str:
    m = manifest["model"]
    gf = m.get("gflops_per_sample")
    return (f"{m['name']} ({m['framework']}, weights: {m['weights']}, input {'x'.join(map(str, m['input_shape']))} "
            f"{m.get('layout') or ''}{f', {gf:.2f} GFLOP/sample' if gf else ''}); drift vs the source model on "
            f"{manifest['data']['samples']} {manifest['data']['kind']} samples")


def markdown(manifest: dict, rows: list[dict]) -> str:
    lines = [f"# deploycmp report: {manifest['model']['name']}", "", heading(manifest), ""]
    lines += [f"> **Warning:** {w}" for w in warnings_of(manifest, rows)]
    groups = hosts_of(rows)
    for name, host_rows in groups.items():
        if len(groups) > 1:
            lines += ["", f"### Host {name}", "", describe_host(host_rows[0])]
        lines += [""] + markdown_table(COLUMNS, [cells(r) for r in host_rows])
    lines += ["", "p50/p99: latency of one call at that batch size; ms/item: p50 / batch; items/s from p50; max abs, "
              "SQNR, top-1: drift against the source model (top-1: share of samples whose top class is unchanged); "
              "acc: task accuracy on the labeled data, and its change against the source model in percentage points; "
              "cold: process start to first result (import + load + first inference); RSS: the worker's peak "
              "resident memory.", ""]
    lines += [f"- **{name}**: {desc}" for name, desc in targets_of(rows).items()]
    return "\n".join(lines) + "\n"


def markdown_table(columns, cell_rows) -> list[str]:
    """A Markdown table's lines: header, separator, one line per row (a | inside a cell escaped)."""
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cell_rows])


def describe_host(row: dict) -> str:
    """The machine a row ran on, in a few words: CPU, cores, memory, GPU, OS."""
    h = row.get("host") or {}
    count, usable = h.get("cpu_count"), h.get("usable_cpus")
    cores = f"{usable} of {count} CPUs usable" if usable and count and usable != count else count and f"{count} CPUs"
    gpu = ((row.get("observed") or {}).get("gpu") or {}).get("name")
    return ", ".join(str(v) for v in (h.get("cpu"), cores, h.get("memory_gb") and f"{h['memory_gb']} GB", gpu,
                                      h.get("os")) if v)


def targets_of(rows: list[dict]) -> dict:
    """Each target in the rows, in plain words ("host CPU limited to 1 core ...")."""
    return {r["target"]: r.get("target_description") for r in rows}


def hostname(row: dict) -> str:
    return (row.get("host") or {}).get("hostname") or "unknown host"


def hosts_of(rows: list[dict], first: str | None = None) -> dict[str, list[dict]]:
    """Rows by the host that measured them, in order of appearance; `first` (the run's own host) leads."""
    groups: dict[str, list[dict]] = {} if first is None else {first: []}
    for row in rows:
        groups.setdefault(hostname(row), []).append(row)
    return {host: group for host, group in groups.items() if group}


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_FIELDS)
    for row in rows:
        writer.writerow(["" if (v := _get(row, f)) is None else (json.dumps(v) if isinstance(v, list) else v) for f in CSV_FIELDS])
    return buf.getvalue()


def print_table(manifest: dict, rows: list[dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 200)
    console.print(heading(manifest))
    for w in warnings_of(manifest, rows):
        console.print(f"[yellow]warning:[/yellow] {w}")
    groups = hosts_of(rows)
    for name, host_rows in groups.items():
        table = Table(show_lines=False, header_style="bold",
                      title=f"host {name}: {describe_host(host_rows[0])}" if len(groups) > 1 else None)
        for col in COLUMNS:
            table.add_column(col, justify="left" if col in LEFT else "right", overflow="fold",
                             max_width=60 if col == "note" else None)
        for row in host_rows:
            table.add_row(*cells(row))
        console.print(table)
    for name, desc in targets_of(rows).items():
        console.print(f"{name}: {desc}", highlight=False)


def write_reports(run_dir, formats: list[str], results: dict, comparison: dict | None = None) -> list[Path]:
    from toolkit import compare

    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    rows = results["rows"]
    written = []
    for fmt in formats:
        path = run_dir / f"report.{fmt}"
        if fmt == "md":
            write_atomic(path, markdown(manifest, rows) + ("\n" + compare.markdown(comparison) if comparison else ""))
        elif fmt == "csv":
            write_atomic(path, csv_text(rows))
        elif fmt == "html":
            from toolkit.html_report import html

            write_atomic(path, html(manifest, results, comparison))
        else:
            write_json(path, {"schema": results["schema"], "model": manifest["model"],
                              "warnings": warnings_of(manifest, rows), "rows": rows, "baseline": comparison})
        written.append(path)
    return written
