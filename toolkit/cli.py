"""The deploycmp command line. Frameworks are imported inside commands, so --help answers at once."""
from __future__ import annotations

import errno
import signal
import sys
import traceback
from pathlib import Path

import click

from deploycmp.core.errors import DeployError, Interrupted, UsageError
from deploycmp.core.sanitize import terminal
from deploycmp.measure.fleet import FILES as RAY_FILES
from deploycmp.sources.hf import TASKS as HF_TASKS

_VERBOSE = {"on": False}


def _set_verbose(ctx, param, value):
    if value:
        _VERBOSE["on"] = True


verbose_option = click.option("--verbose", "-v", is_flag=True, expose_value=False, callback=_set_verbose,
                              is_eager=True, help="Show tracebacks and worker logs on errors.")


def _stack(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


export_options = _stack(
    click.option("--model", "model", required=True, help="torchvision name (resnet18), a TorchScript file, a .pt2 "
                 "file, package.module:factory (a torch.nn.Module), a Hugging Face save_pretrained directory or hf:ID "
                 "(from the local cache), keras:NAME (keras.applications), keras-hub:PRESET (KerasHub, from the local cache), "
                 "a .keras file, a SavedModel directory, or an ONNX file (model.onnx, external data beside it). "
                 "'deploycmp list' shows an example of each."),
    click.option("--task", type=click.Choice(list(HF_TASKS)), default=None,
                 help="The head of a Hugging Face or KerasHub model (default: the one its config's architecture or "
                 "the preset's task names)."),
    click.option("--weights", default="auto", show_default=True, help="auto | imagenet | random (well-conditioned: "
                 "constant layers re-initialised, BatchNorm recalibrated) | random-raw (the plain init) | FILE (a state_dict)."),
    click.option("--input", "inputs", multiple=True, metavar="NAME:DTYPE:SHAPE",
                 help="One model input, repeatable: e.g. --input ids:int64:1,16 --input feats:float32:1,8. DTYPE: "
                      "float32, float16, bfloat16, int64, int32, bool, uint8; a dimension may be a name "
                      "(ids:int64:batch,sequence with --shape sequence=16,64); axis 0 is the batch; SHAPE scalar "
                      "(or empty) for a 0-d input: sr:int64:scalar."),
    click.option("--const", "constants", multiple=True, metavar="NAME=VALUE",
                 help="An input fed VALUE on every call, repeatable: e.g. --const sr=16000 (a TorchScript int "
                      "argument, a 0-d ONNX input). Recorded in the manifest; never drawn, swept or calibrated."),
    click.option("--input-shape", default=None, help="Shorthand for one float32 input: N,C,H,W (default: the model's own)."),
    click.option("--shape", "shapes", multiple=True, metavar="NAME=V1,V2",
                 help="Sizes of a named input dimension, repeatable, e.g. sequence=16,64 (swept like --batch)."),
    click.option("--value-range", "value_ranges", multiple=True, metavar="NAME:LOW,HIGH",
                 help="Values of an integer input, drawn from [LOW, HIGH), e.g. ids:0,1000 (default: the model's "
                      "vocabulary where it has one)."),
    click.option("--formats", default="all", show_default=True, help="Comma-separated formats, or all."),
    click.option("--quantize", default="none", show_default=True, help="Comma-separated: none,bf16,fp16,dynamic,int8."),
    click.option("--data", default="random", show_default=True,
                 help="random | digits (scikit-learn's labeled digits) | an image folder | FILE.npz (x, optional y)."),
    click.option("--num-classes", type=int, default=None, help="Classes of a torchvision model's re-sized head "
                 "(a fine-tuned checkpoint given with --weights FILE)."),
    click.option("--mean", default=None, help="Per-channel mean on [0, 1] pixels for image data, e.g. 0.5,0.5,0.5 "
                 "(default: the model's own preprocessing)."),
    click.option("--std", default=None, help="Per-channel std on [0, 1] pixels for image data."),
    click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default=None,
                 help="Input layout of a model file or factory (default: NCHW for PyTorch, NHWC for Keras)."),
    click.option("--samples", default=32, show_default=True, type=int, help="Evaluation inputs (drift, accuracy)."),
    click.option("--calibration-samples", default=32, show_default=True, type=int,
                 help="Calibration inputs for int8 exporters (never used for metrics)."),
    click.option("--export-timeout", default=900.0, show_default=True, type=float, help="Seconds allowed per export."),
    click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
                 help="Export cache folder: artifacts another run already made are copied from it, not exported again "
                      "(default: $DEPLOYCMP_CACHE or ~/.cache/deploycmp)."),
    click.option("--no-cache", is_flag=True, help="Export everything anew and keep nothing in the export cache."),
)

