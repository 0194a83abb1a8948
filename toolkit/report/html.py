"""deploycmp report --format html: one self-contained page (heading, warnings, table, plots as inline SVG,
environment). Nothing is loaded from outside the file and no JavaScript runs."""
from __future__ import annotations

from html import escape

from deploycmp.core.hosts import describe_host, hosts_of, targets_of
from deploycmp.core.sanitize import document
from deploycmp.core.schema import failed
from deploycmp.report import compare
from deploycmp.report import plots
from deploycmp.report.table import LEFT, cells, columns, heading, warnings_of

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1a1a1a;
       margin: 24px auto; max-width: 1500px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; } .heading { color: #444; margin: 0 0 12px; }
.warnings { background: #fff4d6; border-left: 4px solid #e0a800; padding: 8px 12px 8px 28px; margin: 8px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 6px; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
th { background: #f3f3f3; text-align: left; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.left { text-align: left; white-space: nowrap; } td.note { white-space: normal; min-width: 10em; max-width: 30em; }
tr.unavailable td { color: #666; background: #f7f7f7; } tr.failed td { background: #fdeaea; }
.status { font-weight: 600; } tr.ok .status { color: #1b7a1b; } tr.failed .status { color: #b00020; }
figure { margin: 16px 0 28px; } figure svg { max-width: 100%; height: auto; }
figcaption, .note { color: #444; max-width: 1000px; } .skipped { color: #666; font-style: italic; }
table.env td:first-child { font-weight: 600; } code { font-size: 12px; }
"""

def _status_class(row: dict) -> str:
    return "failed" if failed(row) else row["status"]


def _host_heading(host: str, rows: list[dict]) -> str:
    return f"{host}: {describe_host(rows[0]) or 'no host record'}"


def results_table(rows: list[dict]) -> str:
    """The terminal/Markdown table's rows and cells (table.cells), with the status spelled out instead of its mark."""
    head = "".join(f"<th>{escape(col or 'status')}</th>" for col in columns(rows))
    body = []
    for row in rows:
        tds = []
        for col, text in zip(columns(rows), cells(row)):
            if col == "":  # the status word, coloured: the mark's emoji needs a font the viewer may lack
                tds.append(f'<td class="left status">{escape(row["status"])}</td>')
            else:
                cls = "note" if col == "note" else "left" if col in LEFT else "num"
                tds.append(f'<td class="{cls}">{escape(text)}</td>')
        body.append(f'<tr class="{_status_class(row)}" title="{escape(row["id"])}">{"".join(tds)}</tr>')
    return _table(head, body)


def _table(head: str, body: list[str]) -> str:
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def baseline_section(comparison: dict) -> str:
    """The --baseline comparison: the same rows and cells as the terminal and Markdown (compare.cells)."""
    head = "".join(f"<th>{escape(col)}</th>" for col in compare.COLUMNS)
    body = []
    for entry in comparison["rows"]:
        moved = compare.verdict(entry).split(" ")[0]
        cls = {"slower": "failed", "faster": "ok"}.get(moved, "")
        tds = "".join(f'<td class="{"left" if col in ("row", "verdict") else "num"}">{escape(text)}</td>'
                      for col, text in zip(compare.COLUMNS, compare.cells(entry)))
        body.append(f'<tr class="{cls}">{tds}</tr>')
    notes = "".join(f"<li>{escape(line)}</li>" for line in compare.summary(comparison))
    return f'<h2>Against the baseline</h2><ul class="note">{notes}</ul>' + _table(head, body)


def _figure(svg: str | None, caption: str, missing: str) -> str:
    if svg is None:
        return f'<p class="skipped">{escape(missing)}</p>'
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _pareto_caption(rows: list[dict], with_host: bool) -> str:
    fronts = plots.pareto_fronts(rows)
    items = "".join(f"<li>{escape(plots.group_label(key, with_host))}: "
                    f"{escape(', '.join(plots.label(r, with_host) for r in front))}</li>"
                    for key, front in fronts.items())
    return f"Pareto-optimal (no other row on the same target and batch is both smaller and faster):<ul>{items}</ul>"


def _box_caption(rows: list[dict]) -> str:
    ok = plots.ok_rows(rows)
    stored = sum(not r["latency_ms"].get("per_call") for r in ok)
    text = "Latency of every timed call, per row (ms per call, not per item)."
    if stored < len(ok):
        text += " Blue boxes: quartiles of the timed calls, whiskers to 1.5 IQR, dots beyond."
    if stored == len(ok):
        text += " No row of this run stored per-call timings, so the boxes are drawn from the stored percentiles:"
    elif stored:
        text += f" {stored} row(s) have no per-call timings: their hatched boxes are drawn from the stored percentiles:"
    if stored:
        text += " line at p50, box from p50 to p90, whiskers from min to p99, dot at max."
    return escape(text)


def _scaling_caption(rows: list[dict]) -> str:
    items = "".join(f"<li>{escape(line)}</li>" for line in plots.scaling_lines(rows))
    return f"Where each path stops scaling (its rate falls by more than 10% from one step to the next):<ul>{items}</ul>"


def _batch_missing(rows: list[dict]) -> str:
    batches = sorted({r["batch"] for r in plots.ok_rows(rows)})
    if len(batches) == 1:
        return f"Batch-size scaling: not drawn, this run measured a single batch size ({batches[0]})."
    return "Batch-size scaling: not drawn, no path was measured at more than one batch size."


def plots_section(rows: list[dict], explained: list[dict] = ()) -> str:
    ok = plots.ok_rows(rows)
    if not ok:
        return '<h2>Plots</h2><p class="skipped">No row was measured (status ok), so there is nothing to plot.</p>'
    with_host, left_out = len(hosts_of(ok)) > 1, len(rows) - len(ok)
    intro = "Only rows with status ok are drawn."
    if left_out:
        intro = f"Only rows with status ok are drawn; {left_out} other row(s) are in the table only."
    return "".join([
        f'<h2>Plots</h2><p class="note">{escape(intro)}</p>',
        "<h3>Latency vs size</h3>",
        _figure(plots.latency_vs_size(ok), "p50 latency per item (p50 / batch) against size on disk, one point per "
                "row; colour: relative L2 drift against the source model (log scale); white: outputs bit-identical to "
                "the source. " + _pareto_caption(ok, with_host), "Latency vs size: no row has a size on disk."),
        "<h3>Latency distribution</h3>",
        _figure(plots.latency_boxes(ok), _box_caption(ok), ""),
        "<h3>Batch-size scaling</h3>",
        _figure(plots.batch_scaling(ok), "p50 latency per item against batch size, for each path measured at more "
                "than one batch size (lower is better: batching pays where the line falls).", _batch_missing(ok)),
        *(part for dim in plots.swept_dims(ok) for part in (
            f"<h3>{escape(dim.capitalize())} scaling</h3>",
            _figure(plots.dim_scaling(ok, dim), escape(
                f"p50 latency per call (left) and {'sequences' if dim == 'sequence' else 'items'} per second (right) "
                f"against {dim}, one line per path measured at several values of it. ") + _scaling_caption(ok), ""))),
        "<h3>Drift</h3>",
        _figure(plots.drift_bars(ok), "Signal-to-quantization-noise ratio of each row's outputs against the source "
                "model's fp32 outputs on the same inputs; bars coloured by quantization mode; exact: bit-identical.",
                "Drift: no row has drift measurements."),
        *(["<h3>Where int8 error enters</h3>", _figure(plots.layer_sqnr(explained), escape(
            "SQNR of each quantized activation against the fp32 model through the depth of the network (deploycmp "
            "explain), one line per explained int8 row; dotted: its worst channel; dashed: each tensor's own error "
            "(rounded to int8 with everything before it float; its channels' mean); labelled: the layer ranked first "
            "(the lowest own SQNR: where the error enters). Every tensor is in results/ROW.layers.json."), "")]
          if explained else []),
    ])


def _env_tables(manifest: dict, results: dict, groups: dict[str, list[dict]]) -> str:
    env = results.get("environment") or manifest.get("environment") or {}
    hosts = {h: next((r["host"] for r in rs if r.get("host")), None) for h, rs in groups.items()}
    versions = {h: next((r["versions"] for r in rs if r.get("versions")), None) for h, rs in groups.items()}
    if not groups or not any(hosts.values()):
        own = (env.get("host") or {}).get("hostname") or "this host"
        hosts, versions = {own: env.get("host") or {}}, {own: env.get("versions") or {}}
    names = list(hosts)
    fields = [("CPU", "cpu"), ("cores (usable / all)", None), ("memory GB", "memory_gb"), ("OS", "os"),
              ("machine", "machine"), ("Python", "python")]

    def host_cell(info: dict | None, key: str | None) -> str:
        info = info or {}
        value = f"{info.get('usable_cpus', '?')} / {info.get('cpu_count', '?')}" if key is None else info.get(key)
        return "-" if value is None else str(value)

    def tr(name: str, values: list[str]) -> str:
        return f"<tr><td>{escape(name)}</td>{''.join(f'<td>{escape(v)}</td>' for v in values)}</tr>"

    packages = list(dict.fromkeys(p for h in names for p in (versions[h] or {})))
    rows = [tr(name, [host_cell(hosts[h], key) for h in names]) for name, key in fields]
    rows += [tr(p, [(versions[h] or {}).get(p) or "-" for h in names]) for p in packages]
    head = "".join(f"<th>{escape(h)}</th>" for h in names)
    commands = [("export", (manifest.get("environment") or {}).get("command")), ("bench", env.get("command"))]
    lines = "".join(f"<li>{name}: <code>{escape(' '.join(map(str, cmd)))}</code></li>" for name, cmd in commands if cmd)
    return (f'<h2>Environment</h2><div class="scroll"><table class="env"><thead><tr><th>host</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div><ul class=\"note\">{lines}</ul>")


def html(manifest: dict, results: dict, comparison: dict | None = None, policy=None, explained: list[dict] = ()) -> str:
    """The page; `explained`: what deploycmp explain wrote for rows of this run (results/ROW.layers.json). Every text
    in it is HTML-escaped, and the page holds no escape sequence, control character or lone surrogate (rows merged
    from other machines may hold any)."""
    from deploycmp.gate.answer import DEFAULT_POLICY, answer, answer_lines

    rows = results["rows"]
    env = results.get("environment") or manifest.get("environment") or {}
    groups = hosts_of(rows, (env.get("host") or {}).get("hostname"))
    title = f"deploycmp report: {manifest['model']['name']}"
    warnings = warnings_of(manifest, rows)
    parts = [(f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
              f"<style>{STYLE}</style></head><body>"),
             f"<h1>{escape(title)}</h1><p class=\"heading\">{escape(heading(manifest))}</p>"]
    if warnings:
        parts.append(f'<ul class="warnings">{"".join(f"<li>warning: {escape(w)}</li>" for w in warnings)}</ul>')
    parts.append("<h2>Results</h2>")
    for host, host_rows in groups.items():
        if len(groups) > 1:
            parts.append(f"<h3>{escape(_host_heading(host, host_rows))}</h3>")
        else:
            parts.append(f'<p class="note">measured on {escape(_host_heading(host, host_rows))}</p>')
        parts.append(results_table(host_rows))
        parts.append('<ul class="note">' + "".join(f"<li><b>{escape(str(name))}</b>: {escape(str(desc or ''))}</li>"
                                                   for name, desc in targets_of(host_rows).items()) + "</ul>")
    said = answer_lines(answer(manifest, rows, policy or DEFAULT_POLICY), rows)
    if said:
        parts.append('<h2>Which path to ship</h2><ul class="note">'
                     + "".join(f"<li>{escape(line)}</li>" for line in said) + "</ul>")
    if comparison:
        parts.append(baseline_section(comparison))
    parts.append(plots_section(rows, explained))
    parts.append(_env_tables(manifest, results, groups))
    created = manifest.get("created")
    parts.append(f'<p class="note">deploycmp {escape(str((manifest.get("tool") or {}).get("version", "")))}'
                 f'{f", run created {escape(str(created))}" if created else ""}.</p></body></html>\n')
    return document("\n".join(parts))
