"""Worker process for one export of a language model that generates: the format's exporter on the source
directory, into the artifact's folder (deploycmp.export.generation)."""
from __future__ import annotations

from pathlib import Path

from deploycmp.core.child import child_main


def job(spec: dict) -> dict:
    from deploycmp.exporters import llm

    return llm.get(spec["format"]).export(Path(spec["source_dir"]), Path(spec["folder"]), spec["quantization"],
                                          spec["threads"])


if __name__ == "__main__":
    child_main(job)
