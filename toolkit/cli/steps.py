"""What the commands share: export, bench and report as the CLI runs them (a progress bar, the lines on stderr,
the logs of failed rows), and the option values checked."""
from __future__ import annotations

from pathlib import Path

import click

from deploycmp.cli.options import VERBOSE
from deploycmp.core import timeline
from deploycmp.core.errors import UsageError


def default_out(model: str) -> str:
    return str(Path("runs") / Path(model.replace(":", "_")).stem)


def progress_bar(description: str):
    """A progress bar on stderr; returns (context manager, callback(i, n, label))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[label]}"), transient=True)
    task = bar.add_task(description, total=None, label="")

    def update(i, n, label):
        bar.update(task, completed=i, total=n, label=label)

    return bar, update


def check_positive(name: str, value, allow_zero=False):
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise UsageError(f"{name} must be {'zero or ' if allow_zero else ''}positive, not {value}")


@timeline.step("export")
def do_export(run_dir, opts: dict, force, threads, batch):
    """opts: the export_options values (model, weights, formats ...)."""
    from deploycmp.core.cache import default_dir
    from deploycmp.core.specs import parse_constants, parse_sweeps, parse_value_ranges, with_constants
    from deploycmp.export.matrix import ExportOptions, export_run, given_inputs
    from deploycmp.measure.targets import usable_cpus
    from deploycmp.sources.data import parse_preprocess

    check_positive("--num-classes", opts["num_classes"])
    check_positive("--samples", opts["samples"])
    check_positive("--calibration-samples", opts["calibration_samples"])
    check_positive("--export-jobs", opts["export_jobs"])
    options = ExportOptions(
        model=opts["model"], weights=opts["weights"],
        inputs=with_constants(given_inputs(opts["inputs"], opts["input_shape"]), parse_constants(opts["constants"])),
        value_ranges=parse_value_ranges(opts["value_ranges"]), sweeps=parse_sweeps(opts["shapes"], batch),
        formats=opts["formats"], quantize=opts["quantize"], data=opts["data"], samples=opts["samples"],
        calibration_samples=opts["calibration_samples"], num_classes=opts["num_classes"],
        preprocess=parse_preprocess(opts["mean"], opts["std"]), layout=opts["layout"],
        threads=threads or len(usable_cpus()), timeout=opts["export_timeout"],
        jobs=opts["export_jobs"] or min(2, len(usable_cpus())),
        cache=None if opts["no_cache"] else (opts["cache_dir"] or default_dir()), task=opts["task"])
    bar, update = progress_bar("export")
    with bar:
        manifest = export_run(options, Path(run_dir), force, update)
    for w in manifest["warnings"]:
        click.echo(f"warning: {w}", err=True)
    for a in manifest["artifacts"]:
        if a["status"] != "ok":
            click.echo(f"{a['id']}: {a['status']}: {a['error']}", err=True)
        if a["status"] == "export_failed":
            show_log(Path(run_dir) / "logs" / f"export-{a['id']}.log")
    made = manifest["artifacts"][1:]  # the source model is pinned, not exported
    ok = sum(a["status"] == "ok" for a in made)
    reuse = manifest["reuse"]
    kept = [f"{n} kept from this run directory" for n in [reuse["run directory"]] if n] + \
        [f"{n} copied from the export cache" for n in [reuse["cache"]] if n]
    click.echo(f"{ok} of {len(made)} artifacts ok in {run_dir}" + (f" ({', '.join(kept)})" if kept else ""), err=True)
    return manifest


def show_log(path: Path, lines: int = 30) -> None:
    """Where a failed worker's log is; with --verbose, its end (the traceback), on stderr."""
    if not path.is_file():
        return
    if not VERBOSE["on"]:
        click.echo(f"  full log: {path}", err=True)
        return
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    click.echo(f"--- {path} (last {len(tail)} lines) ---", err=True)
    click.echo("\n".join(tail), err=True)


def show_row_logs(run_dir, rows: list[dict]) -> None:
    from deploycmp.core.schema import Status, failed

    for row in rows:
        if failed(row) and row["status"] != Status.EXPORT_FAILED and row.get("log"):
            click.echo(f"{row['id']}: {row['status']}: {row['error']}", err=True)
            show_log(Path(run_dir) / row["log"])