batch_option = click.option("--batch", "batch", default="1", show_default=True,
                            help="Comma-separated batch sizes, e.g. 1,8,32 (static-shape formats get one export per size).")

timing_options = _stack(
    click.option("--min-runs", default=50, show_default=True, type=int, help="Timed runs, at least."),
    click.option("--min-time", default=3.0, show_default=True, type=float, help="Seconds of timed runs, at least."),
    click.option("--warmup-runs", default=5, show_default=True, type=int),
    click.option("--warmup-time", default=1.0, show_default=True, type=float),
    click.option("--timeout", default=300.0, show_default=True, type=float, help="Seconds allowed per row."),
)

bench_options = _stack(
    click.option("--target", "targets", default="server-cpu", show_default=True,
                 help="Comma-separated targets: server-cpu, mobile-cpu, gpu, or your own from --targets-file."),
    click.option("--targets-file", type=click.Path(path_type=Path), default=None,
                 help="TOML file of your own targets ([targets.NAME] with threads, cores, runtimes ...)."),
    batch_option,
    click.option("--threads", type=int, default=None, help="Threads per runtime (default: the target's)."),
    timing_options,
    click.option("--repeat", default=1, show_default=True, type=int,
                 help="Measure each row in N fresh processes, in rounds over all rows; CIs then include the scatter "
                      "between processes (use it for runs you compare with report --baseline)."),
    click.option("--runtimes", "only_runtimes", default=None, metavar="NAMES",
                 help="Comma-separated runtimes to measure (default: every runtime each target runs), e.g. "
                      "onnxruntime,litert."),
    click.option("--tune", is_flag=True,
                 help="Also try each runtime's documented settings (threads up to the target's, graph optimisation, "
                      "hints, int8 recipes ...) and add a tuned row per row with the fastest that stays within the "
                      "thresholds."),
    click.option("--thresholds", type=click.Path(path_type=Path), default=None,
                 help="Thresholds TOML (as validate's) that tuned settings must keep and the report's answer uses "
                      "(default: cosine >= 0.99, accuracy drop <= 1 pp)."),
    click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto",
                 help="Measure each row on a node of this Ray cluster that offers the row's target (ray start "
                      "--resources '{\"deploycmp:TARGET\": 1}'), one row per node at a time; see docs/fleet.md."),
    click.option("--ray-files", type=click.Choice(RAY_FILES), default=None,
                 help="With --ray: shared (default): the run directory is at the same path on every node; ship: "
                      "the artifacts travel through Ray's object store."),
)

threshold_options = _stack(
    click.option("--thresholds", "thresholds_file", type=click.Path(path_type=Path), default=None,
                 help="TOML file: [default], [quantization.MODE], [format.FMT], [path.\"FMT-MODE\"] thresholds."),
    click.option("--max-top1-drop", type=float, default=None, help="Max % of samples whose top-1 class changed."),
    click.option("--max-accuracy-drop", type=float, default=None, help="Max loss of task accuracy, percentage points."),
    click.option("--min-sqnr", type=float, default=None, help="Min signal-to-quantization-noise ratio, dB."),
    click.option("--min-cosine", type=float, default=None, help="Min cosine similarity of any sample's outputs."),
    click.option("--max-rel-l2", type=float, default=None, help="Max relative L2 error of the outputs."),
)

source_option = click.option(
    "--model", "source", default=None, metavar="SPEC",
    help="The run's source model, given again: lets a package.module:factory source that this machine's export did "
         "not make be imported (a run directory from elsewhere names code; deploycmp runs it only on your word).")

report_option = click.option("--format", "report_formats", default="md,csv,json", show_default=True,
                             help="Comma-separated: md, csv, json, html (one self-contained page with plots).")


