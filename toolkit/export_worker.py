"""Worker process for one export: rebuild the pinned source model, call the format's exporter, report details."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.isolation import child_main


def other_batch(x: np.ndarray) -> np.ndarray:
    """A batch of another size than `x` (2 for a batch of 1, else 1): does an artifact take more than one size?"""
    return np.resize(x, (2 if len(x) == 1 else 1, *x.shape[1:]))


@dataclass
class Source:
    """What an exporter gets: the source model, its framework, an example batch and the calibration inputs."""

    model: object
    framework: str
    x: np.ndarray  # example batch (numpy) of the manifest's input shape
    layout: str | None
    calibration: np.ndarray  # the calibration split, samples first
    run_dir: Path | None = None
    source_file: str | None = None  # the pinned source in the run directory (a .keras file, weights.pt ...)

    @property
    def fw(self):
        from toolkit import models

        return models.get(self.framework)

    @property
    def example(self):
        return self.fw.example(self.x)

    def dynamic_example(self):
        """An example batch of at least 2: exporters specialise a batch axis traced at size 1."""
        return self.fw.example(self.x if len(self.x) > 1 else np.concatenate([self.x] * 2))

    def calibration_batches(self) -> list[np.ndarray]:
        """The calibration split in batches of the example's size (static-shape artifacts take no other);
        repeated to fill one batch when the split is smaller."""
        batch, cal = len(self.x), self.calibration
        if len(cal) < batch:
            cal = np.resize(cal, (batch, *cal.shape[1:]))
        return [np.ascontiguousarray(cal[i:i + batch]) for i in range(0, len(cal) - batch + 1, batch)]

    def batch_works(self, module) -> bool:
        """Whether `module` also takes a batch of another size (so the artifact is not batch-specialised)."""
        return self.fw.batch_works(module, other_batch(self.x))


def job(spec: dict) -> dict:
    from exporters import get
    from toolkit import models

    run_dir, record = Path(spec["run_dir"]), spec["model"]
    fw = models.get(record["framework"])
    fw.set_threads(spec["threads"])
    with np.load(run_dir / "reference.npz") as ref:
        x = ref["x"]
    with np.load(run_dir / "calibration.npz") as cal:
        calibration = cal["x"]
    batch = spec.get("batch") or record["input_shape"][0]
    source = Source(fw.load_source(run_dir, record, spec["source_file"]), record["framework"],
                    np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:]))), record.get("layout"), calibration,
                    run_dir, spec["source_file"])
    out_dir = run_dir / spec["folder"]
    start = time.perf_counter()
    details = get(spec["format"]).export(source, out_dir, spec["quantization"])
    details["export_seconds"] = round(time.perf_counter() - start, 3)
    main = out_dir / details["main_file"]
    if not main.exists() or (main.is_file() and main.stat().st_size == 0):
        raise RuntimeError(f"exporter wrote no {details['main_file']}")
    return details


if __name__ == "__main__":
    child_main(job)
