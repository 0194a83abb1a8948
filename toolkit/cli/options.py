"""The options the commands share (--verbose; the export, bench, timing, threshold and report groups), declared
once."""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import click

from deploycmp.measure.fleet import FILES as RAY_FILES
from deploycmp.sources.hf import TASKS as HF_TASKS

VERBOSE = {"on": False}


def _set_verbose(ctx, param, value):
    if value:
        VERBOSE["on"] = True


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
    click.option("--export-jobs", type=int, default=None,
                 help="Exports run side by side, each in its own worker with its share of the threads (default: 2 "
                      "where there are 2 cores or more; nothing is timed while they run)."),
    click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
                 help="Export cache folder: artifacts another run already made are copied from it, not exported again "
                      "(default: $DEPLOYCMP_CACHE or ~/.cache/deploycmp)."),
    click.option("--no-cache", is_flag=True, help="Export everything anew and keep nothing in the export cache."),
)

batch_option = click.option("--batch", "batch", default="1", show_default=True,
                            help="Comma-separated batch sizes, e.g. 1,8,32 (static-shape formats get one export per size).")

timing_options = _stack(
    click.option("--min-runs", default=50, show_default=True, type=int, help="Timed runs, at least."),
    click.option("--min-time", default=0.25, show_default=True, type=float, help="Seconds of timed runs, at least."),
    click.option("--max-time", default=10.0, show_default=True, type=float,
                 help="Past --min-runs and --min-time, timed runs go on until the median's 95%% confidence interval "
                      "is within --ci-width, for this many seconds at most (0: stop at the minimums)."),
    click.option("--ci-width", default=0.02, show_default=True, type=float,
                 help="Width of the median's 95%% confidence interval, as a fraction of the median, at which timing "
                      "stops (0.02: the median known to about +-1%%)."),
    click.option("--warmup-runs", default=5, show_default=True, type=int),
    click.option("--warmup-time", default=0.25, show_default=True, type=float),
    click.option("--timeout", default=300.0, show_default=True, type=float, help="Seconds allowed per row."),
)

_bench_click_options = _stack(
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



@dataclass(frozen=True)
class BenchChoices:
    """The bench options as given, to bench and run: which rows, on which targets, timed how."""
    targets: str
    targets_file: Path | None
    batch: str
    threads: int | None
    min_runs: int
    min_time: float
    max_time: float
    ci_width: float
    warmup_runs: int
    warmup_time: float
    timeout: float
    repeat: int
    only_runtimes: str | None
    tune: bool
    thresholds: Path | None
    ray_address: str | None
    ray_files: str | None


def bench_options(command):
    """The bench options, handed to `command` as one BenchChoices named `bench`."""
    names = [f.name for f in fields(BenchChoices)]

    @functools.wraps(command)
    def given(*args, **kwargs):
        return command(*args, bench=BenchChoices(**{n: kwargs.pop(n) for n in names}), **kwargs)

    return _bench_click_options(given)


threshold_options = _stack(
    click.option("--thresholds", "thresholds_file", type=click.Path(path_type=Path), default=None,
                 help="TOML file: [default], [quantization.MODE], [format.FMT], [path.\"FMT-MODE\"] thresholds."),
    click.option("--max-top1-drop", type=float, default=None, help="Max % of samples whose top-1 class changed."),
    click.option("--max-accuracy-drop", type=float, default=None, help="Max loss of task accuracy, percentage points."),
    click.option("--min-sqnr", type=float, default=None, help="Min signal-to-quantization-noise ratio, dB."),
    click.option("--min-cosine", type=float, default=None, help="Min cosine similarity of any sample's outputs."),
    click.option("--max-rel-l2", type=float, default=None, help="Max relative L2 error of the outputs."),
    click.option("--max-kl", type=float, default=None,
                 help="A model that generates: max mean KL divergence of its next-token distribution, nats."),
    click.option("--max-perplexity-increase", type=float, default=None,
                 help="A model that generates: max perplexity increase on the evaluation text, %."),
    click.option("--min-token-agreement", type=float, default=None,
                 help="A model that generates: min % of positions with the same most likely next token."),
)

source_option = click.option(
    "--model", "source", default=None, metavar="SPEC",
    help="The run's source model, given again: lets a package.module:factory source that this machine's export did "
         "not make be imported (a run directory from elsewhere names code; deploycmp runs it only on your word).")

report_option = click.option("--format", "report_formats", default="md,csv,json", show_default=True,
                             help="Comma-separated: md, csv, json, html (one self-contained page with plots).")