def _progress(description: str):
    """A progress bar on stderr; returns (context manager, callback(i, n, label))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[label]}"), transient=True)
    task = bar.add_task(description, total=None, label="")

    def update(i, n, label):
        bar.update(task, completed=i, total=n, label=label)

    return bar, update


def _check_positive(name: str, value, allow_zero=False):
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise UsageError(f"{name} must be {'zero or ' if allow_zero else ''}positive, not {value}")


def _do_export(run_dir, opts: dict, force, threads, batch):
    """opts: the export_options values (model, weights, formats ...)."""
    from deploycmp.core.cache import default_dir
    from deploycmp.core.specs import parse_constants, parse_sweeps, parse_value_ranges, with_constants
    from deploycmp.export.matrix import ExportOptions, export_run, given_inputs
    from deploycmp.measure.targets import usable_cpus
    from deploycmp.sources.data import parse_preprocess

    _check_positive("--num-classes", opts["num_classes"])
    _check_positive("--samples", opts["samples"])
    _check_positive("--calibration-samples", opts["calibration_samples"])
    options = ExportOptions(
        model=opts["model"], weights=opts["weights"],
        inputs=with_constants(given_inputs(opts["inputs"], opts["input_shape"]), parse_constants(opts["constants"])),
        value_ranges=parse_value_ranges(opts["value_ranges"]), sweeps=parse_sweeps(opts["shapes"], batch),
        formats=opts["formats"], quantize=opts["quantize"], data=opts["data"], samples=opts["samples"],
        calibration_samples=opts["calibration_samples"], num_classes=opts["num_classes"],
        preprocess=parse_preprocess(opts["mean"], opts["std"]), layout=opts["layout"],
        threads=threads or len(usable_cpus()), timeout=opts["export_timeout"],
        cache=None if opts["no_cache"] else (opts["cache_dir"] or default_dir()), task=opts["task"])
    bar, update = _progress("export")
    with bar:
        manifest = export_run(options, Path(run_dir), force, update)
    for w in manifest["warnings"]:
        click.echo(f"warning: {w}", err=True)
    for a in manifest["artifacts"]:
        if a["status"] != "ok":
            click.echo(f"{a['id']}: {a['status']}: {a['error']}", err=True)
        if a["status"] == "export_failed":
            _show_log(Path(run_dir) / "logs" / f"export-{a['id']}.log")
    made = manifest["artifacts"][1:]  # the source model is pinned, not exported
    ok = sum(a["status"] == "ok" for a in made)
    reuse = manifest["reuse"]
    kept = [f"{n} kept from this run directory" for n in [reuse["run directory"]] if n] + \
        [f"{n} copied from the export cache" for n in [reuse["cache"]] if n]
    click.echo(f"{ok} of {len(made)} artifacts ok in {run_dir}" + (f" ({', '.join(kept)})" if kept else ""), err=True)
    return manifest


def _show_log(path: Path, lines: int = 30) -> None:
    """Where a failed worker's log is; with --verbose, its end (the traceback), on stderr."""
    if not path.is_file():
        return
    if not _VERBOSE["on"]:
        click.echo(f"  full log: {path}", err=True)
        return
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    click.echo(f"--- {path} (last {len(tail)} lines) ---", err=True)
    click.echo("\n".join(tail), err=True)


def _show_row_logs(run_dir, rows: list[dict]) -> None:
    from deploycmp.core.schema import Status, failed

    for row in rows:
        if failed(row) and row["status"] != Status.EXPORT_FAILED and row.get("log"):
            click.echo(f"{row['id']}: {row['status']}: {row['error']}", err=True)
            _show_log(Path(run_dir) / row["log"])


def _thresholds(thresholds_file, max_top1_drop, max_accuracy_drop, min_sqnr, min_cosine, max_rel_l2):
    """(policy of the thresholds file, thresholds of the flags); one line when none is given."""
    from deploycmp.gate.validate import Policy, Thresholds, load_thresholds

    flags = Thresholds(max_top1_drop=max_top1_drop, min_sqnr=min_sqnr, max_rel_l2=max_rel_l2,
                       max_accuracy_drop=max_accuracy_drop, min_cosine=min_cosine)
    if not thresholds_file and not flags.any():
        raise UsageError("give at least one threshold: --thresholds FILE, --max-top1-drop, --max-accuracy-drop, "
                         "--min-sqnr, --min-cosine or --max-rel-l2")
    return (load_thresholds(thresholds_file) if thresholds_file else Policy()), flags


def _policy(thresholds):
    """The thresholds file's policy, or None (the default policy) without one."""
    if thresholds is None:
        return None
    from deploycmp.gate.validate import load_thresholds

    return load_thresholds(thresholds)


