"""deploycmp export: pin the source model, write reference inputs/outputs, make every requested artifact."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from exporters import EXPORTERS, QUANTIZATIONS, install_hint, requirements, unsupported_reason
from runtimes import missing
from toolkit import SCHEMA, __version__
from toolkit.environment import environment
from toolkit.errors import UsageError
from toolkit.export_worker import other_batch
from toolkit.isolation import run_isolated
from toolkit.rundir import CALIBRATION, MANIFEST, REFERENCE, describe_files, write_json


def parse_formats(spec: str) -> list[str]:
    names = list(EXPORTERS) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown or not names:
        raise UsageError(f"unknown format {unknown[0] if unknown else spec!r}; formats: {', '.join(EXPORTERS)} or all")
    return list(dict.fromkeys(names))


def parse_quantize(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in QUANTIZATIONS]
    if unknown or not names:
        raise UsageError(f"unknown quantization {unknown[0] if unknown else spec!r}; modes: {', '.join(QUANTIZATIONS)}")
    return list(dict.fromkeys(names))


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


def _prepare_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file() and not (out / "artifacts").is_dir():
            raise UsageError(f"--out {out} is a non-empty directory that is not a run directory; choose another")
        if not force:
            raise UsageError(f"--out {out} already holds a run; pass --force to replace it")
        (out / MANIFEST).unlink(missing_ok=True)  # first, so a half-replaced run never looks complete
        for sub in ("artifacts", "results", "logs"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for f in ("results.json", REFERENCE, CALIBRATION, "report.md", "report.csv", "report.json"):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def export_run(model_spec: str, weights: str, input_shape: str | None, formats: str, quantize: str, data: str,
               samples: int, out: Path, force: bool, threads: int, timeout: float, progress=None,
               calibration_samples: int = 32, batch_sizes: list[int] | None = None, num_classes: int | None = None,
               preprocess: dict | None = None, layout: str | None = None) -> dict:
    """Export every format x quantization. An artifact that takes one batch size only (TFLite, ExecuTorch, ONNX
    whose batch axis could not be made dynamic) is exported again for each further size in `batch_sizes`."""
    from toolkit import data as data_mod
    from toolkit import models

    fmts, modes, shape = parse_formats(formats), parse_quantize(quantize), parse_shape(input_shape)
    out = Path(out)
    _prepare_dir(out, force)

    framework = models.framework_of(model_spec)
    src = models.get(framework)
    model, record, warnings = src.build(model_spec, weights, shape, seed=0, num_classes=num_classes)
    if layout:
        record["layout"] = layout
    if preprocess:
        record["preprocess"] = preprocess
    x_all, y_all, data_info = data_mod.load(data, record["input_shape"], samples + calibration_samples,
                                            layout=record.get("layout"), preprocess=record.get("preprocess"))
    calibration, x, y, data_info["split"] = data_mod.split(x_all, y_all, calibration_samples)
    data_info["samples"] = int(len(x))
    try:
        reference = src.reference_outputs(model, x)
    except Exception as e:  # the usual cause is an input shape the model does not take
        raise UsageError(f"{model_spec} fails on input of shape {record['input_shape']}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    export_batch = record["input_shape"][0]
    record["gflops_per_sample"] = src.count_gflops(model, x[:1])
    record["outputs"] = [list(o.shape[1:]) for o in reference]
    source_file = src.save_source(model, record, out / "artifacts" / "eager-none")
    arrays = {"x": x, **{f"y{i}": o for i, o in enumerate(reference)}}
    if y is not None:
        arrays["labels"] = y
    np.savez(out / REFERENCE, **arrays)
    np.savez(out / CALIBRATION, x=calibration)

    source = {"id": "eager-none", "path": "eager-none", "format": "eager", "quantization": "none", "status": "ok", "error": None,
              "main_file": f"artifacts/eager-none/{source_file}", "layout": record["layout"],
              "dynamic_batch": src.batch_works(model, other_batch(np.resize(x, (export_batch, *x.shape[1:])))),
              "export_batch": export_batch,
              "exporter": {"name": "source model", "weights": record["weights"]}, "export_seconds": 0.0}
    source["batch_strategy"] = batch_strategy(source["dynamic_batch"])
    source.update(describe_files(out, out / "artifacts" / "eager-none"))
    artifacts = [source]
    sizes = batch_sizes or [export_batch]
    jobs = [(f, q) for f in fmts for q in modes]
    for i, (fmt, quant) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), f"export {fmt} {quant}")
        first = _export_one(out, record, source["main_file"], fmt, quant, threads, timeout, sizes[0])
        artifacts.append(first)
        if first["status"] == "ok" and not first["dynamic_batch"]:
            for b in sizes[1:]:
                if progress:
                    progress(i, len(jobs), f"export {fmt} {quant} batch {b}")
                artifacts.append(_export_one(out, record, source["main_file"], fmt, quant, threads, timeout, b, True))
    if progress:
        progress(len(jobs), len(jobs), "export done")

    manifest = {
        "schema": SCHEMA, "tool": {"name": "deploycmp", "version": __version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": record, "warnings": warnings, "data": data_info,
        "reference": REFERENCE, "calibration": CALIBRATION, "artifacts": artifacts, "environment": environment(),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _export_one(out: Path, record: dict, source_file: str, fmt: str, quant: str, threads: int, timeout: float,
                batch: int, per_batch: bool = False) -> dict:
    path = f"{fmt}-{quant}"
    artifact_id = f"{path}-b{batch}" if per_batch else path
    folder = Path("artifacts") / artifact_id
    entry = {"id": artifact_id, "path": path, "format": fmt, "quantization": quant, "status": "ok", "error": None,
             "export_batch": batch}
    reason = unsupported_reason(fmt, record["framework"], quant)
    absent = missing(requirements(fmt, record["framework"], quant))
    if reason is None and absent:
        reason = f"{fmt}: {', '.join(absent)} not installed ({install_hint(fmt, absent)})"
    if reason:
        return {**entry, "status": "unavailable", "error": reason}
    (out / folder).mkdir(parents=True, exist_ok=True)
    spec = {"run_dir": str(out), "model": record, "source_file": source_file, "format": fmt, "quantization": quant,
            "folder": str(folder), "threads": threads, "batch": batch}
    outcome = run_isolated("toolkit.export_worker", spec, timeout, out / "logs" / f"export-{artifact_id}.log")
    if outcome.status != "ok":
        shutil.rmtree(out / folder, ignore_errors=True)
        return {**entry, "status": "export_failed", "error": f"{outcome.status}: {outcome.error}",
                "export_seconds": round(outcome.seconds, 3)}
    details = outcome.result
    entry.update(details)
    entry["main_file"] = str(folder / details["main_file"])
    entry.update(describe_files(out, out / folder))
    entry["batch_strategy"] = details.get("batch_strategy") or batch_strategy(entry["dynamic_batch"])
    return entry


def batch_strategy(dynamic: bool) -> str:
    return "dynamic batch axis: one artifact for every batch size" if dynamic else "static shapes: one export per batch size"
