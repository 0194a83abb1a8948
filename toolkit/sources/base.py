"""The contract of a source framework module (deploycmp.sources.torch, .keras, .onnx): what export reads from it.

Every function runs in the process that builds the model (deploycmp export) or in an export worker; the model is the
framework's own object (a torch.nn.Module, a keras.Model, an OnnxModel)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


# members a source module may leave out, with their defaults
OPTIONAL = {
    # record -> the modules an export worker of this source imports first (a prewarmed process imports them once)
    "imports": lambda record: (),
}


class Framework(Protocol):
    def build(self, spec: str, weights: str, given: list, seed: int = 0, num_classes: int | None = None,
              layout: str | None = None, value_ranges: dict | None = None, task: str | None = None):
        """--model SPEC (with --weights, --input ...) as (model, record, warnings): the record becomes the manifest's
        model (framework, inputs, weights ...), the warnings the report's."""

    def condition(self, model, record: dict, calibration: dict, inputs: list) -> None:
        """--weights random: make the random model well-conditioned on the calibration split (a no-op otherwise)."""

    def save_source(self, model, record: dict, folder: Path) -> str:
        """Pin the source model in the run directory so that every worker rebuilds exactly it; its file name."""

    def load_source(self, run_dir: Path, record: dict, source_file: str) -> Any:
        """The pinned source model, rebuilt in any process."""

    def reference_outputs(self, model, feed: dict, inputs: list) -> dict:
        """The golden outputs by name, one sample per call."""

    def example(self, feed: dict, inputs: list) -> Any:
        """A feed as the model's call arguments, in the framework's own types."""

    def set_threads(self, threads: int) -> None:
        """The framework's intra-op threads for this process."""

    def count_gflops(self, model, args) -> float | None:
        """GFLOPs of one call on `args`; None where the framework's models are not counted."""

    def weights_sha256(self, model, record: dict) -> str:
        """A digest of the model's weights (what the export cache keys on)."""

    def batch_works(self, model, args) -> bool:
        """Whether the model takes `args` at another size of a named dimension (the artifact may then keep it free)."""