def _settings(threads, min_runs, min_time, warmup_runs, warmup_time, timeout, repeat=1):
    from deploycmp.measure.row import Settings

    for name, v in (("--threads", threads), ("--min-runs", min_runs), ("--timeout", timeout), ("--repeat", repeat)):
        _check_positive(name, v)
    for name, v in (("--min-time", min_time), ("--warmup-runs", warmup_runs), ("--warmup-time", warmup_time)):
        _check_positive(name, v, allow_zero=True)
    return Settings(threads, min_runs, min_time, warmup_runs, warmup_time, timeout, repeat)


def _do_bench(run_dir, targets, targets_file, batch, threads, min_runs, min_time, warmup_runs, warmup_time, timeout,
              repeat, force, tune=False, thresholds=None, ray_address=None, ray_files=None, only_runtimes=None,
              source=None):
    from deploycmp.core import seal
    from deploycmp.core.rundir import load_manifest
    from deploycmp.measure.bench import bench_run, parse_batches
    from deploycmp.measure.fleet import check_options
    from deploycmp.measure.targets import parse_runtimes, parse_targets

    settings = _settings(threads, min_runs, min_time, warmup_runs, warmup_time, timeout, repeat)
    target_list, sizes = parse_targets(targets, targets_file), parse_batches(batch)
    only = parse_runtimes(only_runtimes)
    fleet = check_options(ray_address, ray_files, tune)
    bar, update = _progress("bench")
    with bar:
        if tune:
            from deploycmp.gate.answer import DEFAULT_POLICY
            from deploycmp.gate.tune import Tuner

            tune = Tuner(_policy(thresholds) or DEFAULT_POLICY)
        results = bench_run(run_dir, target_list, sizes, settings, force, update, tune=tune or None, fleet=fleet,
                            only=only, source=source)
    if results["source_refused"]:
        record = load_manifest(run_dir)["model"]
        click.echo(f"warning: rows of the source model not measured: {seal.refusal(record)}", err=True)
    _show_row_logs(run_dir, results["rows"])
    click.echo(f"measured {results['measured']} row(s)" + (f", kept {results['kept']} measured before with the same "
               f"artifact, settings and versions" if results["kept"] else ""), err=True)
    return results


