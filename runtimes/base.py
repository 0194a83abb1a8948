"""The session every runtime adapter returns. Timing and metrics live in the harness, not here."""
from __future__ import annotations

from typing import Any

import numpy as np


class Session:
    """A loaded artifact. The harness times only run(prepared) on inputs already in the runtime's own format."""

    device = "cpu"

    def info(self) -> dict:
        """What the runtime knows about itself: version, threads, device, providers."""
        return {}

    def prepare(self, x: np.ndarray) -> Any:
        """Turn a float32 numpy batch into the runtime's native input (not timed)."""
        return x

    def run(self, prepared: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, raw: Any) -> list[np.ndarray]:
        """The outputs of one run as float numpy arrays, samples first (not timed)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until work queued on the device is done (GPU sessions whose run() returns early)."""

    def cuda_events(self):
        """A (start, end) pair of CUDA events when the runtime has them (the harness then times on the device)."""
        return None

    def device_memory_mb(self) -> float | None:
        """Peak device memory this session allocated, when the runtime can tell."""
        return None

