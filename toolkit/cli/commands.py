"""The deploycmp commands. Frameworks are imported inside commands, so --help answers at once."""
from __future__ import annotations

from pathlib import Path

import click

from deploycmp.cli.options import (batch_option, bench_options, export_options, report_option, source_option,
                                   threshold_options, timing_options, verbose_option)
from deploycmp.cli.steps import (check_positive, default_out, do_bench, do_export, do_report, progress_bar,
                                 read_policy, read_thresholds, timing_settings)
from deploycmp.core.errors import UsageError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@verbose_option
@click.version_option(package_name="deploycmp")
def cli():
    """Export a trained model to every deployment format, run each artifact on its runtime, and compare
    accuracy drift, size and latency on this machine."""


@cli.command()
@export_options
@batch_option
@click.option("--out", "run_dir", default=None, help="Run directory (default: runs/MODEL).")
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
@verbose_option
def export(batch, run_dir, force, **opts):
    """Export MODEL to each format and quantization mode into a run directory (an interrupted one is resumed)."""
    from deploycmp.core.lock import locked
    from deploycmp.export.out_dir import check_out

    check_out(run_dir := run_dir or default_out(opts["model"]))  # before a lock file goes into a foreign folder
    with locked(run_dir):
        manifest = do_export(run_dir, opts, force, None, batch)
    return 1 if any(a["status"] == "export_failed" for a in manifest["artifacts"]) else 0


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@bench_options
@click.option("--force", is_flag=True, help="Measure every row again, not only the missing ones.")
@source_option
@verbose_option
def bench(run_dir, bench, force, source):
    """Measure every artifact of RUN_DIR on its runtime(s), one fresh worker process per row (--repeat: N)."""
    from deploycmp.core.lock import locked
    from deploycmp.core.results import exit_status
    from deploycmp.core.rundir import load_manifest
    from deploycmp.report.write import print_table

    load_manifest(run_dir, for_measuring=True)  # a directory that is not a run gets no lock file
    policy = read_policy(bench.thresholds)  # a bad thresholds file fails before the rows are measured
    with locked(run_dir):
        results = do_bench(run_dir, bench, policy, force, source)
    print_table(load_manifest(run_dir), results["rows"], policy=policy)
    return exit_status(results["rows"])


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@report_option
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="Another run directory (or its results.json) to compare with: p50/p99, size and drift per row.")
@click.option("--fail-on-regression", "fail_pct", type=float, default=None,
              help="With --baseline: exit 1 when a row's p50 or p99 got more than PCT %% slower beyond noise.")
@click.option("--thresholds", type=click.Path(path_type=Path), default=None,
              help="TOML thresholds file (as for validate) the answer 'which path to ship' checks paths against "
                   "(default: cosine >= 0.99 and, with labels, accuracy drop <= 1 pp).")
@verbose_option
def report(run_dir, report_formats, baseline, fail_pct, thresholds):
    """Print the table and write report.{md,csv,json,html} into RUN_DIR."""
    from deploycmp.report.compare import regressions

    if fail_pct is not None and baseline is None:
        raise UsageError("--fail-on-regression needs --baseline OTHER_RUN_DIR")
    check_positive("--fail-on-regression", fail_pct, allow_zero=True)
    comparison = do_report(run_dir, report_formats, baseline=baseline, policy=read_policy(thresholds))
    if fail_pct is None:
        return 0
    slower = regressions(comparison, fail_pct)
    for line in slower:
        click.echo(f"REGRESSION  {line}")
    click.echo(f"{len(slower)} regression(s) over {fail_pct:g}% beyond noise against {baseline}")
    return 1 if slower else 0


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("others", nargs=-1, required=True, type=click.Path(path_type=Path))
@verbose_option
def merge(run_dir, others):
    """Add rows measured on other machines (their results.json, from a copy of RUN_DIR) to RUN_DIR.

    Each row must have run on this run's very files (sha256); it keeps its own host and gets the id ROW@HOST."""
    from deploycmp.core.lock import locked
    from deploycmp.core.rundir import load_manifest
    from deploycmp.measure.merge import merge as merge_rows
    from deploycmp.report.write import print_table

    load_manifest(run_dir)
    with locked(run_dir):
        done = merge_rows(run_dir, others)
    print_table(load_manifest(run_dir), done["results"]["rows"])
    for host, n in done["hosts"].items():
        click.echo(f"merged {n} row(s) measured on {host}", err=True)
    if done["skipped"]:
        click.echo(f"skipped {done['skipped']} row(s) already in {run_dir}", err=True)
    return 0


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@threshold_options
@click.option("--junit", type=click.Path(path_type=Path), default=None, help="Also write JUnit XML, one test per row.")
@click.option("--allow-degenerate", is_flag=True,
              help="Pass rows whose reference outputs are degenerate (constant, all 0 ...: drift n/a) instead of failing them.")