def _do_report(run_dir, report_formats, results=None, baseline=None, thresholds=None):
    from deploycmp.core.results import load_results
    from deploycmp.core.rundir import load_manifest
    from deploycmp.report.compare import compare, load_baseline, print_comparison
    from deploycmp.report.write import parse_report_formats, print_table, write_reports

    formats = parse_report_formats(report_formats)
    policy = _policy(thresholds)
    results = results or load_results(run_dir)
    comparison = compare(results, load_baseline(baseline), str(baseline)) if baseline else None
    print_table(load_manifest(run_dir), results["rows"], policy=policy)
    if comparison:
        print_comparison(comparison)
    for path in write_reports(run_dir, formats, results, comparison, policy):
        click.echo(f"wrote {path}", err=True)
    return comparison


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
    from deploycmp.export.matrix import check_out

    check_out(run_dir := run_dir or _default_out(opts["model"]))  # before a lock file goes into a foreign folder
    with locked(run_dir):
        manifest = _do_export(run_dir, opts, force, None, batch)
    return 1 if any(a["status"] == "export_failed" for a in manifest["artifacts"]) else 0


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@bench_options
@click.option("--force", is_flag=True, help="Measure every row again, not only the missing ones.")
@source_option
@verbose_option
def bench(run_dir, targets, targets_file, batch, threads, min_runs, min_time, warmup_runs, warmup_time, timeout, repeat,
          only_runtimes, tune, thresholds, ray_address, ray_files, force, source):
    """Measure every artifact of RUN_DIR on its runtime(s), one fresh worker process per row (--repeat: N)."""
    from deploycmp.core.lock import locked
    from deploycmp.core.results import exit_status
    from deploycmp.core.rundir import load_manifest
    from deploycmp.report.write import print_table

    load_manifest(run_dir, for_measuring=True)  # a directory that is not a run gets no lock file
    with locked(run_dir):
        results = _do_bench(run_dir, targets, targets_file, batch, threads, min_runs, min_time, warmup_runs,
                            warmup_time, timeout, repeat, force, tune, thresholds, ray_address, ray_files,
                            only_runtimes, source)
    print_table(load_manifest(run_dir), results["rows"], policy=_policy(thresholds))
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
    _check_positive("--fail-on-regression", fail_pct, allow_zero=True)
    comparison = _do_report(run_dir, report_formats, baseline=baseline, thresholds=thresholds)
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
def validate(run_dir, thresholds_file, max_top1_drop, max_accuracy_drop, min_sqnr, min_cosine, max_rel_l2, junit,
             allow_degenerate):
    """Pass/fail per row against thresholds (flags override the file); exit 1 if any row breaks one."""
    from deploycmp.core.results import load_results
    from deploycmp.gate.validate import check_junit_path, validate as run_validate, verdict_lines, write_junit

    policy, flags = _thresholds(thresholds_file, max_top1_drop, max_accuracy_drop, min_sqnr, min_cosine, max_rel_l2)
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
def run(run_dir, targets, targets_file, batch, threads, min_runs, min_time, warmup_runs, warmup_time, timeout, repeat,
        only_runtimes, tune, thresholds, ray_address, ray_files, report_formats, force, **opts):
    """export + bench + report in one go; run again on an interrupted run directory, it goes on where it stopped."""
    from deploycmp.core.lock import locked
    from deploycmp.core.results import exit_status
    from deploycmp.export.matrix import check_out
    from deploycmp.measure.fleet import check_options
    from deploycmp.measure.targets import parse_runtimes, parse_targets
    from deploycmp.report.write import parse_report_formats

    parse_report_formats(report_formats)
    parse_targets(targets, targets_file)  # a bad target fails before minutes of export, not after
    parse_runtimes(only_runtimes)
    check_options(ray_address, ray_files, tune)
    check_out(run_dir := run_dir or _default_out(opts["model"]))
    with locked(run_dir):
        _do_export(run_dir, opts, force, threads, batch)
        results = _do_bench(run_dir, targets, targets_file, batch, threads, min_runs, min_time, warmup_runs,
                            warmup_time, timeout, repeat, False, tune, thresholds, ray_address, ray_files,
                            only_runtimes, opts["model"])
        _do_report(run_dir, report_formats, results, thresholds=thresholds)
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
def repair(run_dir, row_id, thresholds_file, max_top1_drop, max_accuracy_drop, min_sqnr, min_cosine, max_rel_l2,
           max_steps, targets_file, min_runs, min_time, warmup_runs, warmup_time, timeout, source):
    """Make an int8 row pass: other calibration methods, then its worst layers in float one at a time, each a row."""
    from deploycmp.core import seal
    from deploycmp.core.lock import locked
    from deploycmp.core.rundir import load_manifest
    from deploycmp.gate.repair import repair as run_repair, repair_lines

    policy, flags = _thresholds(thresholds_file, max_top1_drop, max_accuracy_drop, min_sqnr, min_cosine, max_rel_l2)
    _check_positive("--max-steps", max_steps)
    settings = _settings(None, min_runs, min_time, warmup_runs, warmup_time, timeout)
    manifest = load_manifest(run_dir, for_measuring=True)  # a directory that is not a run gets no lock file
    bar, update = _progress("repair")
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
    from deploycmp import exporters
    from deploycmp import runtimes
    from deploycmp.measure.targets import BUILTIN, load_targets_file

    def avail(requires):
        absent = runtimes.missing(requires)
        return "available" if not absent else f"unavailable ({', '.join(absent)} not installed)"

    click.echo("formats:")
    for name in exporters.EXPORTERS:
        mod = exporters.get(name)
        for fw in mod.SOURCES:
            deprecated = f"; deprecated upstream: {mod.DEPRECATED}" if getattr(mod, "DEPRECATED", None) else ""
            click.echo(f"  {name:14} from {fw:6} quantization {','.join(mod.QUANTIZATIONS):24} "
                       f"{avail(exporters.requirements(name, fw, 'int8' if len(mod.QUANTIZATIONS) > 1 else 'none'))}"
                       f"{deprecated}")
    click.echo("runtimes:")
    for name in runtimes.RUNTIMES:
        mod = runtimes.get(name)
        opt_in = "; opt-in: only on targets whose runtimes list names it" if runtimes.opt_in(name) else ""
        click.echo(f"  {name:15} runs {', '.join(mod.FORMATS)} on {', '.join(runtimes.devices(name))}; "
                   f"{avail(mod.REQUIRES)}{opt_in}")
    from deploycmp.export.requantize_worker import QUANTIZERS, quantizer
    from deploycmp.gate.explain import EXPLAINERS

    click.echo("int8 paths explain and repair take:")
    for fmt, runtime in EXPLAINERS:
        methods = ", ".join(quantizer(fmt).CALIBRATION_METHODS) if fmt in QUANTIZERS else None
        click.echo(f"  {fmt:14} on {runtime:13} " + (f"repair calibrations {methods}; layers kept in float"
                                                       if methods else "explain only"))
    click.echo("targets:")
    for name, t in {**BUILTIN, **(load_targets_file(targets_file) if targets_file else {})}.items():
        reason = t.unavailable_reason()
        runs = ", ".join(t.runtimes) if t.runtimes else "every runtime that is not opt-in"
        click.echo(f"  {name:14} {t.describe()}; runs {runs}" + (f" (unavailable here: {reason})" if reason else ""))
    click.echo("models (--model):\n"
               "  resnet18                     a torchvision model by name (input and weights from torchvision)\n"
               "  mypkg.models:ranker          package.module:factory returning a torch.nn.Module; its inputs from\n"
               "                               --input, checked against forward(): --input ids:int64:1,16 "
               "--input feats:float32:1,8 --value-range ids:0,1000\n"
               "  model.pt / model.pt2         a TorchScript file or a torch.export program (give --input)\n"
               "  my-bert/ (config.json)       a Hugging Face save_pretrained directory; --task text-classification,\n"
               "                               token-classification, feature-extraction or image-classification\n"
               "                               (default: its config's architecture); inputs from its config\n"
               "  hf:prajjwal1/bert-tiny       a Hugging Face model id, from the local cache only (no download)\n"
               "  keras:MobileNetV2            a keras.applications model by name\n"
               "  keras-hub:bert_tiny_en_uncased  a KerasHub preset (name, kaggle:// or hf:// handle, or directory),\n"
               "                               from the local cache only; --task as for Hugging Face models\n"
               "  model.keras / saved_model/   a Keras file (inputs read from it) or a SavedModel directory\n"
               "  model.onnx                   an ONNX file (inputs read from its graph; reference: ONNX Runtime fp32)\n"
               "torchvision models:")
    if not runtimes.missing(("torchvision",)):
        from deploycmp.sources.torch import torchvision_names

        click.echo("  " + " ".join(torchvision_names()))
    return 0


