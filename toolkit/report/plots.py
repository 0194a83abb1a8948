"""The HTML report's figures, one function per plot, each returning SVG text (None when there is nothing to draw).

Only rows with status ok are drawn. matplotlib is imported inside the functions and used through its object API
(Figure, no pyplot), so no display or GUI backend is ever involved.
"""
from __future__ import annotations

import io
import math
import re
from contextlib import contextmanager

from deploycmp.core.hosts import hostname, hosts_of

WIDTH_IN = 9.0
MARKERS = "osD^vP*X<>ph"
EXACT = {"facecolor": "white", "edgecolor": "black", "linewidth": 1.6}


def ok_rows(rows: list[dict]) -> list[dict]:
    """The rows a plot may draw: measured (status ok) with a latency."""
    return [r for r in rows if r.get("status") == "ok" and (r.get("latency_ms") or {}).get("p50") is not None]


def label(row: dict, with_host: bool = False) -> str:
    text = f"{row['format']} {row['quantization']} · {row['runtime']} · {row['target']} · b{row['batch']}"
    return f"{text} @ {hostname(row)}" if with_host else text


def per_item_ms(row: dict) -> float:
    return row.get("latency_per_item_ms") or row["latency_ms"]["p50"] / row["batch"]


def _identical(row: dict) -> bool:
    return bool((row.get("drift") or {}).get("identical"))


def _many_hosts(rows: list[dict]) -> bool:
    return len(hosts_of(rows)) > 1


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both size and ms/item (no worse on both, better on one), smallest first."""
    pts = [(r["size_bytes"], per_item_ms(r), r) for r in rows]
    front = [p for p in pts if not any(q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1]) for q in pts)]
    return [r for _, _, r in sorted(front, key=lambda p: (p[0], p[1]))]


def pareto_fronts(rows: list[dict]) -> dict[tuple, list[dict]]:
    """One Pareto front per (host, target, batch): only rows measured under the same conditions compete."""
    groups: dict[tuple, list[dict]] = {}
    for r in ok_rows(rows):
        if r.get("size_bytes") is not None:
            groups.setdefault((hostname(r), r["target"], r["batch"]), []).append(r)
    return {key: pareto(group) for key, group in groups.items()}


def group_label(key: tuple, with_host: bool) -> str:
    host, target, batch = key
    return f"{target}, batch {batch}" + (f" @ {host}" if with_host else "")


@contextmanager
def _figure(name: str, height_in: float):
    import matplotlib
    from matplotlib.figure import Figure

    style = {"svg.fonttype": "path", "svg.hashsalt": name, "font.size": 9, "axes.spines.top": False,
             "axes.spines.right": False, "axes.grid": True, "grid.color": "0.9", "axes.axisbelow": True,
             "text.parse_math": False}  # labels are row text ($ in a merged hostname ...), drawn as it is
    with matplotlib.rc_context(style):  # also read when the SVG is written, so _svg runs inside
        yield Figure(figsize=(WIDTH_IN, height_in), layout="constrained")


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # no XML declaration or DOCTYPE inside an HTML page
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)


def _log_if_wide(ax, axis: str, values: list[float], ratio: float = 10.0) -> None:
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > ratio:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _height(n_rows: int) -> float:
    return 1.3 + 0.3 * n_rows


def latency_vs_size(rows: list[dict]) -> str | None:
    """p50 ms/item against size on disk, drift as a log colour scale, the Pareto front per target and batch."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    rows = [r for r in ok_rows(rows) if r.get("size_bytes") is not None]
    if not rows:
        return None
    with_host = _many_hosts(rows)
    fronts = pareto_fronts(rows)
    marker = {key: MARKERS[i % len(MARKERS)] for i, key in enumerate(fronts)}
    drifts = [(r.get("drift") or {}).get("rel_l2") for r in rows if not _identical(r)]
    drifts = [d for d in drifts if d is not None and d > 0]
    lo, hi = (min(drifts), max(drifts)) if drifts else (1e-6, 1.0)
    norm, cmap = LogNorm(lo / 3 if lo == hi else lo, hi * 3 if lo == hi else hi), "viridis"
    with _figure("latency-size", 5.6) as fig:
        ax = fig.subplots()
        for r in rows:
            key = (hostname(r), r["target"], r["batch"])
            d = (r.get("drift") or {}).get("rel_l2")
            style = (EXACT if _identical(r) else
                     {"c": [d], "cmap": cmap, "norm": norm, "edgecolor": "black", "linewidth": 0.5}
                     if d is not None and d > 0 else {"facecolor": "0.7", "edgecolor": "black", "linewidth": 0.5})
            ax.scatter([r["size_bytes"] / 1e6], [per_item_ms(r)], marker=marker[key], s=70, zorder=3,
                       gid=f"latency-size:{hostname(r)}:{r['id']}", **style)
        for front in fronts.values():
            ax.plot([r["size_bytes"] / 1e6 for r in front], [per_item_ms(r) for r in front], ls="--", color="0.35",
                    lw=1, zorder=2)
        _log_if_wide(ax, "x", [r["size_bytes"] / 1e6 for r in rows])
        _log_if_wide(ax, "y", [per_item_ms(r) for r in rows])
        ax.set_xlabel("size on disk, MB")
        ax.set_ylabel("p50 latency, ms per item (p50 / batch)")
        ax.margins(0.12)
        _label_pareto(ax, [r for front in fronts.values() for r in front], with_host)
        handles = [Line2D([], [], ls="", marker=marker[k], color="0.5", label=group_label(k, with_host))
                   for k in fronts]
        handles.append(Line2D([], [], ls="--", color="0.35", label="Pareto front (labelled)"))
        if any(_identical(r) for r in rows):
            handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="white", markeredgecolor="black",
                                  label="bit-identical to the source"))
        fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=3)
        if drifts:
            fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.85,
                         label="drift: relative L2 vs the source model")
        return _svg(fig)


