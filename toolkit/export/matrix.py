"""deploycmp export: pin the source model, write reference inputs/outputs, make every requested artifact."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deploycmp import SCHEMA, __version__
from deploycmp.core import degenerate, seal
from deploycmp.core.cache import ExportCache, code_digest, digest
from deploycmp.core.environment import environment, versions
from deploycmp.core.errors import UsageError
from deploycmp.core.isolation import run_isolated
from deploycmp.core.rundir import (CALIBRATION, MANIFEST, REFERENCE, changed_files, describe_files, read_json, save_feed,
                                   write_json)
from deploycmp.core.specs import (BATCH, InputSpec, OutputSpec, describe, inputs_from_dicts, output_kind, parse_input,
                                  point_id, served_by, point_key, points, split_list, to_dicts, with_batch)
from deploycmp.core.watchdog import deadline
from deploycmp.export.export_worker import imports_of
from deploycmp.export.out_dir import identity, prepare_out
from deploycmp.exporters import EXPORTERS, QUANTIZATIONS, install_hint, requirements, unsupported_reason
from deploycmp.runtimes import missing
from deploycmp.sources.data import feed_sha256, follows_shape


def parse_export_formats(spec: str) -> list[str]:
    names = list(EXPORTERS) if spec.strip() == "all" else split_list(spec, "--formats")
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise UsageError(f"unknown format {unknown[0]!r}; formats: {', '.join(EXPORTERS)} or all")
    return names


def parse_quantize(spec: str) -> list[str]:
    names = split_list(spec, "--quantize")
    unknown = [n for n in names if n not in QUANTIZATIONS]
    if unknown:
        raise UsageError(f"unknown quantization {unknown[0]!r}; modes: {', '.join(QUANTIZATIONS)}")
    return names


def parse_shape(spec: str | None) -> list[int] | None:
    if spec is None:
        return None
    try:
        shape = [int(s) for s in spec.replace("x", ",").split(",")]
    except ValueError:
        raise UsageError(f"--input-shape {spec!r}: expected comma-separated integers, e.g. 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"--input-shape {spec!r}: every dimension must be a positive integer")
    return shape


@dataclass
class ExportOptions:
    """What `deploycmp export` was asked for (the export options of the command line)."""

    model: str
    weights: str = "auto"
    inputs: list = field(default_factory=list)  # InputSpec from --input (or one from --input-shape)
    value_ranges: dict = field(default_factory=dict)
    sweeps: dict = field(default_factory=lambda: {"batch": [1]})  # named dimension -> sizes (--batch, --shape)
    formats: str = "all"
    quantize: str = "none"
    data: str = "random"
    samples: int = 32
    calibration_samples: int = 32
    num_classes: int | None = None
    preprocess: dict | None = None
    layout: str | None = None
    threads: int = 1
    jobs: int = 1  # exports side by side (each with threads // jobs threads)
    timeout: float = 900.0
    cache: Path | None = None  # the export cache's folder; None: no cache (--no-cache)
    task: str | None = None  # a Hugging Face model's head (text-classification ...); None: from its config


def given_inputs(inputs: list[str], input_shape: str | None) -> list[InputSpec]:
    """The input specs named on the command line: --input ones, or a nameless float one from --input-shape."""
    if inputs and input_shape:
        raise UsageError("give --input NAME:DTYPE:SHAPE or --input-shape, not both")
    specs = [parse_input(t) for t in inputs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"--input {next(n for n in names if names.count(n) > 1)} is given twice")
    if input_shape:
        specs = [InputSpec("", "float32", with_batch(parse_shape(input_shape)))]
    return specs


def export_run(opts: ExportOptions, out: Path, force: bool, progress=None) -> dict:
    """Export every format x quantization. An artifact that fixes a dimension (TFLite and ExecuTorch fix the batch,
    some exports the sequence) is exported again for each further size of it in `opts.sweeps`."""
    from deploycmp import sources as models
    from deploycmp.sources.hf import generates

    if generates(opts.model, opts.task):  # a decoder that generates: its own matrix (deploycmp.export.generation)
        from deploycmp.export.generation import export_generation

        return export_generation(opts, out, force, progress)
    fmts, modes = parse_export_formats(opts.formats), parse_quantize(opts.quantize)
    out = Path(out)
    ident = identity(opts)
    prepare_out(out, force, ident)
    cache = ExportCache(opts.cache)

    # the user's code runs here, in this process: under the export timeout, as a worker would be
    with deadline(opts.timeout, f"building --model {opts.model} (and its reference outputs)"):
        framework = models.framework_of(opts.model)
        src = models.get(framework)
        model, record, warnings = src.build(opts.model, opts.weights, opts.inputs, seed=0, num_classes=opts.num_classes,
                                            layout=opts.layout, value_ranges=opts.value_ranges, task=opts.task)
        if opts.preprocess:
            record["preprocess"] = opts.preprocess
        inputs = inputs_from_dicts(record["inputs"])
        named = {d for s in inputs for d in s.dims()}  # the model's own default sizes of dimensions no --shape gives
        defaults = {d: [v] for d, v in record.pop("default_sizes", {}).items() if d in named and d not in opts.sweeps}
        opts = replace(opts, sweeps={**opts.sweeps, **defaults})
        points = shape_points(opts.sweeps, inputs)
        if len(points) > 1 and not follows_shape(opts.data, inputs):
            raise UsageError(f"--shape sweeps need --data random, texts or digits for a token-id model (a file's inputs "
                             f"have one shape): {opts.data}")
        if record.get("weights") == "random":  # well-conditioned: needs the calibration split before any reference
            calibration = load_split(opts, record, inputs, points[0])[0]
            src.condition(model, record, calibration, inputs)
        references, first = [], None
        for dims in points:
            entry, ref = write_reference(out, src, model, record, inputs, dims, opts, first=not references)
            references.append(entry)
            first = first or (entry, ref)
        entry, ref = first
        feed, outputs = ref
        for ref_entry in references:
            for name, found in ref_entry["degenerate"].items():
                where = (f"output {name}" if len(outputs) > 1 else "the output") + (
                    f" at {ref_entry['dims']}" if ref_entry["dims"] else "")
                warnings.append(f"{where}: {found['reason']}: drift shown as n/a"
                                + (" (--weights random gives a well-conditioned random model)"
                                   if record.get("weights") == "random-raw" else ""))
        record["outputs"] = to_dicts(describe_outputs(outputs, inputs, entry["dims"]))
        record["input_shape"] = list(inputs[0].resolve({**entry["dims"], BATCH: 1}))
        record["layout"] = inputs[0].layout
        record["gflops_per_sample"] = src.count_gflops(model, src.example(_take(feed, 1), inputs))
        # everything an artifact of this run depends on besides its format, quantization and shape
        fingerprint = digest({"record": record, "weights": src.weights_sha256(model, record), "code": code_digest(),
                              "versions": versions(), "references": [(r["sha256"], r["calibration_sha256"]) for r in references]})
        source = _source_artifact(out, src, model, record, inputs, feed, entry["dims"], opts.sweeps[BATCH][0], fingerprint)
    jobs = [(f, q) for f in fmts for q in modes]
    export = Exporting(out, record, source["main_file"], opts, fingerprint, cache)
    with seal.allowing(record["spec"] if seal.runs_code(record) else None):
        _export_all(export, jobs, opts, points, references, progress)
    warnings.extend(cache.warnings)

    manifest = {
        "schema": SCHEMA, "tool": {"name": "deploycmp", "version": __version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": record, "warnings": warnings,
        "data": references[0]["data"], "shapes": opts.sweeps, "references": references,
        "reference": REFERENCE, "calibration": CALIBRATION, "artifacts": [source, *export.made], "environment": environment(),
        "identity": ident, "cache": str(cache.root) if cache.root else None,
        "reuse": {where: sum(a.get("reused") == where for a in export.made) for where in ("run directory", "cache")},
    }
    if seal.runs_code(record):  # this user named the code: bench on this machine may run it (deploycmp.core.seal)
        manifest["source_seal"] = seal.seal(record)
    write_json(out / MANIFEST, manifest)
    return manifest


def _export_all(export: Exporting, jobs: list, opts: ExportOptions, points: list, references: list, progress) -> None:
    """Every format x quantization, then again at each further shape point that the first export does not serve;
    opts.jobs of them side by side. The manifest lists them in this order however they finish."""
    first_dims = {BATCH: opts.sweeps[BATCH][0], **points[0]}
    # side by side, the quantized exports start first: each converts to fp32 and then quantizes, so it takes longer
    # than its format's fp32 export, and the longest should run beside others rather than alone at the end
    order = sorted(range(len(jobs)), key=lambda i: jobs[i][1] == "none") if opts.jobs > 1 else range(len(jobs))
    firsts = [None] * len(jobs)
    for i, made in zip(order, side_by_side([(f"export {jobs[i][0]} {jobs[i][1]}",
                                             lambda i=i: export.one(*jobs[i], first_dims, references[0]))
                                            for i in order], opts.jobs, progress)):
        firsts[i] = made
    more = [[(ref_entry, dims) for ref_entry in references for b in opts.sweeps[BATCH]
             for dims in [{BATCH: b, **ref_entry["dims"]}] if dims != first_dims and not served_by(made, dims)]
            if made["status"] == "ok" else [] for made in firsts]
    later = iter(side_by_side([(f"export {fmt} {quant} {point_id(dims)}",
                                lambda fmt=fmt, quant=quant, dims=dims, ref=ref: export.one(fmt, quant, dims, ref, per_point=True))
                               for (fmt, quant), points_of in zip(jobs, more) for ref, dims in points_of], opts.jobs, progress))
    for made, points_of in zip(firsts, more):
        export.made.append(made)
        export.made.extend(next(later) for _ in points_of)


def side_by_side(calls: list[tuple[str, object]], jobs: int, progress=None) -> list:
    """[call() for (label, call) in calls], up to `jobs` at a time in threads (each call waits on its worker process);
    the results in the order given. An interruption stops every worker still running (core.isolation.stop_all)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from deploycmp.core.isolation import stop_all

    results, done = [None] * len(calls), 0
    if progress and calls:
        progress(0, len(calls), calls[0][0])
    if jobs <= 1:
        for i, (label, call) in enumerate(calls):
            if progress:
                progress(i, len(calls), label)
            results[i] = call()
        return results
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {pool.submit(call): i for i, (_, call) in enumerate(calls)}
        try:
            pending = set(running)
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in finished:
                    results[running[future]] = future.result()
                    done += 1
                    if progress:
                        progress(done, len(calls), calls[running[future]][0])
        except BaseException as e:
            stop_all(because=e)  # the workers of the other threads go too; their threads end once their worker has
            for future in running:
                future.cancel()
            wait(running)
            raise
        finally:
            stop_all(False)
    return results