@verbose_option
def validate(run_dir, thresholds_file, junit, allow_degenerate, **thresholds):
    """Pass/fail per row against thresholds (flags override the file); exit 1 if any row breaks one."""
    from deploycmp.core.results import load_results
    from deploycmp.gate.validate import check_junit_path, validate as run_validate, verdict_lines, write_junit

    policy, flags = read_thresholds(thresholds_file, **thresholds)
    if junit:
        check_junit_path(junit)  # before validating: a path it cannot write is one line, not a verdict lost
    verdicts, status = run_validate(load_results(run_dir)["rows"], policy, flags, allow_degenerate)
    for line in verdict_lines(verdicts):
        click.echo(line)
    if junit:
        write_junit(junit, verdicts)
        click.echo(f"wrote {junit}", err=True)
    return status


@cli.command()
@export_options
@click.option("--out", "run_dir", default=None, help="Run directory (default: runs/MODEL).")
@bench_options
@report_option
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
@verbose_option
def run(run_dir, bench, report_formats, force, **opts):
    """export + bench + report in one go; run again on an interrupted run directory, it goes on where it stopped."""
    from deploycmp.core.lock import locked
    from deploycmp.core.results import exit_status
    from deploycmp.export.out_dir import check_out
    from deploycmp.measure.fleet import check_options
    from deploycmp.measure.targets import parse_runtimes, parse_targets
    from deploycmp.report.write import parse_report_formats

    parse_report_formats(report_formats)
    parse_targets(bench.targets, bench.targets_file)  # a bad target fails before minutes of export, not after
    parse_runtimes(bench.only_runtimes)
    check_options(bench.ray_address, bench.ray_files, bench.tune)
    policy = read_policy(bench.thresholds)
    check_out(run_dir := run_dir or default_out(opts["model"]))
    with locked(run_dir):
        do_export(run_dir, opts, force, bench.threads, bench.batch)
        results = do_bench(run_dir, bench, policy, force=False, source=opts["model"])
        do_report(run_dir, report_formats, results, policy=policy)
    return exit_status(results["rows"])


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--row", "row_id", required=True, help="The int8 row to explain (an id from report.csv).")
@source_option
@verbose_option
def explain(run_dir, row_id, source):
    """Where an int8 row's error enters: every quantized activation against fp32 (ONNX Runtime, LiteRT, ExecuTorch)."""
    from deploycmp.core import seal
    from deploycmp.core.rundir import load_manifest
    from deploycmp.gate.explain import explain as run_explain, explain_lines

    with seal.allowing(seal.allowed_source(load_manifest(run_dir), source)):
        result = run_explain(run_dir, row_id)
    for line in explain_lines(result):
        click.echo(line)
    click.echo(f"wrote {Path(run_dir) / 'results' / (row_id + '.layers.json')}", err=True)
    return 0


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--row", "row_id", required=True, help="The int8 row to repair (an id from report.csv).")
@threshold_options
@click.option("--max-steps", default=8, show_default=True, type=int, help="Candidates to try at most.")
@click.option("--targets-file", type=click.Path(path_type=Path), default=None,
              help="The TOML file defining the row's target, when it is one of your own.")
@timing_options
@source_option
@verbose_option
def repair(run_dir, row_id, thresholds_file, max_steps, targets_file, min_runs, min_time, max_time, ci_width, warmup_runs,
           warmup_time, timeout, source, **thresholds):
    """Make an int8 row pass: other calibration methods, then its worst layers in float one at a time, each a row."""
    from deploycmp.core import seal
    from deploycmp.core.lock import locked
    from deploycmp.core.rundir import load_manifest
    from deploycmp.gate.repair import repair as run_repair, repair_lines

    policy, flags = read_thresholds(thresholds_file, **thresholds)
    check_positive("--max-steps", max_steps)
    settings = timing_settings(None, min_runs, min_time, max_time, ci_width, warmup_runs, warmup_time, timeout)
    manifest = load_manifest(run_dir, for_measuring=True)  # a directory that is not a run gets no lock file
    bar, update = progress_bar("repair")
    with locked(run_dir), bar, seal.allowing(seal.allowed_source(manifest, source)):
        result = run_repair(run_dir, row_id, policy, flags, settings, max_steps, targets_file, update)
    for line in repair_lines(result):
        click.echo(line)
    if result["passed"] == row_id:
        click.echo(f"{row_id} passes already: nothing to repair")
        return 0
    if result["passed"]:
        click.echo(f"{result['passed']} passes (step {len(result['steps']) - 1}); check it with deploycmp validate")
        return 0
    click.echo(f"no candidate passes within --max-steps {max_steps} ({result['left']} more planned); candidates kept")
    return 1


@cli.command(name="list")
@click.option("--targets-file", type=click.Path(path_type=Path), default=None, help="Also list the targets of this file.")
@verbose_option
def list_(targets_file):
    """Models, formats, runtimes and targets, and which are available in this install."""
    from deploycmp.cli.listing import list_everything

    return list_everything(targets_file)