def _default_out(model: str) -> str:
    return str(Path("runs") / Path(model.replace(":", "_")).stem)


def _on_signal(signum, frame):
    for sig in (signal.SIGINT, signal.SIGTERM):  # once: cleaning up must not be interrupted by a second Ctrl-C
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def _interrupted(e: Interrupted) -> str:
    """What an interruption kept and how to go on (and that it stopped the worker it came in, where it came in one)."""
    from deploycmp.core.isolation import stopped_a_worker
    from deploycmp.core.lock import held_run_dir

    text = f"deploycmp: interrupted by {signal.Signals(e.signum).name}"
    if stopped_a_worker(e):
        text += "; the worker it was running is stopped"
    run_dir = held_run_dir()
    if run_dir is None:
        return text
    artifacts = len([p for p in (run_dir / "artifacts").glob("*.json") if p.stem != "eager-none"])
    rows = len(list((run_dir / "results").glob("*.json")))
    return (f"{text}. {run_dir} keeps {artifacts} finished artifact(s) and {rows} measured row(s); run the same "
            f"command again, without --force, to go on from there")


def _disk_error(e: OSError) -> str | None:
    """One line for a file system that refuses a write (read-only, full, not permitted), else None."""
    if e.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT):
        return f"cannot write {e.filename or 'a file'}: {e.strerror}"
    return None


def main(argv=None) -> None:
    _VERBOSE["on"] = False  # each call reads its own --verbose (the CLI may be called in-process again)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        status = cli.main(args=argv, prog_name="deploycmp", standalone_mode=False)
    except Interrupted as e:
        click.echo(_interrupted(e), err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("deploycmp: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("deploycmp: interrupted", err=True)
        sys.exit(130)
    except DeployError as e:
        if _VERBOSE["on"]:
            traceback.print_exc()
        click.echo(f"deploycmp: error: {terminal(str(e))}", err=True)  # it may quote a received row's text
        sys.exit(e.exit_code)
    except Exception as e:  # a bug or an unforeseen failure: still one line unless --verbose
        if _VERBOSE["on"]:
            traceback.print_exc()
        line = _disk_error(e) if isinstance(e, OSError) else None
        click.echo(f"deploycmp: error: {line}" if line else
                   f"deploycmp: unexpected error: {type(e).__name__}: {terminal(str(e))} (run with --verbose for the traceback)", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
