"""Worker process for one export: rebuild the pinned source model, call the format's exporter, report details."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploycmp.core.child import child_main
from deploycmp.core.rundir import describe_files, read_feed
from deploycmp.core.specs import BATCH, InputSpec


def resize(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """`a` with `size` entries along `axis`: the first ones, or repeated to fill."""
    idx = np.resize(np.arange(a.shape[axis]), size)
    return np.ascontiguousarray(np.take(a, idx, axis=axis))


def at_dims(feed: dict, inputs: list[InputSpec], dims: dict) -> dict:
    """The feed resized to the named-dimension values `dims` (batch, sequence ...), every input together."""
    out = {}
    for s in inputs:
        a = feed[s.name]
        for axis, d in enumerate(s.shape):
            if isinstance(d, str) and d in dims and a.shape[axis] != dims[d]:
                a = resize(a, axis, dims[d])
        out[s.name] = a
    return out


def other_size(n: int) -> int:
    return 2 if n == 1 else n - 1


def other_feeds(feed: dict, inputs: list[InputSpec], dims: dict) -> dict[str, dict]:
    """Per named dimension, the feed with that one dimension at another size: does an artifact take it?"""
    names = dict.fromkeys(d for s in inputs for d in s.dims())
    return {d: at_dims(feed, inputs, {**dims, d: other_size(dims[d])}) for d in names if d in dims}


def calibration_batches(calibration: dict, inputs: list, batch: int) -> list[dict]:
    """A calibration split in feeds of `batch` samples; repeated to fill one batch when the split is smaller."""
    n = len(next(iter(calibration.values())))
    cal = calibration if n >= batch else at_dims(calibration, inputs, {BATCH: batch})
    n = max(n, batch)
    return [{k: np.ascontiguousarray(a[i:i + batch]) for k, a in cal.items()} for i in range(0, n - batch + 1, batch)]


@dataclass
class Source:
    """What an exporter gets: the source model, its framework, its inputs, an example feed at the export's shape
    point and the calibration feed (both name -> array, samples first)."""

    model: object
    framework: str
    inputs: list  # InputSpec, in the model's argument order
    feed: dict  # the example: one batch at `dims`
    dims: dict  # the named-dimension values of the export ({"batch": 1, "sequence": 16})
    layout: str | None
    calibration: dict  # the calibration split, samples first
    run_dir: Path | None = None
    source_file: str | None = None  # the pinned source in the run directory (a .keras file, weights.pt ...)
    outputs: list = field(default_factory=list)  # the source model's output names, in order

    @property
    def fw(self):
        from deploycmp import sources as models

        return models.get(self.framework)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def example(self) -> tuple:
        """The example as the model's positional arguments, in the framework's own type."""
        return self.fw.example(self.feed, self.inputs)

    def dynamic_example(self) -> tuple:
        """An example of at least 2 along every free dimension: exporters specialise an axis traced at size 1."""
        grown = {d: max(2, v) for d, v in self.dims.items()}
        return self.fw.example(at_dims(self.feed, self.inputs, grown), self.inputs)

    def dynamic_dims(self) -> dict[int, dict[int, str]]:
        """Per input (by position), its named dimensions by axis: what an exporter declares free."""
        return {i: {axis: d for axis, d in enumerate(s.shape) if isinstance(d, str)} for i, s in enumerate(self.inputs)}

    def calibration_feeds(self) -> list[dict]:
        """The calibration split in batches of the example's size (static-shape artifacts take no other), each 0-d
        input as its one value."""
        from deploycmp.core.specs import per_call

        return [per_call(f, self.inputs) for f in calibration_batches(self.calibration, self.inputs, self.dims[BATCH])]

    def free_dims(self, module) -> list[str]:
        """The named dimensions along which `module` also takes another size (the artifact is not specialised)."""
        return self.free_dims_of(lambda other: self.fw.batch_works(module, self.fw.example(other, self.inputs)))

    def free_dims_of(self, takes) -> list[str]:
        """The named dimensions d for which takes(the example with d at another size) is true."""
        return [d for d, other in other_feeds(self.feed, self.inputs, self.dims).items() if takes(other)]


def source_at(run_dir: Path, record: dict, source_file: str, reference: str, calibration: str, dims: dict) -> Source:
    """What exporters get: the run's pinned source model (`record`: the manifest's model) with the example at `dims`
    from the reference file and the calibration split."""
    from deploycmp import sources as models
    from deploycmp.core.specs import inputs_from_dicts

    inputs = inputs_from_dicts(record["inputs"])
    feed, _, _ = read_feed(run_dir / reference)
    split, _, _ = read_feed(run_dir / calibration)
    return Source(models.get(record["framework"]).load_source(run_dir, record, source_file), record["framework"],
                  inputs, at_dims(feed, inputs, dims), dims, record.get("layout"), split, run_dir, source_file,
                  [o["name"] for o in record.get("outputs", [])])


def imports_of(record: dict) -> str:
    """What an export worker of this source imports before its exporter runs (sources' imports(record)), comma-
    separated: exports of one source fork from one prewarmed process (core.prewarm)."""
    from deploycmp import sources
    from deploycmp.sources.base import OPTIONAL

    source = sources.get(record["framework"])
    return ",".join((sources.SOURCES[record["framework"]], *getattr(source, "imports", OPTIONAL["imports"])(record)))


def prewarm(modules: str) -> None:
    """The import phase of an export: numpy, deploycmp's export modules, then `modules` (imports_of the source); each
    exporter imports its converter in the job (a prewarmed process runs this once, core.prewarm)."""
    import importlib

    for module in ("numpy", "deploycmp.exporters", "deploycmp.core.specs", *filter(None, modules.split(","))):
        importlib.import_module(module)


def job(spec: dict) -> dict:
    from deploycmp import sources as models
    from deploycmp.exporters import get

    run_dir, record, dims = Path(spec["run_dir"]), spec["model"], spec["dims"]
    models.get(record["framework"]).set_threads(spec["threads"])
    source = source_at(run_dir, record, spec["source_file"], spec["reference"], spec["calibration"], dims)
    inputs = source.inputs
    out_dir = run_dir / spec["folder"]
    start = time.perf_counter()
    details = get(spec["format"]).export(source, out_dir, spec["quantization"])
    details["export_seconds"] = round(time.perf_counter() - start, 3)
    if "dynamic_dims" not in details:
        details["dynamic_dims"] = [BATCH] if details.pop("dynamic_batch", False) else []
    # an artifact that keeps the source's inputs (the PyTorch formats, ExecuTorch): its shapes at this export
    details.setdefault("inputs", [{"name": s.name, "dtype": s.dtype,
                                   "shape": [d if d in details["dynamic_dims"] or not isinstance(d, str) else dims[d]
                                             for d in s.shape]} for s in inputs])
    main = out_dir / details["main_file"]
    if not main.exists() or (main.is_file() and main.stat().st_size == 0):
        raise RuntimeError(f"exporter wrote no {details['main_file']}")
    details.update(describe_files(run_dir, out_dir))  # sizes, gzipped too, and sha256: here, side by side with others
    return details


if __name__ == "__main__":
    child_main(job)