def read_thresholds(thresholds_file, **given):
    """(policy of the thresholds file, thresholds of the flags: each of validate.KEYS); one line when none is given."""
    from deploycmp.gate.validate import KEYS, Policy, Thresholds, load_thresholds

    flags = Thresholds(**given)
    if given.get("min_token_agreement") is not None and not 0 <= given["min_token_agreement"] <= 100:
        raise UsageError("--min-token-agreement is a percentage (0 to 100)")
    if not thresholds_file and not flags.any():
        raise UsageError("give at least one threshold: --thresholds FILE, "
                         + ", ".join("--" + k.replace("_", "-") for k in KEYS))
    return (load_thresholds(thresholds_file) if thresholds_file else Policy()), flags


def read_policy(thresholds):
    """The thresholds file's policy, or None (the default policy) without one."""
    if thresholds is None:
        return None
    from deploycmp.gate.validate import load_thresholds

    return load_thresholds(thresholds)


def timing_settings(threads, min_runs, min_time, max_time, ci_width, warmup_runs, warmup_time, timeout, repeat=1):
    from deploycmp.measure.row import Settings

    for name, v in (("--threads", threads), ("--min-runs", min_runs), ("--timeout", timeout), ("--repeat", repeat)):
        check_positive(name, v)
    for name, v in (("--min-time", min_time), ("--max-time", max_time), ("--ci-width", ci_width),
                    ("--warmup-runs", warmup_runs), ("--warmup-time", warmup_time)):
        check_positive(name, v, allow_zero=True)
    return Settings(threads=threads, min_runs=min_runs, min_time_s=min_time, max_time_s=max_time, ci_width=ci_width,
                    warmup_runs=warmup_runs, warmup_s=warmup_time, timeout=timeout, repeats=repeat)


@timeline.step("bench")
def do_bench(run_dir, bench, policy, force: bool, source: str | None = None):
    """bench: the BenchChoices given; policy: its thresholds file read (read_policy), once per command."""
    from deploycmp.core import seal
    from deploycmp.core.rundir import load_manifest
    from deploycmp.measure.bench import bench_run, parse_batches
    from deploycmp.measure.fleet import check_options
    from deploycmp.measure.targets import parse_runtimes, parse_targets

    settings = timing_settings(bench.threads, bench.min_runs, bench.min_time, bench.max_time, bench.ci_width,
                               bench.warmup_runs, bench.warmup_time, bench.timeout, bench.repeat)
    target_list, sizes = parse_targets(bench.targets, bench.targets_file), parse_batches(bench.batch)
    only = parse_runtimes(bench.only_runtimes)
    fleet = check_options(bench.ray_address, bench.ray_files, bench.tune)
    tune = None
    bar, update = progress_bar("bench")
    with bar:
        if bench.tune:
            from deploycmp.gate.answer import DEFAULT_POLICY
            from deploycmp.gate.tune import Tuner

            tune = Tuner(policy or DEFAULT_POLICY)
        results = bench_run(run_dir, target_list, sizes, settings, force, update, tune=tune, fleet=fleet,
                            only=only, source=source)
    if results["source_refused"]:
        record = load_manifest(run_dir)["model"]
        click.echo(f"warning: rows of the source model not measured: {seal.refusal(record)}", err=True)
    show_row_logs(run_dir, results["rows"])
    click.echo(f"measured {results['measured']} row(s)" + (f", kept {results['kept']} measured before with the same "
               f"artifact, settings and versions" if results["kept"] else ""), err=True)
    return results


@timeline.step("report")
def do_report(run_dir, report_formats, results=None, baseline=None, policy=None):
    """policy: the thresholds file read (read_policy); None: the default policy."""
    from deploycmp.core.results import load_results
    from deploycmp.core.rundir import load_manifest
    from deploycmp.report.compare import compare, load_baseline, print_comparison
    from deploycmp.report.write import parse_report_formats, print_table, write_reports

    formats = parse_report_formats(report_formats)
    results = results or load_results(run_dir)
    comparison = compare(results, load_baseline(baseline), str(baseline)) if baseline else None
    print_table(load_manifest(run_dir), results["rows"], policy=policy)
    if comparison:
        print_comparison(comparison)
    for path in write_reports(run_dir, formats, results, comparison, policy):
        click.echo(f"wrote {path}", err=True)
    return comparison
