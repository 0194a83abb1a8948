"""Worker process for one export: rebuild the pinned source model, call the format's exporter, report details."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.isolation import child_main


@dataclass
class Source:
    """What an exporter gets: the source model, an example batch, and the calibration inputs."""

    model: object
    example: object  # a torch tensor of the manifest's input shape
    layout: str | None
    calibration: object  # numpy array, samples first

    def dynamic_example(self):
        """An example batch of at least 2: exporters specialise a batch axis traced at size 1."""
        import torch

        return self.example if self.example.shape[0] > 1 else torch.cat([self.example] * 2)

    def batch_works(self, module) -> bool:
        """Whether `module` also takes a batch of another size (so the artifact is not batch-specialised)."""
        from toolkit.models import batch_works

        return batch_works(module, self.example)


def job(spec: dict) -> dict:
    import numpy as np
    import torch

    from exporters import get
    from toolkit.models import load_source

    run_dir, model = Path(spec["run_dir"]), spec["model"]
    torch.set_num_threads(spec["threads"])
    with np.load(run_dir / "reference.npz") as ref:
        x = ref["x"]
    batch = model["input_shape"][0]
    example = torch.from_numpy(np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:]))))
    source = Source(load_source(run_dir, model, spec["source_file"]), example, model.get("layout"), x)
    out_dir = run_dir / spec["folder"]
    start = time.perf_counter()
    details = get(spec["format"]).export(source, out_dir, spec["quantization"])
    details["export_seconds"] = round(time.perf_counter() - start, 3)
    main = out_dir / details["main_file"]
    if not main.is_file() or main.stat().st_size == 0:
        raise RuntimeError(f"exporter wrote no {details['main_file']}")
    return details


if __name__ == "__main__":
    child_main(job)