def _label_pareto(ax, rows: list[dict], with_host: bool) -> None:
    """Label each Pareto row to the right of its point; labels of nearby points fan out above and below."""
    ax.get_xlim(), ax.get_ylim()  # settle the autoscaled limits before reading positions
    pos = (ax.transScale + ax.transLimits).transform([(r["size_bytes"] / 1e6, per_item_ms(r)) for r in rows])
    for i, r in enumerate(rows):
        near = [j for j in range(len(rows)) if abs(pos[j][0] - pos[i][0]) < 0.3 and abs(pos[j][1] - pos[i][1]) < 0.06]
        rank = sorted(near, key=lambda j: (pos[j][1], -j)).index(i)
        text = f"{r['format']} {r['quantization']} · {r['runtime']} · b{r['batch']}"
        ax.annotate(text + (f" @ {hostname(r)}" if with_host else ""), (r["size_bytes"] / 1e6, per_item_ms(r)),
                    xytext=(12, 12 * (rank - (len(near) - 1) / 2)), textcoords="offset points", fontsize=7.5,
                    va="center", zorder=4, arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6},
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def _box_stats(row: dict, with_host: bool) -> dict:
    """Quartile box from per-call timings when stored, else a box drawn from the stored percentiles."""
    from matplotlib import cbook

    lat = row["latency_ms"]
    if lat.get("per_call"):
        stats = cbook.boxplot_stats(lat["per_call"])[0]
    else:
        p50 = lat["p50"]
        stats = {"med": p50, "q1": p50, "q3": lat.get("p90") or p50, "whislo": lat.get("min") or p50,
                 "whishi": lat.get("p99") or p50, "fliers": [lat["max"]] if lat.get("max") is not None else []}
    return {**stats, "label": label(row, with_host)}