def shape_points(sweeps: dict, inputs: list[InputSpec]) -> list[dict]:
    unused = [d for d in sweeps if d != BATCH and d not in {x for s in inputs for x in s.dims()}]
    if unused:
        raise UsageError(f"--shape {unused[0]}: no input has a dimension named {unused[0]!r} "
                         f"(inputs: {describe(inputs)})")
    return points(sweeps, inputs)


def _take(feed: dict, n: int) -> dict:
    """The first n samples of a feed, repeated when it holds fewer."""
    return {k: np.ascontiguousarray(np.resize(a, (n, *a.shape[1:]))) for k, a in feed.items()}


def write_reference(out: Path, src, model, record: dict, inputs: list, dims: dict, opts: ExportOptions, first: bool):
    """Inputs and golden outputs at one shape point (reference.npz for the first, reference.KEY.npz for others),
    and its calibration split. Returns (its manifest entry, (evaluation feed, outputs))."""
    from deploycmp.sources import data as data_mod

    calibration, feed, y, data_info = load_split(opts, record, inputs, dims)
    try:
        outputs = src.reference_outputs(model, feed, inputs)
    except Exception as e:  # the usual cause is an input the model does not take
        raise UsageError(f"{record['spec']} fails on inputs {describe(inputs)}{f' at {dims}' if dims else ''}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    data_mod.check_labels(y, outputs, opts.data)
    key = point_key(dims)
    names = (REFERENCE, CALIBRATION) if first else (f"reference.{key}.npz", f"calibration.{key}.npz")
    save_feed(out / names[0], feed, outputs, y)
    save_feed(out / names[1], calibration)
    kinds = {name: output_kind(a.shape, inputs, dims) for name, a in outputs.items()}
    entry = {"dims": dims, "file": names[0], "calibration": names[1], "data": data_info,
             "degenerate": degenerate.check_outputs(outputs, kinds),
             # content digests (the .npz files themselves carry timestamps): what a kept artifact or row is checked on
             "sha256": feed_sha256({**{f"input/{k}": a for k, a in feed.items()},
                                    **{f"output/{k}": a for k, a in outputs.items()},
                                    **({"labels": y} if y is not None else {})}),
             "calibration_sha256": feed_sha256(calibration)}
    return entry, (feed, outputs)


def load_split(opts: ExportOptions, record: dict, inputs: list, dims: dict):
    """The data at one shape point, split: (calibration feed, evaluation feed, labels, record for the manifest)."""
    from deploycmp.sources import data as data_mod

    feed_all, y_all, data_info = data_mod.load(opts.data, inputs, dims, opts.samples + opts.calibration_samples,
                                               preprocess=record.get("preprocess"), tokenizer=_tokenizer(opts, record))
    calibration, feed, y, data_info["split"] = data_mod.split(feed_all, y_all, opts.calibration_samples)
    data_info["samples"] = data_mod.samples_in(feed)
    return calibration, feed, y, data_info


def _tokenizer(opts: ExportOptions, record: dict):
    """A Hugging Face model's own tokenizer, for --data given as texts (None otherwise)."""
    from deploycmp.sources import hf as hf_source, text_data

    if not text_data.is_text(opts.data) or record.get("kind") not in ("hf-dir", "hf-hub"):
        return None
    return hf_source.load_tokenizer(record["spec"])


def _source_artifact(out: Path, src, model, record: dict, inputs: list, feed: dict, dims: dict, batch: int,
                     fingerprint: str) -> dict:
    from deploycmp.export.export_worker import other_feeds

    key = digest({"fingerprint": fingerprint, "batch": batch})
    if (kept := _kept(out, "eager-none", key)):
        return kept
    shutil.rmtree(out / "artifacts" / "eager-none", ignore_errors=True)
    source_file = src.save_source(model, record, out / "artifacts" / "eager-none")
    example = _take(feed, batch)
    free = [d for d, other in other_feeds(example, inputs, {**dims, BATCH: batch}).items()
            if src.batch_works(model, src.example(other, inputs))]
    source = {"id": "eager-none", "path": "eager-none", "format": "eager", "quantization": "none", "status": "ok",
              "error": None, "main_file": f"artifacts/eager-none/{source_file}", "layout": record["layout"],
              "export_dims": {BATCH: batch, **dims}, "dynamic_dims": free, "dynamic_batch": BATCH in free,
              "export_batch": batch, "inputs": record["inputs"],
              "exporter": {"name": "source model", "weights": record["weights"]}, "export_seconds": 0.0}
    source["batch_strategy"] = batch_strategy(free)
    source.update(describe_files(out, out / "artifacts" / "eager-none"))
    return _keep(out, source, key)


def _kept(out: Path, artifact_id: str, key: str) -> dict | None:
    """The entry of an artifact this run directory already holds for `key` (an interrupted or earlier export of
    the same thing), its files unchanged since; None otherwise."""
    try:
        entry = read_json(out / "artifacts" / f"{artifact_id}.json")
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or (entry.get("status") == "ok" and changed_files(out, entry)):
        return None
    return {**entry, "reused": "run directory"}


def _keep(out: Path, entry: dict, key: str) -> dict:
    """Record a finished artifact (its entry next to its folder, written last): what a resumed export keeps."""
    entry = {**entry, "key": key}
    write_json(out / "artifacts" / f"{entry['id']}.json", {k: v for k, v in entry.items() if k != "reused"})
    return entry


def describe_outputs(outputs: dict, inputs: list, dims: dict) -> list[OutputSpec]:
    specs = []
    for name, a in outputs.items():
        kind = output_kind(a.shape, inputs, dims)
        shape = [BATCH, *a.shape[1:]]
        named = [s.shape[1] for s in inputs if len(s.shape) >= 2 and isinstance(s.shape[1], str)]
        if kind == "sequence" and named:
            shape[1] = named[0]
        specs.append(OutputSpec(name, str(a.dtype), shape, kind))
    return specs


@dataclass
class Exporting:
    """Makes the artifacts of one run: kept from an earlier try in this run directory, copied from the export cache,
    or exported in a worker process (then kept and cached)."""

    out: Path
    record: dict
    source_file: str
    opts: ExportOptions
    fingerprint: str
    cache: ExportCache
    made: list = field(default_factory=list)  # the entries of the artifacts made so far, in order

    def one(self, fmt: str, quant: str, dims: dict, reference: dict, per_point: bool = False) -> dict:
        path = f"{fmt}-{quant}"
        artifact_id = f"{path}-{point_id(dims)}" if per_point else path
        folder = Path("artifacts") / artifact_id
        entry = {"id": artifact_id, "path": path, "format": fmt, "quantization": quant, "status": "ok", "error": None,
                 "export_batch": dims[BATCH], "export_dims": dims}
        reason = unsupported_reason(fmt, self.record["framework"], quant)
        absent = missing(requirements(fmt, self.record["framework"], quant))
        if reason is None and absent:
            reason = f"{fmt}: {', '.join(absent)} not installed ({install_hint(fmt, absent)})"
        if reason:
            return {**entry, "status": "unavailable", "error": reason}
        key = digest({"fingerprint": self.fingerprint, "format": fmt, "quantization": quant, "dims": dims,
                      "reference": reference["sha256"], "calibration": reference["calibration_sha256"]})
        if (kept := _kept(self.out, artifact_id, key)):
            return kept
        shutil.rmtree(self.out / folder, ignore_errors=True)  # what an interrupted try left
        if (cached := self.cache.fetch(key, self.out / folder)):
            entry.update({k: v for k, v in cached.items() if k not in ("id", "key", "files", "main_file")})
            entry["main_file"] = str(folder / cached["main_file"])
            entry["files"] = [{**f, "path": str(folder / f["path"])} for f in cached["files"]]
            return {**_keep(self.out, entry, key), "reused": "cache"}
        entry = self._export(entry, folder, fmt, quant, dims, reference)
        _keep(self.out, entry, key)
        if entry["status"] == "ok":
            relative = {**entry, "main_file": str(Path(entry["main_file"]).relative_to(folder))}
            files = [{**f, "path": str(Path(f["path"]).relative_to(folder))} for f in entry["files"]]
            self.cache.store(key, self.out / folder, {k: v for k, v in relative.items() if k != "files"}, files)
        return {**entry, "key": key}

    def _export(self, entry: dict, folder: Path, fmt: str, quant: str, dims: dict, reference: dict) -> dict:
        out = self.out
        (out / folder).mkdir(parents=True, exist_ok=True)
        spec = {"run_dir": str(out), "model": self.record, "source_file": self.source_file, "format": fmt,
                "quantization": quant, "folder": str(folder), "threads": max(1, self.opts.threads // self.opts.jobs), "dims": dims,
                "reference": reference["file"], "calibration": reference["calibration"]}
        log = out / "logs" / f"export-{entry['id']}.log"
        try:
            outcome = run_isolated("deploycmp.export.export_worker", spec, self.opts.timeout, log,
                                   prewarm=imports_of(self.record))
        except BaseException:  # interrupted: no half-made artifact stays behind
            shutil.rmtree(out / folder, ignore_errors=True)
            raise
        if outcome.status != "ok":
            shutil.rmtree(out / folder, ignore_errors=True)
            if outcome.status == "unavailable":  # the exporter found out it cannot run here (no bf16 on this CPU ...)
                return {**entry, "status": "unavailable", "error": outcome.error}
            return {**entry, "status": "export_failed", "error": f"{outcome.status}: {outcome.error}",
                    "diagnosis": outcome.diagnosis, "log": str(log.relative_to(out)),
                    "export_seconds": round(outcome.seconds, 3)}
        details = outcome.result
        entry.update(details)
        entry["main_file"] = str(folder / details["main_file"])
        entry["dynamic_batch"] = BATCH in entry["dynamic_dims"]
        entry["batch_strategy"] = details.get("batch_strategy") or batch_strategy(entry["dynamic_dims"])
        return entry


def batch_strategy(free: list[str]) -> str:
    if BATCH in free:
        rest = [d for d in free if d != BATCH]
        return "dynamic batch axis: one artifact for every batch size" + (f" (free: {', '.join(free)})" if rest else "")
    return "static shapes: one export per batch size" + (f" (free: {', '.join(free)})" if free else "")

