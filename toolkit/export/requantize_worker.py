"""Worker: quantize a path's fp32 file to int8 again with another recipe (bench --tune's int8 recipes, repair's
calibration methods and layers kept in float), on the run's calibration split in the export's batches, in the
artifact's layout. The format's quantizer module (QUANTIZERS) has `quantize(fp32, out, mode, calibration, recipe)`
(recipe: `keep_float` tensor names, `calibration_method` one of its `CALIBRATION_METHODS`); a format quantized while
it is exported (ExecuTorch's PT2E) has `quantize_source(source, out, mode, recipe)` instead, given the run's source
model rebuilt as the export worker had it."""
from __future__ import annotations

import importlib
from pathlib import Path

from deploycmp.core.child import child_main

QUANTIZERS = {"onnx": "deploycmp.exporters.onnx_quantization", "tflite": "deploycmp.exporters.tflite",
              "executorch": "deploycmp.exporters.executorch"}


def quantizer(fmt: str):
    return importlib.import_module(QUANTIZERS[fmt])


def requantize(run_dir: Path, manifest: dict, artifact: dict, recipe: dict, out: Path, timeout: float, log: Path) -> dict:
    """Quantize the fp32 file of `artifact`'s path into `out` with `recipe`, in a worker process; what was done
    (the quantizer's record). RuntimeError with the worker's words when it fails."""
    from deploycmp.core.isolation import run_isolated
    from deploycmp.core.rundir import fp32_twin, reference_for
    from deploycmp.core.specs import BATCH, export_point

    point = export_point(artifact)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = {"format": artifact["format"], "fp32": str(run_dir / fp32_twin(artifact, manifest)["main_file"]),
            "out": str(out), "recipe": recipe, "inputs": manifest["model"]["inputs"], "batch": point.get(BATCH) or 1,
            "calibration": str(run_dir / reference_for(manifest, point).get("calibration", manifest["calibration"])),
            "layout": artifact.get("layout"), "run_dir": str(run_dir), "artifact": artifact}
    outcome = run_isolated("deploycmp.export.requantize_worker", spec, timeout, log)
    if outcome.status != "ok":
        raise RuntimeError(f"re-quantizing with {recipe}: {outcome.error}")
    return outcome.result


def run_source(run_dir: Path, artifact: dict):
    """The export worker's Source for `artifact`: the run's pinned source model (artifacts/eager-none) with the
    example and calibration split of the artifact's shape point, as it was exported."""
    from deploycmp.core.rundir import load_manifest, reference_for
    from deploycmp.core.specs import export_point
    from deploycmp.export.export_worker import source_at

    manifest = load_manifest(run_dir)
    dims = export_point(artifact)
    reference = reference_for(manifest, dims)
    source_file = next(a["main_file"] for a in manifest["artifacts"] if a["format"] == "eager")
    return source_at(run_dir, manifest["model"], source_file, reference["file"],
                     reference.get("calibration", manifest["calibration"]), dims)


def job(spec: dict) -> dict:
    """spec: format, fp32, out, recipe, calibration (.npz), inputs (the model's), batch, layout (the file's), run_dir
    and artifact (the int8 one, whose shape point a format quantizing from the source model exports at)."""
    from deploycmp.core.rundir import read_feed
    from deploycmp.core.specs import inputs_from_dicts
    from deploycmp.export.export_worker import calibration_batches
    from deploycmp.core.specs import to_layout

    module = quantizer(spec["format"])
    if hasattr(module, "quantize_source"):
        source = run_source(Path(spec["run_dir"]), spec["artifact"])
        return module.quantize_source(source, Path(spec["out"]), "int8", spec["recipe"])
    calibration, _, _ = read_feed(Path(spec["calibration"]))
    inputs = inputs_from_dicts(spec["inputs"])
    feeds = calibration_batches(calibration, inputs, spec["batch"])
    layouts = {i.name: i.layout for i in inputs}
    feeds = [{k: to_layout(a, layouts.get(k), spec.get("layout")) for k, a in feed.items()} for feed in feeds]
    return module.quantize(Path(spec["fp32"]), Path(spec["out"]), "int8", feeds, recipe=spec["recipe"])


if __name__ == "__main__":
    child_main(job)