def latency_boxes(rows: list[dict]) -> str | None:
    """Per-call latency distribution per row, one horizontal box each (hatched: drawn from stored percentiles)."""
    from matplotlib.patches import Patch

    rows = ok_rows(rows)
    if not rows:
        return None
    with_host = _many_hosts(rows)
    stats = [_box_stats(r, with_host) for r in rows]
    with _figure("latency-boxes", _height(len(rows))) as fig:
        ax = fig.subplots()
        art = ax.bxp(stats, orientation="horizontal", patch_artist=True, widths=0.6,
                     medianprops={"color": "black", "linewidth": 1.5}, flierprops={"markersize": 3})
        for box, r in zip(art["boxes"], rows):
            fallback = not r["latency_ms"].get("per_call")
            box.set(facecolor="#fdd9a6" if fallback else "#a6cee3", hatch="///" if fallback else None,
                    gid=f"latency-boxes:{hostname(r)}:{r['id']}")
        ax.invert_yaxis()  # table order, top to bottom
        _log_if_wide(ax, "x", [v for s in stats for v in (s["whislo"], s["whishi"])], ratio=20)
        ax.set_xlabel("latency per call, ms (one call = one batch of the row's size)")
        kinds = {not r["latency_ms"].get("per_call") for r in rows}
        handles = [Patch(facecolor="#a6cee3", label="quartiles of the timed calls, whiskers 1.5 IQR")]
        handles = handles * (False in kinds) + [Patch(facecolor="#fdd9a6", hatch="///", label=(
            "from stored percentiles: p50 to p90, whiskers min to p99, dot max"))] * (True in kinds)
        fig.legend(handles=handles, fontsize=8, loc="outside lower center")
        return _svg(fig)


def _dims(row: dict) -> dict:
    """The row's named dimensions other than batch (sequence=64 ...)."""
    return {k: v for k, v in (row.get("shape") or {}).items() if k != "batch"}


def batch_paths(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(host, format, quantization, runtime, target, other dims) -> its ok rows by batch, for paths with several
    batch sizes."""
    paths: dict[tuple, list[dict]] = {}
    for r in ok_rows(rows):
        dims = tuple(sorted(_dims(r).items()))
        paths.setdefault((hostname(r), r["format"], r["quantization"], r["runtime"], r["target"], dims), []).append(r)
    return {k: sorted(v, key=lambda r: r["batch"]) for k, v in paths.items() if len({r["batch"] for r in v}) > 1}


def dim_paths(rows: list[dict], dim: str) -> dict[tuple, list[dict]]:
    """(host, format, quantization, runtime, target, batch) -> its ok rows by the named dimension `dim`
    (sequence ...), for paths measured at more than one value of it."""
    paths: dict[tuple, list[dict]] = {}
    for r in ok_rows(rows):
        if dim in _dims(r):
            paths.setdefault((hostname(r), r["format"], r["quantization"], r["runtime"], r["target"], r["batch"]),
                             []).append(r)
    return {k: sorted(v, key=lambda r: r["shape"][dim]) for k, v in paths.items()
            if len({r["shape"][dim] for r in v}) > 1}


def swept_dims(rows: list[dict]) -> list[str]:
    """Named dimensions (not batch) that some path was measured at several values of."""
    names = dict.fromkeys(k for r in ok_rows(rows) for k in _dims(r))
    return [d for d in names if dim_paths(rows, d)]


def scaling(path: list[dict], dim: str) -> list[dict]:
    """Each step of a path along `dim`: how much the dimension and the p50 latency grew, and the items of `dim`
    per second (batch x dim / p50; tokens/s for a sequence). A path stops scaling at the first step where that
    rate falls by more than 10%: the latency grows faster than the work."""
    steps = []
    for a, b in zip(path, path[1:]):
        rate_a = a["batch"] * a["shape"][dim] / a["latency_ms"]["p50"] * 1e3
        rate_b = b["batch"] * b["shape"][dim] / b["latency_ms"]["p50"] * 1e3
        steps.append({"from": a["shape"][dim], "to": b["shape"][dim], "dim_ratio": b["shape"][dim] / a["shape"][dim],
                      "latency_ratio": b["latency_ms"]["p50"] / a["latency_ms"]["p50"], "rate_from": rate_a,
                      "rate_to": rate_b, "stops_scaling": rate_b < 0.9 * rate_a})
    return steps


def scaling_lines(rows: list[dict]) -> list[str]:
    """One line per path swept along a named dimension: each step's growth, and where the path stops scaling."""
    lines = []
    with_host = _many_hosts(ok_rows(rows))
    for dim in swept_dims(rows):
        unit = {"sequence": "tokens"}.get(dim, f"{dim} items")
        for (host, fmt, quant, runtime, target, batch), path in dim_paths(rows, dim).items():
            steps = scaling(path, dim)
            parts = [f"{s['from']}->{s['to']}: {dim} x{s['dim_ratio']:.3g}, latency x{s['latency_ratio']:.3g}"
                     for s in steps]
            stop = next((s for s in steps if s["stops_scaling"]), None)
            verdict = (f"stops scaling at {dim} {stop['to']} ({unit}/s {stop['rate_from']:,.0f} -> {stop['rate_to']:,.0f})"
                       if stop else f"scales to {dim} {steps[-1]['to']} ({unit}/s never falls by more than 10%)")
            name = f"{fmt} {quant} · {runtime} · {target} · b{batch}" + (f" @ {host}" if with_host else "")
            lines.append(f"{name}: {'; '.join(parts)}; {verdict}")
    return lines


def dim_scaling(rows: list[dict], dim: str) -> str | None:
    """Two panels against the named dimension `dim` (sequence ...): p50 latency per call, and batches/s
    (sequences/s for a sequence), one line per path measured at several values of it; None when there is none."""
    paths = dim_paths(rows, dim)
    if not paths:
        return None
    with_host = _many_hosts(ok_rows(rows))
    item = {"sequence": "sequences"}.get(dim, "items")
    with _figure(f"{dim}-scaling", 4.8) as fig:
        lat_ax, rate_ax = fig.subplots(1, 2)
        for i, (key, path) in enumerate(paths.items()):
            host, fmt, quant, runtime, target, batch = key
            name = f"{fmt} {quant} · {runtime} · {target} · b{batch}" + (f" @ {host}" if with_host else "")
            xs, marker = [r["shape"][dim] for r in path], MARKERS[i % len(MARKERS)]
            gid = f"{dim}-scaling:{host}:{fmt}-{quant}-{runtime}-{target}-b{batch}"
            lat_ax.plot(xs, [r["latency_ms"]["p50"] for r in path], marker=marker, label=name, gid=gid)
            rate_ax.plot(xs, [r["batch"] / r["latency_ms"]["p50"] * 1e3 for r in path], marker=marker, gid=gid + ":rate")
        values = sorted({r["shape"][dim] for path in paths.values() for r in path})
        for ax in (lat_ax, rate_ax):
            ax.set_xscale("log", base=2)
            ax.set_xticks(values, [str(v) for v in values])
            ax.minorticks_off()
            ax.set_xlabel(dim)
        _log_if_wide(lat_ax, "y", [r["latency_ms"]["p50"] for path in paths.values() for r in path])
        lat_ax.set_ylabel("p50 latency, ms per call")
        rate_ax.set_ylabel(f"{item} per second (batch / p50)")
        fig.legend(fontsize=8, loc="outside lower center", ncols=2)
        return _svg(fig)


def batch_scaling(rows: list[dict]) -> str | None:
    """ms/item against batch size for each path measured at more than one batch size; None when there is none."""
    paths = batch_paths(rows)
    if not paths:
        return None
    with_host = _many_hosts(ok_rows(rows))
    with _figure("batch-scaling", 4.8) as fig:
        ax = fig.subplots()
        for i, (key, path) in enumerate(paths.items()):
            host, fmt, quant, runtime, target, dims = key
            name = " ".join([f"{fmt} {quant} · {runtime} · {target}", *(f"{k}={v}" for k, v in dims)])
            name += f" @ {host}" if with_host else ""
            ax.plot([r["batch"] for r in path], [per_item_ms(r) for r in path], marker=MARKERS[i % len(MARKERS)],
                    label=name, gid=f"batch-scaling:{host}:{fmt}-{quant}-{runtime}-{target}" + "".join(f"-{k}{v}" for k, v in dims))
        batches = sorted({r["batch"] for path in paths.values() for r in path})
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        _log_if_wide(ax, "y", [per_item_ms(r) for path in paths.values() for r in path])
        ax.set_xlabel("batch size")
        ax.set_ylabel("p50 latency, ms per item (p50 / batch)")
        ax.legend(fontsize=8, loc="best")
        return _svg(fig)


def drift_bars(rows: list[dict]) -> str | None:
    """SQNR against the source model per row, coloured by quantization; bit-identical rows marked exact."""
    from matplotlib.patches import Patch

    rows = [r for r in ok_rows(rows) if r.get("drift")]
    if not rows:
        return None
    with_host = _many_hosts(rows)
    finite = [r["drift"]["sqnr_db"] for r in rows if r["drift"].get("sqnr_db") is not None
              and math.isfinite(r["drift"]["sqnr_db"])]
    top = max([*finite, 10.0]) * 1.15
    quants = list(dict.fromkeys(r["quantization"] for r in rows))
    colour = {q: f"C{i % 10}" for i, q in enumerate(quants)}
    with _figure("drift-bars", _height(len(rows))) as fig:
        ax = fig.subplots()
        for y, r in enumerate(rows):
            sqnr, gid = r["drift"].get("sqnr_db"), f"drift-bars:{hostname(r)}:{r['id']}"
            if _identical(r):
                ax.barh(y, top, color="white", edgecolor=colour[r["quantization"]], hatch="..", gid=gid)
                ax.text(top, y, " exact", va="center", fontsize=8, fontweight="bold")
            elif sqnr is not None and math.isfinite(sqnr):
                ax.barh(y, sqnr, color=colour[r["quantization"]], gid=gid)
                ax.text(max(sqnr, 0), y, f" {sqnr:.1f} dB", va="center", fontsize=8)
            else:
                ax.text(0, y, " n/a", va="center", fontsize=8, gid=gid)
        ax.set_yticks(range(len(rows)), [label(r, with_host) for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)  # table order, top to bottom
        ax.set_xlim(min([0.0, *finite]), top * 1.12)
        ax.set_xlabel("SQNR vs the source model, dB (higher = closer; exact = bit-identical outputs)")
        fig.legend(handles=[Patch(color=colour[q], label=f"quantization: {q}") for q in quants], fontsize=8,
                   loc="outside lower center", ncols=min(len(quants), 4))
        return _svg(fig)


def layer_sqnr(explained: list[dict]) -> str | None:
    """deploycmp explain's SQNR of each quantized activation against fp32 through the depth of the network, one
    line per explained int8 row (x: position in execution order, 0 = input, 1 = output, so paths with different
    tensor counts line up); dotted: the worst channel; dashed: each tensor's own error (channel mean), where the
    error enters; the tensor each ranked first is marked on it."""
    lines = [e for e in explained if any(x["sqnr_db"] is not None for x in e["layers"])]
    if not lines:
        return None
    with _figure("layer-sqnr", 3.6) as fig:
        ax = fig.subplots()
        for i, e in enumerate(lines):
            n, colour = max(len(e["layers"]) - 1, 1), f"C{i % 10}"
            at = {x["tensor"]: j / n for j, x in enumerate(e["layers"])}
            for key, style, name in (("sqnr_db", "-", e["row"]), ("channel_sqnr_db", ":", None),
                                     ("own_channel_mean_sqnr_db", "--", None)):
                points = [(at[x["tensor"]], x[key]) for x in e["layers"] if x.get(key) is not None]
                if points:
                    ax.plot(*zip(*points), style, color=colour, marker="o" if name else None, markersize=3,
                            label=name, gid=f"layer-sqnr:{e['row']}:{key}")
            if e["top"]:
                first = next(x for x in e["layers"] if x["tensor"] == e["top"][0])
                y = next(v for v in (first.get("own_channel_mean_sqnr_db"), first["sqnr_db"], 0) if v is not None)
                ax.annotate(first["layer"], (at[first["tensor"]], y), xytext=(4, -12 - 10 * i),
                            textcoords="offset points", color=colour, fontsize=8)
        ax.set_xlabel("depth: position of the quantized activation in execution order (0 = input, 1 = output)")
        ax.set_ylabel("SQNR vs fp32, dB")
        fig.legend(fontsize=8, loc="outside lower center", ncols=min(len(lines), 3))
        return _svg(fig)
